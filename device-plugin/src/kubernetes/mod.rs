//! The Kubernetes side: what the plugin learns from and tells the API
//! server and kubelet's PodResources API.
//!
//! - [`pods`]: the cache of pods bound to this node, with their assignments.
//! - [`publish`]: the node's `GpuNodeInventory`, applied on every change.
//! - [`verify`]: PodResources checks that each container got its assignment.

pub mod pods;
pub mod publish;
pub mod verify;

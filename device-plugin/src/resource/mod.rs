//! The resource manager: what the node has and what it may hand out.
//!
//! - [`backend`]: where GPU facts come from ([`backend::GpuBackend`]): NVML on
//!   real nodes, a YAML file on simulated ones.
//! - [`health`]: turns critical events, declared faults and admin overrides
//!   into per-GPU health, with recovery after a clean period.
//! - [`state`]: the node's current inventory with effective health, shared by
//!   every part through a watch channel.
//! - [`devices`]: which kubelet devices each resource advertises, derived
//!   from the inventory.

pub mod backend;
pub mod devices;
pub mod health;
pub mod state;

//! The plugin server: everything kubelet talks to.
//!
//! - [`plugin`]: the `DevicePlugin` gRPC service for one resource.
//! - [`registration`]: serving the plugin sockets, registering, and
//!   re-registering after kubelet restarts; [`uds`]: gRPC over unix sockets.
//! - [`handoff`]: matches kubelet's anonymous calls to the scheduler's
//!   per-container assignments (the design is documented there).
//! - [`preferred`]: topology-aware choices for pods without an assignment.
//! - [`response`]: the environment a container receives.
//! - [`delivered`]: which node state each `ListAndWatch` stream has shown
//!   kubelet, so nothing is published ahead of it.

pub mod delivered;
pub mod handoff;
pub mod plugin;
pub mod preferred;
pub mod registration;
pub mod response;
pub mod uds;

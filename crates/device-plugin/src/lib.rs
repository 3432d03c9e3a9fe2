//! gpupack's node agent, structured like NVIDIA's k8s-device-plugin.
//!
//! - [`backend`]: where GPU facts come from ([`backend::GpuBackend`]): NVML on
//!   real nodes, a YAML file on simulated ones.
//! - [`health`]: turns critical events, declared faults and admin overrides
//!   into per-GPU health, with recovery after a clean period.
//! - [`state`]: the node's current inventory with effective health, shared by
//!   every part through a watch channel.
//! - [`devices`]: the resource manager: which kubelet devices each resource
//!   advertises, derived from the inventory.
//! - [`handoff`]: matches kubelet's anonymous calls to the scheduler's
//!   per-container assignments (the design is documented there).
//! - [`preferred`]: topology-aware choices for pods without an assignment.
//! - [`response`]: the environment a container receives.
//! - [`plugin`]: the `DevicePlugin` gRPC service for one resource.
//! - [`kubelet`]: serving the plugin sockets, registering, and re-registering
//!   after kubelet restarts.
//! - [`pods`], [`publish`], [`verify`]: the Kubernetes side: the pod cache,
//!   inventory publishing and PodResources verification.
//! - [`config`], [`metrics`], [`http`], [`app`], [`cli`]: configuration,
//!   Prometheus metrics, the HTTP endpoints, the wiring of it all, and the
//!   command line.

pub mod app;
pub mod backend;
pub mod cli;
pub mod config;
pub mod delivered;
pub mod devices;
pub mod handoff;
pub mod health;
pub mod http;
pub mod kubelet;
pub mod metrics;
pub mod plugin;
pub mod pods;
pub mod preferred;
pub mod publish;
pub mod response;
pub mod state;
pub mod uds;
pub mod verify;

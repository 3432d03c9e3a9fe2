//! gpupack's node agent, structured like NVIDIA's k8s-device-plugin: a
//! resource manager that knows the node's GPUs, a plugin server that
//! answers kubelet, and the Kubernetes side that watches pods and publishes
//! the inventory.
//!
//! - [`resource`]: where GPU facts come from (NVML or a simulated file),
//!   per-GPU health, the node state every part shares, and the devices each
//!   resource advertises.
//! - [`server`]: the kubelet-facing side: the `DevicePlugin` gRPC service
//!   per resource, registration with kubelet, the handoff of assignments to
//!   kubelet's anonymous calls, preferred allocations, the environment a
//!   container receives, and which node state kubelet has been shown.
//! - [`kubernetes`]: the pod cache, inventory publishing and PodResources
//!   verification.
//! - [`config`], [`metrics`], [`http`], [`app`], [`cli`], [`retry`]:
//!   configuration, Prometheus metrics, the HTTP endpoints, the wiring of it
//!   all, the command line, and the one retry schedule.

pub mod app;
pub mod cli;
pub mod config;
pub mod http;
pub mod kubernetes;
pub mod metrics;
pub mod resource;
pub mod retry;
pub mod server;

//! gpupack end to end.
//!
//! - [`manifests`]: the deployment manifests under `daemonset/`, rendered with
//!   kustomize into typed objects, for the checks in `tests/manifests.rs`.
//! - [`local`]: the local target: the Kubernetes API stand-in, per simulated
//!   node a real device plugin process and a kubelet ([`node_agent`]), real
//!   extender processes, and [`scheduler`] drivers that replay
//!   kube-scheduler's extender calls.
//! - [`admission`]: kubelet's status writes after a pod is bound, for many
//!   nodes at once and without devices (the bind benchmark's nodes).
//! - [`cluster`]: the cluster target, a real cluster from `KUBECONFIG`.
//! - [`spec`]: the embedded default cluster and workload; [`view`]: the
//!   state and its invariants; [`report`]: the demo's table and picture.
//! - [`multicall`], [`process`]: one binary that runs either component,
//!   and child processes that never outlive the run.

pub mod admission;
pub mod cluster;
pub mod extender_client;
pub mod fleet;
pub mod inprocess;
pub mod local;
pub mod manifests;
pub mod multicall;
pub mod node_agent;
pub mod process;
pub mod rbac;
pub mod report;
pub mod scheduler;
pub mod spec;
pub mod view;

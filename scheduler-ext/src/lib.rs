//! gpupack's kube-scheduler extender: filter, prioritize, bind (and
//! preempt) pods that ask for gpupack GPUs, from a ledger rebuilt from the
//! Kubernetes API.
//!
//! Thin adapters around pure parts:
//! - [`demand`]: a pod's resource requests or model annotations → its GPU needs;
//! - [`models`]: models outside the catalog, from the Hub or a ConfigMap;
//! - [`translate`]: inventories and assignments ↔ the placement core's types;
//! - [`reservations`]: the per-node pending-bind annotation;
//! - [`cluster_state`]: the ledger of every node and pod, filter and prioritize;
//! - [`alike`]: keeping alike pods that await kubelet apart;
//! - [`mix`]: the pods, pending and bound, the typical pod mix comes from;
//! - [`bind`]: choosing GPUs and creating the Binding without double booking;
//! - [`preemption`]: evicting lower-priority pods for a pod no GPU set fits;
//! - [`watch`]: kube-rs watches feeding the state, and readiness;
//! - [`events`], [`metrics`], [`http`], [`conn`], [`config`], [`server`],
//!   [`cli`]: the service around them.

pub mod alike;
pub mod bind;
pub mod cli;
pub mod cluster_state;
pub mod config;
pub mod demand;
pub mod events;
pub mod http;
pub mod metrics;
pub mod mix;
pub mod models;
pub mod preemption;
pub mod requeue;
pub mod reservations;
pub mod server;
pub mod synthetic;
pub mod translate;
pub mod watch;

pub use bind::{BindConfig, Binder, Clock, system_clock};
pub use cluster_state::ClusterState;
pub use config::{Args, Config};
pub use demand::PodNeeds;
pub use server::Extender;

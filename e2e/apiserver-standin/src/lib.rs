//! A Kubernetes API server stand-in for gpupack's tests and local runs.
//!
//! Components reach it through an ordinary kubeconfig and kube-rs, exactly
//! as they reach a cluster, and it keeps the semantics they depend on: one
//! global resourceVersion, optimistic concurrency (409 on stale writes),
//! list+watch with resume, bookmarks and 410 on compacted history, the
//! `pods/binding` subresource with the API server's own rules, status
//! subresources, label and field selectors, and `metav1.Status` errors.
//! Tests can inject faults (conflicts, latency, 5xx, closed watches,
//! outages) and read the store directly. A consistent list (no
//! `resourceVersion`) costs time in proportion to the objects stored, as
//! when etcd serves it (see [`DEFAULT_CONSISTENT_LIST_COST`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use apiserver_standin::{ApiServer, ResourceType};
//! let server = ApiServer::start().await?;
//! server.register(ResourceType::gpu_node_inventory());
//! let client = server.client().await?; // through kubeconfig loading
//! server.faults().conflict_next_writes(2);
//! # Ok(()) }
//! ```
//!
//! Simplified on purpose: deletion is immediate (no graceful deletion or
//! finalizers); server-side apply behaves as for a single field manager
//! (creates if missing; the top-level fields the configuration names are
//! replaced, `metadata` is merged; no ownership tracking or apply
//! conflicts); strategic merge patch knows the
//! merge keys of the lists gpupack touches; later pages of a paged list
//! come from the current state; no admission, validation beyond
//! metadata, namespaces need not exist; `events` of `v1` and
//! `events.k8s.io/v1` are stored separately.

mod api;
mod discovery;
pub mod error;
pub mod faults;
pub mod handle;
pub mod kubeconfig;
pub mod patch;
pub mod quantities;
pub mod record;
pub mod resource;
mod response;
pub mod route;
pub mod selector;
mod server;
mod state;
pub mod store;
pub mod watch;

pub use error::ApiError;
pub use error::Error;
pub use faults::{DEFAULT_CONSISTENT_LIST_COST, FaultPlan, Faults, Injected};
pub use handle::{StoreError, StoreHandle};
pub use kubeconfig::client_from_file;
pub use record::{RequestLog, RequestRecord};
pub use resource::ResourceType;
pub use server::ApiServer;
pub use state::Options;

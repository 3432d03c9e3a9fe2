//! A kubelet stand-in that drives device plugins exactly as kubelet's device
//! manager does: over unix sockets, with the real v1beta1 protocol.
//!
//! - **Registration** on `<dir>/kubelet.sock`: version and resource-name
//!   checks, then — while `Register` is pending — a blocking dial of the
//!   plugin's socket and `GetDevicePluginOptions`; then a `ListAndWatch`
//!   reader that replaces the device list on every message and marks all
//!   devices unhealthy when the stream ends.
//! - **kubelet restarts**: [`Kubelet::restart`], [`Kubelet::stop`] and
//!   [`Kubelet::start`] delete plugin sockets, forget endpoints (capacity 0
//!   until plugins register again), keep allocations, re-create
//!   `kubelet.sock`.
//! - **Admission** ([`Kubelet::admit`]): init containers first, each
//!   container's resources in a seeded random order, `GetPreferredAllocation`
//!   and `Allocate` with exactly one container per call, devices of init
//!   containers reusable by later ones, the responses merged into what the
//!   runtime would receive. A failed admission leaves nothing allocated.
//! - **PodResources v1** on `<pod-resources-dir>/kubelet.sock`, rate-limited
//!   like kubelet.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use kubelet_standin::{Container, Kubelet, Options, Pod};
//! let dir = std::env::temp_dir().join("device-plugins");
//! let kubelet = Kubelet::new(Options::new(&dir)).await?;
//! // ... start the plugin with `dir` as its device plugin directory ...
//! kubelet.wait_for_healthy("gpupack.io/gpu", 8, Duration::from_secs(5)).await?;
//! let pod = Pod::new("uid-1", "default", "llm")
//!     .container(Container::new("server").request("gpupack.io/gpu", 2));
//! let admitted = kubelet.admit(&pod).await?;
//! let env = admitted.container("server").and_then(|c| c.env("NVIDIA_VISIBLE_DEVICES"));
//! kubelet.restart().await?;
//! # Ok(()) }
//! ```
//!
//! Simplified on purpose: no Topology Manager (no NUMA alignment; every
//! device counts as "no affinity", so `GetPreferredAllocation` sees all free
//! devices); when a plugin returns too few preferred devices the rest are
//! filled in ID order (kubelet: Go set order); no 5-minute wait is modelled
//! for anything but capacity; `PreStartContainer` is called during
//! admission rather than at container start; the pluginwatcher
//! (`plugins_registry`) registration path is not served; pod admission is
//! only the device manager's part (no CPU/memory managers, no predicates).

mod admission;
mod checkpoint;
pub mod error;
mod kubelet;
mod legacy;
pub mod options;
pub mod pod;
mod pod_resources;
mod rate;
mod registration;
pub mod resource_name;
pub mod run_options;
mod select;
pub mod state;
mod transport;

pub use error::{AdmitError, Error, Rpc, WaitTimeout};
pub use kubelet::Kubelet;
pub use options::{CHECKPOINT_FILE, Options, Order, RateLimit};
pub use pod::{Container, ContainerKind, Pod, PodSpecError};
pub use run_options::{Conflict, RunOptions};
pub use state::{
    AllocatedDevice, Call, Capacity, ContainerAllocation, PluginCall, PodAllocation, Registration,
    ResourceStatus,
};
pub use transport::connect_unix;

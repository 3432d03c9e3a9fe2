//! Where GPU facts come from.
//!
//! A backend discovers the node's GPUs once at start (all or nothing: an
//! inventory that fails validation is an error, never half a node) and then
//! reports what changes while the plugin runs: critical errors on a GPU
//! (NVML XIDs, double-bit ECC) or a new declared state (the simulated file
//! was edited).

pub mod nvml;
pub mod simulated;
pub mod topology;
pub mod xid;

use proto::inventory::{Backend, NodeInventory};
use tokio::sync::mpsc;

/// What every discovery needs to know besides the hardware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryContext {
    /// The Kubernetes node name (also seeds simulated UUIDs).
    pub node_name: String,
    /// Slices each non-MIG GPU offers.
    pub slices_per_gpu: u32,
    /// Bytes per memory unit.
    pub memory_unit_bytes: u64,
}

/// A change a backend reports while running.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendEvent {
    /// A critical error on a GPU (by GPU UUID). The GPU is unhealthy until a
    /// clean period passes without another one.
    Critical {
        /// The GPU's UUID.
        uuid: String,
        /// What happened, for people (e.g. `XID 79`).
        reason: String,
    },
    /// A critical error that cannot be attributed to one GPU (the event
    /// source itself failed): every GPU is affected.
    CriticalAll {
        /// What happened.
        reason: String,
    },
    /// A complete new inventory whose declared health replaces the old one
    /// (the simulated file changed and is valid).
    Inventory(NodeInventory),
}

/// Why discovery or watching failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The NVML library could not be loaded: one line saying what and how to fix it.
    #[error(
        "NVIDIA management library {path} could not be loaded ({detail}); install the NVIDIA driver on the node and run the pod with the NVIDIA container runtime (runtimeClassName: nvidia), or point --nvml-library at libnvidia-ml.so.1"
    )]
    NvmlMissing {
        /// The library path tried.
        path: String,
        /// The loader's message.
        detail: String,
    },
    /// NVML was loaded but a query failed.
    #[error("NVML: {what}: {detail}")]
    Nvml {
        /// The query.
        what: String,
        /// NVML's error.
        detail: String,
    },
    /// The simulated node file is unusable.
    #[error(transparent)]
    Simulated(#[from] simulated::SimError),
    /// The discovered facts do not form a valid inventory.
    #[error("discovered inventory is invalid: {0}")]
    Invalid(#[from] proto::FormatError),
    /// The change watch could not be set up.
    #[error("cannot watch for changes: {0}")]
    Watch(String),
}

/// Keeps a backend's watch running; dropping it stops the watch.
pub struct WatchGuard {
    _inner: Box<dyn Send + Sync>,
}

impl WatchGuard {
    /// Wraps whatever must stay alive for the watch to continue.
    pub fn new(inner: impl Send + Sync + 'static) -> WatchGuard {
        WatchGuard {
            _inner: Box::new(inner),
        }
    }
}

/// A source of GPU facts.
pub trait GpuBackend: Send + Sync {
    /// Which kind of backend this is.
    fn kind(&self) -> Backend;

    /// Discovers the node's GPUs. The result is validated.
    fn discover(&self, ctx: &DiscoveryContext) -> Result<NodeInventory, BackendError>;

    /// Starts reporting changes into `events` until the guard is dropped.
    fn watch(
        &self,
        ctx: &DiscoveryContext,
        events: mpsc::UnboundedSender<BackendEvent>,
    ) -> Result<WatchGuard, BackendError>;
}

//! What every request handler shares: the store, the fault switchboard, the
//! request log, and the server's options and address. Kept apart from the
//! server itself so that handlers and the server depend on it, not on each
//! other.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::faults::{DEFAULT_CONSISTENT_LIST_COST, Faults};
use crate::handle::StoreHandle;
use crate::record::RequestLog;
use crate::resource::ResourceType;

/// How to start a server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where to listen; port 0 picks a free one. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Changes kept for watches to resume from; older resourceVersions get 410.
    pub log_capacity: usize,
    /// How often an idle watch that allows bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Seed for generated names and uids.
    pub seed: u64,
    /// Types to serve besides the built-in ones (e.g. CRDs).
    pub types: Vec<ResourceType>,
    /// What a consistent list (no `resourceVersion`) costs per stored
    /// object of the listed resource, as etcd serves it; see
    /// [`DEFAULT_CONSISTENT_LIST_COST`]. The fault plan can change it while
    /// the server runs.
    pub consistent_list_cost: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_capacity: 10_000,
            bookmark_interval: Duration::from_secs(1),
            seed: 0,
            types: Vec::new(),
            consistent_list_cost: DEFAULT_CONSISTENT_LIST_COST,
        }
    }
}

/// State shared by every request.
pub(crate) struct AppState {
    pub(crate) store: StoreHandle,
    pub(crate) faults: Faults,
    pub(crate) requests: RequestLog,
    pub(crate) watch_resets: watch::Sender<u64>,
    pub(crate) options: Options,
    pub(crate) addr: SocketAddr,
    /// Cancelled when the current serving generation stops.
    pub(crate) stop: Mutex<CancellationToken>,
    /// The running server, for handlers that act on it (an outage).
    pub(crate) server: OnceLock<Weak<dyn Any + Send + Sync>>,
}

impl AppState {
    pub(crate) fn stop_slot(&self) -> MutexGuard<'_, CancellationToken> {
        self.stop.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn stop_token(&self) -> CancellationToken {
        self.stop_slot().clone()
    }
}

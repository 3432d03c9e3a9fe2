//! Publishing the node's `GpuNodeInventory` (named after the node) by
//! server-side apply, on start and after every change. The API server being
//! away never stops the plugin: the latest inventory is retried with
//! backoff until it lands. A new generation is published once kubelet's
//! `ListAndWatch` streams carry it (bounded), never before.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use proto::inventory::GpuNodeInventory;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::resource::state::Snapshot;
use crate::retry;
use crate::server::delivered::Delivered;

/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "gpupack-device-plugin";

/// Longest a publication waits for kubelet's streams to carry the same
/// generation (they are local and answer in milliseconds).
const KUBELET_FIRST_LIMIT: Duration = Duration::from_secs(1);

/// First and longest pause between failed publications.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Publishes until `shutdown`.
pub async fn run(
    mut client: watch::Receiver<Option<Client>>,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    delivered: Arc<Delivered>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let client = tokio::select! {
        c = client.wait_for(Option::is_some) => match c { Ok(c) => c.clone(), Err(_) => return },
        _ = shutdown.cancelled() => return,
    };
    let Some(client) = client else { return };
    let api: Api<GpuNodeInventory> = Api::all(client);
    let mut backoff = retry::backoff(RETRY_MIN, RETRY_MAX);
    loop {
        let snap = snapshots.borrow_and_update().clone();
        let obj = GpuNodeInventory::for_node(snap.inventory.clone());
        let name = snap.inventory.node_name.clone();
        // kubelet first: the extender must never see a device healthy
        // that kubelet does not (see `delivered`).
        if !delivered.wait(snap.generation, KUBELET_FIRST_LIMIT).await {
            tracing::warn!(node = %name, generation = snap.generation, "kubelet has not taken the device lists yet; publishing anyway");
        }
        match api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
        {
            Ok(_) => {
                metrics.inventory_publishes.inc();
                tracing::info!(node = %name, generation = snap.generation, "published GPU inventory");
                backoff = retry::backoff(RETRY_MIN, RETRY_MAX);
                tokio::select! {
                    r = snapshots.changed() => if r.is_err() { return },
                    _ = shutdown.cancelled() => return,
                }
            }
            Err(e) => {
                metrics.inventory_publish_failures.inc();
                let delay = retry::next_delay(&mut backoff, RETRY_MAX);
                tracing::warn!(node = %name, error = %e, retry_ms = delay.as_millis() as u64, "publishing GPU inventory failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {},
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

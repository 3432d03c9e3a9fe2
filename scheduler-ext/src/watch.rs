//! Feeds [`ClusterState`] from the Kubernetes API: a watch of every
//! `GpuNodeInventory`, a watch of every bound pod and a watch of every
//! pod waiting for a node (for the typical pod mix only). Nothing else is
//! kept, so a restart rebuilds the same state from the initial lists;
//! `/readyz` (and bind) wait for the inventories and the bound pods.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, ResourceExt};
use proto::inventory::GpuNodeInventory;
use tokio::task::JoinHandle;

use crate::bind::Clock;
use crate::cluster_state::{ClusterState, Problem};
use crate::demand::PodNeeds;
use crate::metrics::{Metrics, ProblemLabels};
use crate::translate::{Held, held, pod_key};

/// Whether the initial lists have been taken in.
#[derive(Default, Debug)]
pub struct Readiness {
    inventories: AtomicBool,
    pods: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.inventories.load(Ordering::Acquire) && self.pods.load(Ordering::Acquire)
    }

    /// Marks both lists as taken in (for tests and benchmarks that fill the
    /// state by hand).
    pub fn set_ready(&self) {
        self.inventories.store(true, Ordering::Release);
        self.pods.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn inventories_listed(&self) {
        self.inventories.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn pods_listed(&self) {
        self.pods.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Resolves once both initial lists are in.
    pub async fn wait(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_ready() {
                return;
            }
            changed.await;
        }
    }
}

/// Everything the watch tasks share.
#[derive(Clone)]
pub struct Feeds {
    pub state: Arc<RwLock<ClusterState>>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub clock: Clock,
    /// Sizes model-annotated pods for the typical mix, as the filter does.
    pub models: Arc<dyn model_source::ModelLookup>,
}

impl Feeds {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ClusterState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, problems: Vec<Problem>) {
        for p in problems {
            let kind = match &p {
                Problem::BadInventory { node, reason } => {
                    tracing::warn!(%node, %reason, "GPU inventory rejected; the node takes no pods");
                    "inventory"
                }
                Problem::BadHolding { pod, reason } => {
                    tracing::error!(%pod, %reason, "bound pod's assignment does not fit its node");
                    "holding"
                }
                Problem::BadReservations { node, reason } => {
                    tracing::warn!(%node, %reason, "unreadable reservations annotation");
                    "reservations"
                }
            };
            self.metrics
                .state_problems
                .get_or_create(&ProblemLabels { kind: kind.into() })
                .inc();
        }
    }

    /// The demand `p` counts with in the typical mix, read from its spec as
    /// the filter reads it; `None` for pods that ask for nothing gpupack
    /// places, cannot be sized (yet), or will never run.
    fn mix_demand(&self, p: &Pod) -> Option<placement::PodDemand> {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) || p.metadata.deletion_timestamp.is_some()
        {
            return None;
        }
        let needs = PodNeeds::from_pod_with(p, self.models.as_ref()).ok()?;
        (!needs.is_empty()).then(|| needs.demand(proto::resources::DEFAULT_MEMORY_UNIT_BYTES))
    }
}

/// Starts the three watches and the housekeeping timer.
pub fn spawn(client: Client, feeds: Feeds) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(watch_inventories(client.clone(), feeds.clone())),
        tokio::spawn(watch_pods(client.clone(), feeds.clone())),
        tokio::spawn(watch_pending(client, feeds.clone())),
        tokio::spawn(housekeeping(feeds)),
    ]
}

async fn watch_inventories(client: Client, feeds: Feeds) {
    let api: Api<GpuNodeInventory> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut buffer = Vec::new();
    while let Some(event) = stream.next().await {
        let now = (feeds.clock)();
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(o)) => buffer.push(o),
            Ok(Event::InitDone) => {
                let problems = feeds.write().replace_inventories(&buffer, now);
                buffer.clear();
                feeds.report(problems);
                feeds.readiness.inventories_listed();
                tracing::info!("GPU inventories listed");
            }
            Ok(Event::Apply(o)) => {
                let problems = feeds.write().apply_inventory(&o, now);
                feeds.report(problems);
            }
            Ok(Event::Delete(o)) => {
                tracing::info!(node = %o.name_any(), "GPU inventory deleted; the node takes no pods");
                feeds.write().remove_inventory(&o.name_any());
            }
            Err(e) => tracing::warn!(error = %e, "GPU inventory watch failed; retrying"),
        }
    }
}

async fn watch_pods(client: Client, feeds: Feeds) {
    let api: Api<Pod> = Api::all(client);
    // Only bound pods can hold GPUs.
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut buffer = Vec::new();
    let mut demands = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => {
                buffer.clear();
                demands.clear();
            }
            Ok(Event::InitApply(p)) => {
                if let (Some(key), Some(a)) = (pod_key(&p), assignment(&p)) {
                    if let Some(d) = feeds.mix_demand(&p) {
                        demands.push((key.uid.clone(), d));
                    }
                    let mut state = feeds.write();
                    state.note_priority(&key, priority(&p));
                    state.note_admitted(&key.uid, proto::pod::is_admitted(&p));
                    drop(state);
                    buffer.push((key, a));
                }
            }
            Ok(Event::InitDone) => {
                let mut state = feeds.write();
                state.replace_bound_demands(std::mem::take(&mut demands));
                let problems = state.replace_pods(std::mem::take(&mut buffer));
                drop(state);
                feeds.report(problems);
                feeds.readiness.pods_listed();
                tracing::info!("bound pods listed");
            }
            Ok(Event::Apply(p)) => {
                if let Some(key) = pod_key(&p) {
                    let held = assignment(&p);
                    let demand = held.as_ref().and_then(|_| feeds.mix_demand(&p));
                    let mut state = feeds.write();
                    state.note_bound_demand(&key.uid, demand);
                    let admitted = held.is_some() && proto::pod::is_admitted(&p);
                    if held.is_some() {
                        state.note_priority(&key, priority(&p));
                    }
                    let uid = key.uid.clone();
                    let problems = state.apply_pod(key, held);
                    state.note_admitted(&uid, admitted);
                    drop(state);
                    if admitted {
                        feeds.metrics.admitted(&uid);
                    }
                    feeds.report(problems);
                }
            }
            Ok(Event::Delete(p)) => {
                if let Some(key) = pod_key(&p) {
                    feeds.write().remove_pod(&key);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
        }
    }
}

/// Pods waiting for a node: the arrivals the typical pod mix keeps room
/// for. Only their demands are kept; what they hold comes from the bound
/// watch.
async fn watch_pending(client: Client, feeds: Feeds) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut buffer = Vec::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => buffer.clear(),
            Ok(Event::InitApply(p)) => {
                if let (Some(uid), Some(d)) = (p.metadata.uid.clone(), feeds.mix_demand(&p)) {
                    buffer.push((uid, d));
                }
            }
            Ok(Event::InitDone) => {
                feeds
                    .write()
                    .replace_pending_demands(std::mem::take(&mut buffer));
                tracing::info!("pending pods listed");
            }
            Ok(Event::Apply(p)) => {
                if let Some(uid) = p.metadata.uid.as_deref() {
                    let demand = feeds.mix_demand(&p);
                    feeds.write().note_pending_demand(uid, demand);
                }
            }
            // Bound (the bound watch takes it on) or deleted.
            Ok(Event::Delete(p)) => {
                if let Some(uid) = p.metadata.uid.as_deref() {
                    feeds.write().note_pending_demand(uid, None);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pending pod watch failed; retrying"),
        }
    }
}

/// The pod's priority, as admission resolved it from its PriorityClass.
fn priority(p: &Pod) -> Option<i32> {
    p.spec.as_ref().and_then(|s| s.priority)
}

/// The assignment a pod holds, logging unreadable ones.
fn assignment(p: &Pod) -> Option<proto::assignment::PodAssignment> {
    match held(p) {
        Held::Assignment(a) => Some(a),
        Held::Malformed(reason) => {
            tracing::warn!(pod = %p.name_any(), namespace = ?p.namespace(), %reason, "assignment annotation unreadable; the pod holds nothing");
            None
        }
        Held::Nothing => None,
    }
}

/// Expires lapsed reservations and, when pods came or went, re-derives the
/// typical pod mix, every second: arrivals reach the measure within a
/// second, however fast they come.
async fn housekeeping(feeds: Feeds) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = (feeds.clock)();
        let mut s = feeds.write();
        s.expire(now);
        s.refresh_typical_if_changed();
    }
}

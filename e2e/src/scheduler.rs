//! A scheduler driver that replays kube-scheduler's calling sequence for
//! one profile with one extender, as configured in the scheduler ConfigMap of
//! `daemonset/base/gpupack.yaml` (the chart's defaults):
//!
//! 1. Only pods whose `schedulerName` is the profile's are scheduled, one
//!    scheduling cycle at a time, oldest first; a pod that failed waits out
//!    a per-pod exponential backoff before its next attempt. Pods and
//!    nodes are read as kube-scheduler's informers hold them: lists with
//!    `resourceVersion=0`, which the API server answers from its watch
//!    cache, never consistent lists.
//! 2. In-tree filtering: the node is Ready and schedulable, its labels
//!    match the pod's `nodeSelector` (`NodeAffinity`), and every
//!    resource the pod requests fits `allocatable` minus what the pods on
//!    the node (and pods assumed there) request (`NodeResourcesFit`).
//!    As kube-scheduler, it starts where the previous cycle stopped and
//!    stops once [`feasible_nodes_to_find`] nodes fit (the adaptive
//!    `percentageOfNodesToScore`); only those go to the extender.
//! 3. The extender is called only if the pod requests or limits one of its
//!    `managedResources`. Filter gets the JSON kube-scheduler sends with
//!    `nodeCacheCapable: true` (`Pod`, `Nodes: null`, `NodeNames`); every
//!    returned name must have been sent; an `Error` or a non-200 fails the
//!    cycle.
//! 4. With one feasible node, prioritize is skipped. Otherwise the
//!    extender's scores count `score × weight × 10`; prioritize errors are
//!    ignored. The highest total wins, ties broken at random.
//! 5. The pod is assumed on the node and bound asynchronously through the
//!    extender's bind verb (or a plain Binding when no extender is
//!    interested), within the extender's `httpTimeout`; the next pod is
//!    filtered while binds are in flight. A failed bind forgets the
//!    assumption, records `FailedScheduling` ("binding rejected: ...") and
//!    puts the pod into backoff, as kube-scheduler does with a pod whose
//!    cycle ended in an error. The driver's own API writes (Bindings,
//!    status) can be held to kube-scheduler's client rate limit.
//! 6. A failed cycle records `FailedScheduling` with kube-scheduler's
//!    "0/N nodes are available: ..." message, as an Event on the pod, and
//!    sets the pod's `PodScheduled` condition (`Unschedulable`, or
//!    `SchedulerError` when the extender could not be reached).
//! 7. A pod failed by a scheduler error waits in the unschedulable pool
//!    (kube-scheduler before queueing hints): it is tried again when the pod
//!    itself is updated, when the cluster changes (a node, or a pod bound
//!    or deleted), or when the pool is flushed after `unschedulable_flush`
//!    (kube-scheduler: 5 minutes).
//!
//! Not modelled: in-tree scoring plugins (their scores count 0 here, so the
//! extender alone ranks nodes), preemption, taints, `affinity` and the
//! other in-tree filters, and gang/queueing-hint machinery.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use proto::extender::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult, HostPriority,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::extender_client::ExtenderClient;
use crate::manifests::Extender;

/// The manifests gpupack ships with default values; its scheduler
/// ConfigMap holds the configuration the driver follows.
pub const SHIPPED_MANIFESTS: &str = include_str!("../../daemonset/base/gpupack.yaml");

/// With [`DriverOptions::sequential_binds`], how long the driver lets
/// watches deliver a pod's admission before the next cycle.
pub const ADMISSION_SETTLE: Duration = Duration::from_millis(50);

/// kube-scheduler's `MaxNodeScore / MaxExtenderPriority`.
const EXTENDER_SCORE_SCALE: i64 = 10;

/// How the driver runs.
#[derive(Clone, Debug)]
pub struct DriverOptions {
    pub scheduler_name: String,
    /// The extender entry of the configuration (verbs, weight, resources).
    pub extender: Extender,
    /// Where this driver reaches its extender (the configuration's
    /// `urlPrefix`, with the host and port of the local process).
    pub extender_url: String,
    /// First wait after a failed attempt (kube-scheduler: 1 s), doubled per
    /// failure up to `max_backoff` (kube-scheduler: 10 s).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How often the driver looks for pending pods.
    pub poll: Duration,
    /// How long a pod failed by a scheduler error waits in the
    /// unschedulable pool when nothing moves it (kube-scheduler's
    /// `podMaxInUnschedulablePodsDuration`, 5 minutes).
    pub unschedulable_flush: Duration,
    /// Client-side rate limit of the driver's own API writes (Bindings of
    /// the default binder, status updates), as client-go's token bucket:
    /// `qps` a second, up to `burst` at once. kube-scheduler's
    /// `clientConnection` defaults to 50 and 100. `None`: unlimited.
    pub client_rate: Option<ClientRate>,
    /// Each bind is answered, and a bound pod admitted by its kubelet
    /// (up to 30 s) and [`ADMISSION_SETTLE`] passed for watches to carry
    /// that to every component, before the next scheduling cycle starts. As
    /// kube-scheduler, the driver otherwise filters the next pod while
    /// binds run and kubelets admit, and what the extender has seen by then
    /// is a matter of timing; waiting makes placements depend on the pod
    /// order and the seed alone, for replays that compare placements.
    pub sequential_binds: bool,
    pub seed: u64,
}

/// A client-go rate limit: `qps` requests a second on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientRate {
    pub qps: f64,
    pub burst: u32,
}

impl ClientRate {
    /// kube-scheduler's default `clientConnection` (qps 50, burst 100).
    pub const KUBE_SCHEDULER: ClientRate = ClientRate {
        qps: 50.0,
        burst: 100,
    };
}

impl DriverOptions {
    /// The shipped configuration's first profile and extender, reached at
    /// `extender_url`, with backoffs shortened for tests.
    pub fn shipped(extender_url: &str) -> Result<DriverOptions> {
        let objects = crate::manifests::parse_documents(SHIPPED_MANIFESTS)
            .context("parsing daemonset/base/gpupack.yaml")?;
        let config = crate::manifests::scheduler_config(&objects)?;
        config.validate()?;
        let extender = config
            .extenders
            .first()
            .cloned()
            .context("the shipped scheduler configuration has no extender")?;
        let scheduler_name = config
            .profiles
            .first()
            .map(|p| p.scheduler_name.clone())
            .context("the shipped scheduler configuration has no profile")?;
        Ok(DriverOptions {
            scheduler_name,
            extender,
            extender_url: extender_url.to_string(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            poll: Duration::from_millis(50),
            unschedulable_flush: Duration::from_secs(300),
            client_rate: None,
            sequential_binds: false,
            seed: 1,
        })
    }

    /// The extender entry's `httpTimeout` (kube-scheduler's default: 5 s).
    pub fn http_timeout(&self) -> Result<Duration> {
        let secs = crate::manifests::duration(self.extender.http_timeout.as_deref(), 5.0)
            .context("the extender's httpTimeout")?;
        Ok(Duration::from_secs_f64(secs))
    }

    /// The configuration's urlPrefix path (`/gpupack`).
    pub fn url_path(extender: &Extender) -> String {
        let rest = extender
            .url_prefix
            .split_once("://")
            .map_or(extender.url_prefix.as_str(), |(_, r)| r);
        rest.find('/').map_or(String::new(), |i| {
            rest[i..].trim_end_matches('/').to_string()
        })
    }
}

/// What the driver did, for assertions and the demo's report.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub cycles: u64,
    pub filter_calls: u64,
    pub prioritize_calls: u64,
    pub prioritize_skipped: u64,
    pub bind_calls: u64,
    pub binds_ok: u64,
    pub bind_errors: u64,
    /// Failed binds by cause.
    pub rejections: Rejections,
    /// When the latest successful bind returned.
    pub last_bound: Option<Instant>,
    pub extender_errors: u64,
    /// Latest FailedScheduling message per pod (`namespace/name`).
    pub failed_scheduling: BTreeMap<String, String>,
    /// Every FailedScheduling message, oldest first.
    pub failures: Vec<(String, String)>,
}

/// Why a bind failed, told from kube-scheduler's error text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectionCause {
    /// The extender answered 408, or not within `httpTimeout`.
    Timeout,
    /// The extender waits for kubelet to admit another pod on the node
    /// ("... is still admitting ...").
    StillAdmitting,
    /// The pod no longer fits the node ("... no longer fits ...").
    NoLongerFits,
    /// The extender lost the races for the node ("lost N races").
    Contended,
    Other,
}

impl RejectionCause {
    /// Classifies a failed bind.
    pub fn of(e: &anyhow::Error) -> RejectionCause {
        let timed_out = e.chain().any(|c| {
            c.is::<tokio::time::error::Elapsed>()
                || c.downcast_ref::<crate::extender_client::HttpStatusError>()
                    .is_some_and(|h| h.status == http::StatusCode::REQUEST_TIMEOUT)
        });
        if timed_out {
            return RejectionCause::Timeout;
        }
        let text = format!("{e:#}");
        if text.contains("is still admitting") {
            RejectionCause::StillAdmitting
        } else if text.contains("no longer fits") {
            RejectionCause::NoLongerFits
        } else if text.contains("lost ") && text.contains(" races") {
            RejectionCause::Contended
        } else {
            RejectionCause::Other
        }
    }
}

/// Failed binds, counted by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    pub timeouts: u64,
    pub still_admitting: u64,
    pub no_longer_fits: u64,
    pub contended: u64,
    pub other: u64,
}

impl Rejections {
    pub fn count(&mut self, cause: RejectionCause) {
        let n = match cause {
            RejectionCause::Timeout => &mut self.timeouts,
            RejectionCause::StillAdmitting => &mut self.still_admitting,
            RejectionCause::NoLongerFits => &mut self.no_longer_fits,
            RejectionCause::Contended => &mut self.contended,
            RejectionCause::Other => &mut self.other,
        };
        *n += 1;
    }

    pub fn total(&self) -> u64 {
        self.timeouts + self.still_admitting + self.no_longer_fits + self.contended + self.other
    }
}

/// client-go's token bucket, shared by the driver's writers: each request
/// takes a token, waiting for it when none is left.
#[derive(Clone, Default)]
struct RateLimiter(Option<Arc<Mutex<Bucket>>>);

struct Bucket {
    rate: ClientRate,
    /// May fall below 0: requests already promised the coming tokens.
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    fn new(rate: Option<ClientRate>) -> RateLimiter {
        RateLimiter(rate.filter(|r| r.qps > 0.0).map(|rate| {
            Arc::new(Mutex::new(Bucket {
                rate,
                tokens: f64::from(rate.burst.max(1)),
                at: Instant::now(),
            }))
        }))
    }

    async fn wait(&self) {
        let Some(bucket) = &self.0 else { return };
        let wait = {
            let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(b.at).as_secs_f64() * b.rate.qps;
            b.tokens = (b.tokens + refill).min(f64::from(b.rate.burst.max(1)));
            b.at = now;
            b.tokens -= 1.0;
            (-b.tokens).max(0.0) / b.rate.qps
        };
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

/// A running driver; stops when dropped.
pub struct SchedulerDriver {
    stats: Arc<Mutex<Stats>>,
    task: JoinHandle<()>,
}

impl SchedulerDriver {
    pub fn start(client: kube::Client, options: DriverOptions) -> SchedulerDriver {
        let stats = Arc::new(Mutex::new(Stats::default()));
        let timeout = options.http_timeout().unwrap_or(Duration::from_secs(5));
        let driver = Driver {
            client,
            extender: ExtenderClient::new(&options.extender_url, timeout),
            limiter: RateLimiter::new(options.client_rate),
            options,
            stats: stats.clone(),
            assumed: Arc::new(Mutex::new(HashMap::new())),
            backoff: Arc::new(Mutex::new(HashMap::new())),
            rng: ChaCha8Rng::seed_from_u64(0),
            next_start: 0,
        };
        let task = tokio::spawn(driver.run());
        SchedulerDriver { stats, task }
    }

    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for SchedulerDriver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A pod assumed on a node while its bind runs (kube-scheduler's cache).
#[derive(Clone, Debug)]
struct Assumed {
    node: String,
    requests: BTreeMap<String, f64>,
    /// The bind is still running.
    binding: bool,
}

struct Backoff {
    failures: u32,
    until: Instant,
    /// Set when a scheduler error put the pod in the unschedulable pool.
    parked: Option<Parked>,
}

/// A pod in the unschedulable pool, with what would move it out.
struct Parked {
    since: Instant,
    /// The pod as the scheduler saw it (status left out): an update moves it.
    pod: u64,
    /// The cluster as the scheduler saw it: a change moves it.
    cluster: u64,
}

/// A failure of the scheduler itself (the extender unreachable), not a
/// verdict that the pod does not fit: kube-scheduler's `SchedulerError`.
#[derive(Debug)]
struct SchedulerError(String);

impl std::fmt::Display for SchedulerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SchedulerError {}

/// A pod without its status, hashed: what kube-scheduler's queue compares
/// to tell an update that may change the outcome.
fn pod_fingerprint(pod: &Pod) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut p = pod.clone();
    p.status = None;
    p.metadata.resource_version = None;
    p.metadata.managed_fields = None;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&p).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The nodes and where pods are bound, hashed: cluster events that move
/// pods out of the unschedulable pool.
fn cluster_fingerprint(pods: &[Pod], nodes: &[Node]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for n in nodes {
        n.metadata.name.hash(&mut h);
        n.metadata.resource_version.hash(&mut h);
    }
    for p in pods {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_ref()) {
            p.metadata.uid.hash(&mut h);
            node.hash(&mut h);
        }
    }
    h.finish()
}

struct Driver {
    client: kube::Client,
    extender: ExtenderClient,
    limiter: RateLimiter,
    options: DriverOptions,
    stats: Arc<Mutex<Stats>>,
    assumed: Arc<Mutex<HashMap<String, Assumed>>>,
    /// Per pod uid; bind tasks add to it when a bind fails.
    backoff: Arc<Mutex<HashMap<String, Backoff>>>,
    rng: ChaCha8Rng,
    /// Where the next cycle's filtering starts (kube-scheduler's
    /// `nextStartNodeIndex`), so that cycles spread over all nodes.
    next_start: usize,
}

/// kube-scheduler's `numFeasibleNodesToFind` with the default (adaptive)
/// `percentageOfNodesToScore`: filtering stops once this many nodes fit,
/// and only they go to the extenders. All nodes below 100; else
/// `50 - nodes/125` percent of them (at least 5 %), and never under 100.
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if nodes < MIN_FEASIBLE {
        return nodes;
    }
    let percentage = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * percentage / 100).max(MIN_FEASIBLE)
}

/// Counts a failure of the pod and sets its backoff: `initial` doubled per
/// failure up to `max`. Returns how many failures the pod has had.
fn back_off(
    backoff: &Mutex<HashMap<String, Backoff>>,
    options: &DriverOptions,
    uid: &str,
    parked: Option<Parked>,
) -> u32 {
    let mut all = backoff.lock().unwrap_or_else(|e| e.into_inner());
    let b = all.entry(uid.to_string()).or_insert(Backoff {
        failures: 0,
        until: Instant::now(),
        parked: None,
    });
    b.parked = parked;
    b.failures += 1;
    let wait = options
        .initial_backoff
        .saturating_mul(1 << (b.failures - 1).min(16))
        .min(options.max_backoff);
    b.until = Instant::now() + wait;
    b.failures
}

/// What kube-scheduler writes when a cycle fails: the FailedScheduling
/// Event and the `PodScheduled` condition, on the first failure and then
/// on every power of two (its event recorder aggregates repeats; this
/// keeps the API quiet).
async fn report_failure(
    client: &kube::Client,
    limiter: &RateLimiter,
    pod: &Pod,
    failures: u32,
    reason: &str,
    message: &str,
) {
    if failures.is_power_of_two() {
        let _ = record_event(client, pod, "FailedScheduling", message).await;
        limiter.wait().await;
        let _ = set_pod_scheduled_false(client, pod, reason, message).await;
    }
}

/// Every node's use, summed over the bound pods that have not finished.
fn usage_by_node(pods: &[Pod]) -> HashMap<&str, BTreeMap<String, f64>> {
    let mut used: HashMap<&str, BTreeMap<String, f64>> = HashMap::new();
    for p in pods.iter().filter(|p| !proto::pod::is_finished(p)) {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        let entry = used.entry(node).or_default();
        for (r, v) in pod_requests(p) {
            *entry.entry(r).or_insert(0.0) += v;
        }
    }
    used
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A quantity as a number; one the API server would not store counts 0.
fn amount(text: &str) -> f64 {
    proto::quantity::Quantity::parse(text).map_or(0.0, |q| q.as_f64())
}

/// The pod's effective requests: requests, or limits where a request is
/// missing (the API server's defaulting), summed over containers.
pub fn pod_requests(pod: &Pod) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        let Some(r) = &c.resources else { continue };
        let mut merged = r.limits.clone().unwrap_or_default();
        merged.extend(r.requests.clone().unwrap_or_default());
        for (name, q) in merged {
            *out.entry(name).or_insert(0.0) += amount(&q.0);
        }
    }
    out
}

/// Every `nodeSelector` entry of the pod is a label of the node.
fn selector_matches(pod: &Pod, node: &Node) -> bool {
    let Some(selector) = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref()) else {
        return true;
    };
    let labels = node.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn node_ready(node: &Node) -> Result<(), &'static str> {
    let spec_unschedulable = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if spec_unschedulable {
        return Err("node(s) were unschedulable");
    }
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    if ready {
        Ok(())
    } else {
        Err("node(s) were not ready")
    }
}

impl Driver {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(mut self) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::debug!(error = %format!("{e:#}"), "scheduling pass failed; retrying");
            }
            tokio::time::sleep(self.options.poll).await;
        }
    }

    /// One look at the queue: every pending pod whose backoff has passed
    /// gets a scheduling cycle.
    async fn pass(&mut self) -> Result<()> {
        // As the informers' caches: resourceVersion=0, from the watch cache.
        let pods = Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default().match_any())
            .await?
            .items;
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default().match_any())
            .await?
            .items;
        {
            // A bound or deleted pod leaves the assumed set (the cache sees
            // the bind), unless its bind is still running.
            let bound: HashMap<String, bool> = pods
                .iter()
                .filter_map(|p| {
                    Some((
                        p.metadata.uid.clone()?,
                        p.spec.as_ref()?.node_name.is_some(),
                    ))
                })
                .collect();
            let mut assumed = self.assumed.lock().unwrap_or_else(|e| e.into_inner());
            assumed.retain(|uid, a| a.binding || bound.get(uid) == Some(&false));
        }
        let mut pending: Vec<&Pod> = pods
            .iter()
            .filter(|p| {
                let spec = p.spec.as_ref();
                spec.and_then(|s| s.scheduler_name.as_deref()) == Some(&self.options.scheduler_name)
                    && spec.and_then(|s| s.node_name.as_ref()).is_none()
                    && p.metadata.deletion_timestamp.is_none()
                    && !proto::pod::is_finished(p)
            })
            .collect();
        pending.sort_by_key(|p| (p.metadata.creation_timestamp.clone().map(|t| t.0), key(p)));
        let now = Instant::now();
        let cluster = cluster_fingerprint(&pods, &nodes);
        let used = usage_by_node(&pods);
        for pod in pending {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            if self
                .assumed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&uid)
            {
                continue;
            }
            let waiting = {
                let backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
                backoff.get(&uid).is_some_and(|b| {
                    b.until > now
                        || b.parked.as_ref().is_some_and(|parked| {
                            parked.pod == pod_fingerprint(pod)
                                && parked.cluster == cluster
                                && now.duration_since(parked.since)
                                    < self.options.unschedulable_flush
                        })
                })
            };
            if waiting {
                continue;
            }
            self.stats().cycles += 1;
            match self.schedule_one(pod, &used, &nodes).await {
                Ok(()) => {}
                Err(reason) => {
                    let parked =
                        reason
                            .downcast_ref::<SchedulerError>()
                            .is_some()
                            .then(|| Parked {
                                since: Instant::now(),
                                pod: pod_fingerprint(pod),
                                cluster,
                            });
                    self.failed(pod, &format!("{reason:#}"), parked).await
                }
            }
        }
        Ok(())
    }

    fn interested(&self, pod: &Pod) -> bool {
        let managed: Vec<&str> = self
            .options
            .extender
            .managed_resources
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        if managed.is_empty() {
            return true;
        }
        pod.spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .any(|c| {
                c.resources.as_ref().is_some_and(|r| {
                    r.requests
                        .iter()
                        .chain(r.limits.iter())
                        .flatten()
                        .any(|(name, _)| managed.contains(&name.as_str()))
                })
            })
    }

    /// In-tree filtering: NodeUnschedulable, node readiness, NodeAffinity
    /// (`nodeSelector` only), NodeResourcesFit.
    fn in_tree_filter(
        &mut self,
        pod: &Pod,
        used_by_node: &HashMap<&str, BTreeMap<String, f64>>,
        nodes: &[Node],
    ) -> (Vec<String>, Vec<String>) {
        let want = pod_requests(pod);
        let assumed = self
            .assumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut feasible = Vec::new();
        let mut reasons = Vec::new();
        let to_find = feasible_nodes_to_find(nodes.len());
        let start = if nodes.is_empty() {
            0
        } else {
            self.next_start % nodes.len()
        };
        let mut processed = 0;
        for node in nodes[start..].iter().chain(&nodes[..start]) {
            if feasible.len() >= to_find {
                break;
            }
            processed += 1;
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            if let Err(r) = node_ready(node) {
                reasons.push(r.to_string());
                continue;
            }
            if !selector_matches(pod, node) {
                // NodeAffinity's ErrReasonPod.
                reasons.push("node(s) didn't match Pod's node affinity/selector".to_string());
                continue;
            }
            let allocatable = node
                .status
                .as_ref()
                .and_then(|s| s.allocatable.clone())
                .unwrap_or_default();
            let mut used = used_by_node.get(name.as_str()).cloned().unwrap_or_default();
            for a in assumed.values().filter(|a| a.node == name) {
                for (r, v) in &a.requests {
                    *used.entry(r.clone()).or_insert(0.0) += v;
                }
            }
            let short = want.iter().find(|(r, v)| {
                **v > 0.0 && {
                    let have = allocatable.get(*r).map(|q| amount(&q.0)).unwrap_or(0.0);
                    have - used.get(*r).copied().unwrap_or(0.0) < **v
                }
            });
            match short {
                Some((r, _)) => reasons.push(format!("Insufficient {r}")),
                None => feasible.push(name),
            }
        }
        if !nodes.is_empty() {
            self.next_start = (start + processed) % nodes.len();
        }
        (feasible, reasons)
    }

    async fn schedule_one(
        &mut self,
        pod: &Pod,
        used: &HashMap<&str, BTreeMap<String, f64>>,
        nodes: &[Node],
    ) -> Result<()> {
        let total = nodes.len();
        let (mut feasible, mut reasons) = self.in_tree_filter(pod, used, nodes);
        let interested = self.interested(pod);
        if interested && !feasible.is_empty() && !self.options.extender.filter_verb.is_empty() {
            let args = ExtenderArgs {
                pod: pod.clone(),
                nodes: None,
                node_names: Some(feasible.clone()),
            };
            self.stats().filter_calls += 1;
            let reply: ExtenderFilterResult = match self
                .extender
                .call(&self.options.extender.filter_verb, &args)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    self.stats().extender_errors += 1;
                    return Err(anyhow::Error::new(SchedulerError(format!(
                        "extender filter: {e:#}"
                    ))));
                }
            };
            if !reply.error.is_empty() {
                self.stats().extender_errors += 1;
                bail!("extender filter: {}", reply.error);
            }
            let names = match (reply.node_names, reply.nodes) {
                (Some(n), _) => n,
                (None, Some(list)) => list
                    .items
                    .into_iter()
                    .filter_map(|n| n.metadata.name)
                    .collect(),
                (None, None) => Vec::new(),
            };
            if let Some(stray) = names.iter().find(|n| !feasible.contains(n)) {
                bail!(
                    "extender claims a filtered node {stray} which is not found in the input node list"
                );
            }
            for (_, reason) in reply
                .failed_nodes
                .iter()
                .chain(&reply.failed_and_unresolvable_nodes)
            {
                reasons.push(reason.clone());
            }
            feasible = names;
        }
        if feasible.is_empty() {
            bail!("{}", unavailable(total, &reasons));
        }
        let best = if feasible.len() == 1 {
            self.stats().prioritize_skipped += 1;
            feasible[0].clone()
        } else {
            let mut totals: BTreeMap<&str, i64> =
                feasible.iter().map(|n| (n.as_str(), 0)).collect();
            if interested && !self.options.extender.prioritize_verb.is_empty() {
                let args = ExtenderArgs {
                    pod: pod.clone(),
                    nodes: None,
                    node_names: Some(feasible.clone()),
                };
                self.stats().prioritize_calls += 1;
                match self
                    .extender
                    .call::<_, Vec<HostPriority>>(&self.options.extender.prioritize_verb, &args)
                    .await
                {
                    Ok(scores) => {
                        for s in scores {
                            if let Some(t) = totals.get_mut(s.host.as_str()) {
                                *t += s.score * self.options.extender.weight * EXTENDER_SCORE_SCALE;
                            }
                        }
                    }
                    // kube-scheduler drops a failed prioritize silently.
                    Err(e) => tracing::debug!(error = %e, "prioritize failed; ignored"),
                }
            }
            self.select_host(&totals)
        };
        let bind = self.assume_and_bind(pod, &best, interested);
        if self.options.sequential_binds
            && let Some(bind) = bind
        {
            // A panicked bind task is reported by the pod staying pending.
            let _ = bind.await;
            self.await_admission(pod).await;
        }
        Ok(())
    }

    /// The highest score; ties broken uniformly at random (reservoir
    /// sampling, as kube-scheduler's `selectHost`).
    fn select_host(&mut self, totals: &BTreeMap<&str, i64>) -> String {
        let mut best: Option<(&str, i64)> = None;
        let mut ties = 0u32;
        for (node, score) in totals {
            match best {
                Some((_, b)) if *score < b => {}
                Some((_, b)) if *score == b => {
                    ties += 1;
                    if self.rng.random_range(0..ties + 1) == 0 {
                        best = Some((node, *score));
                    }
                }
                _ => {
                    best = Some((node, *score));
                    ties = 0;
                }
            }
        }
        best.map(|(n, _)| n.to_string()).unwrap_or_default()
    }

    /// Waits (up to 30 s) until `pod`, if bound, has its kubelet's
    /// admission status, then [`ADMISSION_SETTLE`].
    async fn await_admission(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match api.get_opt(&name).await {
                Ok(Some(p))
                    if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                        && !proto::pod::is_admitted(&p) => {}
                Ok(_) => {
                    tokio::time::sleep(ADMISSION_SETTLE).await;
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "reading a bound pod; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn assume_and_bind(
        &mut self,
        pod: &Pod,
        node: &str,
        interested: bool,
    ) -> Option<JoinHandle<()>> {
        let uid = pod.metadata.uid.clone()?;
        self.assumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                uid.clone(),
                Assumed {
                    node: node.to_string(),
                    requests: pod_requests(pod),
                    binding: true,
                },
            );
        let use_extender = interested && !self.options.extender.bind_verb.is_empty();
        let args = ExtenderBindingArgs {
            pod_name: pod.metadata.name.clone().unwrap_or_default(),
            pod_namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            pod_uid: uid.clone(),
            node: node.to_string(),
        };
        let extender = self.extender.clone();
        let verb = self.options.extender.bind_verb.clone();
        let client = self.client.clone();
        let assumed = self.assumed.clone();
        let stats = self.stats.clone();
        let pod = pod.clone();
        let backoff = self.backoff.clone();
        let options = self.options.clone();
        let limiter = self.limiter.clone();
        Some(tokio::spawn(async move {
            stats.lock().unwrap_or_else(|e| e.into_inner()).bind_calls += 1;
            let result = if use_extender {
                match extender
                    .call::<_, ExtenderBindingResult>(&verb, &args)
                    .await
                {
                    Ok(r) if r.error.is_empty() => Ok(()),
                    Ok(r) => Err(anyhow::anyhow!("extender bind: {}", r.error)),
                    Err(e) => Err(e.context("extender bind")),
                }
            } else {
                limiter.wait().await;
                default_bind(&client, &args).await
            };
            let failure = {
                let mut a = assumed.lock().unwrap_or_else(|e| e.into_inner());
                let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(()) => {
                        s.binds_ok += 1;
                        s.last_bound = Some(Instant::now());
                        if let Some(entry) = a.get_mut(&args.pod_uid) {
                            entry.binding = false;
                        }
                        None
                    }
                    Err(e) => {
                        s.bind_errors += 1;
                        s.rejections.count(RejectionCause::of(&e));
                        // kube-scheduler sends a pod whose binding cycle
                        // failed to the backoff queue; set before the
                        // assumption goes, so no pass sees the pod free.
                        let failures = back_off(&backoff, &options, &args.pod_uid, None);
                        a.remove(&args.pod_uid);
                        let msg = format!("binding rejected: {e:#}");
                        tracing::debug!(pod = %key(&pod), %msg, "bind failed");
                        s.failed_scheduling.insert(key(&pod), msg.clone());
                        s.failures.push((key(&pod), msg.clone()));
                        Some((msg, failures))
                    }
                }
            };
            if let Some((msg, failures)) = failure {
                report_failure(&client, &limiter, &pod, failures, "SchedulerError", &msg).await;
            }
        }))
    }

    async fn failed(&mut self, pod: &Pod, message: &str, parked: Option<Parked>) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let reason = if parked.is_some() {
            "SchedulerError"
        } else {
            "Unschedulable"
        };
        let failures = back_off(&self.backoff, &self.options, &uid, parked);
        {
            let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            s.failed_scheduling.insert(key(pod), message.to_string());
            s.failures.push((key(pod), message.to_string()));
        }
        tracing::debug!(pod = %key(pod), message, "FailedScheduling");
        report_failure(&self.client, &self.limiter, pod, failures, reason, message).await;
    }
}

/// The `PodScheduled` condition kube-scheduler writes on a failed cycle.
async fn set_pod_scheduled_false(
    client: &kube::Client,
    pod: &Pod,
    reason: &str,
    message: &str,
) -> Result<()> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }]}});
    Api::<Pod>::namespaced(client.clone(), &ns)
        .patch_status(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// kube-scheduler's summary of why no node fits.
fn unavailable(total: usize, reasons: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r.as_str()).or_insert(0) += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

/// DefaultBinder: a plain Binding.
async fn default_bind(client: &kube::Client, args: &ExtenderBindingArgs) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.pod_namespace);
    let binding = proto::pod::binding(
        &args.pod_namespace,
        &args.pod_name,
        &args.pod_uid,
        &args.node,
        None,
    );
    let _: serde_json::Value = pods
        .create_subresource("binding", &args.pod_name, &PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// A core/v1 Event on a pod, as the scheduler's recorder writes it.
pub async fn record_event(
    client: &kube::Client,
    pod: &Pod,
    reason: &str,
    message: &str,
) -> Result<()> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let event: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
                            "uid": pod.metadata.uid},
        "reason": reason,
        "message": message,
        "type": "Warning",
        "source": {"component": "gpupack-scheduler"},
        "reportingComponent": "gpupack-scheduler",
        "firstTimestamp": now.to_string(),
        "lastTimestamp": now.to_string(),
        "count": 1,
    }))?;
    Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &event)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_told_by_cause() {
        let of = |e: anyhow::Error| RejectionCause::of(&e.context("extender bind"));
        let status = |code: u16| crate::extender_client::HttpStatusError {
            url: "http://x/gpupack/bind".into(),
            status: http::StatusCode::from_u16(code).unwrap_or_default(),
            body: String::new(),
        };
        assert_eq!(of(status(408).into()), RejectionCause::Timeout);
        assert_eq!(of(status(500).into()), RejectionCause::Other);
        assert_eq!(
            of(anyhow::anyhow!(
                "extender bind: pod llm/a: node n is still admitting pod llm/b, whose ..."
            )),
            RejectionCause::StillAdmitting
        );
        assert_eq!(
            of(anyhow::anyhow!(
                "pod llm/a no longer fits on node n: no GPU"
            )),
            RejectionCause::NoLongerFits
        );
        assert_eq!(
            of(anyhow::anyhow!(
                "node n: lost 8 races to reserve GPUs for pod llm/a; retry"
            )),
            RejectionCause::Contended
        );
        let mut r = Rejections::default();
        r.count(RejectionCause::Timeout);
        r.count(RejectionCause::StillAdmitting);
        assert_eq!((r.timeouts, r.still_admitting, r.total()), (1, 1, 2));
    }

    #[tokio::test]
    async fn client_timeouts_count_as_timeouts() {
        let elapsed = tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>())
            .await
            .unwrap_err();
        let e = anyhow::Error::new(elapsed).context("http://x/gpupack/bind: no answer within 15s");
        assert_eq!(RejectionCause::of(&e), RejectionCause::Timeout);
    }

    #[tokio::test]
    async fn the_rate_limit_allows_a_burst_then_qps() {
        let limiter = RateLimiter::new(Some(ClientRate {
            qps: 100.0,
            burst: 10,
        }));
        let t = Instant::now();
        for _ in 0..10 {
            limiter.wait().await;
        }
        assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
        for _ in 0..20 {
            limiter.wait().await;
        }
        assert!(
            t.elapsed() >= Duration::from_millis(180),
            "{:?}",
            t.elapsed()
        );
    }
}

#[cfg(test)]
mod feasible_tests {
    use super::feasible_nodes_to_find;

    /// kube-scheduler's figures (`TestNumFeasibleNodesToFind`, default
    /// percentage).
    #[test]
    fn feasible_nodes_to_find_follows_kube_scheduler() {
        assert_eq!(feasible_nodes_to_find(10), 10);
        assert_eq!(feasible_nodes_to_find(99), 99);
        assert_eq!(feasible_nodes_to_find(200), 100);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(6000), 300);
        assert_eq!(feasible_nodes_to_find(10000), 500);
    }
}

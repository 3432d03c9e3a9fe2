//! The HTTP surface kube-scheduler and Prometheus talk to.
//!
//! - `POST {prefix}/filter`, `/prioritize`, `/bind`, `/preempt`: the
//!   extender verbs, in kube-scheduler's wire format (`proto::extender`).
//! - `GET /healthz` (the process serves), `/readyz` (the ledger is built
//!   from the API's initial lists), `/metrics` (Prometheus text).
//!
//! kube-scheduler treats any status but 200 as an error and does not show
//! the body, so the verbs answer problems with 200 and the reply's own
//! `Error` field, which it logs and reports on the pod.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use proto::clip::{MESSAGE_LIMIT, clip, clip_to};
use proto::extender::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult,
    ExtenderPreemptionArgs, ExtenderPreemptionResult, HostPriority, MetaPod, MetaVictims,
};
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;

use crate::bind::Binder;
use crate::cluster_state::ClusterState;
use crate::demand::PodNeeds;
use crate::events::{Events, PodEvent, Reason};
use crate::metrics::Metrics;
use crate::watch::Readiness;

/// What the handlers share.
pub struct App {
    pub state: Arc<RwLock<ClusterState>>,
    /// `None` where binding is not offered (benchmarks, filter-only setups).
    pub binder: Option<Binder>,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Sizes models outside the catalog without waiting on the network.
    pub models: Arc<dyn model_source::ModelLookup>,
    /// Evicts lower-priority pods for pods no GPU set fits; `None` where
    /// the extender does not preempt.
    pub preemptor: Option<crate::preemption::Preemptor>,
}

impl App {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, ClusterState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Limits of the HTTP layer.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body; a `nodeCacheCapable: false` filter call for
    /// thousands of nodes carries every Node object.
    pub body_bytes: usize,
    /// Longest a request may take before it is answered 408.
    pub timeout: Duration,
    /// How many requests may decode bodies and size pods at once.
    pub workers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes: 64 << 20,
            timeout: Duration::from_secs(4),
            workers: default_workers(),
        }
    }
}

/// One worker per core: the verbs' work is CPU-bound.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The router: the verbs under `prefix` (e.g. `/scheduler`, or empty).
pub fn router(app: Arc<App>, prefix: &str, limits: &Limits) -> Router {
    verbs_router(app.clone(), prefix, limits).merge(ops_router(app))
}

/// The extender verbs kube-scheduler calls, under `prefix`.
pub fn verbs_router(app: Arc<App>, prefix: &str, limits: &Limits) -> Router {
    let prefix = prefix.trim_end_matches('/');
    let verbs = Arc::new(Verbs {
        app,
        workers: Arc::new(Semaphore::new(limits.workers.max(1))),
        timeout: limits.timeout,
    });
    let timed = Router::new()
        .route(&format!("{prefix}/filter"), post(filter))
        .route(&format!("{prefix}/prioritize"), post(prioritize))
        .route(&format!("{prefix}/preempt"), post(preempt))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.timeout,
        ));
    // Bind keeps its own deadline (`BindConfig::deadline`): cut off from
    // outside, it could be dropped between its Binding and its answer.
    Router::new()
        .route(&format!("{prefix}/bind"), post(bind))
        .merge(timed)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .with_state(verbs)
}

/// The verbs' state: the shared [`App`], and the permits for their
/// CPU-bound work.
struct Verbs {
    app: Arc<App>,
    /// Decoding a body and sizing a pod run on the blocking pool, at most
    /// this many at once, so that a flood of heavy requests neither stalls
    /// the tasks that serve `/healthz` nor queues unbounded work.
    workers: Arc<Semaphore>,
    /// The request timeout, for bind's wait for a worker.
    timeout: Duration,
}

impl Verbs {
    /// Runs `work` on the blocking pool once a worker is free. The request
    /// timeout covers the wait and the work: when it fires, the caller's
    /// future is dropped and the client gets 408 at the deadline, not a late
    /// answer; work already started finishes in the background, still
    /// holding its permit, so abandoned work also counts against the cap.
    async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce(&App) -> R + Send + 'static,
    ) -> Result<R, Refusal> {
        let unavailable = |what: &str| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("extender is shutting down: {what}"),
                "unavailable",
            )
        };
        let permit = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| unavailable("no workers"))?;
        let app = self.app.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&app)
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "extender work failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "extender work failed".to_string(),
                "internal",
            )
        })
    }
}

/// Health, readiness and metrics, for kubelet's probes and Prometheus.
pub fn ops_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

fn parse<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, String> {
    // serde quotes the offending value, which may be megabytes long.
    serde_json::from_slice(body).map_err(|e| {
        let e = e.to_string();
        format!("malformed {what} request: {}", clip_to(&e, MESSAGE_LIMIT))
    })
}

const NOT_READY: &str = "GPU ledger is still being built from the API; retry";

async fn filter(State(verbs): State<Arc<Verbs>>, body: Bytes) -> Response {
    let start = Instant::now();
    match verbs.run(move |app| filter_reply(app, &body)).await {
        Ok((reply, outcome)) => {
            verbs
                .app
                .metrics
                .observe("filter", outcome, start.elapsed().as_secs_f64());
            Json(reply).into_response()
        }
        Err(refusal) => respond::<()>(&verbs.app, "filter", start, Err(refusal)),
    }
}

/// The filter answer and an outcome label.
pub fn filter_reply(app: &App, body: &[u8]) -> (ExtenderFilterResult, &'static str) {
    let args: ExtenderArgs = match parse(body, "filter") {
        Ok(a) => a,
        Err(e) => return (ExtenderFilterResult::error(e), "bad_request"),
    };
    if !app.readiness.is_ready() {
        return (ExtenderFilterResult::error(NOT_READY), "not_ready");
    }
    let names = args.node_names();
    let needs = match PodNeeds::from_pod_with(&args.pod, app.models.as_ref()) {
        // The bind that may follow assumes the pod's GPUs with these.
        Ok(n) if !n.is_empty() => {
            if let (Some(binder), Some(uid)) = (&app.binder, &args.pod.metadata.uid) {
                binder.sized_pods().remember(uid, &n);
            }
            n
        }
        Ok(n) => n,
        // Not the pod's fault, and soon resolved: every node fails for now
        // (retriable, unlike an unreadable request) and the next attempt
        // finds the model sized.
        Err(e) if e.is_retriable() => {
            let reason = e.to_string();
            if matches!(e, crate::demand::DemandError::ModelUnavailable { .. }) {
                emit(app, &args.pod, Reason::ModelUnavailable, &reason);
            }
            let all = names
                .iter()
                .map(|n| (n.to_string(), reason.clone()))
                .collect();
            return (
                ExtenderFilterResult::from_args(&args, Vec::new(), all, BTreeMap::new()),
                "model_pending",
            );
        }
        Err(e) => {
            // Copied once per candidate node: bounded, or a long name in
            // the pod times thousands of nodes is gigabytes of answer.
            let reason = clip_to(&e.to_string(), MESSAGE_LIMIT).to_string();
            emit(app, &args.pod, Reason::InvalidGpuRequest, &reason);
            let all = names
                .iter()
                .map(|n| (n.to_string(), reason.clone()))
                .collect();
            return (
                ExtenderFilterResult::from_args(&args, Vec::new(), BTreeMap::new(), all),
                "bad_request",
            );
        }
    };
    let mut outcome = app.read().filter(&needs, &names);
    let nominated = args
        .pod
        .metadata
        .uid
        .as_deref()
        .and_then(|uid| app.read().nomination_for(uid));
    match nominated {
        // A preemption freed GPUs for this pod: it goes there once the
        // victims are gone (their GPUs are promised to it meanwhile).
        Some((node, left)) if names.contains(&node.as_str()) => {
            if left.is_empty() {
                outcome.failed.remove(&node);
                outcome.unresolvable.remove(&node);
                if !outcome.feasible.contains(&node) {
                    outcome.feasible.push(node);
                }
            } else {
                outcome.feasible.retain(|n| *n != node);
                outcome.failed.insert(
                    node,
                    format!("waiting for {} preempted pod(s) to terminate", left.len()),
                );
            }
        }
        _ => {
            if outcome.feasible.is_empty()
                && !outcome.failed.is_empty()
                && let Some(p) = &app.preemptor
            {
                p.consider(&args.pod, &needs, outcome.failed.keys().cloned().collect());
            }
        }
    }
    let label = if outcome.feasible.is_empty() {
        if !names.is_empty() && outcome.failed.is_empty() {
            let sample: Vec<String> = outcome
                .unresolvable
                .iter()
                .take(3)
                .map(|(n, r)| format!("{}: {}", clip(n), clip(r)))
                .collect();
            emit(
                app,
                &args.pod,
                Reason::GpuUnplaceable,
                &format!(
                    "no candidate node can ever fit the pod's GPU request ({} nodes), e.g. {}",
                    names.len(),
                    sample.join("; ")
                ),
            );
        }
        "none_fit"
    } else {
        "ok"
    };
    (
        ExtenderFilterResult::from_args(
            &args,
            outcome.feasible,
            outcome.failed,
            outcome.unresolvable,
        ),
        label,
    )
}

fn emit(app: &App, pod: &Pod, reason: Reason, message: &str) {
    let m = &pod.metadata;
    let bounded = |s: &str| clip(s).to_string();
    app.events.emit(PodEvent {
        namespace: m
            .namespace
            .as_deref()
            .map_or_else(|| "default".into(), bounded),
        name: m.name.as_deref().map(bounded).unwrap_or_default(),
        uid: m.uid.as_deref().map(bounded).unwrap_or_default(),
        reason,
        message: clip_to(message, MESSAGE_LIMIT).to_string(),
    });
}

async fn prioritize(State(verbs): State<Arc<Verbs>>, body: Bytes) -> Response {
    let start = Instant::now();
    let reply = verbs.run(move |app| prioritize_reply(app, &body)).await;
    respond(&verbs.app, "prioritize", start, reply.and_then(|r| r))
}

/// The JSON answer or the plain HTTP error of a verb whose errors
/// kube-scheduler reads from the status, with the request's metrics.
fn respond<T: serde::Serialize>(
    app: &App,
    verb: &str,
    start: Instant,
    reply: Result<T, Refusal>,
) -> Response {
    let (status, reply, outcome) = match reply {
        Ok(r) => (StatusCode::OK, Json(r).into_response(), "ok"),
        Err((status, msg, outcome)) => (status, msg.into_response(), outcome),
    };
    app.metrics
        .observe(verb, outcome, start.elapsed().as_secs_f64());
    (status, reply).into_response()
}

/// Why a verb was not answered: status, message, metrics outcome.
pub type Refusal = (StatusCode, String, &'static str);

/// A verb's arguments and the pod's needs, or a refusal: a body that does
/// not parse, a pod whose requests are malformed, or an extender not ready.
fn accept<T: DeserializeOwned>(
    app: &App,
    body: &[u8],
    verb: &str,
    pod: impl FnOnce(&T) -> &Pod,
) -> Result<(T, PodNeeds), Refusal> {
    let args: T = parse(body, verb).map_err(|e| (StatusCode::BAD_REQUEST, e, "bad_request"))?;
    if !app.readiness.is_ready() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            NOT_READY.into(),
            "not_ready",
        ));
    }
    let needs = PodNeeds::from_pod_with(pod(&args), app.models.as_ref()).map_err(|e| {
        let message = clip_to(&e.to_string(), MESSAGE_LIMIT).to_string();
        if e.is_retriable() {
            (StatusCode::SERVICE_UNAVAILABLE, message, "model_pending")
        } else {
            (StatusCode::BAD_REQUEST, message, "bad_request")
        }
    })?;
    Ok((args, needs))
}

/// The prioritize answer. kube-scheduler ignores prioritize errors (the
/// scores are dropped), so errors are plain HTTP errors.
pub fn prioritize_reply(app: &App, body: &[u8]) -> Result<Vec<HostPriority>, Refusal> {
    let (args, needs) = accept(app, body, "prioritize", |a: &ExtenderArgs| &a.pod)?;
    Ok(app.read().prioritize(&needs, &args.node_names()))
}

async fn bind(State(verbs): State<Arc<Verbs>>, body: Bytes) -> Json<ExtenderBindingResult> {
    let start = Instant::now();
    let app = &verbs.app;
    let parsed = tokio::time::timeout(
        verbs.timeout,
        verbs.run(move |_| parse::<ExtenderBindingArgs>(&body, "bind")),
    )
    .await;
    let (error, outcome) = match parsed {
        Ok(Ok(Ok(args))) => bind_reply(app, &args).await,
        Ok(Ok(Err(e))) => (e, "bad_request"),
        Ok(Err((_, e, outcome))) => (e, outcome),
        Err(_) => (
            "extender is busy: no worker was free within the request timeout".into(),
            "timeout",
        ),
    };
    app.metrics
        .observe("bind", outcome, start.elapsed().as_secs_f64());
    Json(ExtenderBindingResult { error })
}

async fn bind_reply(app: &App, args: &ExtenderBindingArgs) -> (String, &'static str) {
    if !app.readiness.is_ready() {
        return (NOT_READY.into(), "not_ready");
    }
    let Some(binder) = &app.binder else {
        return ("this extender does not bind".into(), "bad_request");
    };
    let pod = format!("{}/{}", clip(&args.pod_namespace), clip(&args.pod_name));
    let node = clip(&args.node);
    match binder.bind(args).await {
        Ok(bound) => {
            app.metrics
                .bind_conflicts
                .inc_by(u64::from(bound.conflicts));
            if let Some(a) = &bound.assignment {
                app.metrics.pods_placed.inc();
                tracing::info!(%pod, %node, assignment = %a.to_json(), "bound");
            }
            (String::new(), "ok")
        }
        Err(e) => {
            let error = clip_to(&e.to_string(), MESSAGE_LIMIT).to_string();
            tracing::info!(%pod, %node, %error, "bind failed");
            if let crate::bind::BindError::Contended { attempts, .. } = &e {
                app.metrics.bind_conflicts.inc_by(u64::from(*attempts));
            }
            (error, e.outcome())
        }
    }
}

async fn preempt(State(verbs): State<Arc<Verbs>>, body: Bytes) -> Response {
    let start = Instant::now();
    let reply = verbs.run(move |app| preempt_reply(app, &body)).await;
    respond(&verbs.app, "preempt", start, reply.and_then(|r| r))
}

/// Preemption: for each candidate node, kube-scheduler's victims trimmed to
/// the cheapest set whose eviction frees GPUs the pod fits on (fewest and
/// lowest-priority victims, least GPU memory disrupted); a node where even
/// all of them free too little is dropped. Victims are only ever removed,
/// never added, and never one of equal or higher priority than the pod.
pub fn preempt_reply(app: &App, body: &[u8]) -> Result<ExtenderPreemptionResult, Refusal> {
    let (args, needs) = accept(app, body, "preempt", |a: &ExtenderPreemptionArgs| &a.pod)?;
    let priority = args.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    let candidates: BTreeMap<String, MetaVictims> =
        match (args.node_name_to_meta_victims, args.node_name_to_victims) {
            (Some(meta), _) => meta,
            (None, Some(full)) => full
                .into_iter()
                .map(|(node, v)| {
                    let pods = v
                        .pods
                        .iter()
                        .filter_map(|p| p.metadata.uid.clone())
                        .map(|uid| MetaPod { uid })
                        .collect();
                    (
                        node,
                        MetaVictims {
                            pods,
                            num_pdb_violations: v.num_pdb_violations,
                        },
                    )
                })
                .collect(),
            (None, None) => BTreeMap::new(),
        };
    let pod = format!(
        "{}/{}",
        args.pod.namespace().unwrap_or_default(),
        args.pod.name_any()
    );
    let state = app.read();
    let mut kept = BTreeMap::new();
    for (node, victims) in candidates {
        let uids: Vec<&str> = victims.pods.iter().map(|p| p.uid.as_str()).collect();
        match state.trim_victims(&node, &needs, priority, &uids) {
            Ok(trimmed) => {
                let spared = uids.len().saturating_sub(trimmed.len());
                app.metrics.preemption(true, trimmed.len(), spared);
                tracing::debug!(%pod, %node, offered = uids.len(), kept = trimmed.len(), "preemption victims trimmed");
                // Fewer victims never violate more budgets; the extender
                // does not know which ones kube-scheduler counted.
                let violations = victims.num_pdb_violations.min(trimmed.len() as i64);
                kept.insert(
                    node,
                    MetaVictims {
                        pods: trimmed.into_iter().map(|uid| MetaPod { uid }).collect(),
                        num_pdb_violations: violations,
                    },
                );
            }
            Err(reason) => {
                app.metrics.preemption(false, 0, uids.len());
                tracing::debug!(%pod, %node, %reason, "preemption on node would not make room");
            }
        }
    }
    Ok(ExtenderPreemptionResult {
        node_name_to_meta_victims: kept,
    })
}

async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, NOT_READY)
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(&app.read());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

//! HTTP endpoints: `/metrics`, `/healthz`, `/readyz` for the cluster, and
//! the local admin endpoint for fault injection:
//!
//! - `POST /admin/gpus/{uuid-or-index}/unhealthy?reason=<text>` marks a GPU
//!   (or MIG instance) unhealthy until cleared;
//! - `POST /admin/gpus/{uuid-or-index}/healthy` clears that mark;
//! - `GET /admin/inventory` shows the current inventory as JSON.
//!
//! The admin endpoint is off unless `--admin-listen` is given; bind it to
//! localhost.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_serve::{Connections, Deadlines};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::resource::state::{AdminCommand, Snapshot};
use crate::server::registration::Readiness;

#[derive(Clone)]
struct Ops {
    metrics: Arc<Metrics>,
    ready: watch::Receiver<Readiness>,
}

/// The cluster-facing router.
pub fn ops_router(metrics: Arc<Metrics>, ready: watch::Receiver<Readiness>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Ops>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    s.metrics.encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<Ops>| async move {
                let state = s.ready.borrow().clone();
                match state {
                    Readiness::Registered => {
                        (StatusCode::OK, "registered with kubelet".to_string())
                    }
                    Readiness::Unregistered => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not registered with kubelet".to_string(),
                    ),
                    Readiness::KubeletSilent(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason),
                }
            }),
        )
        .with_state(Ops { metrics, ready })
}

#[derive(Clone)]
struct Admin {
    commands: mpsc::Sender<AdminCommand>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

async fn mark(admin: &Admin, target: String, unhealthy: Option<String>) -> Response {
    let (reply, rx) = oneshot::channel();
    let cmd = AdminCommand {
        target,
        unhealthy,
        reply,
    };
    if admin.commands.send(cmd).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "node state is not running").into_response();
    }
    match rx.await {
        Ok(Ok(uuid)) => (StatusCode::OK, uuid).into_response(),
        Ok(Err(e)) => (StatusCode::NOT_FOUND, e).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "node state is not running").into_response(),
    }
}

/// The local admin router.
pub fn admin_router(
    commands: mpsc::Sender<AdminCommand>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
) -> Router {
    Router::new()
        .route(
            "/admin/gpus/{target}/unhealthy",
            post(
                |State(a): State<Admin>,
                 Path(target): Path<String>,
                 Query(q): Query<HashMap<String, String>>| async move {
                    let reason = q
                        .get("reason")
                        .cloned()
                        .unwrap_or_else(|| "no reason given".into());
                    // Stored in the published inventory and logged.
                    let reason = proto::clip::clip(&reason).to_string();
                    mark(&a, target, Some(reason)).await
                },
            ),
        )
        .route(
            "/admin/gpus/{target}/healthy",
            post(
                |State(a): State<Admin>, Path(target): Path<String>| async move {
                    mark(&a, target, None).await
                },
            ),
        )
        .route(
            "/admin/inventory",
            get(|State(a): State<Admin>| async move {
                let inv = a.snapshots.borrow().inventory.clone();
                axum::Json(inv)
            }),
        )
        .with_state(Admin {
            commands,
            snapshots,
        })
}

/// Connections the endpoints hold at once. Prometheus, kubelet's probes and
/// an operator need a few; the cap keeps a client that opens many from
/// taking the node agent's memory and file descriptors.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client has to send a request's head: probes and scrapes send
/// theirs at once, and one trickling it is dropped.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// How long requests in flight get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves a router until `shutdown`, with the limits above.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let conns = Connections {
        deadlines: Deadlines {
            header: HEADER_DEADLINE,
            idle: Deadlines::IDLE,
        },
        max: MAX_CONNECTIONS,
    };
    http_serve::serve(listener, router, None, conns, shutdown, SHUTDOWN_GRACE).await;
}

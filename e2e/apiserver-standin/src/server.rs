//! The running server: its listener and connections (which an outage
//! drops and a restart brings back on the same port), the router, and the
//! handle tests hold.

use std::any::Any;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::discovery;
use crate::error::{ApiError, Error};
use crate::faults::{FaultPlan, Faults};
use crate::handle::StoreHandle;
use crate::kubeconfig;
use crate::record::RequestLog;
use crate::resource::ResourceType;
use crate::response::json_response;
use crate::state::{AppState, Options};
use crate::store::Store;

struct Inner {
    app: Arc<AppState>,
    serving: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.app.stop_token().cancel();
    }
}

/// A running API server stand-in. Dropping it stops the server.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

impl ApiServer {
    /// Starts on a free loopback port with the built-in types.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Result<Self, Error> {
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: options.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: options.listen,
            source,
        })?;
        let mut store = Store::new(options.log_capacity, options.seed);
        for t in &options.types {
            store.register(t.clone());
        }
        let app = Arc::new(AppState {
            store: StoreHandle::new(store),
            faults: Faults::with_consistent_list_cost(options.consistent_list_cost),
            requests: RequestLog::default(),
            watch_resets: watch::Sender::new(0),
            options,
            addr,
            stop: Mutex::new(CancellationToken::new()),
            server: OnceLock::new(),
        });
        let inner = Arc::new(Inner {
            app: app.clone(),
            serving: tokio::sync::Mutex::new(None),
        });
        let weak: Weak<dyn Any + Send + Sync> = Arc::downgrade(&inner) as Weak<Inner>;
        let _ = app.server.set(weak);
        let server = Self { inner };
        server.serve(listener).await;
        tracing::info!(%addr, "API server stand-in listening");
        Ok(server)
    }

    async fn serve(&self, listener: TcpListener) {
        let app = &self.inner.app;
        let token = CancellationToken::new();
        *app.stop_slot() = token.clone();
        let router = router(app.clone());
        let task = tokio::spawn(accept_loop(listener, router, token));
        *self.inner.serving.lock().await = Some(task);
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.app.addr
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// In-process access to the objects.
    pub fn store(&self) -> &StoreHandle {
        &self.inner.app.store
    }

    /// The fault switchboard.
    pub fn faults(&self) -> &Faults {
        &self.inner.app.faults
    }

    /// Every request served so far.
    pub fn requests(&self) -> &RequestLog {
        &self.inner.app.requests
    }

    /// Serves a further type from now on.
    pub fn register(&self, rt: ResourceType) {
        self.store().register(rt);
    }

    /// Serves the types a CRD manifest declares, as applying it would.
    pub fn register_crd(&self, crd: &CustomResourceDefinition) -> Result<(), Error> {
        for t in ResourceType::from_crd(crd)? {
            self.register(t);
        }
        Ok(())
    }

    /// Ends every open watch; clients re-watch from their last resourceVersion.
    pub fn close_watches(&self) {
        self.inner.app.watch_resets.send_modify(|g| *g += 1);
    }

    /// Takes the server down: the port stops accepting and every open
    /// connection (watches included) is dropped. The store is kept.
    pub async fn stop(&self) {
        let task = self.inner.serving.lock().await.take();
        self.inner.app.stop_token().cancel();
        if let Some(task) = task {
            let _ = task.await;
        }
        tracing::info!(addr = %self.addr(), "API server stand-in down");
    }

    /// Brings the server back on the same port after [`ApiServer::stop`].
    pub async fn restart(&self) -> Result<(), Error> {
        if self.is_serving().await {
            return Ok(());
        }
        let addr = self.addr();
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                // The old socket can linger briefly; keep trying for a while.
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(%addr, error = %e, "rebind failed, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(source) => return Err(Error::Listen { addr, source }),
            }
        };
        self.serve(listener).await;
        tracing::info!(%addr, "API server stand-in back up");
        Ok(())
    }

    /// Down for `d`, then back up.
    pub async fn outage(&self, d: Duration) -> Result<(), Error> {
        self.stop().await;
        tokio::time::sleep(d).await;
        self.restart().await
    }

    pub async fn is_serving(&self) -> bool {
        self.inner
            .serving
            .lock()
            .await
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// The kubeconfig for this server.
    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        kubeconfig::config(&self.url(), None)
    }

    /// Writes a kubeconfig pointing at this server.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        kubeconfig::write(path, &self.url(), None)
    }

    /// Writes a kubeconfig whose user sends `token`; the request log
    /// names that token as the user of each request made with it.
    pub fn write_kubeconfig_as(&self, path: &Path, token: &str) -> Result<(), Error> {
        kubeconfig::write(path, &self.url(), Some(token))
    }

    /// A client that identifies itself with `token` (see
    /// [`ApiServer::write_kubeconfig_as`]).
    pub async fn client_as(&self, token: &str) -> Result<kube::Client, Error> {
        kubeconfig::client_from(kubeconfig::config(&self.url(), Some(token))).await
    }

    /// A `kube::Client` built from this server's kubeconfig, through the
    /// same kubeconfig loading the binaries use.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        kubeconfig::client_from(self.kubeconfig()).await
    }
}

async fn accept_loop(listener: TcpListener, router: Router, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let svc = TowerToHyperService::new(router.clone());
                    conns.spawn(async move {
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
        .route("/livez", get(ok))
        .route(
            "/version",
            get(|| async { json_response(200, &discovery::version()) }),
        )
        .route(
            "/_standin/faults",
            post(set_faults).delete(clear_faults).get(get_faults),
        )
        .route("/_standin/close-watches", post(close_watches))
        .route("/_standin/compact", post(compact))
        .route("/_standin/outage", post(outage))
        .route(
            "/_standin/requests",
            get(list_requests).delete(clear_requests),
        )
        .fallback(api::handle)
        .with_state(app)
}

async fn ok() -> &'static str {
    "ok"
}

async fn set_faults(State(app): State<Arc<AppState>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<FaultPlan>(&body) {
        Ok(plan) => {
            app.faults.set(&plan);
            json_response(200, &json!(plan))
        }
        Err(e) => json_response(
            400,
            &ApiError::bad_request(format!("invalid fault plan: {e}")).status_json(),
        ),
    }
}

async fn clear_faults(State(app): State<Arc<AppState>>) -> Response {
    app.faults.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn get_faults(State(app): State<Arc<AppState>>) -> Response {
    json_response(200, &json!({ "injected": app.faults.injected() }))
}

async fn close_watches(State(app): State<Arc<AppState>>) -> Response {
    app.watch_resets.send_modify(|g| *g += 1);
    StatusCode::NO_CONTENT.into_response()
}

async fn compact(State(app): State<Arc<AppState>>) -> Response {
    app.store.compact();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct OutageParams {
    /// How long the server stays down.
    ms: u64,
}

/// Goes down shortly after answering, and comes back after `ms`.
async fn outage(State(app): State<Arc<AppState>>, Query(p): Query<OutageParams>) -> Response {
    let Some(server) = app
        .server
        .get()
        .and_then(Weak::upgrade)
        .and_then(|s| s.downcast::<Inner>().ok())
    else {
        return StatusCode::GONE.into_response();
    };
    let server = ApiServer { inner: server };
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Err(e) = server.outage(Duration::from_millis(p.ms)).await {
            tracing::error!(error = %e, "could not come back after the outage");
        }
    });
    StatusCode::ACCEPTED.into_response()
}

async fn list_requests(State(app): State<Arc<AppState>>) -> Response {
    json_response(200, &json!(app.requests.all()))
}

async fn clear_requests(State(app): State<Arc<AppState>>) -> Response {
    app.requests.clear();
    StatusCode::NO_CONTENT.into_response()
}

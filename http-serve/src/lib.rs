//! An HTTP server for gpupack's endpoints that bounds what a client can
//! hold: a cap on open connections (new ones are closed on accept beyond
//! it), read deadlines that follow what the client does ([`conn`]), a
//! deadline on TLS handshakes, and a graceful drain on shutdown. The
//! scheduler extender serves kube-scheduler with it, the device plugin its
//! metrics, health and admin endpoints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub mod conn;

pub use conn::Deadlines;

/// HTTPS on a listener.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// A client that has not finished its handshake by then is dropped, so
    /// that stalled connections cannot pile up.
    pub handshake_timeout: Duration,
}

/// How many connections a listener holds, and their read deadlines.
#[derive(Clone, Copy, Debug)]
pub struct Connections {
    pub deadlines: Deadlines,
    /// Beyond this many open connections, new ones are closed on accept:
    /// the deadlines bound how long any connection holds its place.
    pub max: usize,
}

/// How often a full listener says so in the log.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts connections until `stop`, then drains them for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    routes: Router,
    tls: Option<Tls>,
    conns: Connections,
    stop: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let open = Arc::new(Semaphore::new(conns.max));
    let mut refused = 0u64;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(stream);
            refused += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                tracing::warn!(
                    max = conns.max,
                    refused,
                    "connection limit reached; closing new connections"
                );
                last_refusal_log = Some(Instant::now());
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => {
                    let (io, tracker) = conn::guard(stream, conns.deadlines);
                    let conn = builder
                        .serve_connection(TokioIo::new(io), tracked(routes, tracker))
                        .into_owned();
                    watcher.watch(conn).await
                }
                Some(tls) => {
                    let handshake = tls.acceptor.accept(stream);
                    match tokio::time::timeout(tls.handshake_timeout, handshake).await {
                        Ok(Ok(s)) => {
                            let (io, tracker) = conn::guard(s, conns.deadlines);
                            let conn = builder
                                .serve_connection(TokioIo::new(io), tracked(routes, tracker))
                                .into_owned();
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, timeout = ?tls.handshake_timeout, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all requests finished"),
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; dropping connections"),
    }
}

/// The router as a connection's service, telling the connection's tracker
/// when each request's head has been read and when its response is ready.
#[derive(Clone)]
struct Tracked {
    service: TowerToHyperService<Router>,
    tracker: Arc<conn::Tracker>,
}

fn tracked(routes: Router, tracker: Arc<conn::Tracker>) -> Tracked {
    Tracked {
        service: TowerToHyperService::new(routes),
        tracker,
    }
}

type Answer = Result<axum::response::Response, std::convert::Infallible>;

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let in_flight = self.tracker.request_started();
        let response = self.service.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

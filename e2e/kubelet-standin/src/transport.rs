//! gRPC over unix sockets, both ways.
//!
//! Serving uses its own accept loop (hyper's HTTP/2 server around tonic's
//! routes) rather than tonic's `Server` so that stopping drops every open
//! connection at once, as a kubelet process that exits does; tonic's
//! graceful shutdown would wait for clients to hang up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint};

/// A gRPC server on a unix socket. Dropping it aborts it and removes the
/// socket file.
#[derive(Debug)]
pub(crate) struct UnixServer {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl UnixServer {
    /// Binds `path` (replacing a stale file) and serves `routes` on it.
    pub(crate) fn bind(path: &Path, routes: Routes) -> std::io::Result<UnixServer> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        let (stop, mut stopped) = oneshot::channel();
        let routes = routes.prepare();
        let log_path = path.to_path_buf();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let service = TowerToHyperService::new(routes.clone());
                            connections.spawn(async move {
                                let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                                if let Err(error) = served {
                                    tracing::debug!(%error, "connection ended");
                                }
                            });
                        }
                        Err(error) => {
                            tracing::warn!(path = %log_path.display(), %error, "accept failed");
                            break;
                        }
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            connections.shutdown().await;
        });
        Ok(UnixServer {
            path: path.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Closes every connection, waits until they are gone, removes the socket.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Connects to a gRPC server on a unix socket, once, with `:authority`
/// `localhost` (as kubelet dials plugins).
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
    let path = path.as_ref().to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
}

/// grpc-go's connection backoff (base 1 s, factor 1.6), which kubelet's
/// blocking dial follows while the plugin's socket does not answer.
const DIAL_BACKOFF_BASE: Duration = Duration::from_secs(1);
const DIAL_BACKOFF_FACTOR: f64 = 1.6;

/// kubelet's blocking dial of a plugin (`grpc.WithBlock`, `timeout`): keeps
/// trying until connected or the time is up. Returns the outcome (the error
/// reads like kubelet's) and the number of connection attempts.
pub(crate) async fn dial_plugin(path: &Path, timeout: Duration) -> (Result<Channel, String>, u32) {
    let deadline = Instant::now() + timeout;
    let mut backoff = DIAL_BACKOFF_BASE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match tokio::time::timeout_at(deadline, connect_unix(path)).await {
            Ok(Ok(channel)) => return (Ok(channel), attempts),
            Ok(Err(error)) => error_chain(&error),
            Err(_) => "context deadline exceeded".to_string(),
        };
        let retry_at = Instant::now() + backoff;
        if retry_at >= deadline {
            tokio::time::sleep_until(deadline).await;
            let error = format!(
                "failed to dial device plugin: context deadline exceeded (last error: {last})"
            );
            return (Err(error), attempts);
        }
        tokio::time::sleep_until(retry_at).await;
        backoff = backoff.mul_f64(DIAL_BACKOFF_FACTOR);
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

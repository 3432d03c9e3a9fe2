//! Serving the plugin sockets and registering them with kubelet, again and
//! again: kubelet forgets every plugin when it restarts (it deletes their
//! sockets and re-creates `kubelet.sock`), so the manager watches the
//! directory and re-serves and re-registers whenever `kubelet.sock` is
//! created or one of its own sockets disappears. A missed inotify event is
//! caught by a periodic check of the sockets. When kubelet is not up, it
//! retries with backoff, woken early by `kubelet.sock` appearing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};
use proto::deviceplugin::device_plugin_server::DevicePluginServer;
use proto::deviceplugin::registration_client::RegistrationClient;
use proto::deviceplugin::{RegisterRequest, constants};
use proto::resources::Resource;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::ResourceLabels;
use crate::resource::devices;
use crate::retry;
use crate::server::plugin::{DevicePluginService, PluginContext, options};
use crate::server::uds;

/// How often the sockets are checked even without an inotify event.
const SOCKET_CHECK: Duration = Duration::from_millis(250);
/// How long kubelet may take to open `ListAndWatch` on every resource after
/// it accepted the registrations (it does so within milliseconds).
const KUBELET_SILENCE: Duration = Duration::from_secs(5);

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Not registered with kubelet (yet, or kubelet went away).
    Unregistered,
    /// Registered, and kubelet reads every resource's device list.
    Registered,
    /// kubelet accepted the registrations but has not called the plugin:
    /// what a kubelet that the plugin's gRPC server refuses looks like.
    KubeletSilent(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        *self == Readiness::Registered
    }
}

/// First and largest wait between registration attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Why the manager re-serves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Trigger {
    /// `kubelet.sock` was created: kubelet (re)started.
    KubeletCreated,
    /// A file in the directory was removed (maybe one of ours).
    Removed,
}

/// The running servers of one registration round.
struct Round {
    stop: CancellationToken,
    servers: Vec<JoinHandle<()>>,
    sockets: Vec<PathBuf>,
}

impl Round {
    async fn stop(self) {
        self.stop.cancel();
        for s in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(2), s).await;
        }
        for path in &self.sockets {
            let _ = std::fs::remove_file(path);
        }
    }

    fn sockets_present(&self) -> bool {
        self.sockets.iter().all(|p| p.exists())
    }
}

/// Serves and registers every resource until `shutdown`; `ready` says
/// whether all are registered and read by kubelet. Own sockets are removed
/// on the way out.
pub async fn run(
    dir: PathBuf,
    ctx: Arc<PluginContext>,
    ready: watch::Sender<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let kubelet_sock = dir.join(constants::KUBELET_SOCKET_NAME);
    let (tx, mut triggers) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        let kubelet = ev.paths.iter().any(|p| {
            p.file_name()
                .is_some_and(|n| n == constants::KUBELET_SOCKET_NAME)
        });
        let trigger = match ev.kind {
            EventKind::Create(_) if kubelet => Some(Trigger::KubeletCreated),
            EventKind::Remove(_) if !kubelet => Some(Trigger::Removed),
            _ => None,
        };
        if let Some(t) = trigger {
            let _ = tx.send(t);
        }
    })
    .map_err(std::io::Error::other)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(std::io::Error::other)?;

    let mut snapshots = ctx.snapshots.clone();
    let mut backoff = retry::backoff(BACKOFF_MIN, BACKOFF_MAX);
    loop {
        let resources = devices::resources(&snapshots.borrow_and_update().inventory);
        let started = Instant::now();
        let round = serve(&dir, &resources, &ctx)?;
        // Events from before this round (our own removals) are stale.
        while triggers.try_recv().is_ok() {}
        match register_all(&kubelet_sock, &resources).await {
            Ok(()) => {
                backoff = retry::backoff(BACKOFF_MIN, BACKOFF_MAX);
                for r in &resources {
                    ctx.metrics
                        .registrations
                        .get_or_create(&ResourceLabels { resource: r.name() })
                        .inc();
                }
                tracing::info!(
                    resources = resources.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "registered with kubelet"
                );
                ready.send_replace(Readiness::Registered);
                let registered_at = Instant::now();
                let mut check = tokio::time::interval(SOCKET_CHECK);
                let reason = loop {
                    tokio::select! {
                        t = triggers.recv() => match t {
                            Some(Trigger::KubeletCreated) => break "kubelet.sock re-created",
                            Some(Trigger::Removed) if !round.sockets_present() => break "plugin socket removed",
                            _ => {}
                        },
                        _ = check.tick() => {
                            if !round.sockets_present() { break "plugin socket missing" }
                            kubelet_listening(&ctx, resources.len(), registered_at, &ready);
                        },
                        changed = snapshots.changed() => {
                            if changed.is_err() { break "node state closed" }
                            if devices::resources(&snapshots.borrow_and_update().inventory) != resources {
                                break "resource set changed";
                            }
                        },
                        _ = shutdown.cancelled() => {
                            ready.send_replace(Readiness::Unregistered);
                            round.stop().await;
                            return Ok(());
                        }
                    }
                };
                tracing::info!(%reason, "re-serving and re-registering");
                ready.send_replace(Readiness::Unregistered);
                round.stop().await;
            }
            Err(e) => {
                ready.send_replace(Readiness::Unregistered);
                round.stop().await;
                let delay = retry::next_delay(&mut backoff, BACKOFF_MAX);
                tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64, "registration with kubelet failed; retrying");
                // Woken early by a new kubelet.sock: the inotify event, or a
                // cheap check of the file in case the event came earlier.
                // A new kubelet deserves a prompt try, so backoff restarts.
                let before = socket_stamp(&kubelet_sock);
                let wait = tokio::time::sleep(delay);
                tokio::pin!(wait);
                let mut poll = tokio::time::interval(Duration::from_millis(20));
                let woken = loop {
                    tokio::select! {
                        _ = &mut wait => break false,
                        t = triggers.recv() => if t == Some(Trigger::KubeletCreated) { break true },
                        _ = poll.tick() => {
                            let now = socket_stamp(&kubelet_sock);
                            if now.is_some() && now != before { break true }
                        },
                        _ = shutdown.cancelled() => return Ok(()),
                    }
                };
                if woken {
                    backoff = retry::backoff(BACKOFF_MIN, BACKOFF_MAX);
                }
            }
        }
    }
}

/// After a registration: kubelet opens `ListAndWatch` on every resource at
/// once. When it has not within [`KUBELET_SILENCE`], the plugin is not ready
/// and says what that usually means; when the streams come, it is again.
fn kubelet_listening(
    ctx: &PluginContext,
    resources: usize,
    registered_at: Instant,
    ready: &watch::Sender<Readiness>,
) {
    let open = ctx.delivered.open_streams();
    let silent = open < resources && registered_at.elapsed() >= KUBELET_SILENCE;
    let current = ready.borrow().clone();
    match (silent, current) {
        (true, Readiness::Registered) => {
            let reason = format!(
                "kubelet accepted the registrations {}s ago but reads {open} of {resources} device lists; \
                 kubelet 1.25 and older send the plugin socket's path as the HTTP/2 :authority, which this \
                 plugin's gRPC server refuses (\"malformed authority\" in kubelet's log): gpupack needs kubelet 1.26 or newer",
                KUBELET_SILENCE.as_secs()
            );
            tracing::error!(%reason, "kubelet does not call the plugin");
            ready.send_replace(Readiness::KubeletSilent(reason));
        }
        (false, Readiness::KubeletSilent(_)) if open >= resources => {
            tracing::info!("kubelet reads every device list now");
            ready.send_replace(Readiness::Registered);
        }
        _ => {}
    }
}

/// Identifies one incarnation of a socket file (kubelet re-creates it).
fn socket_stamp(path: &Path) -> Option<(u64, Option<std::time::SystemTime>)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.modified().ok()))
}

/// Starts one server per resource, each listening before any Register.
fn serve(dir: &Path, resources: &[Resource], ctx: &Arc<PluginContext>) -> std::io::Result<Round> {
    let stop = CancellationToken::new();
    let mut servers = Vec::new();
    let mut sockets = Vec::new();
    for r in resources {
        let path = dir.join(r.socket_name());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        let svc = DevicePluginService::new(r.clone(), ctx.clone(), stop.clone());
        let token = stop.clone();
        let name = r.name();
        servers.push(tokio::spawn(async move {
            let res = tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(svc))
                .serve_with_incoming_shutdown(
                    UnixListenerStream::new(listener),
                    token.cancelled_owned(),
                )
                .await;
            if let Err(e) = res {
                tracing::error!(resource = %name, error = %e, "plugin server failed");
            }
        }));
        sockets.push(path);
    }
    Ok(Round {
        stop,
        servers,
        sockets,
    })
}

/// Registers every resource; kubelet calls back into each server while
/// handling its Register.
async fn register_all(kubelet_sock: &Path, resources: &[Resource]) -> Result<(), String> {
    let channel = tokio::time::timeout(
        Duration::from_secs(5),
        uds::connect(kubelet_sock.to_path_buf()),
    )
    .await
    .map_err(|_| format!("connecting to {} timed out", kubelet_sock.display()))?
    .map_err(|e| format!("cannot connect to {}: {e}", kubelet_sock.display()))?;
    let mut client = RegistrationClient::new(channel);
    for r in resources {
        let req = RegisterRequest {
            version: constants::VERSION.to_string(),
            endpoint: r.socket_name(),
            resource_name: r.name(),
            options: Some(options()),
        };
        tokio::time::timeout(Duration::from_secs(15), client.register(req))
            .await
            .map_err(|_| format!("Register of {} timed out", r.name()))?
            .map_err(|e| format!("kubelet refused {}: {}", r.name(), e.message()))?;
    }
    Ok(())
}

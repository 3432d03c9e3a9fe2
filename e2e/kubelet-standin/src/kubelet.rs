//! The handle tests hold: start, stop and restart kubelet, admit pods, read
//! capacity and allocations, and wait for conditions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::deviceplugin::constants::KUBELET_SOCKET_NAME;
use proto::deviceplugin::registration_server::RegistrationServer;
use proto::podresources::pod_resources_lister_server::PodResourcesListerServer;
use tonic::service::Routes;

use crate::admission;
use crate::checkpoint;
use crate::error::{AdmitError, Error, WaitTimeout};
use crate::options::{CHECKPOINT_FILE, Options, Orderer};
use crate::pod::Pod;
use crate::pod_resources::PodResourcesService;
use crate::rate::TokenBucket;
use crate::registration::RegistrationService;
use crate::state::{
    Capacity, ContainerAllocation, PluginCall, PodAllocation, Registration, ResourceStatus, Shared,
};
use crate::transport::UnixServer;

/// A kubelet device manager and PodResources server in this process.
///
/// Dropping it (or [`Kubelet::shutdown`]) closes every connection and
/// removes its sockets.
#[derive(Debug)]
pub struct Kubelet {
    shared: Arc<Shared>,
    servers: tokio::sync::Mutex<Servers>,
    /// Also serialises admissions, as kubelet admits one pod at a time.
    orderer: tokio::sync::Mutex<Orderer>,
    limiter: Option<Arc<Mutex<TokenBucket>>>,
}

#[derive(Debug, Default)]
struct Servers {
    registration: Option<UnixServer>,
    pod_resources: Option<UnixServer>,
}

impl Kubelet {
    /// Starts serving `kubelet.sock` (and PodResources) in the configured
    /// directories, creating them if needed.
    pub async fn new(options: Options) -> Result<Kubelet, Error> {
        let kubelet = Kubelet::stopped(options);
        kubelet.start().await?;
        Ok(kubelet)
    }

    /// A kubelet that is not running yet: no `kubelet.sock` until
    /// [`Kubelet::start`], so a plugin started now must wait and retry.
    pub fn stopped(options: Options) -> Kubelet {
        tracing::info!(order = ?options.order, dir = %options.device_plugin_dir.display(), "kubelet stand-in");
        let orderer = Orderer::new(options.order.clone());
        let limiter = options
            .pod_resources_rate_limit
            .map(|limit| Arc::new(Mutex::new(TokenBucket::new(limit))));
        Kubelet {
            shared: Arc::new(Shared::new(options)),
            servers: tokio::sync::Mutex::default(),
            orderer: tokio::sync::Mutex::new(orderer),
            limiter,
        }
    }

    /// kubelet starting: it deletes every non-directory file in the device
    /// plugin directory except its checkpoint (so plugin sockets vanish),
    /// keeps allocations, knows every earlier resource only as a stopped
    /// endpoint with no devices (capacity 0 until the plugin registers
    /// again), and creates `kubelet.sock` afresh — the Create event plugins
    /// watch for. No-op if running.
    pub async fn start(&self) -> Result<(), Error> {
        let mut servers = self.servers.lock().await;
        if self.is_running() {
            return Ok(());
        }
        let options = &self.shared.options;
        let dir = &options.device_plugin_dir;
        create_dir(dir)?;
        if let Some(pr_dir) = &options.pod_resources_dir {
            create_dir(pr_dir)?;
        }
        clean_plugin_dir(dir)?;
        self.shared.update(|s| {
            s.epoch += 1;
            s.forget_endpoints(Instant::now());
            s.running = true;
        });
        let served = self.bind(&mut servers);
        if served.is_err() {
            self.shared.update(|s| s.running = false);
            if let Some(server) = servers.pod_resources.take() {
                server.stop().await;
            }
        }
        served?;
        self.shared.update(|s| s.started_at = Some(Instant::now()));
        self.write_checkpoint()
    }

    fn bind(&self, servers: &mut Servers) -> Result<(), Error> {
        let options = &self.shared.options;
        if let Some(pr_dir) = &options.pod_resources_dir {
            let service = PodResourcesService {
                shared: Arc::clone(&self.shared),
                limiter: self.limiter.clone(),
            };
            let path = pr_dir.join(KUBELET_SOCKET_NAME);
            let routes = Routes::new(PodResourcesListerServer::new(service));
            servers.pod_resources = Some(bind(&path, routes)?);
        }
        let service = RegistrationService {
            shared: Arc::clone(&self.shared),
        };
        let routes = Routes::new(RegistrationServer::new(service));
        servers.registration = Some(bind(&self.registration_socket(), routes)?);
        tracing::info!(socket = %self.registration_socket().display(), "kubelet serving");
        Ok(())
    }

    /// kubelet going away: `kubelet.sock` and the PodResources socket are
    /// removed, every connection and `ListAndWatch` stream is dropped. Plugin
    /// sockets stay until the next start. No-op if stopped.
    pub async fn stop(&self) {
        let mut servers = self.servers.lock().await;
        if !self.is_running() {
            return;
        }
        self.shared.update(|s| {
            s.running = false;
            s.epoch += 1;
            s.forget_endpoints(Instant::now());
        });
        if let Some(server) = servers.registration.take() {
            server.stop().await;
        }
        if let Some(server) = servers.pod_resources.take() {
            server.stop().await;
        }
        tracing::info!("kubelet stopped");
    }

    /// kubelet restarting: [`Kubelet::stop`] then [`Kubelet::start`].
    pub async fn restart(&self) -> Result<(), Error> {
        self.stop().await;
        self.start().await
    }

    /// Stops and removes the sockets.
    pub async fn shutdown(self) {
        self.stop().await;
    }

    pub fn is_running(&self) -> bool {
        self.shared.read(|s| s.running)
    }

    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// `<device plugin dir>/kubelet.sock`.
    pub fn registration_socket(&self) -> PathBuf {
        self.shared
            .options
            .device_plugin_dir
            .join(KUBELET_SOCKET_NAME)
    }

    /// `<pod resources dir>/kubelet.sock`, if served.
    pub fn pod_resources_socket(&self) -> Option<PathBuf> {
        self.shared
            .options
            .pod_resources_dir
            .as_ref()
            .map(|d| d.join(KUBELET_SOCKET_NAME))
    }

    /// When `kubelet.sock` was last created; a plugin's re-registration
    /// delay after a restart is its registration's `at` minus this.
    pub fn started_at(&self) -> Option<Instant> {
        self.shared.read(|s| s.started_at)
    }

    /// A receiver that changes whenever the stand-in's state does (e.g. to
    /// mirror capacity into a Node object without polling).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.subscribe()
    }

    /// Every `Register` call received, accepted or not, oldest first.
    pub fn registrations(&self) -> Vec<Registration> {
        self.shared.read(|s| s.registrations.clone())
    }

    /// (resource, error) of calls to plugins that failed before any answer,
    /// e.g. a plugin refusing kubelet 1.25's `:authority`.
    pub fn failed_plugin_calls(&self) -> Vec<(String, String)> {
        self.shared.read(|s| s.failed_plugin_calls.clone())
    }

    /// `Register` calls being handled now (e.g. still dialling the plugin).
    pub fn registrations_in_flight(&self) -> usize {
        self.shared.read(|s| s.registering)
    }

    /// How many `Register` calls were accepted.
    pub fn accepted_registrations(&self) -> usize {
        self.shared
            .read(|s| s.registrations.iter().filter(|r| r.accepted()).count())
    }

    pub fn resource(&self, name: &str) -> Option<ResourceStatus> {
        self.shared.read(|s| s.status(name))
    }

    /// Healthy devices of `resource` (0 if unknown).
    pub fn healthy(&self, resource: &str) -> usize {
        self.resource(resource).map_or(0, |r| r.healthy())
    }

    /// Node capacity and allocatable per resource, as kubelet's `GetCapacity`
    /// reports them (a resource whose plugin left more than the grace period
    /// ago is gone).
    pub fn capacity(&self) -> BTreeMap<String, Capacity> {
        let grace = self.shared.options.endpoint_stop_grace_period;
        self.shared.update(|s| s.capacity(Instant::now(), grace))
    }

    /// Admitted pods, oldest first.
    pub fn pods(&self) -> Vec<PodAllocation> {
        self.shared.read(|s| s.pods.clone())
    }

    pub fn pod(&self, uid: &str) -> Option<PodAllocation> {
        self.shared
            .read(|s| s.pods.iter().find(|p| p.uid == uid).cloned())
    }

    pub fn container(&self, uid: &str, name: &str) -> Option<ContainerAllocation> {
        self.pod(uid).and_then(|p| p.container(name).cloned())
    }

    /// Every device plugin call made during admissions, oldest first.
    pub fn calls(&self) -> Vec<PluginCall> {
        self.shared.read(|s| s.calls.clone())
    }

    /// Admits a pod as kubelet does; see the crate docs. Admitting a pod
    /// (by UID) that is already admitted returns its allocation unchanged.
    pub async fn admit(&self, pod: &Pod) -> Result<PodAllocation, AdmitError> {
        let mut orderer = self.orderer.lock().await;
        let admitted = admission::admit(&self.shared, &mut orderer, pod).await;
        match &admitted {
            Ok(_) => {
                if let Err(error) = self.write_checkpoint() {
                    tracing::warn!(%error, "checkpoint not written");
                }
            }
            Err(error) => tracing::info!(pod = %pod.key(), %error, "pod not admitted"),
        }
        admitted
    }

    /// Frees a pod's devices (the pod ended). Returns whether it was admitted.
    pub fn release(&self, uid: &str) -> bool {
        let removed = self.shared.update(|s| {
            let before = s.pods.len();
            s.pods.retain(|p| p.uid != uid);
            s.pods.len() != before
        });
        if removed && let Err(error) = self.write_checkpoint() {
            tracing::warn!(%error, "checkpoint not written");
        }
        removed
    }

    /// Waits until `condition` holds, re-checking on every state change
    /// (registration, device list, stream end, admission, stop/start).
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Kubelet) -> bool,
    ) -> Result<(), WaitTimeout> {
        let mut changed = self.shared.subscribe();
        let waiting = async {
            loop {
                if condition(self) {
                    return;
                }
                if changed.changed().await.is_err() {
                    // The sender lives as long as `self`; cannot happen.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, waiting)
            .await
            .map_err(|_| WaitTimeout {
                what: what.to_string(),
                waited: timeout,
            })
    }

    /// Waits until `resource` has exactly `count` healthy devices.
    pub async fn wait_for_healthy(
        &self,
        resource: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        let what = format!("{count} healthy {resource} devices");
        self.wait_until(&what, timeout, |k| k.healthy(resource) == count)
            .await
    }

    /// Waits until at least `count` registrations were accepted.
    pub async fn wait_for_registrations(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        let what = format!("{count} accepted registrations");
        self.wait_until(&what, timeout, |k| k.accepted_registrations() >= count)
            .await
    }

    fn write_checkpoint(&self) -> Result<(), Error> {
        let path = self.shared.options.device_plugin_dir.join(CHECKPOINT_FILE);
        self.shared.read(|s| checkpoint::write(&path, s))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.shared.update(|s| {
            s.running = false;
            for handle in s.streams.drain(..) {
                handle.abort();
            }
        });
        // The servers abort and remove their sockets when dropped.
    }
}

fn bind(path: &Path, routes: Routes) -> Result<UnixServer, Error> {
    UnixServer::bind(path, routes).map_err(|source| Error::Bind {
        path: path.to_path_buf(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|source| Error::CreateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// kubelet's `CleanupPluginDirectory`.
fn clean_plugin_dir(dir: &Path) -> Result<(), Error> {
    let cleanup_error = |source| Error::Cleanup {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(cleanup_error)? {
        let entry = entry.map_err(cleanup_error)?;
        if entry.file_name() == CHECKPOINT_FILE {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(cleanup_error(e)),
        }
    }
    Ok(())
}

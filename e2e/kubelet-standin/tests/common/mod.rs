//! A small, scriptable device plugin serving the real v1beta1 API on a unix
//! socket, to drive the kubelet stand-in from the plugin's side.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kubelet_standin::connect_unix;
use proto::deviceplugin::constants::{HEALTHY, UNHEALTHY, VERSION};
use proto::deviceplugin::device_plugin_server::{DevicePlugin, DevicePluginServer};
use proto::deviceplugin::registration_client::RegistrationClient;
use proto::deviceplugin::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, Device, DevicePluginOptions, Empty, ListAndWatchResponse,
    NumaNode, PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse, RegisterRequest, TopologyInfo,
};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status};

/// What the fake answers `GetPreferredAllocation` with.
#[derive(Debug, Clone, Copy)]
pub enum Preference {
    /// `must_include` plus the highest available IDs, up to `size` in all.
    Highest,
    /// Only the single highest available ID that is not in `must_include`.
    OnlyOne,
}

#[derive(Debug)]
pub struct Script {
    pub options: DevicePluginOptions,
    pub preference: Preference,
    /// Name of the variable that lists a container's device IDs.
    pub env_key: String,
    pub fail_allocate: AtomicBool,
    pub options_calls: AtomicUsize,
    pub allocate_requests: Mutex<Vec<AllocateRequest>>,
    pub preferred_requests: Mutex<Vec<PreferredAllocationRequest>>,
    pub pre_start_requests: Mutex<Vec<PreStartContainerRequest>>,
}

#[derive(Debug, Clone)]
struct Service {
    script: Arc<Script>,
    devices: watch::Receiver<Vec<Device>>,
    stop: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl DevicePlugin for Service {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        self.script.options_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(self.script.options))
    }

    type ListAndWatchStream = ReceiverStream<Result<ListAndWatchResponse, Status>>;

    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let mut devices = self.devices.clone();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let list = devices.borrow_and_update().clone();
                if tx
                    .send(Ok(ListAndWatchResponse { devices: list }))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    changed = devices.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let req = request.into_inner();
        self.script
            .preferred_requests
            .lock()
            .unwrap()
            .push(req.clone());
        let container_responses = req
            .container_requests
            .iter()
            .map(|c| {
                let mut free: Vec<_> = c
                    .available_device_i_ds
                    .iter()
                    .filter(|d| !c.must_include_device_i_ds.contains(d))
                    .cloned()
                    .collect();
                free.sort();
                free.reverse();
                let device_i_ds = match self.script.preference {
                    Preference::Highest => {
                        let mut ids = c.must_include_device_i_ds.clone();
                        ids.extend(
                            free.into_iter()
                                .take(c.allocation_size as usize - ids.len()),
                        );
                        ids
                    }
                    Preference::OnlyOne => free.into_iter().take(1).collect(),
                };
                ContainerPreferredAllocationResponse { device_i_ds }
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let req = request.into_inner();
        self.script
            .allocate_requests
            .lock()
            .unwrap()
            .push(req.clone());
        if self.script.fail_allocate.load(Ordering::SeqCst) {
            return Err(Status::internal("device is gone"));
        }
        let container_responses = req
            .container_requests
            .iter()
            .map(|c| {
                let mut ids = c.devices_ids.clone();
                ids.sort();
                ContainerAllocateResponse {
                    envs: [(self.script.env_key.clone(), ids.join(","))].into(),
                    ..Default::default()
                }
            })
            .collect();
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        self.script
            .pre_start_requests
            .lock()
            .unwrap()
            .push(request.into_inner());
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// A running fake plugin.
pub struct FakePlugin {
    pub script: Arc<Script>,
    pub socket: PathBuf,
    devices: watch::Sender<Vec<Device>>,
    stop: watch::Sender<bool>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub fn device(id: &str, numa: Option<i64>) -> Device {
    Device {
        id: id.to_string(),
        health: HEALTHY.to_string(),
        topology: numa.map(|n| TopologyInfo {
            nodes: vec![NumaNode { id: n }],
        }),
    }
}

/// `count` healthy devices `<prefix>-0..`, NUMA node 0 for the first half.
pub fn devices(prefix: &str, count: usize) -> Vec<Device> {
    (0..count)
        .map(|i| {
            device(
                &format!("{prefix}-{i}"),
                Some(if i < count / 2 { 0 } else { 1 }),
            )
        })
        .collect()
}

impl FakePlugin {
    /// Starts serving on `dir/socket_name` (not registered yet).
    pub fn serve(
        dir: &Path,
        socket_name: &str,
        devices: Vec<Device>,
        options: DevicePluginOptions,
        env_key: &str,
    ) -> FakePlugin {
        FakePlugin::serve_script(
            dir,
            socket_name,
            devices,
            script(options, env_key, Preference::Highest),
        )
    }

    pub fn serve_script(
        dir: &Path,
        socket_name: &str,
        devices: Vec<Device>,
        script: Arc<Script>,
    ) -> FakePlugin {
        let socket = dir.join(socket_name);
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let (devices_tx, devices_rx) = watch::channel(devices);
        let (stop_tx, stop_rx) = watch::channel(false);
        let service = Service {
            script: Arc::clone(&script),
            devices: devices_rx,
            stop: stop_rx,
        };
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = shutdown_rx.await;
                })
                .await
                .unwrap();
        });
        FakePlugin {
            script,
            socket,
            devices: devices_tx,
            stop: stop_tx,
            shutdown: Some(shutdown_tx),
            server: Some(server),
        }
    }

    pub fn socket_name(&self) -> String {
        self.socket
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Sends `Register` to `kubelet_socket` for `resource`.
    pub async fn register(&self, kubelet_socket: &Path, resource: &str) -> Result<(), Status> {
        register(
            kubelet_socket,
            VERSION,
            &self.socket_name(),
            resource,
            Some(self.script.options),
        )
        .await
    }

    pub fn set_devices(&self, devices: Vec<Device>) {
        self.devices.send_replace(devices);
    }

    pub fn set_health(&self, id: &str, healthy: bool) {
        self.devices.send_modify(|list| {
            for d in list.iter_mut().filter(|d| d.id == id) {
                d.health = if healthy { HEALTHY } else { UNHEALTHY }.to_string();
            }
        });
    }

    pub fn allocate_requests(&self) -> Vec<AllocateRequest> {
        self.script.allocate_requests.lock().unwrap().clone()
    }

    pub fn preferred_requests(&self) -> Vec<PreferredAllocationRequest> {
        self.script.preferred_requests.lock().unwrap().clone()
    }

    /// Ends every `ListAndWatch` stream and stops serving.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

pub async fn register(
    kubelet_socket: &Path,
    version: &str,
    endpoint: &str,
    resource: &str,
    options: Option<DevicePluginOptions>,
) -> Result<(), Status> {
    let channel = connect_unix(kubelet_socket)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    RegistrationClient::new(channel)
        .register(RegisterRequest {
            version: version.to_string(),
            endpoint: endpoint.to_string(),
            resource_name: resource.to_string(),
            options,
        })
        .await
        .map(|_| ())
}

pub fn script(options: DevicePluginOptions, env_key: &str, preference: Preference) -> Arc<Script> {
    Arc::new(Script {
        options,
        preference,
        env_key: env_key.to_string(),
        fail_allocate: AtomicBool::new(false),
        options_calls: AtomicUsize::new(0),
        allocate_requests: Mutex::default(),
        preferred_requests: Mutex::default(),
        pre_start_requests: Mutex::default(),
    })
}

pub fn options(preferred: bool) -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: preferred,
    }
}

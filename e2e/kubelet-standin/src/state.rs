//! What the stand-in knows, shared by its servers, its stream readers and its
//! handle: kubelet's device manager state (endpoints, device lists, pod
//! devices) plus records kept for assertions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use proto::deviceplugin::constants::{HEALTHY, UNHEALTHY};
use proto::deviceplugin::device_plugin_client::DevicePluginClient;
use proto::deviceplugin::{ContainerAllocateResponse, Device, DevicePluginOptions};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tonic::transport::Channel;

use crate::options::Options;
use crate::pod::ContainerKind;
use crate::run_options::RunOptions;

/// One `Register` call kubelet received.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub resource: String,
    /// Socket file name, relative to the device plugin directory.
    pub endpoint: String,
    pub version: String,
    /// Options sent inside the `RegisterRequest`.
    pub requested_options: Option<DevicePluginOptions>,
    /// Options the plugin answered `GetDevicePluginOptions` with; kubelet
    /// uses these. `None` when the call was rejected before it got there.
    pub options: Option<DevicePluginOptions>,
    pub at: Instant,
    /// How often kubelet tried to connect to the plugin's socket (0 when the
    /// request was rejected before dialling).
    pub dial_attempts: u32,
    /// `Err` holds the error message the plugin received.
    pub outcome: Result<(), String>,
}

impl Registration {
    pub fn accepted(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// A resource as kubelet's device manager holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceStatus {
    pub name: String,
    /// The plugin's socket file name; `None` after a kubelet (re)start until
    /// the plugin registers again.
    pub endpoint: Option<String>,
    pub options: Option<DevicePluginOptions>,
    /// The last device list received over `ListAndWatch`.
    pub devices: Vec<Device>,
    /// When the endpoint stopped (stream ended, or kubelet restarted).
    pub stopped_at: Option<Instant>,
    /// `ListAndWatch` messages received from the current endpoint.
    pub updates: u64,
}

impl ResourceStatus {
    pub fn healthy(&self) -> usize {
        self.devices.iter().filter(|d| d.health == HEALTHY).count()
    }
}

/// Node capacity and allocatable of one resource, as kubelet reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Every device, healthy or not.
    pub capacity: usize,
    /// Healthy devices.
    pub allocatable: usize,
}

/// A device a container received, with the NUMA nodes it reported then.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AllocatedDevice {
    pub id: String,
    pub numa_nodes: Vec<i64>,
}

/// What one container of an admitted pod received.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerAllocation {
    pub name: String,
    pub kind: ContainerKind,
    /// The order its resources were allocated in.
    pub resource_order: Vec<String>,
    /// Resource → devices, sorted by ID.
    pub devices: BTreeMap<String, Vec<AllocatedDevice>>,
    /// Resource → the plugin's `container_responses[0]`.
    pub responses: BTreeMap<String, ContainerAllocateResponse>,
    /// What the runtime would receive (responses merged in `resource_order`).
    pub run: RunOptions,
}

impl ContainerAllocation {
    /// The IDs of the devices of `resource`, sorted.
    pub fn device_ids(&self, resource: &str) -> Vec<String> {
        self.devices
            .get(resource)
            .map(|devs| devs.iter().map(|d| d.id.clone()).collect())
            .unwrap_or_default()
    }

    /// One variable of the merged environment.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.run.envs.get(name).map(String::as_str)
    }
}

/// An admitted pod and what each of its containers received.
#[derive(Debug, Clone, PartialEq)]
pub struct PodAllocation {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub containers: Vec<ContainerAllocation>,
}

impl PodAllocation {
    pub fn container(&self, name: &str) -> Option<&ContainerAllocation> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// One device plugin RPC made during admission, with its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginCall {
    /// `namespace/name`.
    pub pod: String,
    pub container: String,
    pub resource: String,
    pub call: Call,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    GetPreferredAllocation {
        available: Vec<String>,
        must_include: Vec<String>,
        size: i32,
        /// `container_responses[0].deviceIDs`; empty on error.
        preferred: Vec<String>,
        /// How many container requests the call carried (kubelet: always 1).
        container_requests: usize,
    },
    Allocate {
        devices_ids: Vec<String>,
        container_requests: usize,
    },
    PreStartContainer {
        devices_ids: Vec<String>,
    },
}

/// The plugin kubelet currently talks to for a resource.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Tells this registration's stream apart from older ones.
    pub(crate) generation: u64,
    pub(crate) socket: String,
    pub(crate) options: DevicePluginOptions,
    /// `None` once the endpoint stopped (kubelet closed the connection).
    pub(crate) client: Option<DevicePluginClient<Channel>>,
}

#[derive(Debug, Default)]
pub(crate) struct Resource {
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) devices: BTreeMap<String, Device>,
    pub(crate) stopped_at: Option<Instant>,
    pub(crate) updates: u64,
}

impl Resource {
    pub(crate) fn healthy_ids(&self) -> BTreeSet<String> {
        self.devices
            .values()
            .filter(|d| d.health == HEALTHY)
            .map(|d| d.id.clone())
            .collect()
    }

    /// kubelet's `markResourceUnhealthy` plus the endpoint's stop time.
    pub(crate) fn stop(&mut self, now: Instant) {
        for device in self.devices.values_mut() {
            device.health = UNHEALTHY.to_string();
        }
        if let Some(endpoint) = &mut self.endpoint {
            endpoint.client = None;
        }
        self.stopped_at = Some(now);
    }

    fn grace_expired(&self, now: Instant, grace: Duration) -> bool {
        self.stopped_at
            .is_some_and(|at| now.saturating_duration_since(at) > grace)
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) running: bool,
    /// When `kubelet.sock` was last created.
    pub(crate) started_at: Option<Instant>,
    /// Bumped on every stop and start; work begun in an earlier epoch (a
    /// `Register` in flight when kubelet stopped) must not land.
    pub(crate) epoch: u64,
    pub(crate) next_generation: u64,
    pub(crate) resources: BTreeMap<String, Resource>,
    pub(crate) registrations: Vec<Registration>,
    /// `Register` calls being handled right now.
    pub(crate) registering: usize,
    pub(crate) pods: Vec<PodAllocation>,
    pub(crate) calls: Vec<PluginCall>,
    pub(crate) streams: Vec<AbortHandle>,
    /// (resource, error) of calls to plugins that failed before any answer
    /// (kubelet logs them; the resource gets no devices).
    pub(crate) failed_plugin_calls: Vec<(String, String)>,
}

impl State {
    /// kubelet's `GetCapacity`: drops resources whose endpoint has been
    /// stopped for longer than the grace period, then counts devices.
    pub(crate) fn capacity(&mut self, now: Instant, grace: Duration) -> BTreeMap<String, Capacity> {
        self.resources.retain(|_, r| !r.grace_expired(now, grace));
        self.resources
            .iter()
            .map(|(name, r)| {
                let cap = Capacity {
                    capacity: r.devices.len(),
                    allocatable: r.healthy_ids().len(),
                };
                (name.clone(), cap)
            })
            .collect()
    }

    /// Devices of `resource` held by admitted pods.
    pub(crate) fn in_use(&self, resource: &str) -> BTreeSet<String> {
        self.pods
            .iter()
            .flat_map(|p| &p.containers)
            .filter_map(|c| c.devices.get(resource))
            .flatten()
            .map(|d| d.id.clone())
            .collect()
    }

    /// What kubelet keeps over a restart: its checkpoint. Every endpoint is
    /// forgotten; each known resource gets a stopped endpoint with no devices,
    /// so capacity is 0 until its plugin registers again.
    pub(crate) fn forget_endpoints(&mut self, now: Instant) {
        for handle in self.streams.drain(..) {
            handle.abort();
        }
        for resource in self.resources.values_mut() {
            *resource = Resource {
                stopped_at: Some(now),
                ..Resource::default()
            };
        }
    }

    pub(crate) fn status(&self, name: &str) -> Option<ResourceStatus> {
        self.resources.get(name).map(|r| ResourceStatus {
            name: name.to_string(),
            endpoint: r.endpoint.as_ref().map(|e| e.socket.clone()),
            options: r.endpoint.as_ref().map(|e| e.options),
            devices: r.devices.values().cloned().collect(),
            stopped_at: r.stopped_at,
            updates: r.updates,
        })
    }
}

/// The state and the signal that it changed.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) options: Options,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(options: Options) -> Shared {
        Shared {
            options,
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the state and wakes everyone waiting for a condition.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let result = f(&mut self.lock());
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
        result
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

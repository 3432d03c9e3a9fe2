//! The `DevicePlugin` gRPC service for one resource.
//!
//! Every answer comes from local state (the node snapshot and the handoff
//! cache): kubelet calls GetPreferredAllocation and Allocate with no
//! deadline, so nothing here may wait on the network. The only waits are
//! bounded pauses for the pod cache: GetPreferredAllocation's while the
//! cache holds no request of the call's size, Allocate's while a call
//! matches nothing.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::Stream;
use proto::clip::{MESSAGE_LIMIT, clip, clip_to};
use proto::deviceplugin::device_plugin_server::DevicePlugin;
use proto::deviceplugin::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, DevicePluginOptions,
    Empty, ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse,
};
use proto::resources::Resource;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::resource::devices;
use crate::resource::state::Snapshot;
use crate::server::delivered::Delivered;
use crate::server::handoff::{AllocateOutcome, Handoff};
use crate::server::preferred;
use crate::server::response::{self, DeviceListStrategy};

/// The handoff cache, shared by the pod watcher and every plugin server.
pub struct HandoffHandle {
    state: Mutex<Handoff>,
    /// Signalled whenever the pod cache changes.
    pub changed: Notify,
}

impl HandoffHandle {
    /// An empty cache.
    pub fn new(unit_bytes: u64) -> HandoffHandle {
        HandoffHandle {
            state: Mutex::new(Handoff::new(unit_bytes)),
            changed: Notify::new(),
        }
    }

    /// Locks the cache (a poisoned lock still holds consistent data: every
    /// mutation is a single map operation).
    pub fn lock(&self) -> MutexGuard<'_, Handoff> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change and wakes Allocate calls waiting for the cache.
    pub fn update(&self, f: impl FnOnce(&mut Handoff)) {
        f(&mut self.lock());
        self.changed.notify_waiters();
    }
}

/// What every plugin server shares.
pub struct PluginContext {
    /// Node state.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Pod cache and allocations.
    pub handoff: Arc<HandoffHandle>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How containers learn their GPUs.
    pub strategy: DeviceListStrategy,
    /// Longest Allocate waits for the pod cache.
    pub handoff_wait: Duration,
    /// Signalled after each Allocate, so verification runs soon after.
    pub allocated: Arc<Notify>,
    /// What each ListAndWatch stream has handed to kubelet.
    pub delivered: Arc<Delivered>,
}

/// One resource's service; `stop` ends its ListAndWatch streams so the
/// server can shut down.
pub struct DevicePluginService {
    resource: Resource,
    ctx: Arc<PluginContext>,
    stop: CancellationToken,
}

impl DevicePluginService {
    /// A service for `resource`.
    pub fn new(
        resource: Resource,
        ctx: Arc<PluginContext>,
        stop: CancellationToken,
    ) -> DevicePluginService {
        DevicePluginService {
            resource,
            ctx,
            stop,
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.ctx.snapshots.borrow().clone()
    }
}

type DeviceStream =
    Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl DevicePlugin for DevicePluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let resource = self.resource.clone();
        let rx = self.ctx.snapshots.clone();
        let stop = self.stop.clone();
        let mark = self.ctx.delivered.open();
        tracing::info!(resource = %resource.name(), "kubelet opened ListAndWatch");
        let start = (rx, None, stop, mark, None);
        let stream = futures::stream::unfold(start, move |(mut rx, last, stop, mark, sent)| {
            let resource = resource.clone();
            async move {
                // Asked for the next message: the previous one is on its way.
                if let Some(generation) = sent {
                    mark.delivered(generation);
                }
                loop {
                    let (generation, list) = {
                        let snap = rx.borrow_and_update().clone();
                        let list =
                            devices::to_kubelet(&devices::devices(&snap.inventory, &resource));
                        (snap.generation, list)
                    };
                    if last.as_ref() == Some(&list) {
                        mark.delivered(generation);
                    } else {
                        let (ok, bad) = (
                            list.iter().filter(|d| d.health == "Healthy").count(),
                            list.iter().filter(|d| d.health != "Healthy").count(),
                        );
                        tracing::debug!(resource = %resource.name(), healthy = ok, unhealthy = bad, "sending device list");
                        let msg = ListAndWatchResponse {
                            devices: list.clone(),
                        };
                        return Some((Ok(msg), (rx, Some(list), stop, mark, Some(generation))));
                    }
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { return None },
                        _ = stop.cancelled() => return None,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let snap = self.snapshot();
        let rname = self.resource.name();
        let known = known_devices(&snap, &self.resource);
        // One deadline for the whole call: kubelet waits on it with none.
        let deadline = tokio::time::Instant::now() + self.ctx.handoff_wait;
        let mut out = Vec::new();
        for req in request.into_inner().container_requests {
            let must = checked_ids(&known, req.must_include_device_i_ds, &rname, "mustInclude")?;
            let mut available =
                checked_ids(&known, req.available_device_i_ds, &rname, "available")?;
            // kubelet's must-include devices are among the available ones;
            // keep them there for a caller that leaves them out.
            let listed: HashSet<&str> = available.iter().map(String::as_str).collect();
            let missing: Vec<String> = must
                .iter()
                .filter(|id| !listed.contains(id.as_str()))
                .cloned()
                .collect();
            available.extend(missing);
            let size = usize::try_from(req.allocation_size).unwrap_or(0);
            let n = u32::try_from(size).unwrap_or(0);
            // kubelet admits a pod as soon as its own watch shows it bound;
            // the plugin's watch may deliver it a moment later. Answering
            // before then would steer kubelet by topology alone, onto GPUs
            // other than the assigned ones, and Allocate would have to
            // refuse them. So, like Allocate, wait (bounded) for the pod
            // cache while it holds no request this call could be for.
            let (steered, aligned) = loop {
                let notified = self.ctx.handoff.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let decided = {
                    let h = self.ctx.handoff.lock();
                    let steered = h.preferred(&self.resource, &available, &must, n);
                    // Also until kubelet's PodResources report is in: before
                    // it, a running pod's request can look pending.
                    let unsure =
                        !h.has_report() || (steered.is_none() && !h.has_pending(&self.resource, n));
                    if unsure && tokio::time::Instant::now() < deadline {
                        None
                    } else {
                        let aligned = match steered {
                            Some(_) => None,
                            None => h.preferred_unassigned(
                                &snap.inventory,
                                &self.resource,
                                &available,
                                &must,
                                n,
                            ),
                        };
                        Some((steered, aligned))
                    }
                };
                match decided {
                    Some(d) => break d,
                    None => {
                        let _ = tokio::time::timeout_at(deadline, notified).await;
                    }
                }
            };
            let ids = match (steered, aligned) {
                (Some((key, ids)), _) => {
                    tracing::debug!(resource = %rname, pod_uid = %clip(&key.uid), container = %clip(&key.container), "steering to assigned devices");
                    ids
                }
                (None, Some(ids)) => ids,
                (None, None) => match &self.resource {
                    Resource::Gpu => {
                        preferred::gpu_slices(&snap.inventory, &available, &must, size)
                    }
                    Resource::GpuMemory => preferred::memory_units(&available, &must, size),
                    Resource::Mig(_) => preferred::first_available(&available, &must, size),
                },
            };
            out.push(ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(Response::new(PreferredAllocationResponse {
            container_responses: out,
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let snap = self.snapshot();
        let rname = self.resource.name();
        let known = known_devices(&snap, &self.resource);
        let deadline = tokio::time::Instant::now() + self.ctx.handoff_wait;
        let mut responses = Vec::new();
        for req in request.into_inner().container_requests {
            let ids = req.devices_ids;
            if let Err(refusal) = check_allocation(&known, &ids, &rname) {
                self.ctx.metrics.allocation(&rname, "refused");
                return Err(refusal);
            }
            let devices = clip_to(&ids.join(","), MESSAGE_LIMIT).to_string();
            let outcome = loop {
                let notified = self.ctx.handoff.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let last_try = tokio::time::Instant::now() >= deadline;
                let decided = {
                    self.ctx
                        .handoff
                        .lock()
                        .allocate(&self.resource, &ids, last_try)
                };
                if decided != AllocateOutcome::Retry {
                    break decided;
                }
                let _ = tokio::time::timeout_at(deadline, notified).await;
            };
            let plan = match outcome {
                AllocateOutcome::Assigned { key, plan } => {
                    let (pod_uid, container) = (clip(&key.uid), clip(&key.container));
                    tracing::info!(resource = %rname, %pod_uid, %container, %devices, "allocated assigned devices");
                    self.ctx.metrics.allocation(&rname, "assigned");
                    plan
                }
                AllocateOutcome::Unassigned { key, plan } => {
                    let (pod_uid, container) = (clip(&key.uid), clip(&key.container));
                    tracing::info!(resource = %rname, %pod_uid, %container, %devices, "allocated kubelet's choice to a pod without assignment");
                    self.ctx.metrics.allocation(&rname, "unassigned");
                    plan
                }
                AllocateOutcome::Unknown { plan } => {
                    tracing::warn!(resource = %rname, %devices, "allocated kubelet's choice to a pod not (yet) in the pod cache");
                    self.ctx.metrics.allocation(&rname, "unknown");
                    plan
                }
                AllocateOutcome::Ambiguous { reason } => {
                    self.ctx.metrics.handoff_ambiguous.inc();
                    tracing::error!(resource = %rname, %reason, "refused Allocate: cannot tell the pods apart");
                    self.ctx.metrics.allocation(&rname, "refused");
                    return Err(Status::failed_precondition(reason));
                }
                AllocateOutcome::Refused { reason } => {
                    let reason = clip_to(&reason, MESSAGE_LIMIT).to_string();
                    tracing::warn!(resource = %rname, %reason, "refused Allocate");
                    self.ctx.metrics.allocation(&rname, "refused");
                    return Err(Status::failed_precondition(reason));
                }
                AllocateOutcome::Retry => return Err(Status::internal("handoff undecided")),
            };
            responses.push(response::container_response(
                &plan,
                &snap.inventory,
                &self.ctx.strategy,
            ));
        }
        self.ctx.allocated.notify_one();
        Ok(Response::new(AllocateResponse {
            container_responses: responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// The IDs of `resource`'s devices on the node.
fn known_devices(snap: &Snapshot, resource: &Resource) -> HashSet<String> {
    devices::devices(&snap.inventory, resource)
        .into_iter()
        .map(|d| d.id.to_string())
        .collect()
}

/// kubelet's `ids` for `field` of a GetPreferredAllocation call, each once
/// in first-seen order; an ID that is no device of the resource is refused,
/// as an answer may only name devices the plugin advertised.
fn checked_ids(
    known: &HashSet<String>,
    ids: Vec<String>,
    rname: &str,
    field: &str,
) -> Result<Vec<String>, Status> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(ids.len().min(known.len()));
    for id in &ids {
        if !known.contains(id) {
            return Err(Status::invalid_argument(format!(
                "{field}: {} is not a device of {rname} on this node",
                clip(id)
            )));
        }
        seen.insert(id.as_str());
    }
    if seen.len() == ids.len() {
        return Ok(ids);
    }
    let mut kept: HashSet<&str> = HashSet::with_capacity(seen.len());
    Ok(ids
        .iter()
        .filter(|id| kept.insert(id.as_str()))
        .cloned()
        .collect())
}

/// An Allocate request's device IDs: at least one, each a device of the
/// resource, none twice (kubelet never sends a device twice; counting one
/// twice would hand a container less than it was promised).
fn check_allocation(known: &HashSet<String>, ids: &[String], rname: &str) -> Result<(), Status> {
    if ids.is_empty() {
        return Err(Status::invalid_argument(format!(
            "Allocate of {rname} names no device"
        )));
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(ids.len().min(known.len()));
    for id in ids {
        if !known.contains(id) {
            return Err(Status::invalid_argument(format!(
                "{} is not a device of {rname} on this node",
                clip(id)
            )));
        }
        if !seen.insert(id.as_str()) {
            return Err(Status::invalid_argument(format!(
                "device {} of {rname} is listed twice",
                clip(id)
            )));
        }
    }
    Ok(())
}

/// The options every gpupack resource registers with.
pub fn options() -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

#[cfg(test)]
mod tests;

//! Pod admission as kubelet's device manager does it (`ManagerImpl.Allocate`,
//! `allocateContainerResources`, `devicesToAllocate`): container by
//! container, resource by resource, one container per plugin call.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use proto::deviceplugin::constants::PRE_START_CONTAINER_TIMEOUT_SECS;
use proto::deviceplugin::device_plugin_client::DevicePluginClient;
use proto::deviceplugin::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest,
    DevicePluginOptions, PreStartContainerRequest, PreferredAllocationRequest,
};
use tonic::transport::Channel;

use crate::error::{AdmitError, Rpc};
use crate::options::Orderer;
use crate::pod::{Container, ContainerKind, Pod};
use crate::run_options::RunOptions;
use crate::select::{self, Start};
use crate::state::{AllocatedDevice, Call, ContainerAllocation, PluginCall, PodAllocation, Shared};

/// Admits `pod`; on any error nothing of it stays allocated.
pub(crate) async fn admit(
    shared: &Arc<Shared>,
    orderer: &mut Orderer,
    pod: &Pod,
) -> Result<PodAllocation, AdmitError> {
    let key = pod.key();
    validate(pod)?;
    let (running, existing) =
        shared.read(|s| (s.running, s.pods.iter().find(|p| p.uid == pod.uid).cloned()));
    if !running {
        return Err(AdmitError::NotRunning { pod: key });
    }
    // kubelet finds the devices already recorded for the pod's containers
    // (e.g. after its own restart) and calls no plugin.
    if let Some(existing) = existing {
        return Ok(existing);
    }

    let mut admission = Admission {
        shared,
        pod: key,
        pending: BTreeMap::new(),
        reusable: BTreeMap::new(),
    };
    let mut containers = Vec::new();
    for (container, kind) in pod.containers_in_admission_order() {
        let allocation = admission.container(orderer, container, kind).await?;
        // Devices of a finished init container may go to later containers;
        // a sidecar's and an app container's stay theirs.
        for (resource, devices) in &allocation.devices {
            let reusable = admission.reusable.entry(resource.clone()).or_default();
            for device in devices {
                if kind == ContainerKind::Init {
                    reusable.insert(device.id.clone());
                } else {
                    reusable.remove(&device.id);
                }
            }
        }
        containers.push(allocation);
    }

    let admitted = PodAllocation {
        uid: pod.uid.clone(),
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        containers,
    };
    shared.update(|s| s.pods.push(admitted.clone()));
    Ok(admitted)
}

fn validate(pod: &Pod) -> Result<(), AdmitError> {
    let invalid = |problem: String| AdmitError::InvalidPod {
        pod: pod.key(),
        problem,
    };
    if pod.uid.is_empty() {
        return Err(invalid("uid is empty".to_string()));
    }
    let mut names = HashSet::new();
    for (container, _) in pod.containers_in_admission_order() {
        if container.name.is_empty() {
            return Err(invalid("a container has no name".to_string()));
        }
        if !names.insert(container.name.as_str()) {
            return Err(invalid(format!(
                "container name {:?} is used twice",
                container.name
            )));
        }
    }
    Ok(())
}

struct Admission<'a> {
    shared: &'a Arc<Shared>,
    pod: String,
    /// Devices given to this pod's containers so far, by resource.
    pending: BTreeMap<String, BTreeSet<String>>,
    /// Devices of this pod's init containers that later ones may reuse.
    reusable: BTreeMap<String, BTreeSet<String>>,
}

/// What the stand-in knows about a resource at the moment it allocates it.
struct ResourceView {
    healthy: BTreeSet<String>,
    in_use: BTreeSet<String>,
    numa: BTreeMap<String, Vec<i64>>,
    options: Option<DevicePluginOptions>,
    client: Option<DevicePluginClient<Channel>>,
}

impl Admission<'_> {
    async fn container(
        &mut self,
        orderer: &mut Orderer,
        container: &Container,
        kind: ContainerKind,
    ) -> Result<ContainerAllocation, AdmitError> {
        let requested: Vec<String> = container
            .requests
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(name, _)| name.clone())
            .collect();
        let order = orderer.resources(requested);
        let mut devices = BTreeMap::new();
        let mut responses = BTreeMap::new();
        for resource in &order {
            let count = container.requests.get(resource).copied().unwrap_or(0) as usize;
            let (allocated, response) = self.resource(orderer, container, resource, count).await?;
            self.pending
                .entry(resource.clone())
                .or_default()
                .extend(allocated.iter().map(|d| d.id.clone()));
            devices.insert(resource.clone(), allocated);
            responses.insert(resource.clone(), response);
        }
        self.pre_start(container, &devices).await?;
        let run = RunOptions::merge(order.iter().filter_map(|r| responses.get(r)));
        Ok(ContainerAllocation {
            name: container.name.clone(),
            kind,
            resource_order: order,
            devices,
            responses,
            run,
        })
    }

    fn view(&self, container: &str, resource: &str) -> Result<ResourceView, AdmitError> {
        let view = self.shared.read(|s| {
            let r = s.resources.get(resource)?;
            let endpoint = r.endpoint.as_ref();
            Some(ResourceView {
                healthy: r.healthy_ids(),
                in_use: s.in_use(resource),
                numa: r
                    .devices
                    .values()
                    .map(|d| {
                        let nodes = d
                            .topology
                            .iter()
                            .flat_map(|t| &t.nodes)
                            .map(|n| n.id)
                            .collect();
                        (d.id.clone(), nodes)
                    })
                    .collect(),
                options: endpoint.map(|e| e.options),
                client: endpoint.and_then(|e| e.client.clone()),
            })
        });
        let mut view = view.ok_or_else(|| AdmitError::Unregistered {
            pod: self.pod.clone(),
            container: container.to_string(),
            resource: resource.to_string(),
        })?;
        if let Some(pending) = self.pending.get(resource) {
            view.in_use.extend(pending.iter().cloned());
        }
        Ok(view)
    }

    /// `devicesToAllocate`, `GetPreferredAllocation` and `Allocate` for one
    /// resource of one container.
    async fn resource(
        &mut self,
        orderer: &mut Orderer,
        container: &Container,
        resource: &str,
        count: usize,
    ) -> Result<
        (
            Vec<AllocatedDevice>,
            proto::deviceplugin::ContainerAllocateResponse,
        ),
        AdmitError,
    > {
        let view = self.view(&container.name, resource)?;
        let empty = BTreeSet::new();
        let reusable = self.reusable.get(resource).unwrap_or(&empty);
        let started =
            select::start(count, reusable, &view.healthy, &view.in_use).map_err(|short| {
                AdmitError::Insufficient {
                    pod: self.pod.clone(),
                    container: container.name.clone(),
                    resource: resource.to_string(),
                    requested: count,
                    available: short.available,
                }
            })?;
        let stopped = || AdmitError::EndpointStopped {
            pod: self.pod.clone(),
            container: container.name.clone(),
            resource: resource.to_string(),
        };
        let chosen = match started {
            Start::Done(devices) => devices,
            Start::Choose(selection) => {
                let wants_preference = view
                    .options
                    .is_some_and(|o| o.get_preferred_allocation_available);
                let preferred = if wants_preference {
                    let mut client = view.client.clone().ok_or_else(stopped)?;
                    let request = ContainerPreferredAllocationRequest {
                        available_device_i_ds: orderer.ids(selection.available()),
                        must_include_device_i_ds: orderer.ids(selection.must_include()),
                        allocation_size: i32::try_from(selection.size()).unwrap_or(i32::MAX),
                    };
                    let answer = client
                        .get_preferred_allocation(PreferredAllocationRequest {
                            container_requests: vec![request.clone()],
                        })
                        .await;
                    let preferred = answer
                        .as_ref()
                        .ok()
                        .and_then(|r| r.get_ref().container_responses.first())
                        .map(|c| c.device_i_ds.clone())
                        .unwrap_or_default();
                    self.record(
                        &container.name,
                        resource,
                        Call::GetPreferredAllocation {
                            available: request.available_device_i_ds,
                            must_include: request.must_include_device_i_ds,
                            size: request.allocation_size,
                            preferred: preferred.clone(),
                            container_requests: 1,
                        },
                    );
                    answer.map_err(|status| {
                        self.plugin_error(
                            &container.name,
                            resource,
                            Rpc::GetPreferredAllocation,
                            &status,
                        )
                    })?;
                    preferred
                } else {
                    Vec::new()
                };
                selection.finish(&preferred)
            }
        };

        let mut client = view.client.clone().ok_or_else(stopped)?;
        let devices_ids = orderer.ids(chosen.iter().cloned().collect());
        let answer = client
            .allocate(AllocateRequest {
                container_requests: vec![ContainerAllocateRequest {
                    devices_ids: devices_ids.clone(),
                }],
            })
            .await;
        self.record(
            &container.name,
            resource,
            Call::Allocate {
                devices_ids,
                container_requests: 1,
            },
        );
        let answer = answer
            .map_err(|status| self.plugin_error(&container.name, resource, Rpc::Allocate, &status))?
            .into_inner();
        let response = answer
            .container_responses
            .into_iter()
            .next()
            .ok_or_else(|| AdmitError::EmptyAllocateResponse {
                pod: self.pod.clone(),
                container: container.name.clone(),
                resource: resource.to_string(),
            })?;
        let allocated = chosen
            .into_iter()
            .map(|id| AllocatedDevice {
                numa_nodes: view.numa.get(&id).cloned().unwrap_or_default(),
                id,
            })
            .collect();
        Ok((allocated, response))
    }

    /// kubelet calls `PreStartContainer` (30 s deadline) for every resource
    /// whose plugin asked for it, before the container starts.
    async fn pre_start(
        &self,
        container: &Container,
        devices: &BTreeMap<String, Vec<AllocatedDevice>>,
    ) -> Result<(), AdmitError> {
        for (resource, allocated) in devices {
            let view = self.view(&container.name, resource)?;
            if !view.options.is_some_and(|o| o.pre_start_required) {
                continue;
            }
            let Some(mut client) = view.client else {
                return Err(AdmitError::EndpointStopped {
                    pod: self.pod.clone(),
                    container: container.name.clone(),
                    resource: resource.clone(),
                });
            };
            let devices_ids: Vec<String> = allocated.iter().map(|d| d.id.clone()).collect();
            let deadline = Duration::from_secs(PRE_START_CONTAINER_TIMEOUT_SECS);
            let mut request = tonic::Request::new(PreStartContainerRequest {
                devices_ids: devices_ids.clone(),
            });
            request.set_timeout(deadline);
            let answer = tokio::time::timeout(deadline, client.pre_start_container(request))
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded(
                        "context deadline exceeded",
                    ))
                });
            self.record(
                &container.name,
                resource,
                Call::PreStartContainer { devices_ids },
            );
            answer.map_err(|status| {
                self.plugin_error(&container.name, resource, Rpc::PreStartContainer, &status)
            })?;
        }
        Ok(())
    }

    fn record(&self, container: &str, resource: &str, call: Call) {
        let entry = PluginCall {
            pod: self.pod.clone(),
            container: container.to_string(),
            resource: resource.to_string(),
            call,
        };
        self.shared.update(|s| s.calls.push(entry));
    }

    fn plugin_error(
        &self,
        container: &str,
        resource: &str,
        rpc: Rpc,
        status: &tonic::Status,
    ) -> AdmitError {
        AdmitError::Plugin {
            pod: self.pod.clone(),
            container: container.to_string(),
            resource: resource.to_string(),
            rpc,
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

//! kubelet's PodResources API v1 (`pkg/kubelet/apis/podresources/server_v1.go`),
//! answered from the stand-in's admitted pods.

use std::sync::{Arc, Mutex, PoisonError};

use proto::podresources::pod_resources_lister_server::PodResourcesLister;
use proto::podresources::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, ContainerDevices,
    ContainerResources, GetPodResourcesRequest, GetPodResourcesResponse, ListPodResourcesRequest,
    ListPodResourcesResponse, NumaNode, PodResources, TopologyInfo,
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::pod::ContainerKind;
use crate::rate::TokenBucket;
use crate::state::{AllocatedDevice, PodAllocation, Shared};

#[derive(Debug, Clone)]
pub(crate) struct PodResourcesService {
    pub(crate) shared: Arc<Shared>,
    pub(crate) limiter: Option<Arc<Mutex<TokenBucket>>>,
}

impl PodResourcesService {
    /// kubelet's rate-limit interceptor.
    fn admit_call(&self) -> Result<(), Status> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let allowed = limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(Instant::now());
        if allowed {
            Ok(())
        } else {
            Err(Status::resource_exhausted("rejected by rate limit"))
        }
    }
}

#[tonic::async_trait]
impl PodResourcesLister for PodResourcesService {
    async fn list(
        &self,
        _request: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        self.admit_call()?;
        let pod_resources = self
            .shared
            .read(|s| s.pods.iter().map(pod_resources).collect());
        Ok(Response::new(ListPodResourcesResponse { pod_resources }))
    }

    async fn get(
        &self,
        request: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        self.admit_call()?;
        let req = request.into_inner();
        let found = self.shared.read(|s| {
            s.pods
                .iter()
                .find(|p| p.name == req.pod_name && p.namespace == req.pod_namespace)
                .map(pod_resources)
        });
        match found {
            Some(pod) => Ok(Response::new(GetPodResourcesResponse {
                pod_resources: Some(pod),
            })),
            None => Err(Status::unknown(format!(
                "pod {} in namespace {} not found",
                req.pod_name, req.pod_namespace
            ))),
        }
    }

    /// Every healthy device of every resource with a live endpoint.
    async fn get_allocatable_resources(
        &self,
        _request: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        self.admit_call()?;
        let devices = self.shared.read(|s| {
            let mut out = Vec::new();
            for (name, resource) in &s.resources {
                if resource.stopped_at.is_some() {
                    continue;
                }
                let healthy = resource.healthy_ids();
                for device in resource.devices.values() {
                    if healthy.contains(&device.id) {
                        let numa: Vec<i64> = device
                            .topology
                            .as_ref()
                            .map(|t| t.nodes.iter().map(|n| n.id).collect())
                            .unwrap_or_default();
                        push_device(&mut out, name, &device.id, &numa);
                    }
                }
            }
            out
        });
        Ok(Response::new(AllocatableResourcesResponse {
            devices,
            ..Default::default()
        }))
    }
}

/// kubelet lists app containers and sidecars; plain init containers have
/// finished and are left out.
fn pod_resources(pod: &PodAllocation) -> PodResources {
    let mut containers: Vec<_> = pod
        .containers
        .iter()
        .filter(|c| c.kind == ContainerKind::Sidecar)
        .collect();
    containers.extend(
        pod.containers
            .iter()
            .filter(|c| c.kind == ContainerKind::App),
    );
    PodResources {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        containers: containers
            .into_iter()
            .map(|c| ContainerResources {
                name: c.name.clone(),
                devices: container_devices(&c.devices),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn container_devices(
    devices: &std::collections::BTreeMap<String, Vec<AllocatedDevice>>,
) -> Vec<ContainerDevices> {
    let mut out = Vec::new();
    for (resource, devs) in devices {
        for dev in devs {
            push_device(&mut out, resource, &dev.id, &dev.numa_nodes);
        }
    }
    out
}

/// kubelet's `containerDevicesFromResourceDeviceInstances`: one entry per
/// device and NUMA node (one without topology if the device reported none).
fn push_device(out: &mut Vec<ContainerDevices>, resource: &str, id: &str, numa_nodes: &[i64]) {
    if numa_nodes.is_empty() {
        out.push(ContainerDevices {
            resource_name: resource.to_string(),
            device_ids: vec![id.to_string()],
            topology: None,
        });
    }
    for node in numa_nodes {
        out.push(ContainerDevices {
            resource_name: resource.to_string(),
            device_ids: vec![id.to_string()],
            topology: Some(TopologyInfo {
                nodes: vec![NumaNode { id: *node }],
            }),
        });
    }
}

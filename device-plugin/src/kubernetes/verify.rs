//! After the fact: kubelet's PodResources API says which devices it gave
//! each container. That teaches the handoff which requests are no longer
//! pending (allocations made before this process started, too), and shows
//! whether any container holds devices other than its assignment; each
//! mismatch is logged, counted and recorded as a Kubernetes Event on the
//! pod, once.

use proto::clip::{MESSAGE_LIMIT, clip, clip_to};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use proto::podresources::{ListPodResourcesRequest, ListPodResourcesResponse, constants};
use proto::resources::Resource;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, ResourceLabels};
use crate::server::handoff::{Mismatch, RecordedPod};
use crate::server::plugin::HandoffHandle;
use crate::server::uds;

/// Only gpupack's resources, per pod, with the device IDs of each
/// (container, resource) gathered: kubelet reports one entry per device.
pub fn recorded(list: &ListPodResourcesResponse) -> Vec<RecordedPod> {
    list.pod_resources
        .iter()
        .filter_map(|p| {
            let mut devices: Vec<(String, String, Vec<String>)> = Vec::new();
            for c in &p.containers {
                for d in c
                    .devices
                    .iter()
                    .filter(|d| Resource::parse(&d.resource_name).is_some())
                {
                    match devices
                        .iter_mut()
                        .find(|(n, r, _)| *n == c.name && *r == d.resource_name)
                    {
                        Some((_, _, ids)) => ids.extend(d.device_ids.iter().cloned()),
                        None => devices.push((
                            c.name.clone(),
                            d.resource_name.clone(),
                            d.device_ids.clone(),
                        )),
                    }
                }
            }
            (!devices.is_empty()).then(|| RecordedPod {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                devices,
            })
        })
        .collect()
}

/// One PodResources List call.
pub async fn list(socket: &Path) -> Result<ListPodResourcesResponse, String> {
    let channel = tokio::time::timeout(Duration::from_secs(5), uds::connect(socket.to_path_buf()))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let mut client = PodResourcesListerClient::new(channel)
        .max_decoding_message_size(constants::MAX_RECV_MESSAGE_BYTES);
    tokio::time::timeout(
        Duration::from_secs(10),
        client.list(ListPodResourcesRequest {}),
    )
    .await
    .map_err(|_| "List timed out".to_string())?
    .map(|r| r.into_inner())
    .map_err(|e| e.message().to_string())
}

/// What the verification loop needs.
pub struct Verifier {
    /// kubelet's PodResources socket.
    pub socket: PathBuf,
    /// Time between verifications without allocations.
    pub interval: Duration,
    /// The handoff cache.
    pub handoff: Arc<HandoffHandle>,
    /// Signalled after allocations.
    pub allocated: Arc<Notify>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Kubernetes client for Events, once there is one.
    pub client: watch::Receiver<Option<Client>>,
    /// This node.
    pub node: String,
}

/// Verifies after every burst of allocations and every `interval`.
pub async fn run(v: Verifier, shutdown: CancellationToken) {
    let Verifier {
        socket,
        interval,
        handoff,
        allocated,
        metrics,
        client,
        node,
    } = v;
    let mut reported: HashSet<(String, String, String)> = HashSet::new();
    let mut failing = false;
    loop {
        match list(&socket).await {
            Ok(resp) => {
                failing = false;
                let pods = recorded(&resp);
                let mismatches = {
                    let mut h = handoff.lock();
                    h.observe_report(&pods);
                    h.verify(&pods)
                };
                handoff.changed.notify_waiters();
                for m in mismatches {
                    if reported.insert((m.uid.clone(), m.container.clone(), m.resource.clone())) {
                        report(&m, &metrics, client.borrow().clone(), &node);
                    }
                }
            }
            Err(e) if !failing => {
                failing = true;
                handoff.lock().report_unavailable();
                handoff.changed.notify_waiters();
                tracing::warn!(socket = %socket.display(), error = %e, "PodResources unavailable; allocations cannot be verified for now");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = allocated.notified() => {
                // Let kubelet finish the pod's other containers first.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

fn report(m: &Mismatch, metrics: &Metrics, client: Option<Client>, node: &str) {
    let (found, expected) = (format!("{:?}", m.found), format!("{:?}", m.expected));
    let (found, expected) = (
        clip_to(&found, MESSAGE_LIMIT / 3),
        clip_to(&expected, MESSAGE_LIMIT / 3),
    );
    let note = format!(
        "container {} holds {} devices {found}, but its gpupack assignment is {expected}",
        clip(&m.container),
        m.resource
    );
    tracing::error!(pod = %clip(&m.pod), container = %clip(&m.container), resource = %m.resource, %found, %expected, "handoff mismatch");
    metrics
        .handoff_mismatches
        .get_or_create(&ResourceLabels {
            resource: m.resource.clone(),
        })
        .inc();
    let Some(client) = client else { return };
    let (namespace, name) = m.pod.split_once('/').unwrap_or(("", &m.pod));
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: Some(m.uid.clone()),
        ..Default::default()
    };
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "gpupack-device-plugin".into(),
            instance: Some(node.into()),
        },
    );
    tokio::spawn(async move {
        let ev = Event {
            type_: EventType::Warning,
            reason: "GpuAssignmentMismatch".into(),
            // The API refuses a note over 1 kB.
            note: Some(clip_to(&note, 1000).to_string()),
            action: "VerifyAllocation".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &reference).await {
            tracing::warn!(error = %e, "cannot record mismatch event");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::podresources::{ContainerDevices, ContainerResources, PodResources};

    #[test]
    fn keeps_only_gpupack_devices() {
        let resp = ListPodResourcesResponse {
            pod_resources: vec![
                PodResources {
                    name: "a".into(),
                    namespace: "ns".into(),
                    containers: vec![ContainerResources {
                        name: "c".into(),
                        devices: vec![
                            ContainerDevices {
                                resource_name: "gpupack.io/gpu".into(),
                                device_ids: vec!["GPU-x::s0".into()],
                                topology: None,
                            },
                            ContainerDevices {
                                resource_name: "gpupack.io/gpu".into(),
                                device_ids: vec!["GPU-z::s1".into()],
                                topology: None,
                            },
                            ContainerDevices {
                                resource_name: "nvidia.com/gpu".into(),
                                device_ids: vec!["GPU-y".into()],
                                topology: None,
                            },
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                PodResources {
                    name: "b".into(),
                    namespace: "ns".into(),
                    ..Default::default()
                },
            ],
        };
        let r = recorded(&resp);
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].devices,
            vec![(
                "c".into(),
                "gpupack.io/gpu".into(),
                vec!["GPU-x::s0".into(), "GPU-z::s1".into()]
            )]
        );
    }
}

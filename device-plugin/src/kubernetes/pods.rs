//! The pod cache: pods bound to this node, watched with the field selector
//! `spec.nodeName=<node>`, turned into [`PodRecord`]s for the handoff.
//! Binding order is the order pods are first seen; an initial list is
//! ordered by creation time, as kubelet admits a batch.

use proto::clip::{MESSAGE_LIMIT, clip, clip_to};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use proto::assignment::{ANNOTATION, PodAssignment};
use proto::resources::Resource;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::server::handoff::{AssignmentState, ContainerRequests, PodRecord};
use crate::server::plugin::HandoffHandle;

/// The gpupack requests of a container (limits, falling back to requests;
/// extended resources must have equal ones).
fn container_requests(c: &Container) -> Option<ContainerRequests> {
    let res = c.resources.as_ref()?;
    let amounts: &BTreeMap<String, Quantity> = res.limits.as_ref().or(res.requests.as_ref())?;
    let requests: Vec<(Resource, u32)> = amounts
        .iter()
        .filter_map(|(name, q)| {
            let r = Resource::parse(name)?;
            let n = match proto::quantity::extended_count_u32(&q.0) {
                Ok(n) => n,
                Err(error) => {
                    // The API server admits only whole extended resources.
                    tracing::warn!(container = %clip(&c.name), resource = %clip(name), %error, "unreadable request");
                    return None;
                }
            };
            (n > 0).then_some((r, n))
        })
        .collect();
    (!requests.is_empty()).then(|| ContainerRequests {
        name: c.name.clone(),
        requests,
    })
}

/// The handoff's view of a pod; `None` for pods requesting no gpupack
/// resource.
pub fn record_from_pod(pod: &Pod, node: &str, order: u64) -> Option<PodRecord> {
    let spec = pod.spec.as_ref()?;
    let containers: Vec<ContainerRequests> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter_map(container_requests)
        .collect();
    if containers.is_empty() {
        return None;
    }
    let meta = &pod.metadata;
    let assignment = match meta.annotations.as_ref().and_then(|a| a.get(ANNOTATION)) {
        None => AssignmentState::None,
        Some(text) => match PodAssignment::from_json(text) {
            Ok(a) if a.node == node => AssignmentState::Valid(a),
            Ok(a) => AssignmentState::Invalid(format!(
                "assigned to node {:?}, bound to {node:?}",
                a.node
            )),
            Err(e) => AssignmentState::Invalid(e.to_string()),
        },
    };
    Some(PodRecord {
        uid: meta.uid.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        order,
        assignment,
        containers,
        terminated: proto::pod::is_finished(pod),
        admitted: proto::pod::is_admitted(pod),
    })
}

/// Keeps the handoff cache in sync with the API server, for as long as
/// `shutdown` allows; reconnects with backoff and never gives up.
pub async fn run(
    mut client: watch::Receiver<Option<Client>>,
    node: String,
    handoff: Arc<HandoffHandle>,
    synced: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let client = tokio::select! {
        c = client.wait_for(Option::is_some) => match c { Ok(c) => c.clone(), Err(_) => return },
        _ = shutdown.cancelled() => return,
    };
    let Some(client) = client else { return };
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut next: u64 = 0;
    let mut initial: Vec<Pod> = Vec::new();
    let mut order_of = |uid: &str, seen: &mut HashMap<String, u64>| {
        *seen.entry(uid.to_string()).or_insert_with(|| {
            next += 1;
            next
        })
    };
    loop {
        let ev = tokio::select! {
            ev = stream.next() => ev,
            _ = shutdown.cancelled() => return,
        };
        match ev {
            None => return,
            Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            Some(Ok(Event::Init)) => initial.clear(),
            Some(Ok(Event::InitApply(p))) => initial.push(p),
            Some(Ok(Event::InitDone)) => {
                initial.sort_by(|a, b| {
                    a.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0)
                        .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
                });
                let records: Vec<PodRecord> = initial
                    .drain(..)
                    .filter_map(|p| {
                        let uid = p.metadata.uid.clone().unwrap_or_default();
                        record_from_pod(&p, &node, order_of(&uid, &mut seen))
                    })
                    .collect();
                tracing::info!(pods = records.len(), "pod cache synced");
                handoff.update(|h| h.replace_all(records));
                synced.send_replace(true);
            }
            Some(Ok(Event::Apply(p))) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                match record_from_pod(&p, &node, order_of(&uid, &mut seen)) {
                    Some(r) => {
                        if let AssignmentState::Invalid(why) = &r.assignment {
                            tracing::warn!(pod = %format!("{}/{}", clip(&r.namespace), clip(&r.name)), error = %clip_to(why, MESSAGE_LIMIT), "pod has an unusable gpupack assignment");
                        }
                        handoff.update(|h| h.upsert(r));
                    }
                    None => handoff.update(|h| h.remove(&uid)),
                }
            }
            Some(Ok(Event::Delete(p))) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                seen.remove(&uid);
                handoff.update(|h| h.remove(&uid));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotation: Option<&str>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "llm", "namespace": "ai", "uid": "u-1",
                "annotations": annotation.map(|a| serde_json::json!({ ANNOTATION: a })).unwrap_or(serde_json::json!({}))
            },
            "spec": {
                "nodeName": "n1",
                "initContainers": [{ "name": "warm", "resources": { "limits": { "gpupack.io/gpu": "1" } } }],
                "containers": [
                    { "name": "server", "resources": { "limits": { "gpupack.io/gpu": "2", "gpupack.io/gpu-memory": "80", "cpu": "4" } } },
                    { "name": "sidecar", "resources": { "limits": { "cpu": "1" } } }
                ]
            },
            "status": { "phase": "Pending" }
        }))
        .unwrap()
    }

    #[test]
    fn reads_requests_of_init_and_app_containers() {
        let r = record_from_pod(&pod(None), "n1", 7).unwrap();
        assert_eq!(r.order, 7);
        assert_eq!(r.assignment, AssignmentState::None);
        assert_eq!(r.containers.len(), 2);
        assert_eq!(r.containers[0].name, "warm");
        assert_eq!(
            r.containers[1].requests,
            vec![(Resource::Gpu, 2), (Resource::GpuMemory, 80)]
        );
        assert!(!r.terminated);
    }

    #[test]
    fn assignment_is_parsed_and_checked_against_the_node() {
        let a = r#"{"version":"v1","node":"n1","containers":[{"name":"server","gpus":[{"uuid":"GPU-a","index":0,"memoryBytes":1}]}]}"#;
        assert!(matches!(
            record_from_pod(&pod(Some(a)), "n1", 1).unwrap().assignment,
            AssignmentState::Valid(_)
        ));
        assert!(matches!(
            record_from_pod(&pod(Some(a)), "n2", 1).unwrap().assignment,
            AssignmentState::Invalid(_)
        ));
        match record_from_pod(&pod(Some("{")), "n1", 1)
            .unwrap()
            .assignment
        {
            AssignmentState::Invalid(e) => assert!(e.contains("assignment"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pods_without_gpupack_requests_are_skipped() {
        let mut p = pod(None);
        p.spec.as_mut().unwrap().containers.remove(0);
        p.spec.as_mut().unwrap().init_containers = None;
        assert!(record_from_pod(&p, "n1", 1).is_none());
        let mut done = pod(None);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(record_from_pod(&done, "n1", 1).unwrap().terminated);
    }
}

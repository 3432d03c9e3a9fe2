//! The kubelet side of one simulated node: the kubelet device-manager
//! stand-in (which the real device plugin process registers with), plus
//! what the rest of kubelet does with the API: registering the Node,
//! reflecting the plugins' devices into `status.capacity/allocatable`, and
//! admitting the pods bound to the node, then reporting them Running (or
//! Failed with kubelet's `UnexpectedAdmissionError`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubelet_standin::{Kubelet, Options, Order};
use serde_json::json;
use tokio::task::JoinHandle;

/// CPU, memory and pod capacity every simulated node reports besides its GPUs.
const BASE_CAPACITY: [(&str, &str); 3] = [("cpu", "128"), ("memory", "1Ti"), ("pods", "110")];

/// How often device counts are compared with what the Node shows.
const REFLECT_INTERVAL: Duration = Duration::from_millis(100);

/// One node's kubelet.
pub struct NodeAgent {
    pub name: String,
    pub kubelet: Arc<Kubelet>,
    pub dir: PathBuf,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeAgent {
    /// Starts the kubelet stand-in in `dir` and registers the Node.
    pub async fn start(
        name: &str,
        dir: &Path,
        client: kube::Client,
        seed: u64,
    ) -> Result<NodeAgent> {
        let options = Options::new(dir).order(Order::Random { seed });
        let kubelet = Arc::new(
            Kubelet::new(options)
                .await
                .with_context(|| format!("starting the kubelet stand-in of {name}"))?,
        );
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "gpupack.io/gpu": "true",
                    "nvidia.com/gpu.present": "true",
                },
            },
        }))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("registering node {name}")),
        }
        let reflect = tokio::spawn(reflect_capacity(name.to_string(), kubelet.clone(), nodes));
        let admit = tokio::spawn(admit_pods(name.to_string(), kubelet.clone(), client));
        Ok(NodeAgent {
            name: name.to_string(),
            kubelet,
            dir: dir.to_path_buf(),
            tasks: vec![reflect, admit],
        })
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// kubelet's node status: Ready, with the base capacity plus each device
/// plugin resource (capacity counts every device, allocatable the healthy
/// ones). Written whenever it changes.
async fn reflect_capacity(name: String, kubelet: Arc<Kubelet>, nodes: Api<Node>) {
    let mut written: Option<BTreeMap<String, (String, String)>> = None;
    loop {
        let mut now: BTreeMap<String, (String, String)> = BASE_CAPACITY
            .iter()
            .map(|(k, v)| (k.to_string(), (v.to_string(), v.to_string())))
            .collect();
        for (resource, c) in kubelet.capacity() {
            now.insert(
                resource,
                (c.capacity.to_string(), c.allocatable.to_string()),
            );
        }
        if written.as_ref() != Some(&now) {
            let mut capacity = serde_json::Map::new();
            let mut allocatable = serde_json::Map::new();
            for gone in written
                .iter()
                .flat_map(|w| w.keys())
                .filter(|k| !now.contains_key(*k))
            {
                capacity.insert(gone.clone(), serde_json::Value::Null);
                allocatable.insert(gone.clone(), serde_json::Value::Null);
            }
            for (k, (c, a)) in &now {
                capacity.insert(k.clone(), json!(c));
                allocatable.insert(k.clone(), json!(a));
            }
            let patch = json!({"status": {
                "capacity": capacity,
                "allocatable": allocatable,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            }});
            match nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => written = Some(now),
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "node status not written; retrying")
                }
            }
        }
        tokio::time::sleep(REFLECT_INTERVAL).await;
    }
}

/// Admits the pods bound to this node, one at a time as kubelet does, and
/// releases the devices of pods that are deleted.
async fn admit_pods(name: String, kubelet: Arc<Kubelet>, client: kube::Client) {
    let all: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={name}"));
    let mut stream = watcher(all, config).default_backoff().boxed();
    let mut handled: BTreeSet<String> = BTreeSet::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "pod watch error");
                continue;
            }
        };
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
                if handled.contains(&uid)
                    || matches!(phase.as_deref(), Some("Running" | "Succeeded" | "Failed"))
                {
                    handled.insert(uid);
                    continue;
                }
                handled.insert(uid);
                admit_one(&name, &kubelet, &client, &pod).await;
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    kubelet.release(uid);
                    handled.remove(uid);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

async fn admit_one(node: &str, kubelet: &Kubelet, client: &kube::Client, pod: &Pod) {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let status = match kubelet_standin::Pod::from_k8s(pod) {
        Err(e) => failed(&e.to_string()),
        Ok(p) => match kubelet.admit(&p).await {
            // As kubelet reports an admitted pod: its status manager writes
            // the phase and one status per container only after admission
            // (`generateAPIPodStatus` in `syncPod`); the device plugin reads
            // these after a restart.
            Ok(_) => json!({"status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": container_statuses(pod),
            }}),
            Err(e) => failed(&e.to_string()),
        },
    };
    tracing::info!(node, pod = %format!("{ns}/{pod_name}"), phase = %status["status"]["phase"], "admission");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for _ in 0..50 {
        match pods
            .patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                tracing::debug!(node, pod = %pod_name, error = %e, "pod status not written; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A running status for every app container of `pod`, in kubelet's shape.
pub(crate) fn container_statuses(pod: &Pod) -> serde_json::Value {
    let started =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let statuses: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            json!({
                "name": c.name,
                "ready": true,
                "started": true,
                "restartCount": 0,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "state": {"running": {"startedAt": started}},
            })
        })
        .collect();
    serde_json::Value::Array(statuses)
}

/// kubelet rejects a pod whose devices cannot be allocated with this reason.
fn failed(message: &str) -> serde_json::Value {
    json!({"status": {
        "phase": "Failed",
        "reason": "UnexpectedAdmissionError",
        "message": format!("Allocate failed due to {message}, which is unexpected"),
    }})
}

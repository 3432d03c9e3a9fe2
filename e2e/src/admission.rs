//! What kubelet writes after the scheduler binds a pod to its node, for any
//! number of nodes at once and without devices: no device plugin, no
//! device-manager stand-in, only the pod status writes that tell the rest
//! of the cluster that kubelet has admitted the pod. The extender's bind
//! reads exactly these (a pod is admitted once kubelet has written any
//! status of its own), so they pace how fast pods can follow each other
//! onto one node.
//!
//! For each newly bound pod, after `admit_after`: the conditions kubelet's
//! status manager writes on its first sync of an admitted pod
//! (`PodReadyToStartContainers` False while the sandbox starts,
//! `Initialized` True, `ContainersReady` and `Ready` False, phase Pending);
//! after a further `running_after`: phase Running with one running status
//! per container (as [`crate::node_agent`] writes it) and the conditions
//! True. The conditions go in a strategic merge patch, which keeps the
//! `PodScheduled` condition the Binding set.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// How long kubelet takes.
#[derive(Clone, Copy, Debug)]
pub struct AdmissionOptions {
    /// From the bind being seen to the first status write (kubelet's watch
    /// delivery, admission, the status manager's sync).
    pub admit_after: Duration,
    /// From that write to phase Running (sandbox and containers started).
    pub running_after: Duration,
}

impl Default for AdmissionOptions {
    fn default() -> Self {
        AdmissionOptions {
            admit_after: Duration::from_millis(200),
            running_after: Duration::from_millis(500),
        }
    }
}

/// Admits every bound pod of the cluster; stops when dropped.
pub struct AdmissionSimulator {
    admitted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl AdmissionSimulator {
    pub fn start(client: kube::Client, options: AdmissionOptions) -> AdmissionSimulator {
        let admitted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(client, options, admitted.clone()));
        AdmissionSimulator { admitted, task }
    }

    /// Pods whose admission status has been written.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }
}

impl Drop for AdmissionSimulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(client: kube::Client, options: AdmissionOptions, admitted: Arc<AtomicU64>) {
    let all: Api<Pod> = Api::all(client.clone());
    let mut stream = watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut handled: HashSet<String> = HashSet::new();
    let mut writers = tokio::task::JoinSet::new();
    while let Some(event) = stream.next().await {
        let pod = match event {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "pod watch error");
                continue;
            }
        };
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if !bound || pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
            continue;
        }
        if !handled.insert(uid) {
            continue;
        }
        let client = client.clone();
        let admitted = admitted.clone();
        writers.spawn(async move {
            tokio::time::sleep(options.admit_after).await;
            if write(&client, &pod, &admission_status()).await {
                admitted.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(options.running_after).await;
                write(&client, &pod, &running_status(&pod)).await;
            }
        });
        while writers.try_join_next().is_some() {}
    }
}

fn condition(type_: &str, status: &str, reason: Option<&str>, now: &Value) -> Value {
    let mut c = json!({"type": type_, "status": status, "lastTransitionTime": now});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

fn now() -> Value {
    json!(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now()
    ))
}

/// kubelet's first status of an admitted pod: the sandbox is starting.
fn admission_status() -> Value {
    let now = now();
    json!({"status": {
        "phase": "Pending",
        "conditions": [
            condition("PodReadyToStartContainers", "False", None, &now),
            condition("Initialized", "True", None, &now),
            condition("Ready", "False", Some("ContainersNotReady"), &now),
            condition("ContainersReady", "False", Some("ContainersNotReady"), &now),
        ],
    }})
}

/// The pod running: every container started and ready.
fn running_status(pod: &Pod) -> Value {
    let now = now();
    json!({"status": {
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers", "True", None, &now),
            condition("Ready", "True", None, &now),
            condition("ContainersReady", "True", None, &now),
        ],
        "containerStatuses": crate::node_agent::container_statuses(pod),
    }})
}

/// Writes a status patch, retrying conflicts and outages a few times; false
/// when it never landed (the pod gone, or the API away throughout).
async fn write(client: &kube::Client, pod: &Pod, status: &Value) -> bool {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    for _ in 0..20 {
        match pods
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(status))
            .await
        {
            Ok(_) => return true,
            Err(kube::Error::Api(e)) if e.code == 404 => return false,
            Err(e) => {
                tracing::debug!(pod = %name, error = %e, "pod status not written; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    false
}

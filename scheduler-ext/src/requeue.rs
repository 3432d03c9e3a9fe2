//! Pods kube-scheduler failed while the extender was unreachable.
//!
//! kube-scheduler answers an extender it cannot reach with a
//! `SchedulerError` and parks the pod in its unschedulable pool, which only
//! an update of the pod, a change in the cluster, or a flush every five
//! minutes empties. After every extender restart or rollout, a quiet
//! cluster would leave new pods pending for minutes. So once this extender
//! has its initial lists (it can answer), it annotates such pods
//! ([`REQUEUED_ANNOTATION`]); kube-scheduler sees the update and tries them
//! again at once.
//!
//! It does not fight kube-scheduler or loop: only pending pods whose
//! `PodScheduled` condition says `SchedulerError`, that ask for gpupack's
//! resources or carry a model annotation, and whose failure predates this
//! extender's readiness, are touched; each at most once per process, in two
//! sweeps (at readiness, and a few seconds later for failures whose status
//! was still on its way).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use proto::assignment::REQUEUED_ANNOTATION;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::demand::PodNeeds;
use crate::metrics::Metrics;
use crate::watch::Readiness;

/// Pause before the second sweep.
const SECOND_SWEEP: Duration = Duration::from_secs(5);

/// Whether kube-scheduler last failed `pod` with a scheduler error (not a
/// verdict that it does not fit), at or before `before`.
pub fn failed_by_scheduler_error(pod: &Pod, before: &k8s_openapi::jiff::Timestamp) -> bool {
    let pending = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.node_name.as_deref().unwrap_or_default().is_empty())
        && pod.metadata.deletion_timestamp.is_none()
        && !proto::pod::is_finished(pod);
    pending
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("SchedulerError")
                    && c.last_transition_time
                        .as_ref()
                        .is_none_or(|t| t.0 <= *before)
            })
}

/// Whether the pod is one this extender places.
fn ours(pod: &Pod) -> bool {
    let annotated = pod.annotations().contains_key(proto::annotations::MODEL);
    annotated || PodNeeds::from_pod(pod).is_ok_and(|n| !n.is_empty())
}

/// Waits for readiness, then re-queues the pods the outage left parked.
pub async fn run(
    client: Client,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    tokio::select! {
        _ = readiness.wait() => {}
        _ = stop.cancelled() => return,
    }
    let ready_at = k8s_openapi::jiff::Timestamp::now();
    let mut touched: HashSet<String> = HashSet::new();
    for sweep in 0..2 {
        if sweep > 0 {
            tokio::select! {
                _ = tokio::time::sleep(SECOND_SWEEP) => {}
                _ = stop.cancelled() => return,
            }
        }
        if let Err(e) = sweep_once(&client, &ready_at, &mut touched, &metrics).await {
            tracing::warn!(error = %e, "cannot look for pods failed while the extender was away");
        }
    }
}

async fn sweep_once(
    client: &Client,
    ready_at: &k8s_openapi::jiff::Timestamp,
    touched: &mut HashSet<String>,
    metrics: &Metrics,
) -> Result<(), kube::Error> {
    let pending = Api::<Pod>::all(client.clone())
        .list(&ListParams::default().fields("spec.nodeName="))
        .await?;
    let value = ready_at.to_string();
    for pod in pending.items {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if touched.contains(&uid) || !failed_by_scheduler_error(&pod, ready_at) || !ours(&pod) {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let patch = json!({"metadata": {"annotations": {REQUEUED_ANNOTATION: value}}});
        match Api::<Pod>::namespaced(client.clone(), &ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                touched.insert(uid);
                metrics.pods_requeued.inc();
                tracing::info!(pod = %format!("{ns}/{name}"), "re-queued a pod kube-scheduler failed while the extender was away");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot re-queue pod");
            }
        }
    }
    Ok(())
}

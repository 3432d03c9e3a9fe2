//! The cluster target: the same scenarios against a real cluster (kind
//! with the `simulated` overlay, or GPU nodes), with the real kube-scheduler
//! and kubelet. Selected with `E2E_TARGET=cluster` and `KUBECONFIG`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use crate::spec::{NAMESPACE, PodBuilder};
use crate::view::ClusterView;

/// Environment variable that selects the target.
pub const TARGET_VAR: &str = "E2E_TARGET";

/// Whether the cluster target is selected; tests that need it print why
/// they skip otherwise.
pub fn selected() -> bool {
    std::env::var(TARGET_VAR).as_deref() == Ok("cluster")
}

/// A real cluster.
pub struct RealCluster {
    pub client: kube::Client,
}

impl RealCluster {
    /// Connects through `KUBECONFIG` and makes a clean workload namespace.
    pub async fn connect() -> Result<RealCluster> {
        let client = kube::Client::try_default()
            .await
            .context("E2E_TARGET=cluster needs a reachable cluster in KUBECONFIG")?;
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))?;
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
        let _ = pods
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &ListParams::default().labels("app.kubernetes.io/part-of=gpupack-e2e"),
            )
            .await;
        Ok(RealCluster { client })
    }

    pub async fn submit(&self, pods: &[PodBuilder]) -> Result<()> {
        crate::spec::create_pods(&self.client, pods).await
    }

    /// Waits until `done` holds. Container environments are not read back
    /// here (the pods print them; `kubectl logs` shows them).
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&ClusterView) -> bool,
    ) -> Result<ClusterView> {
        let start = Instant::now();
        loop {
            let view = ClusterView::read(&self.client).await?;
            if done(&view) {
                return Ok(view);
            }
            if start.elapsed() > limit {
                bail!("{what}: not reached after {limit:?}\n{}", view.summary());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

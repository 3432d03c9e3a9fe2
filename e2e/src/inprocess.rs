//! A cluster inside the test process, for runs that go past what separate
//! processes allow (hundreds of nodes, replays compared placement by
//! placement): the API stand-in, Nodes as kubelet reports them with what
//! the device plugin advertises, and the extender started with the flags
//! the shipped DaemonSet gives it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apiserver_standin::ApiServer;
use clap::Parser;
use device_plugin::resource::devices;
use k8s_openapi::api::core::v1::Node;
use proto::inventory::NodeInventory;
use proto::resources::{GPU, GPU_MEMORY};
use serde_json::json;

/// The Node as kubelet reports it: Ready, with `cpu` and `memory` (as
/// quantities) and the devices the plugin advertises for each resource of
/// `inv`.
pub fn node(inv: &NodeInventory, cpu: &str, memory: &str) -> Result<Node> {
    let name = &inv.node_name;
    let mut capacity = BTreeMap::from([
        ("cpu".to_string(), json!(cpu)),
        ("memory".to_string(), json!(memory)),
        ("pods".to_string(), json!("110")),
    ]);
    for r in devices::resources(inv) {
        let n = devices::devices(inv, &r).len();
        if n > 0 {
            capacity.insert(r.name(), json!(n.to_string()));
        }
    }
    let whole = inv.gpus.iter().any(|g| !g.mig_enabled);
    for needed in [GPU, GPU_MEMORY] {
        if whole && !capacity.contains_key(needed) {
            bail!("node {name} advertises no {needed}");
        }
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "gpupack.io/gpu": "true",
        }},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }))?)
}

/// The extender's configuration as the shipped DaemonSet starts it, on a
/// free loopback port and without the Hub.
pub fn shipped_extender_config() -> Result<scheduler_ext::config::Config> {
    let objects = crate::manifests::parse_documents(crate::scheduler::SHIPPED_MANIFESTS)?;
    let (_, container) = crate::manifests::container(&objects, "extender")?;
    let shipped = container.args.unwrap_or_default();
    let mut args = <scheduler_ext::config::Args as Parser>::try_parse_from(
        std::iter::once("gpupack-scheduler-ext".to_string()).chain(shipped),
    )
    .context("the shipped extender arguments")?;
    args.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    args.metrics_listen = None;
    args.hub_offline = Some(true);
    args.identity = Some("gpupack-scheduler-0".into());
    Ok(scheduler_ext::config::Config::resolve(args)?)
}

/// The extender with the shipped configuration, as its own service
/// account, once ready; and the URL its verbs are under.
pub async fn start_extender(api: &ApiServer) -> Result<(scheduler_ext::Extender, String)> {
    let config = shipped_extender_config()?;
    let ext = scheduler_ext::server::Extender::start(
        api.client_as("gpupack-scheduler-ext").await?,
        &config,
        scheduler_ext::bind::system_clock(),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ext.readiness.is_ready() {
        if Instant::now() > deadline {
            bail!("the extender did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("http://{}{}", ext.addr(), config.url_prefix);
    Ok((ext, url))
}

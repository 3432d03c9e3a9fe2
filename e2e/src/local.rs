//! The local target: the API stand-in in this process, per simulated node
//! a real device plugin process and an in-process kubelet ([`NodeAgent`]),
//! real extender processes, and scheduler drivers. Everything it starts is
//! stopped, and every socket and file removed, when it drops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apiserver_standin::{ApiServer, ResourceType};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use proto::inventory::GpuNodeInventory;
use proto::resources::GPU;

use crate::extender_client::ExtenderClient;
use crate::multicall;
use crate::node_agent::NodeAgent;
use crate::process::{Process, Programs, free_port};
use crate::scheduler::{DriverOptions, SchedulerDriver};
use crate::spec::{NAMESPACE, NodeSpec, PodBuilder};
use crate::view::ClusterView;

/// Kubeconfig identities (bearer tokens) of the components; the API
/// stand-in records which one made each request.
pub mod identity {
    pub const DEVICE_PLUGIN: &str = "gpupack-device-plugin";
    pub const SCHEDULER_EXT: &str = "gpupack-scheduler-ext";
    pub const KUBELET: &str = "kubelet";
    pub const KUBE_SCHEDULER: &str = "kube-scheduler";
    pub const HARNESS: &str = "e2e";
}

/// One simulated node.
pub struct LocalNode {
    pub spec: NodeSpec,
    pub plugin: Process,
    pub admin_port: u16,
    pub agent: NodeAgent,
    args: Vec<String>,
}

/// One extender process.
pub struct LocalExtender {
    pub process: Process,
    pub port: u16,
    pub client: ExtenderClient,
    args: Vec<String>,
}

/// Options of a local run.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    pub nodes: Vec<NodeSpec>,
    /// Extender processes, each with its own scheduler driver.
    pub extenders: usize,
    pub seed: u64,
    /// The scheduler drivers back off as kube-scheduler does (1 s doubling
    /// to 10 s) rather than with the shortened test backoffs, so that
    /// timings compare with a real cluster's.
    pub kube_scheduler_backoff: bool,
    /// The Hugging Face Hub the extenders read models outside the catalog
    /// from (`HF_ENDPOINT`); `None`: none, they are refused.
    pub hub_endpoint: Option<String>,
}

impl LocalOptions {
    pub fn new(nodes: Vec<NodeSpec>) -> LocalOptions {
        LocalOptions {
            nodes,
            extenders: 1,
            seed: 7,
            kube_scheduler_backoff: false,
            hub_endpoint: None,
        }
    }
}

/// How a component is stopped before a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL: a crash, an OOM kill.
    Kill,
    /// SIGTERM: a rolling update, a drain.
    Terminate,
}

/// A running local cluster. Field order is drop order: drivers, then the
/// extenders, the nodes, the API server, and last the directory.
pub struct LocalCluster {
    pub drivers: Vec<SchedulerDriver>,
    pub extenders: Vec<LocalExtender>,
    pub nodes: Vec<LocalNode>,
    pub api: ApiServer,
    /// Client of the harness itself (creating pods, reading state).
    pub client: kube::Client,
    programs: Programs,
    driver_options: DriverOptions,
    hub_endpoint: Option<String>,
    tmp: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts everything and waits until every node's devices are in the
    /// API, every inventory is published and every extender is ready.
    /// With `E2E_KEEP_LOGS` set, the run directory (every component's log)
    /// outlives the run, for reading after a failure.
    pub async fn start(programs: Programs, options: LocalOptions) -> Result<LocalCluster> {
        let tmp = tempfile::Builder::new()
            .prefix("gpupack-e2e-")
            .disable_cleanup(std::env::var_os("E2E_KEEP_LOGS").is_some())
            .tempdir()
            .context("creating the run directory")?;
        let api = ApiServer::start()
            .await
            .context("starting the API server stand-in")?;
        api.register(ResourceType::gpu_node_inventory());
        let client = api.client_as(identity::HARNESS).await?;
        let kubeconfig = |who: &str| -> Result<PathBuf> {
            let path = tmp.path().join(format!("{who}.kubeconfig"));
            api.write_kubeconfig_as(&path, who)?;
            Ok(path)
        };
        let plugin_kubeconfig = kubeconfig(identity::DEVICE_PLUGIN)?;
        let ext_kubeconfig = kubeconfig(identity::SCHEDULER_EXT)?;
        let kubelet_client = api.client_as(identity::KUBELET).await?;
        let scheduler_client = api.client_as(identity::KUBE_SCHEDULER).await?;

        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))?;
        let _ = Api::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await;

        let mut nodes = Vec::new();
        for (i, spec) in options.nodes.iter().enumerate() {
            let dir = tmp.path().join("nodes").join(&spec.name);
            let plugin_dir = dir.join("device-plugins");
            std::fs::create_dir_all(&plugin_dir)?;
            let sim = dir.join("node.yaml");
            std::fs::write(&sim, &spec.simulated)?;
            let agent = NodeAgent::start(
                &spec.name,
                &plugin_dir,
                kubelet_client.clone(),
                options.seed.wrapping_add(i as u64),
            )
            .await?;
            let admin_port = free_port()?;
            let args = vec![
                "--node-name".into(),
                spec.name.clone(),
                "--backend".into(),
                "simulated".into(),
                "--simulated-file".into(),
                sim.display().to_string(),
                "--device-plugin-dir".into(),
                plugin_dir.display().to_string(),
                "--pod-resources-socket".into(),
                plugin_dir
                    .join("pod-resources/kubelet.sock")
                    .display()
                    .to_string(),
                "--kubeconfig".into(),
                plugin_kubeconfig.display().to_string(),
                "--http-listen".into(),
                "127.0.0.1:0".into(),
                "--admin-listen".into(),
                format!("127.0.0.1:{admin_port}"),
                "--verify-interval-secs".into(),
                "2".into(),
            ];
            let plugin = Process::spawn(
                &programs,
                multicall::DEVICE_PLUGIN,
                &format!("device-plugin {}", spec.name),
                &args,
                &[],
                &dir.join("device-plugin.log"),
            )?;
            nodes.push(LocalNode {
                spec: spec.clone(),
                plugin,
                admin_port,
                agent,
                args,
            });
        }

        let mut driver_options = DriverOptions::shipped("http://127.0.0.1:0")?;
        if options.kube_scheduler_backoff {
            driver_options.initial_backoff = Duration::from_secs(1);
            driver_options.max_backoff = Duration::from_secs(10);
        }
        let mut cluster = LocalCluster {
            drivers: Vec::new(),
            extenders: Vec::new(),
            nodes,
            api,
            client,
            programs,
            driver_options,
            hub_endpoint: options.hub_endpoint.clone(),
            tmp,
        };
        for i in 0..options.extenders.max(1) {
            let ext = cluster.spawn_extender(i, free_port()?, &ext_kubeconfig)?;
            cluster.extenders.push(ext);
        }
        cluster.wait_nodes_ready(Duration::from_secs(60)).await?;
        for i in 0..cluster.extenders.len() {
            cluster
                .wait_extender_ready(i, Duration::from_secs(60))
                .await?;
        }
        for (i, ext) in cluster.extenders.iter().enumerate() {
            let mut o = cluster.driver_options.clone();
            o.extender_url = ext.client.url_prefix().to_string();
            o.seed = options.seed.wrapping_add(100 + i as u64);
            cluster
                .drivers
                .push(SchedulerDriver::start(scheduler_client.clone(), o));
        }
        Ok(cluster)
    }

    fn spawn_extender(
        &self,
        i: usize,
        port: u16,
        kubeconfig: &std::path::Path,
    ) -> Result<LocalExtender> {
        let path = DriverOptions::url_path(&self.driver_options.extender);
        let args = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--url-prefix".into(),
            path.clone(),
            "--identity".into(),
            format!("gpupack-scheduler-{i}"),
            "--reservation-ttl-seconds".into(),
            "10".into(),
        ];
        let mut env = vec![("KUBECONFIG", kubeconfig.display().to_string())];
        match &self.hub_endpoint {
            Some(endpoint) => env.push(("HF_ENDPOINT", endpoint.clone())),
            None => env.push(("HF_HUB_OFFLINE", "1".into())),
        }
        let process = Process::spawn(
            &self.programs,
            multicall::SCHEDULER_EXT,
            &format!("scheduler-ext {i}"),
            &args,
            &env,
            &self.tmp.path().join(format!("scheduler-ext-{i}.log")),
        )?;
        let timeout = Duration::from_secs_f64(crate::manifests::duration(
            self.driver_options.extender.http_timeout.as_deref(),
            5.0,
        )?);
        Ok(LocalExtender {
            process,
            port,
            client: ExtenderClient::new(&format!("http://127.0.0.1:{port}{path}"), timeout),
            args,
        })
    }

    /// Every node shows its GPUs in `allocatable` and has an inventory.
    async fn wait_nodes_ready(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let nodes: Api<Node> = Api::all(self.client.clone());
        let inventories: Api<GpuNodeInventory> = Api::all(self.client.clone());
        loop {
            let mut missing = Vec::new();
            let list = nodes.list(&ListParams::default()).await?.items;
            let invs = inventories.list(&ListParams::default()).await?.items;
            for n in &mut self.nodes {
                if let Some(status) = n.plugin.exited() {
                    bail!(
                        "device plugin of {} exited ({status}):\n{}",
                        n.spec.name,
                        n.plugin.log_tail(30)
                    );
                }
                let shows = list.iter().any(|node| {
                    node.metadata.name.as_deref() == Some(n.spec.name.as_str())
                        && node
                            .status
                            .as_ref()
                            .and_then(|s| s.allocatable.as_ref())
                            .is_some_and(|a| a.keys().any(|k| k.starts_with("gpupack.io/")))
                });
                let published = invs
                    .iter()
                    .any(|i| i.metadata.name.as_deref() == Some(n.spec.name.as_str()));
                if !shows || !published {
                    missing.push(n.spec.name.clone());
                }
            }
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() > limit {
                let logs: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| missing.contains(&n.spec.name))
                    .map(|n| format!("--- {}:\n{}", n.plugin.name(), n.plugin.log_tail(20)))
                    .collect();
                bail!(
                    "nodes not ready after {limit:?}: {missing:?}\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The extender answers `/readyz` with 200 (its watches have synced).
    pub async fn wait_extender_ready(&mut self, i: usize, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let ext = &mut self.extenders[i];
            if let Some(status) = ext.process.exited() {
                bail!(
                    "extender {i} exited ({status}):\n{}",
                    ext.process.log_tail(30)
                );
            }
            if let Ok((200, _)) = ext.client.get_text("/readyz").await {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!(
                    "extender {i} not ready after {limit:?}:\n{}",
                    ext.process.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills extender `i` (SIGKILL).
    pub async fn kill_extender(&mut self, i: usize) {
        self.extenders[i].process.kill().await;
    }

    /// Starts extender `i` again on its port and waits until it is ready.
    pub async fn restart_extender(&mut self, i: usize) -> Result<()> {
        let kubeconfig = self
            .tmp
            .path()
            .join(format!("{}.kubeconfig", identity::SCHEDULER_EXT));
        let port = self.extenders[i].port;
        self.extenders[i].process.kill().await;
        let fresh = self.spawn_extender(i, port, &kubeconfig)?;
        debug_assert_eq!(fresh.args, self.extenders[i].args);
        self.extenders[i] = fresh;
        self.wait_extender_ready(i, Duration::from_secs(30)).await
    }

    /// Kills the device plugin of node `i` (SIGKILL) and starts it again.
    pub async fn restart_device_plugin(&mut self, i: usize) -> Result<()> {
        self.restart_device_plugin_with(i, Stop::Kill).await
    }

    /// Stops the device plugin of node `i` as `stop` says and starts it again.
    pub async fn restart_device_plugin_with(&mut self, i: usize, stop: Stop) -> Result<()> {
        let node = &mut self.nodes[i];
        match stop {
            Stop::Kill => node.plugin.kill().await,
            Stop::Terminate => node.plugin.terminate().await,
        }
        let log = node.plugin.log_path().with_extension("restarted.log");
        node.plugin = Process::spawn(
            &self.programs,
            multicall::DEVICE_PLUGIN,
            &format!("device-plugin {}", node.spec.name),
            &node.args,
            &[],
            &log,
        )?;
        Ok(())
    }

    /// Marks GPU `index` of node `node` unhealthy (or healthy again)
    /// through the device plugin's admin endpoint.
    pub async fn set_gpu_health(&self, node: usize, index: u32, healthy: bool) -> Result<()> {
        let port = self.nodes[node].admin_port;
        let what = if healthy {
            "healthy"
        } else {
            "unhealthy?reason=e2e"
        };
        let url = format!("http://127.0.0.1:{port}/admin/gpus/{index}/{what}");
        crate::extender_client::post_empty(&url).await
    }

    /// Creates the pods.
    pub async fn submit(&self, pods: &[PodBuilder]) -> Result<()> {
        crate::spec::create_pods(&self.client, pods).await
    }

    /// Waits until `done` holds for the cluster's state.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&ClusterView) -> bool,
    ) -> Result<ClusterView> {
        let start = Instant::now();
        loop {
            let view = self.view().await?;
            if done(&view) {
                return Ok(view);
            }
            if start.elapsed() > limit {
                bail!(
                    "{what}: not reached after {limit:?}\n{}\nscheduler: {:?}",
                    view.summary(),
                    self.drivers
                        .iter()
                        .map(|d| d.stats().failed_scheduling)
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The state: pods, inventories, nodes, and what each kubelet admitted.
    pub async fn view(&self) -> Result<ClusterView> {
        let mut view = ClusterView::read(&self.client).await?;
        view.admitted = Some(
            self.nodes
                .iter()
                .map(|n| (n.spec.name.clone(), n.agent.kubelet.pods()))
                .collect::<BTreeMap<_, _>>(),
        );
        Ok(view)
    }

    /// GPU memory the extender's ledger holds per node, from its metrics.
    pub async fn ledger(&self, i: usize) -> Result<BTreeMap<String, u64>> {
        let (_, text) = self.extenders[i].client.get_text("/metrics").await?;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some((_, rest)) = line.split_once("gpu_memory_allocated_bytes{") else {
                continue;
            };
            if line.starts_with('#') {
                continue;
            }
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let node = labels
                .split(',')
                .find_map(|l| l.strip_prefix("node=\""))
                .map(|n| n.trim_end_matches('"').to_string());
            if let (Some(node), Ok(v)) = (node, value.trim().parse::<f64>()) {
                out.insert(node, v as u64);
            }
        }
        Ok(out)
    }

    /// The run directory (logs).
    pub fn dir(&self) -> &std::path::Path {
        self.tmp.path()
    }

    /// Node `i`'s kubelet, restarted as kubelet does (plugin sockets deleted).
    pub async fn restart_kubelet(&self, i: usize) -> Result<()> {
        self.nodes[i].agent.kubelet.restart().await?;
        Ok(())
    }

    /// How many healthy `gpupack.io/gpu` devices node `i`'s kubelet has.
    pub fn healthy_gpu_devices(&self, i: usize) -> usize {
        self.nodes[i].agent.kubelet.healthy(GPU)
    }
}

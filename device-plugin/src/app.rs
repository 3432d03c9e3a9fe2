//! Wiring: discovery, node state, kubelet registration, the Kubernetes
//! side, HTTP; and an orderly stop (sockets removed) on SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendKind, Config, DeviceListStrategyKind};
use crate::http;
use crate::kubernetes::{pods, publish, verify};
use crate::metrics::Metrics;
use crate::resource::backend::nvml::{NvmlBackend, NvmlOptions};
use crate::resource::backend::simulated::SimulatedBackend;
use crate::resource::backend::xid::{self, XidPolicy};
use crate::resource::backend::{DiscoveryContext, GpuBackend, WatchGuard};
use crate::resource::state::{self, Snapshot};
use crate::retry;
use crate::server::delivered::Delivered;
use crate::server::plugin::{HandoffHandle, PluginContext};
use crate::server::registration;
use crate::server::response::DeviceListStrategy;

/// Builds the configured backend. NVML's absence is reported in one line.
pub fn backend(
    cfg: &Config,
) -> Result<Box<dyn GpuBackend>, crate::resource::backend::BackendError> {
    Ok(match cfg.backend {
        BackendKind::Simulated => Box::new(SimulatedBackend::new(
            cfg.simulated_file.clone().unwrap_or_default(),
        )),
        BackendKind::Nvml => Box::new(NvmlBackend::open(NvmlOptions {
            library: cfg.nvml_library.clone(),
            sysfs_root: cfg.sysfs_root.clone(),
            xids: XidPolicy::new(
                &xid::parse_list(&cfg.ignored_xids).unwrap_or_default(),
                &xid::parse_list(&cfg.critical_xids).unwrap_or_default(),
            ),
            health_checks: !cfg.disable_health_checks,
        })?),
    })
}

/// The discovery context the configuration implies.
pub fn discovery_context(cfg: &Config, node: &str) -> DiscoveryContext {
    DiscoveryContext {
        node_name: node.to_string(),
        slices_per_gpu: cfg.slices_per_gpu,
        memory_unit_bytes: cfg.memory_unit_bytes,
    }
}

/// A running plugin.
pub struct Running {
    /// Cancel to stop everything.
    pub shutdown: CancellationToken,
    /// True while registered with kubelet.
    pub ready: watch::Receiver<registration::Readiness>,
    /// True once the pod cache has synced with the API server.
    pub pods_synced: watch::Receiver<bool>,
    /// The node state.
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The handoff cache (tests may feed it directly).
    pub handoff: Arc<HandoffHandle>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where `/metrics` is served.
    pub http_addr: SocketAddr,
    /// Where the admin endpoint is served, if on.
    pub admin_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    registrar: JoinHandle<std::io::Result<()>>,
    _watch: WatchGuard,
}

impl Running {
    /// Stops serving, removes the plugin sockets and waits for every task.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let reg = self.registrar.await.context("registration task panicked")?;
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
        reg.context("serving kubelet")
    }
}

async fn make_client(path: Option<PathBuf>) -> anyhow::Result<Client> {
    let mut config = match path {
        Some(p) => {
            let kc = Kubeconfig::read_from(&p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    // As client-go: no silent retries of 429/5xx without Retry-After (kube's
    // default layer retries them for minutes); publishing and the hand-off
    // checks have their own bounded backoff.
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

/// Discovers GPUs and starts every part; returns once they run.
pub async fn start(cfg: Config, backend: Box<dyn GpuBackend>) -> anyhow::Result<Running> {
    cfg.validate()?;
    let node = cfg.node()?.to_string();
    let ctx = discovery_context(&cfg, &node);
    let declared = backend.discover(&ctx)?;
    tracing::info!(node = %node, gpus = declared.gpus.len(), backend = ?backend.kind(), "discovered GPUs");
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let guard = backend.watch(&ctx, events_tx)?;
    let shutdown = CancellationToken::new();
    let states = state::spawn(
        declared,
        events_rx,
        Duration::from_secs(cfg.health_recovery_secs),
    );
    let metrics = Arc::new(Metrics::new());
    let handoff = Arc::new(HandoffHandle::new(cfg.memory_unit_bytes));
    let allocated = Arc::new(Notify::new());
    let delivered = Arc::new(Delivered::default());
    let plugin_ctx = Arc::new(PluginContext {
        snapshots: states.snapshots.clone(),
        handoff: handoff.clone(),
        metrics: metrics.clone(),
        strategy: match cfg.device_list_strategy {
            DeviceListStrategyKind::Envvar => DeviceListStrategy::Envvar,
            DeviceListStrategyKind::Cdi => DeviceListStrategy::Cdi {
                kind: cfg.cdi_kind.clone(),
            },
        },
        // Without Kubernetes there is no pod cache to wait for: every call
        // goes to the topology-aware preference at once.
        handoff_wait: if cfg.no_kubernetes {
            Duration::ZERO
        } else {
            Duration::from_millis(cfg.handoff_wait_ms)
        },
        allocated: allocated.clone(),
        delivered: delivered.clone(),
    });
    let mut tasks = Vec::new();

    // Device gauges follow the state.
    {
        let mut rx = states.snapshots.clone();
        let metrics = metrics.clone();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let snap = rx.borrow_and_update().clone();
                metrics.set_devices(&snap.inventory);
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = stop.cancelled() => return,
                }
            }
        }));
    }

    let (ready_tx, ready_rx) = watch::channel(registration::Readiness::Unregistered);
    let registrar = tokio::spawn(registration::run(
        cfg.device_plugin_dir.clone(),
        plugin_ctx,
        ready_tx,
        shutdown.clone(),
    ));

    let (client_tx, client_rx) = watch::channel::<Option<Client>>(None);
    let (synced_tx, synced_rx) = watch::channel(false);
    if cfg.no_kubernetes {
        tracing::info!("Kubernetes API disabled: no inventory publishing, no pod cache");
    } else {
        let kubeconfig = cfg.kubeconfig.clone();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let max = Duration::from_secs(30);
            let mut backoff = retry::backoff(Duration::from_millis(500), max);
            loop {
                match make_client(kubeconfig.clone()).await {
                    Ok(c) => {
                        client_tx.send_replace(Some(c));
                        return;
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "no Kubernetes client yet; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(retry::next_delay(&mut backoff, max)) => {},
                    _ = stop.cancelled() => return,
                }
            }
        }));
        tasks.push(tokio::spawn(publish::run(
            client_rx.clone(),
            states.snapshots.clone(),
            delivered.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(pods::run(
            client_rx.clone(),
            node.clone(),
            handoff.clone(),
            synced_tx,
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(verify::run(
        verify::Verifier {
            socket: cfg.pod_resources_socket.clone(),
            interval: Duration::from_secs(cfg.verify_interval_secs.max(1)),
            handoff: handoff.clone(),
            allocated,
            metrics: metrics.clone(),
            client: client_rx,
            node: node.clone(),
        },
        shutdown.clone(),
    )));

    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("binding --http-listen {}", cfg.http_listen))?;
    let http_addr = listener.local_addr()?;
    tasks.push(tokio::spawn(http::serve(
        listener,
        http::ops_router(metrics.clone(), ready_rx.clone()),
        shutdown.clone(),
    )));
    let admin_addr = match cfg.admin_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --admin-listen {addr}"))?;
            let a = l.local_addr()?;
            tasks.push(tokio::spawn(http::serve(
                l,
                http::admin_router(states.admin.clone(), states.snapshots.clone()),
                shutdown.clone(),
            )));
            Some(a)
        }
        None => None,
    };
    tracing::info!(%http_addr, ?admin_addr, "serving HTTP");

    Ok(Running {
        shutdown,
        ready: ready_rx,
        pods_synced: synced_rx,
        snapshots: states.snapshots,
        handoff,
        metrics,
        http_addr,
        admin_addr,
        tasks,
        registrar,
        _watch: guard,
    })
}

/// Runs until SIGTERM or SIGINT, then stops cleanly.
pub async fn run(cfg: Config, backend: Box<dyn GpuBackend>) -> anyhow::Result<()> {
    let running = start(cfg, backend).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
    }
    running.stop().await
}

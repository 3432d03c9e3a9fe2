//! Bind throughput of gpupack's scheduler extender against kube-scheduler's
//! own binder, on a simulated cluster of 8×H100 nodes.
//!
//! ```text
//! cargo bench -p e2e --bench bind -- [--nodes 200] [--pods 800] [--cap-secs 300]
//!     [--admit-ms 200] [--seed 1]
//! ```
//!
//! Each run starts on fresh state: the API stand-in in this process (its
//! consistent lists cost what they cost through etcd, at the stand-in's
//! default per stored object), N Ready nodes with what the device plugin
//! advertises for `device-plugin/simulated/h100-sxm-8x-nvswitch.yaml` in
//! the shipped configuration, each node's `GpuNodeInventory`, kubelet's
//! status writes after a pod is bound ([`e2e::admission`]), then the
//! pending pods (one container asking `gpupack.io/gpu: 1` and
//! `gpupack.io/gpu-memory: 20`). The scheduler driver then schedules them
//! with kube-scheduler's backoffs (1 s doubling to 10 s) and client rate
//! limit (50 queries a second, bursts of 100):
//!
//! - (a) default: the extender entry has no verbs, so the driver binds
//!   with plain Bindings (kube-scheduler's DefaultBinder);
//! - (b) extender: the shipped scheduler configuration with the extender
//!   running in this process with the shipped flags.
//!
//! The run ends once every pod is bound, or at the wall-clock cap. Printed
//! per run: pods bound, seconds to the last bind, pods a second, bind
//! calls, rejections by cause; then the ratio of (b) to (a) and the
//! verdict: PASS when (b) binds every pod, at 80 % of (a)'s rate or more,
//! with no timeout and no rejection but "still admitting". Last, a check
//! that no GPU is over-committed by the assignments the extender wrote.
//! The process exits with status 1 on FAIL.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apiserver_standin::{ApiServer, ResourceType};
use clap::Parser;
use device_plugin::resource::backend::DiscoveryContext;
use device_plugin::resource::backend::simulated;
use e2e::admission::{AdmissionOptions, AdmissionSimulator};
use e2e::scheduler::{ClientRate, DriverOptions, Rejections, SchedulerDriver};
use e2e::spec::{H100_NVSWITCH, NAMESPACE, PodBuilder};
use e2e::view::ClusterView;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use proto::inventory::{GpuNodeInventory, NodeInventory};
use proto::resources::DEFAULT_MEMORY_UNIT_BYTES;
use serde_json::json;

#[derive(Parser, Debug, Clone)]
#[command(about = "Bind throughput: gpupack's extender against kube-scheduler's default binder")]
struct Args {
    /// Nodes of 8×H100 SXM.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Pending one-GPU pods (20 GiB each).
    #[arg(long, default_value_t = 800)]
    pods: usize,
    /// Wall-clock limit of each run, in seconds; what is bound by then is reported.
    #[arg(long, default_value_t = 300)]
    cap_secs: u64,
    /// kubelet's delay from a bind to its admission status, in milliseconds.
    #[arg(long, default_value_t = 200)]
    admit_ms: u64,
    /// Seed of the driver's tie-breaking.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// What cargo passes to every bench target.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Default,
    Extender,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Default => "default binder",
            Mode::Extender => "gpupack extender",
        }
    }
}

/// What one run measured.
struct Outcome {
    mode: Mode,
    bound: usize,
    seconds: f64,
    bind_calls: u64,
    rejections: Rejections,
    capped: bool,
    overcommit: Overcommit,
    /// The first few bind rejections other than "still admitting".
    examples: Vec<String>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bound as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// GPUs with more memory assigned than they have.
#[derive(Default)]
struct Overcommit {
    pods_with_assignment: usize,
    gpus_used: usize,
    /// (node, GPU index, assigned bytes, GPU bytes)
    over: Vec<(String, u32, u64, u64)>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    println!(
        "bind benchmark: {} nodes of 8×H100, {} pods of 1 GPU / 20 GiB, cap {} s per run, admission after {} ms",
        args.nodes, args.pods, args.cap_secs, args.admit_ms
    );
    let default = run(&args, Mode::Default).await?;
    print_outcome(&default);
    let extender = run(&args, Mode::Extender).await?;
    print_outcome(&extender);

    let ratio = if default.rate() > 0.0 {
        extender.rate() / default.rate()
    } else {
        0.0
    };
    let r = &extender.rejections;
    let checks = [
        (
            format!("every pod bound ({} of {})", extender.bound, args.pods),
            extender.bound == args.pods,
        ),
        (
            format!("ratio extender / default = {ratio:.3} ≥ 0.80"),
            ratio >= 0.80,
        ),
        (
            format!("timeouts = {} (0 allowed)", r.timeouts),
            r.timeouts == 0,
        ),
        (
            format!(
                "rejections other than still admitting = {} (0 allowed)",
                r.total() - r.still_admitting
            ),
            r.total() == r.still_admitting,
        ),
    ];
    println!();
    for (what, ok) in &checks {
        println!("  [{}] {what}", if *ok { "ok" } else { "FAIL" });
    }
    let pass = checks.iter().all(|(_, ok)| *ok);
    println!("verdict: {}", if pass { "PASS" } else { "FAIL" });

    println!();
    let mut overcommitted = false;
    for o in [&default, &extender] {
        let oc = &o.overcommit;
        if oc.over.is_empty() {
            println!(
                "GPU memory ({}): no GPU over-committed ({} pods with an assignment, {} GPUs used)",
                o.mode.label(),
                oc.pods_with_assignment,
                oc.gpus_used
            );
        } else {
            overcommitted = true;
            println!(
                "GPU memory ({}): {} GPUs OVER-COMMITTED",
                o.mode.label(),
                oc.over.len()
            );
            for (node, gpu, assigned, has) in oc.over.iter().take(10) {
                println!(
                    "  {node} GPU {gpu}: {:.1} GiB assigned of {:.1} GiB",
                    *assigned as f64 / f64::from(1u32 << 30),
                    *has as f64 / f64::from(1u32 << 30)
                );
            }
        }
    }
    if !pass || overcommitted {
        std::process::exit(1);
    }
    Ok(())
}

fn print_outcome(o: &Outcome) {
    let r = &o.rejections;
    println!(
        "{:<17} bound {:>5}  in {:>7.2} s{}  {:>7.2} pods/s  bind calls {:>6}  rejections {:>5} (timeouts {}, still admitting {}, no longer fits {}, contended {}, other {})",
        o.mode.label(),
        o.bound,
        o.seconds,
        if o.capped { " (cap)" } else { "" },
        o.rate(),
        o.bind_calls,
        r.total(),
        r.timeouts,
        r.still_admitting,
        r.no_longer_fits,
        r.contended,
        r.other,
    );
    for e in &o.examples {
        println!("    e.g. {e}");
    }
}

/// The node's inventory as the device plugin discovers it in the shipped
/// configuration (`--slices-per-gpu=4`, 1 GiB memory units).
fn inventory(node: &str) -> Result<NodeInventory> {
    let ctx = DiscoveryContext {
        node_name: node.to_string(),
        slices_per_gpu: proto::resources::DEFAULT_SLICES_PER_GPU,
        memory_unit_bytes: DEFAULT_MEMORY_UNIT_BYTES,
    };
    simulated::parse("h100-sxm-8x-nvswitch.yaml", H100_NVSWITCH, &ctx)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

async fn run(args: &Args, mode: Mode) -> Result<Outcome> {
    let api = ApiServer::start()
        .await
        .context("starting the API server stand-in")?;
    api.register(ResourceType::gpu_node_inventory());
    let harness = api.client_as("e2e").await?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<Namespace>::all(harness.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let mut gpu_memory: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for i in 0..args.nodes {
        let name = format!("h100-{i:04}");
        let inv = inventory(&name)?;
        for g in &inv.gpus {
            gpu_memory.insert((name.clone(), g.index), g.memory_bytes);
        }
        api.store()
            .put_as(&e2e::inprocess::node(&inv, "128", "1Ti")?)?;
        api.store().put_as(&GpuNodeInventory::for_node(inv))?;
    }
    let admission = AdmissionSimulator::start(
        api.client_as("kubelet").await?,
        AdmissionOptions {
            admit_after: Duration::from_millis(args.admit_ms),
            ..AdmissionOptions::default()
        },
    );

    let extender = match mode {
        Mode::Default => None,
        Mode::Extender => Some(e2e::inprocess::start_extender(&api).await?),
    };

    let pods: Vec<Pod> = (0..args.pods)
        .map(|i| PodBuilder::explicit(&format!("llm-{i:05}"), 1, 20).build())
        .collect();
    let api_pods: Api<Pod> = Api::namespaced(harness.clone(), NAMESPACE);
    let created: Vec<Result<Pod, kube::Error>> = futures::stream::iter(pods)
        .map(|p| {
            let api_pods = api_pods.clone();
            async move { api_pods.create(&PostParams::default(), &p).await }
        })
        .buffered(16)
        .collect()
        .await;
    for c in created {
        c.context("creating a pod")?;
    }

    let mut options = DriverOptions::shipped("http://127.0.0.1:0")?;
    options.initial_backoff = Duration::from_secs(1);
    options.max_backoff = Duration::from_secs(10);
    options.client_rate = Some(ClientRate::KUBE_SCHEDULER);
    options.seed = args.seed;
    match &extender {
        None => {
            options.extender.filter_verb.clear();
            options.extender.prioritize_verb.clear();
            options.extender.bind_verb.clear();
            options.extender.preempt_verb.clear();
        }
        Some((_, url)) => options.extender_url = url.clone(),
    }
    let started = Instant::now();
    let cap = Duration::from_secs(args.cap_secs);
    let driver = SchedulerDriver::start(api.client_as("kube-scheduler").await?, options);
    let mut capped = false;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if driver.stats().binds_ok >= args.pods as u64 {
            break;
        }
        if started.elapsed() >= cap {
            capped = true;
            break;
        }
    }
    let stats = driver.stats();
    drop(driver);
    let seconds = if capped {
        cap.as_secs_f64()
    } else {
        stats
            .last_bound
            .map_or(0.0, |t| t.duration_since(started).as_secs_f64())
    };
    if let Some((ext, _)) = extender {
        ext.shutdown().await;
    }
    drop(admission);

    let stored: Vec<Pod> = api.store().list_as(Some(NAMESPACE))?;
    let bound = stored
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count();
    let overcommit = overcommit(&stored, &gpu_memory);
    let examples = stats
        .failures
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.starts_with("binding rejected") && !m.contains("is still admitting"))
        .take(3)
        .map(|m| m.chars().take(240).collect())
        .collect();
    api.stop().await;
    Ok(Outcome {
        mode,
        bound,
        seconds,
        bind_calls: stats.bind_calls,
        rejections: stats.rejections,
        capped,
        overcommit,
        examples,
    })
}

/// Sums the memory the pods' assignments give each GPU.
fn overcommit(pods: &[Pod], gpu_memory: &BTreeMap<(String, u32), u64>) -> Overcommit {
    let mut assigned: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut out = Overcommit::default();
    for p in pods {
        let Some(a) = ClusterView::assignment(p) else {
            continue;
        };
        out.pods_with_assignment += 1;
        for c in &a.containers {
            for g in &c.gpus {
                *assigned.entry((a.node.clone(), g.index)).or_insert(0) += g.memory_bytes;
            }
        }
    }
    out.gpus_used = assigned.len();
    for ((node, gpu), bytes) in assigned {
        let has = gpu_memory.get(&(node.clone(), gpu)).copied().unwrap_or(0);
        if bytes > has {
            out.over.push((node, gpu, bytes, has));
        }
    }
    out
}

//! `gpupack simulate`: replay a workload on a cluster with several placement
//! policies in one run and compare how much of the cluster each can use.

mod replay;
mod report;
mod trace;
pub mod workload;

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use placement::{PodDemand, Policy, TypicalPods};

pub use replay::{Cluster, MemoryMode, Run};

/// Arguments of `gpupack simulate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// LLM workload file (YAML): node types and deployments. Without it and
    /// without trace files, the built-in example workload runs.
    #[arg(long, value_name = "YAML")]
    pub workload: Option<PathBuf>,
    /// Node list of the Alibaba GPU trace (openb_node_list_gpu_node.csv).
    #[arg(long, value_name = "CSV")]
    pub trace_nodes: Option<PathBuf>,
    /// Pod list(s) of the Alibaba GPU trace; repeat for several families.
    #[arg(long, value_name = "CSV")]
    pub trace_pods: Vec<PathBuf>,
    /// Policies to compare: `all` or a comma-separated list of
    /// gpupack, random, first-fit, best-fit, spread, packing, fgd.
    #[arg(long, default_value = "all")]
    pub policy: String,
    /// Seeds: a range `42-51` or a list `42,43`.
    #[arg(long, default_value = "42-51")]
    pub seeds: String,
    /// Pods are sampled until their GPU requests reach this multiple of the
    /// cluster's GPUs.
    #[arg(long, default_value_t = 1.3)]
    pub tune: f64,
    /// How `gpu_milli` maps to GPU memory: `comparable` (a share of the GPU
    /// the pod lands on, as the FGD paper) or `realistic` (a fixed amount per
    /// pod: `gpu_milli` thousandths of --reference-gpu-mib).
    #[arg(long, default_value = "comparable")]
    pub memory_mode: String,
    /// GPU memory that `gpu_milli` is a share of in realistic mode (MiB).
    #[arg(long, default_value_t = 15_109)]
    pub reference_gpu_mib: u64,
    /// Use every k-th node only (and scale the workload with it).
    #[arg(long, default_value_t = 1)]
    pub sample_nodes: usize,
    /// Output: `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Write the report here instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Draw allocated against arrived GPU per policy as SVG.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Published results (fgd-results/analysis_allo_discrete.csv) to compare with.
    #[arg(long, value_name = "CSV")]
    pub published: Option<PathBuf>,
    /// Compute lower bounds on unallocated GPU at 100 % arrived: the LP
    /// (fractional) one and, in comparable mode, the GPU-sharing one.
    #[arg(long)]
    pub lp: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// Parses `all` or a comma-separated policy list.
pub fn parse_policies(s: &str) -> Result<Vec<Policy>> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(Policy::ALL.to_vec());
    }
    let mut out = Vec::new();
    for p in s.split(',').filter(|p| !p.trim().is_empty()) {
        let p: Policy = p.parse()?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        bail!("--policy: no policy given");
    }
    Ok(out)
}

/// Parses `42-51` or `42,43,44`.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: u64 = a
                .trim()
                .parse()
                .with_context(|| format!("--seeds: bad range {part:?}"))?;
            let b: u64 = b
                .trim()
                .parse()
                .with_context(|| format!("--seeds: bad range {part:?}"))?;
            if b < a || b - a > 10_000 {
                bail!("--seeds: bad range {part:?}");
            }
            out.extend(a..=b);
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("--seeds: bad seed {part:?}"))?,
            );
        }
    }
    if out.is_empty() {
        bail!("--seeds: no seed given");
    }
    Ok(out)
}

/// What to replay: policies, seeds, load and memory mapping.
#[derive(Clone, Debug)]
pub struct Settings {
    pub policies: Vec<Policy>,
    pub seeds: Vec<u64>,
    pub tune: f64,
    pub mode: MemoryMode,
    pub jobs: usize,
}

/// Calls `run(policy, seed index)` for every policy and seed, `jobs` at a
/// time on scoped threads; the results in policy-major order.
pub(crate) fn run_all<T: Send>(
    policies: &[Policy],
    seeds: usize,
    jobs: usize,
    run: impl Fn(Policy, usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let tasks: Vec<(Policy, usize)> = policies
        .iter()
        .flat_map(|&p| (0..seeds).map(move |k| (p, k)))
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<T>>>> =
        Mutex::new((0..tasks.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(tasks.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let t = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(policy, k)) = tasks.get(t) else {
                        break;
                    };
                    let out = run(policy, k);
                    if let Ok(mut r) = results.lock() {
                        r[t] = Some(out);
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a replay thread panicked"))?;
    let mut runs = Vec::with_capacity(tasks.len());
    for r in results {
        match r {
            Some(run) => runs.push(run?),
            None => bail!("a replay did not finish"),
        }
    }
    Ok(runs)
}

/// One pod list replayed under every policy and seed.
#[derive(Debug, serde::Serialize)]
pub struct FamilyResult {
    pub family: String,
    pub pods_in_trace: usize,
    pub runs: Vec<Run>,
    /// LP lower bound on unallocated GPU % at 100 % arrived, per seed.
    pub lp_unallocated: Vec<f64>,
    /// GPU-sharing lower bound on the same, per seed (comparable mode).
    pub sharing_unallocated: Vec<f64>,
}

/// Replays one pod list; the pure part of the command, used by tests.
pub fn simulate_family(
    family: &str,
    cluster: &Cluster,
    pods: &[trace::TracePod],
    settings: &Settings,
) -> Result<FamilyResult> {
    let Settings {
        policies,
        seeds,
        tune,
        mode,
        jobs,
    } = settings;
    let (tune, mode, jobs) = (*tune, *mode, *jobs);
    let demands: Vec<PodDemand> = pods.iter().map(|p| replay::demand(p, mode)).collect();
    let typical = TypicalPods::from_workload(demands.iter(), placement::TYPICAL_COVERAGE);
    let orders: Vec<Vec<usize>> = seeds
        .iter()
        .map(|&s| replay::workload(pods, cluster.gpus, tune, s))
        .collect();
    let runs = run_all(policies, seeds.len(), jobs, |policy, k| {
        replay::replay(
            cluster, pods, &demands, &orders[k], policy, &typical, seeds[k],
        )
    })?;
    Ok(FamilyResult {
        family: family.to_string(),
        pods_in_trace: pods.len(),
        runs,
        lp_unallocated: Vec::new(),
        sharing_unallocated: Vec::new(),
    })
}

pub fn run(args: Args) -> Result<()> {
    if args.workload.is_some() || (args.trace_nodes.is_none() && args.trace_pods.is_empty()) {
        return workload::run(&args);
    }
    let policies = parse_policies(&args.policy)?;
    let seeds = parse_seeds(&args.seeds)?;
    if !(args.tune > 0.0 && args.tune <= 10.0) {
        bail!("--tune: {} is outside (0, 10]", args.tune);
    }
    let mode = match args.memory_mode.as_str() {
        "comparable" => MemoryMode::Comparable,
        "realistic" => MemoryMode::Realistic {
            reference_bytes: args.reference_gpu_mib << 20,
        },
        other => bail!("--memory-mode: {other:?} is neither comparable nor realistic"),
    };
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let Some(nodes_path) = &args.trace_nodes else {
        bail!("give --trace-nodes and --trace-pods (the Alibaba trace CSVs)");
    };
    if args.trace_pods.is_empty() {
        bail!("give at least one --trace-pods CSV");
    }
    let nodes = trace::read_nodes(nodes_path)?;
    let cluster = Cluster::from_trace(&nodes)
        .with_context(|| format!("{}", nodes_path.display()))?
        .sample(args.sample_nodes);
    let mut families = Vec::new();
    for path in &args.trace_pods {
        let pods = trace::read_pods(path)?;
        let family = path
            .file_stem()
            .map(|s| {
                s.to_string_lossy()
                    .trim_start_matches("openb_pod_list_")
                    .to_string()
            })
            .unwrap_or_else(|| path.display().to_string());
        let started = std::time::Instant::now();
        let settings = Settings {
            policies: policies.clone(),
            seeds: seeds.clone(),
            tune: args.tune,
            mode,
            jobs,
        };
        let mut result = simulate_family(&family, &cluster, &pods, &settings)?;
        if args.lp {
            let demands: Vec<PodDemand> = pods.iter().map(|p| replay::demand(p, mode)).collect();
            for &s in &seeds {
                let order = replay::workload(&pods, cluster.gpus, args.tune, s);
                result
                    .lp_unallocated
                    .push(report::lp_bound(&cluster, &pods, &demands, &order)?);
                result
                    .sharing_unallocated
                    .extend(report::sharing_bound(&cluster, &pods, &demands, &order)?);
            }
        }
        eprintln!(
            "{family}: {} runs in {:.1} s",
            result.runs.len(),
            started.elapsed().as_secs_f64()
        );
        families.push(result);
    }
    let published = match &args.published {
        Some(p) => Some(report::read_published(p)?),
        None => None,
    };
    let text = match args.format.as_str() {
        "table" => report::table(&families, published.as_ref()),
        "json" => serde_json::to_string_pretty(&report::json(&families, published.as_ref()))?,
        other => bail!("--format: {other:?} is neither table nor json"),
    };
    match &args.out {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => print!("{text}"),
    }
    if let Some(p) = &args.svg {
        std::fs::write(p, report::svg(&families))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/alibaba-gpu-v2023")
            .join(name)
    }

    fn default_trace() -> (Cluster, Vec<trace::TracePod>) {
        let nodes = trace::read_nodes(&fixture("openb_node_list_gpu_node.csv")).unwrap();
        let pods = trace::read_pods(&fixture("openb_pod_list_default.csv")).unwrap();
        (Cluster::from_trace(&nodes).unwrap(), pods)
    }

    fn unallocated(f: &FamilyResult, p: Policy) -> f64 {
        let v = replay::median(
            f.runs
                .iter()
                .filter(|r| r.policy == p)
                .map(|r| r.allocated[100]),
        );
        100.0 - v
    }

    /// Pins the replay against the FGD paper's published medians
    /// (fgd-results, default trace, unallocated GPU % at 100 % arrived:
    /// Random 13.75, GpuPacking 8.19, BestFit 7.09, FGD 4.77) on one seed
    /// (42) of the full cluster: each within one point.
    #[test]
    fn default_trace_matches_published_results() {
        let (cluster, pods) = default_trace();
        let published = [
            (Policy::Random, 13.75),
            (Policy::Packing, 8.19),
            (Policy::BestFit, 7.09),
            (Policy::Fgd, 4.77),
        ];
        let f = simulate_family(
            "default",
            &cluster,
            &pods,
            &Settings {
                policies: published.iter().map(|(p, _)| *p).collect(),
                seeds: vec![42],
                tune: 1.3,
                mode: MemoryMode::Comparable,
                jobs: 2,
            },
        )
        .unwrap();
        for (policy, expected) in published {
            let ours = unallocated(&f, policy);
            assert!(
                (ours - expected).abs() <= 1.0,
                "{policy}: {ours} vs published {expected}"
            );
        }
    }

    /// On a quarter of the cluster (every 4th node, same mix; the workload
    /// scales with it) `gpupack` leaves less unallocated than `fgd` and
    /// `best-fit` on seed 42.
    #[test]
    fn gpupack_beats_fgd_on_a_sampled_cluster() {
        let (cluster, pods) = default_trace();
        let cluster = cluster.sample(4);
        let policies = [Policy::Gpupack, Policy::Fgd, Policy::BestFit];
        let f = simulate_family(
            "default",
            &cluster,
            &pods,
            &Settings {
                policies: policies.to_vec(),
                seeds: vec![42],
                tune: 1.3,
                mode: MemoryMode::Comparable,
                jobs: 2,
            },
        )
        .unwrap();
        let ours = unallocated(&f, Policy::Gpupack);
        let fgd = unallocated(&f, Policy::Fgd);
        let best_fit = unallocated(&f, Policy::BestFit);
        assert!(ours < fgd, "gpupack {ours} vs fgd {fgd}");
        assert!(ours < best_fit, "gpupack {ours} vs best-fit {best_fit}");
    }

    #[test]
    fn workload_reaches_the_tuned_load_and_is_seeded() {
        let (cluster, pods) = default_trace();
        let a = replay::workload(&pods, cluster.gpus, 1.3, 42);
        let b = replay::workload(&pods, cluster.gpus, 1.3, 42);
        let c = replay::workload(&pods, cluster.gpus, 1.3, 43);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let milli: u64 = a.iter().map(|&i| pods[i].total_milli()).sum();
        let target = 1.3 * cluster.gpus as f64 * 1000.0;
        assert!(milli as f64 <= target && milli as f64 > target - 8000.0);
        // The trace comes first, each pod once, then samples.
        let mut head: Vec<usize> = a[..pods.len()].to_vec();
        head.sort();
        assert_eq!(head, (0..pods.len()).collect::<Vec<_>>());
    }

    #[test]
    fn bad_rows_are_named() {
        let dir = std::env::temp_dir().join(format!("gpupack-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes = dir.join("nodes.csv");
        std::fs::write(
            &nodes,
            "sn,cpu_milli,memory_mib,gpu,model\nn1,1000,1024,0,\n",
        )
        .unwrap();
        let err = trace::read_nodes(&nodes).unwrap_err().to_string();
        assert!(err.contains("row 2") && err.contains("0 GPUs"), "{err}");
        let pods = dir.join("pods.csv");
        std::fs::write(&pods, "name,cpu_milli,memory_mib,num_gpu\np,1,1,1\n").unwrap();
        let err = trace::read_pods(&pods).unwrap_err().to_string();
        assert!(err.contains("missing column \"gpu_milli\""), "{err}");
        std::fs::write(
            &pods,
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,x,1,500\n",
        )
        .unwrap();
        let err = trace::read_pods(&pods).unwrap_err().to_string();
        assert!(err.contains("row 2") && err.contains("memory_mib"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pod_larger_than_any_node_is_unplaceable_not_fatal() {
        let nodes = vec![trace::TraceNode {
            name: "n".into(),
            cpu_milli: 8000,
            memory_mib: 1024,
            gpus: 2,
            model: "T4".into(),
        }];
        let cluster = Cluster::from_trace(&nodes).unwrap();
        let pod = |name: &str, num_gpu: u32| trace::TracePod {
            name: name.into(),
            cpu_milli: 1000,
            memory_mib: 1,
            num_gpu,
            gpu_milli: 1000,
            gpu_spec: vec![],
        };
        let pods = vec![pod("big", 8), pod("small", 1)];
        let f = simulate_family(
            "tiny",
            &cluster,
            &pods,
            &Settings {
                policies: Policy::ALL.to_vec(),
                seeds: vec![1],
                tune: 5.0,
                mode: MemoryMode::Comparable,
                jobs: 1,
            },
        )
        .unwrap();
        for r in &f.runs {
            assert!(r.failed_pods >= 1, "{:?}", r.policy);
        }
    }

    #[test]
    fn parses_policy_and_seed_lists() {
        assert_eq!(parse_policies("all").unwrap().len(), 7);
        assert_eq!(
            parse_policies("fgd,gpupack,fgd").unwrap(),
            vec![Policy::Fgd, Policy::Gpupack]
        );
        assert!(parse_policies("fgd,nope").is_err());
        assert_eq!(parse_seeds("42-44,50").unwrap(), vec![42, 43, 44, 50]);
        assert!(parse_seeds("5-1").is_err());
    }
}

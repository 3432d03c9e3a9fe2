//! Replaying the Alibaba trace the way the FGD paper's simulator did: pods
//! shuffled, then sampled with replacement (or dropped at random) until their
//! GPU requests reach `tune` × the cluster's GPUs, placed one by one, never
//! leaving; allocation recorded after every pod against the load arrived.

use anyhow::{Result, bail};
use placement::{
    GpuSpec, Health, Ledger, MemoryNeed, NodeSpec, PodDemand, PodKey, Policy, Scorer, TypicalPods,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::trace::{TraceNode, TracePod};

/// GPU memory (MiB) per model, as the paper's simulator had it; G2 and G3
/// are undisclosed models with placeholder sizes.
pub const GPU_MEMORY_MIB: &[(&str, u64)] = &[
    ("T4", 15_109),
    ("V100M16", 16_160),
    ("P100", 16_280),
    ("A10", 22_731),
    ("V100M32", 32_510),
    ("G2", 20_000),
    ("G3", 30_000),
];

/// How `gpu_milli` becomes GPU memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum MemoryMode {
    /// A share of whichever GPU the pod lands on, as the paper counts it.
    Comparable,
    /// A fixed amount per pod: `gpu_milli` thousandths of this many bytes.
    Realistic { reference_bytes: u64 },
}

/// The cluster of a node list.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub specs: Vec<NodeSpec>,
    pub gpus: u64,
}

impl Cluster {
    pub fn from_trace(nodes: &[TraceNode]) -> Result<Cluster> {
        let mut specs = Vec::with_capacity(nodes.len());
        let mut gpus = 0u64;
        for n in nodes {
            let Some(&(_, mib)) = GPU_MEMORY_MIB.iter().find(|(m, _)| *m == n.model) else {
                let known: Vec<&str> = GPU_MEMORY_MIB.iter().map(|(m, _)| *m).collect();
                bail!(
                    "node {}: unknown GPU model {:?} (known: {})",
                    n.name,
                    n.model,
                    known.join(", ")
                );
            };
            gpus += n.gpus as u64;
            specs.push(NodeSpec {
                name: n.name.clone(),
                gpus: (0..n.gpus)
                    .map(|i| GpuSpec {
                        index: i,
                        uuid: format!("{}-gpu{i}", n.name),
                        product: n.model.clone(),
                        memory_bytes: mib << 20,
                        health: Health::Healthy,
                        numa_node: None,
                        mig: Vec::new(),
                    })
                    .collect(),
                links: Vec::new(),
                // The trace puts no limit on how many pods share a GPU.
                slices_per_gpu: 1000,
                cpu_milli: n.cpu_milli,
                memory_bytes: n.memory_mib << 20,
            });
        }
        Ok(Cluster { specs, gpus })
    }

    pub fn ledger(&self) -> Result<Ledger> {
        let mut ledger = Ledger::new();
        for s in &self.specs {
            ledger.upsert_node(s)?;
        }
        Ok(ledger)
    }

    /// Every `k`-th node: a smaller cluster with the same mix.
    pub fn sample(&self, every: usize) -> Cluster {
        let specs: Vec<NodeSpec> = self.specs.iter().step_by(every.max(1)).cloned().collect();
        let gpus = specs.iter().map(|s| s.gpus.len() as u64).sum();
        Cluster { specs, gpus }
    }
}

/// The placement demand of a trace pod.
pub fn demand(pod: &TracePod, mode: MemoryMode) -> PodDemand {
    let base = if pod.num_gpu == 0 {
        PodDemand::default()
    } else {
        let memory = if pod.gpu_milli >= 1000 {
            MemoryNeed::Whole
        } else {
            match mode {
                MemoryMode::Comparable => MemoryNeed::Milli(pod.gpu_milli),
                MemoryMode::Realistic { reference_bytes } => {
                    MemoryNeed::Bytes(reference_bytes * pod.gpu_milli as u64 / 1000)
                }
            }
        };
        PodDemand::gpus(pod.num_gpu, memory).with_models(pod.gpu_spec.iter().cloned())
    };
    base.with_cpu(pod.cpu_milli, pod.memory_mib << 20)
}

/// The pod sequence of one seed: indexes into `pods`.
pub fn workload(pods: &[TracePod], cluster_gpus: u64, tune: f64, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_name: Vec<usize> = (0..pods.len()).collect();
    by_name.sort_by(|&a, &b| pods[a].name.cmp(&pods[b].name));
    let mut order = by_name.clone();
    order.shuffle(&mut rng);
    let target = tune * cluster_gpus as f64 * 1000.0;
    let mut total: u64 = order.iter().map(|&i| pods[i].total_milli()).sum();
    if (total as f64) > target {
        while (total as f64) > target && !order.is_empty() {
            let k = rng.random_range(0..order.len());
            total -= pods[order[k]].total_milli();
            order.remove(k);
        }
    } else if !by_name.is_empty() {
        // As the reference simulator: stop at the first sampled pod whose
        // per-GPU share would overshoot.
        loop {
            let i = by_name[rng.random_range(0..by_name.len())];
            if (total + pods[i].gpu_milli as u64) as f64 > target {
                break;
            }
            total += pods[i].total_milli();
            order.push(i);
        }
    }
    order
}

/// One policy on one seed.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub policy: Policy,
    pub seed: u64,
    pub pods: usize,
    pub failed_pods: usize,
    pub failed_gpu_milli: u64,
    /// Arrived GPU % at the first GPU pod that did not fit.
    pub saturation: Option<f64>,
    /// Allocated GPU % at arrived 0, 1, …, 130 % (NaN where none arrived).
    pub allocated: Vec<f64>,
    /// Fragmented share of idle GPU (%) when arrived load first reached 100 %.
    pub frag_ratio_100: Option<f64>,
}

/// Per-pod record: (arrived GPU thousandths, allocated GPU thousandths).
pub fn replay(
    cluster: &Cluster,
    pods: &[TracePod],
    demands: &[PodDemand],
    order: &[usize],
    policy: Policy,
    typical: &TypicalPods,
    seed: u64,
) -> Result<Run> {
    let mut ledger = cluster.ledger()?;
    // Equal scores go by a fixed node order, as in the paper's simulator.
    ledger.order_ties(seed);
    let scorer: Scorer = ledger.scorer(policy, typical);
    let frag_scorer = ledger.scorer(Policy::Fgd, typical);
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9).wrapping_add(1));
    let cap = cluster.gpus * 1000;
    let mut arrived = 0u64;
    let mut used = 0u64;
    let mut events = Vec::with_capacity(order.len());
    let mut failed_pods = 0;
    let mut failed_gpu_milli = 0;
    let mut saturation = None;
    let mut frag_ratio_100 = None;
    for (k, &i) in order.iter().enumerate() {
        let pod = &pods[i];
        arrived += pod.total_milli();
        let prep = ledger.prepare(&demands[i]);
        match ledger.decide(&prep, &scorer, &mut rng) {
            Some(alloc) => {
                ledger.place(PodKey::new("trace", k.to_string(), ""), alloc)?;
                used += pod.total_milli();
            }
            None => {
                failed_pods += 1;
                failed_gpu_milli += pod.total_milli();
                if saturation.is_none() && pod.num_gpu > 0 {
                    saturation = Some(arrived as f64 * 100.0 / cap as f64);
                }
            }
        }
        if frag_ratio_100.is_none() && arrived >= cap {
            let (frag, idle) = ledger.fragmentation(&frag_scorer);
            frag_ratio_100 = Some(if idle == 0 {
                0.0
            } else {
                100.0 * frag / idle as f64
            });
        }
        events.push((arrived, used));
    }
    Ok(Run {
        policy,
        seed,
        pods: order.len(),
        failed_pods,
        failed_gpu_milli,
        saturation,
        allocated: discretize(&events, cap),
        frag_ratio_100,
    })
}

/// Allocation at each whole arrived percent, as the paper's analysis does:
/// the mean over pods whose arrived share rounds to that percent, else over
/// those within one percent of it.
pub fn discretize(events: &[(u64, u64)], cap: u64) -> Vec<f64> {
    let pct = |m: u64| m as f64 * 100.0 / cap as f64;
    let rounded: Vec<(i64, f64)> = events
        .iter()
        .map(|&(a, u)| {
            (
                pct(a).round_ties_even() as i64,
                (pct(u) * 100.0).round_ties_even() / 100.0,
            )
        })
        .collect();
    (0..=130)
        .map(|x: i64| {
            let mean = |lo: i64, hi: i64| {
                let v: Vec<f64> = rounded
                    .iter()
                    .filter(|(r, _)| *r >= lo && *r <= hi)
                    .map(|(_, u)| *u)
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            mean(x, x)
                .or_else(|| mean(x - 1, x + 1))
                .unwrap_or(f64::NAN)
        })
        .collect()
}

/// Median (mean of the middle two for an even count), ignoring NaN.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

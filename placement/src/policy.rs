//! Placement policies: how a node that fits is scored, and which GPU a
//! shared single-GPU container gets on it.

use std::fmt;
use std::str::FromStr;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use rand::{Rng, RngCore};
use smallvec::SmallVec;

use crate::fgd::{Bound, NodeFrag, TypicalPods};
use crate::fit::{Picker, Plan, Prepared, Tightest};
use crate::state::{NodeState, thousandths};

/// Policies selectable by name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Ours: least expected fragmentation counting GPU stranded for lack of
    /// CPU, then link quality; the tightest GPU among equally good ones.
    Gpupack,
    /// A uniformly random node that fits.
    Random,
    /// The first node (in ledger order) that fits.
    FirstFit,
    /// The FGD simulator's BestFit: least CPU and GPU left after placing.
    BestFit,
    /// kube-scheduler's LeastAllocated: most CPU, memory and GPU memory left.
    Spread,
    /// The FGD simulator's GpuPacking: shared GPUs first, then used nodes,
    /// then empty nodes.
    Packing,
    /// Fragmentation Gradient Descent as published, with its simulator's
    /// integer scores (0–100, sigmoid of the fragmentation decrease).
    Fgd,
}

impl Policy {
    pub const ALL: [Policy; 7] = [
        Policy::Gpupack,
        Policy::Random,
        Policy::FirstFit,
        Policy::BestFit,
        Policy::Spread,
        Policy::Packing,
        Policy::Fgd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Gpupack => "gpupack",
            Policy::Random => "random",
            Policy::FirstFit => "first-fit",
            Policy::BestFit => "best-fit",
            Policy::Spread => "spread",
            Policy::Packing => "packing",
            Policy::Fgd => "fgd",
        }
    }

    /// Whether the policy reads the typical pod mix.
    pub fn uses_typical_pods(self) -> bool {
        matches!(self, Policy::Gpupack | Policy::Fgd)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A policy name that is not one of [`Policy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?}; known: gpupack, random, first-fit, best-fit, spread, packing, fgd")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == norm || p.name().replace('-', "") == norm)
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// A policy bound to a ledger's model table and a typical pod mix; build one
/// with [`crate::Ledger::scorer`] and rebuild it when the typical mix changes.
///
/// It remembers each node state's fragmentation (by the state's hash), so a
/// node is measured again only after it changed, and a candidate placement
/// costs only the GPUs it changes.
#[derive(Debug)]
pub struct Scorer {
    pub(crate) policy: Policy,
    pub(crate) typical: Bound,
    frags: Mutex<FragMemo>,
}

/// Identity hasher for keys that are already hashes.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | *b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

pub(crate) type SigMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

type FragMemo = SigMap<Arc<NodeFrag>>;

/// Node states remembered before the memo starts afresh; bounds memory in a
/// long-running scheduler while holding every state of a large cluster.
const FRAG_MEMO_MAX: usize = 1 << 18;

impl Clone for Scorer {
    fn clone(&self) -> Scorer {
        Scorer {
            policy: self.policy,
            typical: self.typical.clone(),
            frags: Mutex::new(FragMemo::default()),
        }
    }
}

impl Scorer {
    pub(crate) fn new(
        policy: Policy,
        typical: &TypicalPods,
        models: &[String],
        totals: &[u64],
    ) -> Scorer {
        Scorer {
            policy,
            typical: Bound::new(typical, models, totals),
            frags: Mutex::new(FragMemo::default()),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The node's current fragmentation, measured once per node state.
    pub(crate) fn node_frag(&self, node: &NodeState, models: &[String]) -> Arc<NodeFrag> {
        if let Ok(memo) = self.frags.lock()
            && let Some(nf) = memo.get(&node.sig)
        {
            return Arc::clone(nf);
        }
        let nf = Arc::new(self.typical.node_frag(node, models));
        if let Ok(mut memo) = self.frags.lock() {
            if memo.len() >= FRAG_MEMO_MAX {
                memo.clear();
            }
            memo.insert(node.sig, Arc::clone(&nf));
        }
        nf
    }
}

/// GPUs whose free memory a plan changes, as (position, free thousandths);
/// inline for the few GPUs one pod takes.
pub(crate) type Changes = SmallVec<[(usize, u32); 8]>;

/// Every usable GPU whose free bytes in `free` differ from the node's.
fn changes_of(node: &NodeState, free: &[u64]) -> Changes {
    node.gpus
        .iter()
        .zip(free)
        .enumerate()
        .filter(|(_, (g, f))| g.usable() && **f != g.free)
        .map(|(p, (g, &f))| (p, thousandths(f, g.total)))
        .collect()
}

/// Sets GPU `pos` to `milli` free thousandths in `changes`.
fn set_change(changes: &mut Changes, pos: usize, milli: u32) {
    match changes.iter_mut().find(|(p, _)| *p == pos) {
        Some(c) => c.1 = milli,
        None => changes.push((pos, milli)),
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// FGD's score for a fragmentation decrease, as its simulator computes it.
fn fgd_step(decrease: f64) -> f64 {
    (sigmoid(decrease / 1000.0) * 100.0).trunc()
}

/// GPU chooser per policy.
pub(crate) enum Pick<'a> {
    Tightest,
    Loosest,
    Lowest,
    Random(&'a mut dyn RngCore),
    /// Fragmentation-driven: best score wins, lowest position on ties.
    Frag {
        scorer: &'a Scorer,
        models: &'a [String],
        cpu_after: u64,
        best: Option<f64>,
    },
}

impl Picker for Pick<'_> {
    fn pick(&mut self, node: &NodeState, free: &[u64], c: &[usize], need: u64) -> usize {
        match self {
            Pick::Tightest => Tightest.pick(node, free, c, need),
            Pick::Lowest => c[0],
            Pick::Loosest => {
                let mut best = c[0];
                for &p in &c[1..] {
                    if free[p] > free[best] {
                        best = p;
                    }
                }
                best
            }
            Pick::Random(rng) => c[rng.random_range(0..c.len())],
            Pick::Frag {
                scorer,
                models,
                cpu_after,
                best,
            } => {
                let nf = scorer.node_frag(node, models);
                // Earlier containers of the pod may have taken from GPUs already.
                let changes = changes_of(node, free);
                let before = if changes.is_empty() {
                    nf.value
                } else {
                    scorer
                        .typical
                        .frag_after(&nf, node, &changes, node.cpu_free, models)
                };
                // The usual case, nothing taken yet: each candidate costs a few
                // operations instead of a pass over the typical pods.
                let single = changes
                    .is_empty()
                    .then(|| scorer.typical.single_changes(&nf, *cpu_after));
                let mut chosen = c[0];
                let mut top: Option<(f64, u64)> = None;
                for (k, &p) in c.iter().enumerate() {
                    let g = &node.gpus[p];
                    // GPUs alike in model, size and free memory score alike.
                    if c[..k].iter().any(|&q| {
                        free[q] == free[p]
                            && node.gpus[q].total == g.total
                            && node.gpus[q].model == g.model
                    }) {
                        continue;
                    }
                    let take = need.min(free[p]);
                    let milli = thousandths(free[p] - take, g.total);
                    // Fragmentation decrease.
                    let decrease = match &single {
                        Some(single) => {
                            (before - single.value) - single.delta(node, p, milli, models)
                        }
                        None => {
                            let mut trial = changes.clone();
                            set_change(&mut trial, p, milli);
                            before
                                - scorer
                                    .typical
                                    .frag_after(&nf, node, &trial, *cpu_after, models)
                        }
                    };
                    let score = match scorer.policy {
                        Policy::Fgd => fgd_step(decrease),
                        _ => decrease,
                    };
                    // gpupack breaks equal fragmentation by tightest fit.
                    let better = match top {
                        None => true,
                        Some((s, f)) => {
                            score > s
                                || (scorer.policy == Policy::Gpupack && score == s && free[p] < f)
                        }
                    };
                    if better {
                        top = Some((score, free[p]));
                        chosen = p;
                    }
                }
                *best = top.map(|(s, _)| s);
                chosen
            }
        }
    }
}

impl<'a> Pick<'a> {
    /// The chooser a policy uses when only the score matters.
    pub(crate) fn for_scoring(
        scorer: &'a Scorer,
        models: &'a [String],
        cpu_after: u64,
    ) -> Pick<'a> {
        match scorer.policy {
            Policy::Fgd | Policy::Gpupack => Pick::Frag {
                scorer,
                models,
                cpu_after,
                best: None,
            },
            Policy::Spread => Pick::Loosest,
            Policy::FirstFit => Pick::Lowest,
            _ => Pick::Tightest,
        }
    }
}

/// CPU the FGD simulator's BestFit normalises by (128 cores) and GPU (8 GPUs).
const MAX_SPEC_CPU: f64 = 128_000.0;
const MAX_SPEC_GPU: f64 = 8_000.0;

/// Scores a node the pod fits on; higher is better.
#[allow(clippy::too_many_arguments)]
pub(crate) fn score(
    scorer: &Scorer,
    models: &[String],
    node: &NodeState,
    node_pos: usize,
    prep: &Prepared<'_>,
    plan: &Plan,
    free_after: &[u64],
    frag_pick: Option<f64>,
) -> f64 {
    let d = prep.demand;
    let gpu_milli: u64 = plan
        .takes()
        .iter()
        .filter(|t| t.mig.is_none())
        .map(|t| thousandths(t.bytes, node.gpus[t.pos].total) as u64)
        .sum();
    let cpu_after = node.cpu_free - d.cpu_milli;
    match scorer.policy {
        Policy::Random => 0.0,
        Policy::FirstFit => -(node_pos as f64),
        Policy::BestFit => {
            let s = 0.5 * (node.cpu_free - d.cpu_milli) as f64 / MAX_SPEC_CPU
                + 0.5 * (node.idle_milli() - gpu_milli) as f64 / MAX_SPEC_GPU;
            ((1.0 - s) * 100.0).trunc()
        }
        Policy::Spread => {
            let mut parts = Vec::with_capacity(3);
            if node.cpu_total > 0 {
                parts.push(cpu_after as f64 / node.cpu_total as f64);
            }
            if node.mem_total > 0 {
                parts.push((node.mem_free - d.memory_bytes) as f64 / node.mem_total as f64);
            }
            let total: u64 = node
                .gpus
                .iter()
                .filter(|g| g.usable())
                .map(|g| g.total)
                .sum();
            if total > 0 {
                let free: u64 = node
                    .gpus
                    .iter()
                    .zip(free_after)
                    .filter(|(g, _)| g.usable())
                    .map(|(_, f)| *f)
                    .sum();
                parts.push(free as f64 / total as f64);
            }
            if parts.is_empty() {
                0.0
            } else {
                100.0 * parts.iter().sum::<f64>() / parts.len() as f64
            }
        }
        Policy::Packing => packing_score(node, plan),
        Policy::Fgd | Policy::Gpupack => {
            let frag_delta = match frag_pick {
                Some(s) => s,
                None => {
                    let nf = scorer.node_frag(node, models);
                    let before = nf.value;
                    let changes = changes_of(node, free_after);
                    let after_frag = scorer
                        .typical
                        .frag_after(&nf, node, &changes, cpu_after, models);
                    if scorer.policy == Policy::Fgd {
                        fgd_step(before - after_frag)
                    } else {
                        before - after_frag
                    }
                }
            };
            if scorer.policy == Policy::Fgd {
                frag_delta
            } else {
                gpupack_score(scorer, node, prep, plan, frag_delta, gpu_milli)
            }
        }
    }
}

/// Thousandths of a GPU that FGD's sigmoid maps to one unit: its scale.
const FRAG_SCALE: f64 = 1000.0;

/// Weight of CPU-stranded GPU against the typical-pod fragmentation.
const STRAND_WEIGHT: f64 = 0.25;

/// Ours: FGD's fragmentation decrease, extended by the GPU a placement
/// strands for lack of CPU, on FGD's integer scale (so that equal steps tie
/// and ties keep packing onto the same nodes), plus link quality for
/// multi-GPU containers.
///
/// FGD asks whether the node could host *one* more typical pod, so a CPU-only
/// pod on an 8-GPU node with 12 cores per GPU looks free of cost although it
/// leaves one of the GPUs without the CPU its typical pod brings. The strand
/// term counts the idle thousandths beyond what the node's free CPU can feed
/// at the typical pods' CPU per GPU for that GPU model.
fn gpupack_score(
    scorer: &Scorer,
    node: &NodeState,
    prep: &Prepared<'_>,
    plan: &Plan,
    frag_delta: f64,
    gpu_milli: u64,
) -> f64 {
    let d = prep.demand;
    let idle_after = node.idle_milli() - gpu_milli;
    let link_bonus: f64 = plan
        .containers()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let set: crate::topology::GpuSet = c.iter().map(|t| t.pos).collect();
            (4 - crate::topology::worst_rank(node, &set).min(4)) as f64
        })
        .sum();
    // Nodes carry one GPU model; a node without GPUs strands nothing.
    let model = node.gpus.first().map(|g| g.model as usize);
    let cpu_per_milli = model
        .and_then(|m| scorer.typical.cpu_per_milli.get(m))
        .copied()
        .unwrap_or(0.0);
    let stranded = |cpu_free: u64, idle: u64| {
        if cpu_per_milli > 0.0 {
            (idle as f64 - cpu_free as f64 / cpu_per_milli).max(0.0)
        } else {
            0.0
        }
    };
    let mut strand_delta = stranded(node.cpu_free - d.cpu_milli, idle_after)
        - stranded(node.cpu_free, node.idle_milli());
    // A node whose CPU could never feed all its GPUs (2 × P100 with 16
    // cores) strands less with every GPU taken; that is no gain when pods
    // restricted to its GPU model need those GPUs more than a pod that could
    // run anywhere.
    let usable_milli = 1000.0 * node.gpus.iter().filter(|g| g.usable()).count() as f64;
    let cpu_poor = cpu_per_milli > 0.0 && (node.cpu_total as f64 / cpu_per_milli) < usable_milli;
    let wanted_by_restricted = model
        .and_then(|m| scorer.typical.wanted_by_restricted.get(m))
        .copied()
        .unwrap_or(false);
    if cpu_poor && wanted_by_restricted {
        strand_delta = strand_delta.max(0.0);
    }
    let strand_adjusted = frag_delta - STRAND_WEIGHT * strand_delta;
    let steps = (sigmoid(strand_adjusted / FRAG_SCALE) * 100.0).trunc();
    steps * 1000.0 + 50.0 * link_bonus
}

/// The FGD simulator's GpuPacking score.
fn packing_score(node: &NodeState, plan: &Plan) -> f64 {
    let takes: SmallVec<[_; 8]> = plan.takes().iter().filter(|t| t.mig.is_none()).collect();
    if takes.is_empty() {
        return 0.0;
    }
    let usable: Vec<_> = node.gpus.iter().filter(|g| g.usable()).collect();
    let fully_free = usable.iter().filter(|g| g.fully_free()).count() as i64;
    if fully_free == usable.len() as i64 {
        return (100 / 3 - fully_free).max(fully_free) as f64;
    }
    let free_used = takes
        .iter()
        .filter(|t| node.gpus[t.pos].fully_free())
        .count() as i64;
    if free_used > 0 {
        return (50 - free_used).max(100 / 3) as f64;
    }
    let ratio: i64 = takes
        .iter()
        .map(|t| node.gpus[t.pos].free_milli as i64 * 100 / 1000)
        .sum();
    (100 - ratio / 10).max(50) as f64
}

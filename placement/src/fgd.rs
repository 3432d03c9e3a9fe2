//! Fragmentation as Fragmentation Gradient Descent (Weng et al., USENIX ATC
//! 2023) defines it: the expected amount of a node's idle GPU that a pod drawn
//! from the typical pod mix could not use.
//!
//! For a typical pod that fits the node (enough GPUs with room for it, enough
//! CPU), the GPUs too full for it are fragments; for one that does not fit,
//! every idle GPU is. CPU-only typical pods count all idle GPU too, as in the
//! paper's simulator. Amounts are in thousandths of a GPU.

use std::collections::HashMap;

use smallvec::SmallVec;

use crate::demand::{GpuNeed, MemoryNeed, PodDemand};
use crate::model::model_matches;
use crate::state::{GpuState, NodeState};

/// Most kinds of typical pods kept: each costs time in every score, and a
/// scorer evaluates at most 64 (one bit each in a GPU's room mask).
pub const MAX_KINDS: usize = 64;

/// Share of the pods seen that the typical kinds cover: the FGD simulator's
/// rule, which the extender, the trace replay and the workload replay all
/// follow (a GPU-weighted mix did worse on the Alibaba trace).
pub const TYPICAL_COVERAGE: f64 = 0.95;

/// A workload's typical pods with their probabilities (summing to 1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypicalPods {
    pods: Vec<(PodDemand, f64)>,
}

impl TypicalPods {
    /// Given pods and weights (any positive scale); the weights are normalised.
    pub fn new(pods: Vec<(PodDemand, f64)>) -> Self {
        let total: f64 = pods.iter().map(|(_, w)| w.max(0.0)).sum();
        let pods = if total > 0.0 {
            pods.into_iter()
                .filter(|(_, w)| *w > 0.0)
                .map(|(d, w)| (d, w / total))
                .collect()
        } else {
            Vec::new()
        };
        TypicalPods { pods }
    }

    /// The most frequent demands of a workload that together make up at
    /// least `coverage` (0–1) of it, most frequent first, re-normalised — the
    /// FGD simulator's rule (95 %, one spec at a time) — and at most
    /// [`MAX_KINDS`] kinds. Host memory is left
    /// out of the key, as the measure does not use it.
    pub fn from_workload<'a>(
        demands: impl IntoIterator<Item = &'a PodDemand>,
        coverage: f64,
    ) -> Self {
        Self::from_weighted(demands.into_iter().map(|d| (d, 1.0)), coverage)
    }

    /// Like [`TypicalPods::from_workload`], each pod counting `weight` times
    /// (e.g. by the GPUs it asks for, so that rare large pods are not cut).
    pub fn from_weighted<'a>(
        demands: impl IntoIterator<Item = (&'a PodDemand, f64)>,
        coverage: f64,
    ) -> Self {
        let mut counts: HashMap<PodDemand, f64> = HashMap::new();
        let mut total = 0.0;
        for (d, w) in demands {
            let key = PodDemand {
                memory_bytes: 0,
                ..d.clone()
            };
            *counts.entry(key).or_insert(0.0) += w;
            total += w;
        }
        let mut list: Vec<(PodDemand, f64)> = counts.into_iter().collect();
        // Most frequent first; ties in a fixed order (larger requests first).
        list.sort_by(|(a, ca), (b, cb)| {
            cb.total_cmp(ca)
                .then_with(|| order_key(b).cmp(&order_key(a)))
        });
        let want = coverage.clamp(0.0, 1.0) * total;
        let mut cum = 0.0;
        let mut keep = 0;
        while keep < list.len() && keep < MAX_KINDS && (cum < want || keep == 0) {
            cum += list[keep].1;
            keep += 1;
        }
        list.truncate(keep);
        TypicalPods::new(list)
    }

    /// The `max` most probable pods, re-normalised (the mix itself when it
    /// is small enough).
    fn capped(&self, max: usize) -> TypicalPods {
        if self.pods.len() <= max {
            return self.clone();
        }
        let mut pods = self.pods.clone();
        pods.sort_by(|(_, a), (_, b)| b.total_cmp(a));
        pods.truncate(max);
        TypicalPods::new(pods)
    }

    pub fn pods(&self) -> &[(PodDemand, f64)] {
        &self.pods
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

fn order_key(d: &PodDemand) -> (u64, u32, u32, String) {
    let (milli, count) = match d.containers.first().map(|c| &c.gpu) {
        Some(GpuNeed::Gpus { count, memory, .. }) => (memory.milli_on(u64::MAX).min(1000), *count),
        _ => (0, 0),
    };
    (d.cpu_milli, milli, count, d.allowed_models.join("|"))
}

/// Most typical pods a scorer evaluates: one bit each in a GPU's room mask.
const BOUND_KINDS: usize = 64;

/// A typical pod resolved for fast evaluation.
#[derive(Clone, Debug)]
pub(crate) struct Typ {
    pub p: f64,
    pub cpu: u64,
    /// GPUs of the first GPU container (0: a CPU-only pod).
    pub count: u32,
    pub memory: MemoryNeed,
    /// The need in thousandths when it does not depend on the GPU.
    pub fixed_milli: Option<u32>,
    pub allowed_names: Vec<String>,
    /// Allowed flag per model id known when bound; `None` = any model.
    pub allowed: Option<Vec<bool>>,
}

impl Typ {
    fn allows(&self, model: u16, models: &[String]) -> bool {
        match &self.allowed {
            None => true,
            Some(a) => match a.get(model as usize) {
                Some(v) => *v,
                None => models
                    .get(model as usize)
                    .is_some_and(|m| self.allowed_names.iter().any(|n| model_matches(n, m))),
            },
        }
    }
}

/// Typical pods bound to a ledger's model table and GPU sizes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bound {
    pub typs: Vec<Typ>,
    /// Per typical pod (same order as `typs`), the parts every sum reads,
    /// kept apart so that the sums run over plain arrays.
    p: Vec<f64>,
    cpu: Vec<u64>,
    count: Vec<u32>,
    /// Σ p over the typical pods of each byte of a 64-bit pod mask (byte b,
    /// value x: the pods 8b + bit of x), so that a mask's probability costs
    /// eight lookups.
    p_by_byte: Vec<[f64; 256]>,
    /// Per GPU size in the ledger: each typical pod's need, and the room masks.
    rows: Vec<NeedRow>,
    /// Per model id known when bound: bit k set when typical pod k may use it.
    allowed_on: Vec<u64>,
    /// Per model id: millicores the typical GPU pod brings per thousandth of a GPU.
    pub cpu_per_milli: Vec<f64>,
    /// Per model id: some typical pods restricted to listed models may run
    /// on GPUs of this model.
    pub wanted_by_restricted: Vec<bool>,
}

/// Typical pods' needs on GPUs of one size.
#[derive(Clone, Debug, Default)]
struct NeedRow {
    total: u64,
    /// Distinct needs in thousandths, ascending, each with the bits of the
    /// typical pods that need at most that much: a room mask is one search.
    steps: Vec<(u32, u64)>,
}

impl NeedRow {
    fn new(total: u64, typs: &[Typ]) -> NeedRow {
        let mut needs: Vec<(u32, usize)> = typs
            .iter()
            .enumerate()
            .map(|(k, t)| (t.memory.milli_on(total), k))
            .collect();
        needs.sort_unstable();
        let mut steps: Vec<(u32, u64)> = Vec::new();
        let mut mask = 0u64;
        for (need, k) in needs {
            mask |= 1 << k;
            match steps.last_mut() {
                Some(last) if last.0 == need => last.1 = mask,
                _ => steps.push((need, mask)),
            }
        }
        NeedRow { total, steps }
    }

    /// Bits of the typical pods whose need is at most `m` thousandths.
    fn fitting(&self, m: u32) -> u64 {
        match self.steps.partition_point(|(need, _)| *need <= m) {
            0 => 0,
            i => self.steps[i - 1].1,
        }
    }
}

impl Bound {
    pub fn new(t: &TypicalPods, models: &[String], totals: &[u64]) -> Bound {
        let t = &t.capped(BOUND_KINDS);
        let typs = t
            .pods
            .iter()
            .map(|(d, p)| {
                let gpu = d.containers.iter().find_map(|c| match &c.gpu {
                    GpuNeed::Gpus { count, memory, .. } => Some((*count, *memory)),
                    GpuNeed::Mig { .. } => None,
                });
                let (count, memory) = gpu.unwrap_or((0, MemoryNeed::Whole));
                let fixed_milli = match memory {
                    MemoryNeed::Bytes(_) => None,
                    m => Some(m.milli_on(1)),
                };
                let allowed = (!d.allowed_models.is_empty()).then(|| {
                    models
                        .iter()
                        .map(|m| d.allowed_models.iter().any(|a| model_matches(a, m)))
                        .collect()
                });
                Typ {
                    p: *p,
                    cpu: d.cpu_milli,
                    count,
                    memory,
                    fixed_milli,
                    allowed_names: d.allowed_models.clone(),
                    allowed,
                }
            })
            .collect::<Vec<Typ>>();
        let rows = totals
            .iter()
            .map(|&total| NeedRow::new(total, &typs))
            .collect();
        let allowed_on = (0..models.len())
            .map(|m| {
                typs.iter()
                    .enumerate()
                    .filter(|(_, t)| t.allows(m as u16, models))
                    .fold(0u64, |mask, (k, _)| mask | 1 << k)
            })
            .collect();
        // Per GPU model: CPU the typical GPU pod that may run there brings
        // per thousandth of GPU it takes.
        let cpu_per_milli = (0..models.len())
            .map(|m| {
                let (cpu, milli) = typs
                    .iter()
                    .filter(|t| t.count > 0 && t.allows(m as u16, models))
                    .fold((0.0, 0.0), |(c, mm), t| {
                        let per_gpu = t
                            .fixed_milli
                            .or_else(|| totals.first().map(|&total| t.memory.milli_on(total)))
                            .unwrap_or(1000)
                            .min(1000);
                        (
                            c + t.p * t.cpu as f64,
                            mm + t.p * (t.count as f64 * per_gpu as f64),
                        )
                    });
                if milli > 0.0 { cpu / milli } else { 0.0 }
            })
            .collect();
        // Per GPU model: whether typical pods restricted to listed models
        // may run there.
        let wanted_by_restricted = (0..models.len())
            .map(|m| {
                typs.iter()
                    .any(|t| t.count > 0 && t.allowed.is_some() && t.allows(m as u16, models))
            })
            .collect();
        let p_by_byte = typs
            .chunks(8)
            .map(|chunk| {
                let mut table = [0.0; 256];
                for (x, sum) in table.iter_mut().enumerate() {
                    *sum = chunk
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| x & (1 << j) != 0)
                        .map(|(_, t)| t.p)
                        .sum();
                }
                table
            })
            .collect();
        Bound {
            p_by_byte,
            p: typs.iter().map(|t| t.p).collect(),
            cpu: typs.iter().map(|t| t.cpu).collect(),
            count: typs.iter().map(|t| t.count).collect(),
            typs,
            rows,
            allowed_on,
            cpu_per_milli,
            wanted_by_restricted,
        }
    }

    /// Position of the needs row for GPUs of `total` bytes.
    fn row_of(&self, total: u64) -> Option<u16> {
        self.rows
            .iter()
            .position(|r| r.total == total)
            .map(|i| i as u16)
    }

    /// Bit `k` set when typical pod `k` has room on GPU `g` with `m`
    /// thousandths free.
    fn room_mask(&self, g: &GpuState, row: Option<u16>, m: u32, models: &[String]) -> u64 {
        if m == 0 {
            return 0;
        }
        let allowed = self.allowed_on.get(g.model as usize).copied();
        match (row.and_then(|r| self.rows.get(r as usize)), allowed) {
            (Some(row), Some(allowed)) => row.fitting(m) & allowed,
            // A GPU size or model that came after binding: measure directly.
            _ => self
                .typs
                .iter()
                .enumerate()
                .filter(|(_, t)| m >= t.memory.milli_on(g.total) && t.allows(g.model, models))
                .fold(0u64, |mask, (k, _)| mask | 1 << k),
        }
    }

    /// The node's fragmentation as it is now, broken down per typical pod.
    pub fn node_frag(&self, node: &NodeState, models: &[String]) -> NodeFrag {
        let rows: SmallVec<[Option<u16>; 8]> =
            node.gpus.iter().map(|g| self.row_of(g.total)).collect();
        let masks: SmallVec<[u64; 8]> = node
            .gpus
            .iter()
            .zip(&rows)
            .map(|(g, row)| self.room_mask(g, *row, g.free_milli, models))
            .collect();
        let idle = node.idle_milli();
        // At most 64 GPUs (a node's limit), each at most 1,000 free.
        let mut fits = [0u8; BOUND_KINDS];
        let mut short = [0u16; BOUND_KINDS];
        for k in 0..self.typs.len() {
            for (g, mask) in node.gpus.iter().zip(&masks) {
                if mask & (1 << k) != 0 {
                    fits[k] += 1;
                } else {
                    short[k] += g.free_milli.min(1000) as u16;
                }
            }
        }
        let mut nf = NodeFrag {
            value: 0.0,
            idle,
            rows,
            masks,
            fits,
            short,
        };
        nf.value = self.sum(&nf, idle, node.cpu_free, |_, f, s| (f, s));
        nf
    }

    /// The expected fragment amount after GPUs change to the given free
    /// thousandths (`changes`: distinct positions with their new value; GPUs
    /// that take no new work never change) and CPU to `cpu_free`. Equal to
    /// measuring the changed node from scratch, at the cost of the changed
    /// GPUs only.
    pub fn frag_after(
        &self,
        nf: &NodeFrag,
        node: &NodeState,
        changes: &[(usize, u32)],
        cpu_free: u64,
        models: &[String],
    ) -> f64 {
        let mut idle = nf.idle as i64;
        // Per change: old and new room masks, old and new free thousandths.
        let delta: SmallVec<[(u64, u64, u32, u32); 8]> = changes
            .iter()
            .map(|&(p, m)| {
                let g = &node.gpus[p];
                idle += m as i64 - g.free_milli as i64;
                (
                    nf.masks[p],
                    self.room_mask(g, nf.rows[p], m, models),
                    g.free_milli,
                    m,
                )
            })
            .collect();
        let idle = idle.max(0) as u64;
        self.sum(nf, idle, cpu_free, |k, fits, short| {
            // Branch-free: whether a GPU had or has room varies unpredictably by kind.
            let (mut fits, mut short) = (fits as i64, short as i64);
            for &(old_mask, new_mask, old, new) in &delta {
                let (had, has) = ((old_mask >> k) & 1, (new_mask >> k) & 1);
                fits += has as i64 - had as i64;
                short += (1 - has as i64) * new as i64 - (1 - had as i64) * old as i64;
            }
            (fits as u16, short as u64)
        })
    }

    /// Σ p over the typical pods in `mask`.
    fn p_of(&self, mask: u64) -> f64 {
        self.p_by_byte
            .iter()
            .enumerate()
            .map(|(b, table)| table[((mask >> (8 * b)) & 0xff) as usize])
            .sum()
    }

    /// Prepares scoring changes of one GPU at a time on a node measured as
    /// `nf`, with `cpu_free` CPU left: the case of every single-GPU shared
    /// container, whose candidate GPUs are each scored.
    pub fn single_changes<'a>(&'a self, nf: &'a NodeFrag, cpu_free: u64) -> SingleChanges<'a> {
        let mut live = 0u64;
        let mut exact = 0u64;
        let mut value = 0.0;
        if nf.idle > 0 {
            let kinds = self.p.iter().zip(&self.cpu).zip(&self.count);
            for (k, ((&p, &cpu), &count)) in kinds.enumerate() {
                let fits = nf.fits[k] as u32;
                let starts = count > 0 && cpu_free >= cpu && fits >= count;
                if starts {
                    live |= 1 << k;
                    if fits == count {
                        exact |= 1 << k;
                    }
                }
                value += p * if starts { nf.short[k] as u64 } else { nf.idle } as f64;
            }
        }
        SingleChanges {
            bound: self,
            nf,
            value,
            live,
            exact,
        }
    }

    /// Σ p·(fragment amount) over typical pods; `adjust` turns the node's
    /// per-pod counts (GPUs with room, free thousandths short) into the
    /// state being measured.
    #[inline]
    fn sum(
        &self,
        nf: &NodeFrag,
        idle: u64,
        cpu_free: u64,
        mut adjust: impl FnMut(usize, u16, u64) -> (u16, u64),
    ) -> f64 {
        if idle == 0 {
            return 0.0;
        }
        let mut acc = 0.0;
        let kinds = self.p.iter().zip(&self.cpu).zip(&self.count);
        for (k, ((&p, &cpu), &count)) in kinds.enumerate() {
            let (fits, short) = adjust(k, nf.fits[k] as u16, nf.short[k] as u64);
            // A typical pod that cannot start here finds all idle GPU useless.
            let starts = count > 0 && cpu_free >= cpu && fits as u32 >= count;
            acc += p * if starts { short } else { idle } as f64;
        }
        acc
    }
}

/// A node's fragmentation at a given CPU level, ready to score taking
/// memory from any one of its GPUs in a few operations (see
/// [`Bound::single_changes`]).
pub(crate) struct SingleChanges<'a> {
    bound: &'a Bound,
    nf: &'a NodeFrag,
    /// The fragment amount with the GPUs unchanged.
    pub value: f64,
    /// Typical pods that could start on the node: enough CPU, enough GPUs
    /// with room.
    live: u64,
    /// Of those, the ones with exactly as many GPUs with room as they need.
    exact: u64,
}

impl SingleChanges<'_> {
    /// How the fragment amount changes when GPU `pos` goes down to `m` free
    /// thousandths (at most what it has).
    ///
    /// Every typical pod sees d = (old − m) less idle GPU, either as fewer
    /// thousandths short or as less idle in all, except those that could
    /// start: one still with room on the GPU loses nothing (+d against
    /// that), one that loses its room there counts the GPU's remaining m as
    /// short (+old), or, when it needed that GPU to start, all idle GPU
    /// instead of what was short (+idle − short).
    pub fn delta(&self, node: &NodeState, pos: usize, m: u32, models: &[String]) -> f64 {
        let b = self.bound;
        let g = &node.gpus[pos];
        let old = g.free_milli;
        // Taking memory never frees any: `m` is at most `old`.
        let m = m.min(old);
        if self.nf.idle == (old - m) as u64 {
            // Nothing idle is left: nothing is fragmented.
            return -self.value;
        }
        let d = (old - m) as f64;
        let had = self.nf.masks[pos];
        let has = b.room_mask(g, self.nf.rows[pos], m, models) & had;
        let lost = had & !has & self.live;
        let mut delta = -d * b.p_of(!(self.live & has)) + old as f64 * b.p_of(lost & !self.exact);
        let mut needed = lost & self.exact;
        while needed != 0 {
            let k = needed.trailing_zeros() as usize;
            needed &= needed - 1;
            delta += b.p[k] * (self.nf.idle as f64 - self.nf.short[k] as f64);
        }
        delta
    }
}

// The per-pod counts below fit their types on the largest node allowed.
const _: () = assert!(crate::model::MAX_GPUS_PER_NODE * 1000 <= u16::MAX as usize);

/// A node's fragmentation and its per-typical-pod parts, for scoring a
/// change to a few of its GPUs without looking at the others. One block of
/// memory, as every score reads it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NodeFrag {
    /// Expected fragment amount (thousandths of a GPU).
    pub value: f64,
    idle: u64,
    /// Needs row per GPU position.
    rows: SmallVec<[Option<u16>; 8]>,
    /// Per GPU position: which typical pods it has room for (bit per pod).
    masks: SmallVec<[u64; 8]>,
    /// Per typical pod: GPUs with room for it.
    fits: [u8; BOUND_KINDS],
    /// Per typical pod: free thousandths on GPUs without room for it (at
    /// most 1,000 per GPU).
    short: [u16; BOUND_KINDS],
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::model::{GpuSpec, Health, NodeSpec};

    fn node(sizes: &[u64], cpu: u64) -> (NodeState, Vec<String>) {
        let spec = NodeSpec {
            name: "n".into(),
            gpus: sizes
                .iter()
                .enumerate()
                .map(|(i, &m)| GpuSpec {
                    index: i as u32,
                    uuid: format!("g{i}"),
                    product: if i % 3 == 0 {
                        "T4".into()
                    } else {
                        "A10".into()
                    },
                    memory_bytes: m,
                    health: Health::Healthy,
                    numa_node: None,
                    mig: vec![],
                })
                .collect(),
            links: vec![],
            slices_per_gpu: 100,
            cpu_milli: cpu,
            memory_bytes: 1 << 40,
        };
        let mut models = Vec::new();
        let state = NodeState::new(&spec, &mut |m: &str| match models
            .iter()
            .position(|x: &String| x == m)
        {
            Some(i) => i as u16,
            None => {
                models.push(m.to_string());
                (models.len() - 1) as u16
            }
        });
        (state, models)
    }

    fn mix() -> TypicalPods {
        let share = |m: u32, cpu: u64| PodDemand::gpus(1, MemoryNeed::Milli(m)).with_cpu(cpu, 0);
        TypicalPods::new(vec![
            (share(250, 4000), 3.0),
            (share(500, 8000), 2.0),
            (PodDemand::gpus(1, MemoryNeed::Whole).with_cpu(8000, 0), 2.0),
            (
                PodDemand::gpus(2, MemoryNeed::Bytes(9 << 30)).with_cpu(2000, 0),
                1.0,
            ),
            (PodDemand::gpus(4, MemoryNeed::Whole), 1.0),
            (
                PodDemand::gpus(1, MemoryNeed::Milli(300)).with_models(["T4"]),
                1.0,
            ),
            (PodDemand::default().with_cpu(16_000, 0), 2.0),
        ])
    }

    /// GPU sizes of [`loaded`] nodes, alternating.
    const SIZES: [u64; 2] = [16 << 30, 24 << 30];

    /// A node with GPUs used by the given thousandths and `cpu` free.
    fn loaded(used: &[u32], cpu: u64) -> (NodeState, Vec<String>) {
        let sizes: Vec<u64> = (0..used.len()).map(|i| SIZES[i % 2]).collect();
        let (mut n, models) = node(&sizes, 64_000);
        for (g, &u) in n.gpus.iter_mut().zip(used) {
            g.free = g.total - g.total * u as u64 / 1000;
            g.refresh_milli();
        }
        n.cpu_free = cpu;
        (n, models)
    }

    proptest! {
        /// Scoring a change by its delta gives exactly what measuring the
        /// changed node from scratch gives.
        #[test]
        fn delta_equals_recompute(
            used in proptest::collection::vec(0u32..=1000, 1..9),
            changes in proptest::collection::vec((0usize..8, 0u32..=1000), 0..4),
            cpu in 0u64..64_000,
            cpu_after in 0u64..64_000,
        ) {
            let (n, models) = loaded(&used, cpu);
            let b = Bound::new(&mix(), &models, &SIZES);
            let nf = b.node_frag(&n, &models);
            let mut seen = Vec::new();
            let changes: Vec<(usize, u32)> = changes
                .into_iter()
                .filter(|(p, _)| *p < n.gpus.len())
                .filter(|(p, _)| if seen.contains(p) { false } else { seen.push(*p); true })
                .collect();
            let delta = b.frag_after(&nf, &n, &changes, cpu_after, &models);
            let mut m = n.clone();
            for &(p, milli) in &changes {
                m.gpus[p].free_milli = milli;
            }
            m.cpu_free = cpu_after;
            let fresh = b.node_frag(&m, &models).value;
            prop_assert!((delta - fresh).abs() <= 1e-9 * fresh.abs().max(1.0), "{delta} vs {fresh}");
        }
    }

    proptest! {
        /// Scoring one GPU's change through `single_changes` gives what the
        /// general delta (and so a fresh measurement) gives.
        #[test]
        fn single_change_equals_general_delta(
            used in proptest::collection::vec(0u32..=1000, 1..9),
            pos in 0usize..8,
            take in 0u32..=1000,
            cpu in 0u64..64_000,
            cpu_after in 0u64..64_000,
        ) {
            let (n, models) = loaded(&used, cpu);
            let pos = pos % n.gpus.len();
            let m = n.gpus[pos].free_milli.saturating_sub(take);
            let b = Bound::new(&mix(), &models, &SIZES);
            let nf = b.node_frag(&n, &models);
            let single = b.single_changes(&nf, cpu_after);
            let general = b.frag_after(&nf, &n, &[(pos, m)], cpu_after, &models);
            let fast = single.value + single.delta(&n, pos, m, &models);
            prop_assert!((fast - general).abs() <= 1e-9 * general.abs().max(1.0), "{fast} vs {general}");
            let unchanged = b.frag_after(&nf, &n, &[], cpu_after, &models);
            prop_assert!((single.value - unchanged).abs() <= 1e-9 * unchanged.abs().max(1.0));
        }
    }

    #[test]
    fn full_node_is_not_fragmented_and_cpu_pods_count_all_idle() {
        let (n, models) = node(&[16 << 30; 2], 64_000);
        let only_cpu = TypicalPods::new(vec![(PodDemand::default().with_cpu(1, 0), 1.0)]);
        let b = Bound::new(&only_cpu, &models, &[16 << 30]);
        assert_eq!(b.node_frag(&n, &models).value, 2000.0);
        let mut full = n.clone();
        for g in &mut full.gpus {
            g.free = 0;
            g.refresh_milli();
        }
        assert_eq!(b.node_frag(&full, &models).value, 0.0);
    }
}

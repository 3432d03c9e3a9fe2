//! Fragmentation as Fragmentation Gradient Descent (Weng et al., USENIX ATC
//! 2023) defines it: the expected amount of a node's idle GPU that a pod drawn
//! from the typical pod mix could not use.
//!
//! For a typical pod that fits the node (enough GPUs with room for it, enough
//! CPU), the GPUs too full for it are fragments; for one that does not fit,
//! every idle GPU is. CPU-only typical pods count all idle GPU too, as in the
//! paper's simulator. Amounts are in thousandths of a GPU.

use std::collections::HashMap;

use crate::demand::{GpuNeed, MemoryNeed, PodDemand};
use crate::model::model_matches;
use crate::state::NodeState;

/// Most kinds of typical pods kept: each costs time in every score.
pub const MAX_KINDS: usize = 48;

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

    /// The mix the `gpupack` policy works best with: pods weighted by the
    /// GPUs they ask for (1 + 4 per GPU) and 99 % coverage, so that rare
    /// multi-GPU pods still keep whole nodes free for them.
    pub fn for_gpupack<'a>(demands: impl IntoIterator<Item = &'a PodDemand>) -> Self {
        Self::from_weighted(
            demands
                .into_iter()
                .map(|d| (d, 1.0 + 4.0 * d.gpu_count() as f64)),
            0.99,
        )
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
    /// Per GPU size in the ledger, each typical pod's need in thousandths.
    needs: Vec<(u64, Vec<u32>)>,
}

impl Bound {
    pub fn new(t: &TypicalPods, models: &[String], totals: &[u64]) -> Bound {
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
        let needs = totals
            .iter()
            .map(|&total| {
                (
                    total,
                    typs.iter().map(|t| t.memory.milli_on(total)).collect(),
                )
            })
            .collect();
        Bound { typs, needs }
    }

    /// Expected fragment amount of `node` if its GPUs had `milli` free
    /// (thousandths, 0 for GPUs that take nothing) and `cpu_free` CPU.
    pub fn frag(&self, node: &NodeState, milli: &[u32], cpu_free: u64, models: &[String]) -> f64 {
        let idle: u64 = milli.iter().map(|&m| m as u64).sum();
        if idle == 0 {
            return 0.0;
        }
        // Each GPU's row of needs, resolved once per call.
        let rows: Vec<Option<&Vec<u32>>> = node
            .gpus
            .iter()
            .map(|g| {
                self.needs
                    .iter()
                    .find(|(t, _)| *t == g.total)
                    .map(|(_, v)| v)
            })
            .collect();
        let mut acc = 0.0;
        for (k, t) in self.typs.iter().enumerate() {
            if t.count == 0 || cpu_free < t.cpu {
                acc += t.p * idle as f64;
                continue;
            }
            let mut fits = 0u32;
            let mut short: u64 = 0;
            for ((g, &m), row) in node.gpus.iter().zip(milli).zip(&rows) {
                let need = match (t.fixed_milli, row) {
                    (Some(n), _) => n,
                    (None, Some(r)) => r[k],
                    (None, None) => t.memory.milli_on(g.total),
                };
                if m >= need && m > 0 && t.allows(g.model, models) {
                    fits += 1;
                } else {
                    short += m as u64;
                }
            }
            acc += t.p * if fits >= t.count { short } else { idle } as f64;
        }
        acc
    }
}

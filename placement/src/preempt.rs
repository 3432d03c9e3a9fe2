//! Victim selection for priority preemption: which lower-priority pods to
//! evict from one node so that a pod fits there.
//!
//! kube-scheduler's own preemption sees only node-level counts of GPU slices
//! and memory, which still "fit" on a node whose every GPU is partly used;
//! only the per-GPU view of the ledger (memory and slices per GPU, NVLink
//! domains, MIG instances) can tell which pods must go.
//!
//! Among the sets of candidates whose removal lets the pod fit, the chosen
//! one is the least by [`PreemptionCost`]: PodDisruptionBudget violations,
//! then the highest victim priority, then the number of victims, then the GPU
//! memory disrupted. A pod of equal or higher priority than the preemptor is
//! never a victim. Every criterion grows when a victim is added (the count
//! strictly), so the cheapest set is also minimal: no victim can be spared.
//! The search is exact up to [`SEARCH_STEPS`] feasibility checks per node;
//! past that it keeps the best set found, or evicts greedily, and then spares
//! every victim it can, so the answer is always minimal.

use std::collections::HashSet;

use crate::demand::PodKey;
use crate::fit::{self, Prepared, Shortfall, Take, View, Work};
use crate::ledger::{Allocation, Ledger, NodeId};
use crate::state::NodeState;

/// Feasibility checks one node's search may make before it settles for the
/// best set found so far (a few milliseconds).
pub const SEARCH_STEPS: u32 = 20_000;

/// A pod on the node that may be evicted to make room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub pod: PodKey,
    pub priority: i32,
    /// Positions in [`PreemptionQuery::budgets`] of the PodDisruptionBudgets
    /// that select this pod.
    pub budgets: Vec<usize>,
}

/// A PodDisruptionBudget: how many of the pods it selects may be evicted now
/// (its `status.disruptionsAllowed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisruptionBudget {
    pub name: String,
    pub disruptions_allowed: u32,
}

/// What a preemption on one node is asked to respect.
#[derive(Clone, Copy, Debug)]
pub struct PreemptionQuery<'a> {
    /// The preemptor's priority: only candidates below it may be victims.
    pub priority: i32,
    /// Pods that may be evicted; those not holding anything on the node, or
    /// of priority `>= priority`, are never chosen.
    pub candidates: &'a [Candidate],
    pub budgets: &'a [DisruptionBudget],
}

/// What a set of victims costs, compared field by field in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PreemptionCost {
    /// Victims whose eviction a PodDisruptionBudget does not allow, counted
    /// as kube-scheduler does: victims in descending priority each use up one
    /// disruption of every budget selecting them; a victim that finds one of
    /// them exhausted is a violation.
    pub budget_violations: u32,
    /// The highest victim priority; `None` (below every priority) without victims.
    pub highest_priority: Option<i32>,
    pub victims: u32,
    /// GPU memory the victims hold on the node.
    pub gpu_memory_bytes: u64,
}

/// The victims to evict from one node, and where the pod goes once they are gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preemption {
    /// In ascending priority; empty when the pod fits already.
    pub victims: Vec<PodKey>,
    pub cost: PreemptionCost,
    /// The devices the pod gets once the victims are gone.
    pub allocation: Allocation,
    /// False when the search ran out of steps: the set fits and is minimal
    /// but a cheaper one may exist.
    pub exhaustive: bool,
}

/// Why no victims were chosen; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreemptionError {
    #[error("node #{0} is not in the ledger")]
    UnknownNode(u32),
    #[error("candidate {pod} names PodDisruptionBudget #{index}, but only {count} were given")]
    UnknownBudget {
        pod: PodKey,
        index: usize,
        count: usize,
    },
    #[error(
        "evicting every lower-priority pod on node {node} ({eligible} of them) is not enough: {shortfall}"
    )]
    NotEnough {
        node: String,
        eligible: usize,
        shortfall: Shortfall,
    },
}

/// A candidate that holds something on the node and ranks below the preemptor.
struct Eligible<'l> {
    pod: &'l PodKey,
    priority: i32,
    budgets: Vec<usize>,
    takes: &'l [Take],
    cpu_milli: u64,
    memory_bytes: u64,
    gpu_memory_bytes: u64,
}

impl Ledger {
    /// The cheapest minimal set of candidates to evict from `node` so that
    /// the prepared pod fits there (see the module documentation for the
    /// order), and the devices it gets then.
    pub fn select_victims(
        &self,
        node: NodeId,
        prep: &Prepared<'_>,
        query: &PreemptionQuery<'_>,
    ) -> Result<Preemption, PreemptionError> {
        let n = self
            .node(node)
            .ok_or(PreemptionError::UnknownNode(node.0))?;
        let count = query.budgets.len();
        for c in query.candidates {
            if let Some(&index) = c.budgets.iter().find(|&&b| b >= count) {
                return Err(PreemptionError::UnknownBudget {
                    pod: c.pod.clone(),
                    index,
                    count,
                });
            }
        }
        let mut seen = HashSet::new();
        let mut eligible: Vec<Eligible<'_>> = query
            .candidates
            .iter()
            .filter(|c| c.priority < query.priority && seen.insert(&c.pod))
            .filter_map(|c| {
                let entry = self.pods.get(&c.pod).filter(|e| e.node == node)?;
                let mut budgets = c.budgets.clone();
                budgets.sort_unstable();
                budgets.dedup();
                Some(Eligible {
                    pod: &c.pod,
                    priority: c.priority,
                    budgets,
                    takes: &entry.takes,
                    cpu_milli: entry.alloc.cpu_milli,
                    memory_bytes: entry.alloc.memory_bytes,
                    gpu_memory_bytes: entry.alloc.gpu_memory_bytes(),
                })
            })
            .collect();
        // Cheapest first, so that the first sets found are good bounds.
        eligible.sort_by(|a, b| {
            (a.priority, a.gpu_memory_bytes, a.pod).cmp(&(b.priority, b.gpu_memory_bytes, b.pod))
        });
        let mut s = Search::new(n, prep, &eligible, query.budgets);
        if s.fits() {
            return Ok(s.answer(self, Vec::new(), true));
        }
        let all: Vec<usize> = (0..eligible.len()).collect();
        for &i in &all {
            s.release(i);
        }
        if let Err(shortfall) = s.plan() {
            return Err(PreemptionError::NotEnough {
                node: n.name.clone(),
                eligible: eligible.len(),
                shortfall,
            });
        }
        for &i in &all {
            s.retake(i);
        }
        s.explore(0, PreemptionCost::default());
        let exhaustive = s.steps < SEARCH_STEPS;
        let chosen = match s.best.take() {
            Some((_, set)) => set,
            None => all,
        };
        let chosen = s.spare(chosen);
        Ok(s.answer(self, chosen, exhaustive))
    }
}

/// Branch-and-bound over the eligible pods, on a copy of the node whose free
/// amounts are the ledger's plus what the victims tried so far release.
struct Search<'a, 'd, 'l> {
    node: NodeState,
    prep: &'a Prepared<'d>,
    eligible: &'a [Eligible<'l>],
    budgets: &'a [DisruptionBudget],
    base_free: Vec<u64>,
    base_slices: Vec<u32>,
    base_mig_taken: Vec<Vec<bool>>,
    base_cpu: u64,
    base_mem: u64,
    /// Released by the victims tried so far, per GPU position.
    extra_free: Vec<u64>,
    extra_slices: Vec<u32>,
    /// Victims tried so far holding each MIG instance (0: as in the ledger).
    mig_released: Vec<Vec<u32>>,
    extra_cpu: u64,
    extra_mem: u64,
    chosen: Vec<usize>,
    best: Option<(PreemptionCost, Vec<usize>)>,
    steps: u32,
    work: Work,
}

impl<'a, 'd, 'l> Search<'a, 'd, 'l> {
    fn new(
        node: &NodeState,
        prep: &'a Prepared<'d>,
        eligible: &'a [Eligible<'l>],
        budgets: &'a [DisruptionBudget],
    ) -> Self {
        let gpus = node.gpus.len();
        Search {
            base_free: node.gpus.iter().map(|g| g.free).collect(),
            base_slices: node.gpus.iter().map(|g| g.slices_free).collect(),
            base_mig_taken: node
                .gpus
                .iter()
                .map(|g| g.mig.iter().map(|m| m.taken).collect())
                .collect(),
            base_cpu: node.cpu_free,
            base_mem: node.mem_free,
            extra_free: vec![0; gpus],
            extra_slices: vec![0; gpus],
            mig_released: node.gpus.iter().map(|g| vec![0; g.mig.len()]).collect(),
            extra_cpu: 0,
            extra_mem: 0,
            node: node.clone(),
            prep,
            eligible,
            budgets,
            chosen: Vec::new(),
            best: None,
            steps: 0,
            work: Work::default(),
        }
    }

    fn release(&mut self, i: usize) {
        let e = &self.eligible[i];
        for t in e.takes {
            let Some(free) = self.extra_free.get_mut(t.pos) else {
                continue;
            };
            match t.mig {
                Some(m) => {
                    if let Some(c) = self.mig_released[t.pos].get_mut(m) {
                        *c += 1;
                    }
                }
                None => {
                    *free = free.saturating_add(t.bytes);
                    self.extra_slices[t.pos] = self.extra_slices[t.pos].saturating_add(t.slices);
                }
            }
        }
        self.extra_cpu = self.extra_cpu.saturating_add(e.cpu_milli);
        self.extra_mem = self.extra_mem.saturating_add(e.memory_bytes);
    }

    /// Undoes [`Search::release`] of the same pod exactly.
    fn retake(&mut self, i: usize) {
        let e = &self.eligible[i];
        for t in e.takes {
            let Some(free) = self.extra_free.get_mut(t.pos) else {
                continue;
            };
            match t.mig {
                Some(m) => {
                    if let Some(c) = self.mig_released[t.pos].get_mut(m) {
                        *c = c.saturating_sub(1);
                    }
                }
                None => {
                    *free = free.saturating_sub(t.bytes);
                    self.extra_slices[t.pos] = self.extra_slices[t.pos].saturating_sub(t.slices);
                }
            }
        }
        self.extra_cpu = self.extra_cpu.saturating_sub(e.cpu_milli);
        self.extra_mem = self.extra_mem.saturating_sub(e.memory_bytes);
    }

    /// Plans the pod on the node as the victims tried so far leave it.
    fn plan(&mut self) -> Result<(), Shortfall> {
        self.steps = self.steps.saturating_add(1);
        let n = &mut self.node;
        for (p, g) in n.gpus.iter_mut().enumerate() {
            g.free = self.base_free[p]
                .saturating_add(self.extra_free[p])
                .min(g.total);
            g.slices_free = self.base_slices[p]
                .saturating_add(self.extra_slices[p])
                .min(g.slices_total);
            for (m, inst) in g.mig.iter_mut().enumerate() {
                inst.taken = self.base_mig_taken[p][m] && self.mig_released[p][m] == 0;
            }
        }
        n.cpu_free = self
            .base_cpu
            .saturating_add(self.extra_cpu)
            .min(n.cpu_total);
        n.mem_free = self
            .base_mem
            .saturating_add(self.extra_mem)
            .min(n.mem_total);
        fit::plan(n, self.prep, View::Now, &mut fit::Tightest, &mut self.work)
    }

    fn fits(&mut self) -> bool {
        self.plan().is_ok()
    }

    fn cost(&self, set: &[usize]) -> PreemptionCost {
        let mut remaining: Vec<i64> = self
            .budgets
            .iter()
            .map(|b| i64::from(b.disruptions_allowed))
            .collect();
        let mut violations = 0;
        // `set` is in ascending priority: kube-scheduler counts from the top.
        for &i in set.iter().rev() {
            let mut violated = false;
            for &b in &self.eligible[i].budgets {
                if let Some(r) = remaining.get_mut(b) {
                    *r -= 1;
                    violated |= *r < 0;
                }
            }
            violations += u32::from(violated);
        }
        PreemptionCost {
            budget_violations: violations,
            highest_priority: set.iter().map(|&i| self.eligible[i].priority).max(),
            victims: set.len() as u32,
            gpu_memory_bytes: set.iter().map(|&i| self.eligible[i].gpu_memory_bytes).sum(),
        }
    }

    fn beats_best(&self, cost: &PreemptionCost) -> bool {
        self.best.as_ref().is_none_or(|(b, _)| cost < b)
    }

    /// Tries every extension of `self.chosen` (which does not fit, and costs
    /// `cost`) by eligible pods from `i` on.
    fn explore(&mut self, i: usize, cost: PreemptionCost) {
        if i >= self.eligible.len() || self.steps >= SEARCH_STEPS {
            return;
        }
        // Any extension adds a victim of priority at least eligible[i]'s.
        let bound = PreemptionCost {
            highest_priority: cost.highest_priority.max(Some(self.eligible[i].priority)),
            victims: cost.victims + 1,
            ..cost
        };
        if !self.beats_best(&bound) {
            return;
        }
        // Would evicting all of the rest be enough?
        for j in i..self.eligible.len() {
            self.release(j);
        }
        let enough = self.fits();
        for j in i..self.eligible.len() {
            self.retake(j);
        }
        if !enough {
            return;
        }
        self.release(i);
        self.chosen.push(i);
        let with = self.cost(&self.chosen);
        if self.beats_best(&with) {
            if self.fits() {
                self.best = Some((with, self.chosen.clone()));
            } else {
                self.explore(i + 1, with);
            }
        }
        self.chosen.pop();
        self.retake(i);
        self.explore(i + 1, cost);
    }

    /// Drops every victim the pod fits without, costliest first, until none
    /// can be dropped. `set` must fit.
    fn spare(&mut self, mut set: Vec<usize>) -> Vec<usize> {
        for &i in &set {
            self.release(i);
        }
        loop {
            let mut spared = false;
            for k in (0..set.len()).rev() {
                let i = set[k];
                self.retake(i);
                if self.fits() {
                    set.remove(k);
                    spared = true;
                } else {
                    self.release(i);
                }
            }
            if !spared {
                break;
            }
        }
        for &i in &set {
            self.retake(i);
        }
        set
    }

    /// The preemption for `set` (which fits), planned on the node it leaves.
    fn answer(&mut self, ledger: &Ledger, set: Vec<usize>, exhaustive: bool) -> Preemption {
        for &i in &set {
            self.release(i);
        }
        let planned = self.plan();
        debug_assert!(planned.is_ok(), "a chosen set always fits");
        let allocation = ledger.allocation(&self.node, self.prep, &self.work.plan);
        for &i in &set {
            self.retake(i);
        }
        Preemption {
            cost: self.cost(&set),
            victims: set.iter().map(|&i| self.eligible[i].pod.clone()).collect(),
            allocation,
            exhaustive,
        }
    }
}

//! The ledger: every node's free GPU memory, slices, MIG instances, CPU and
//! host memory, and which pod holds what.
//!
//! Placing subtracts exactly what an [`Allocation`] lists and releasing adds
//! exactly that back, so a release restores the state before the placement.
//! Nothing is ever over-committed: an allocation that does not fit is refused
//! whole. Reservations hold resources between filter and bind and lapse at a
//! time the caller gives; the core never reads a clock.

use std::collections::HashMap;

use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::demand::PodKey;
use crate::fgd::TypicalPods;
use crate::fit::{self, Prepared, Take, Unfit};
use crate::model::{ModelError, NodeSpec};
use crate::policy::{self, Pick, Policy, Scorer};
use crate::state::NodeState;

/// A node's place in the ledger; stays valid until the node is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

/// One device granted to a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuGrant {
    /// NVML index of the GPU.
    pub index: u32,
    pub uuid: String,
    /// GPU memory held (the instance's memory for MIG).
    pub memory_bytes: u64,
    /// Time-slicing replicas held (all of them for a whole GPU, 0 for MIG).
    pub slices: u32,
    /// MIG instance UUID when the grant is a MIG instance.
    pub mig_uuid: Option<String>,
}

/// The devices one container gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerGrant {
    pub name: String,
    pub gpus: Vec<GpuGrant>,
}

/// Everything a pod holds on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub node: String,
    pub containers: Vec<ContainerGrant>,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
}

impl Allocation {
    /// GPU memory held over all devices.
    pub fn gpu_memory_bytes(&self) -> u64 {
        self.containers
            .iter()
            .flat_map(|c| &c.gpus)
            .map(|g| g.memory_bytes)
            .sum()
    }
}

/// What is used and free on one GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuUsage {
    pub index: u32,
    pub uuid: String,
    pub product: String,
    pub healthy: bool,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub slices_total: u32,
    pub slices_free: u32,
    pub mig_total: usize,
    pub mig_free: usize,
}

/// What is used and free on one node (for metrics and checks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUsage {
    pub name: String,
    pub gpus: Vec<GpuUsage>,
    pub cpu_total: u64,
    pub cpu_free: u64,
    pub memory_total: u64,
    pub memory_free: u64,
}

/// Why the ledger refused a change; the ledger is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("pod {0} already holds resources")]
    AlreadyPlaced(PodKey),
    #[error("pod {0} holds nothing")]
    NotPlaced(PodKey),
    #[error("pod {0} is placed, not reserved")]
    NotReserved(PodKey),
    #[error("node {0} is not in the ledger")]
    UnknownNode(String),
    #[error("node {node} has no GPU {what}")]
    UnknownDevice { node: String, what: String },
    #[error("{0}")]
    DoesNotFit(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) node: NodeId,
    pub(crate) alloc: Allocation,
    /// Positions of the granted devices, for exact release.
    pub(crate) takes: Vec<Take>,
    /// `Some(t)`: a reservation that lapses at caller time `t`.
    pub(crate) expires_at: Option<u64>,
}

/// The placement ledger.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    nodes: Vec<Option<NodeState>>,
    by_name: HashMap<String, NodeId>,
    models: Vec<String>,
    pub(crate) pods: HashMap<PodKey, Entry>,
    /// Set: [`Ledger::decide`] breaks equal scores by a fixed node order
    /// drawn from this seed instead of at random.
    tie_seed: Option<u64>,
}

impl PartialEq for Ledger {
    /// Equal when every node's free amounts and every holding are equal.
    fn eq(&self, other: &Ledger) -> bool {
        self.nodes == other.nodes && self.pods == other.pods && self.by_name == other.by_name
    }
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    fn model_id(models: &mut Vec<String>, name: &str) -> u16 {
        match models.iter().position(|m| m == name) {
            Some(i) => i as u16,
            None => {
                models.push(name.to_string());
                (models.len() - 1) as u16
            }
        }
    }

    /// Adds a node or replaces its inventory. Pods already on it keep their
    /// devices; grants on GPUs the new inventory lacks are dropped from the
    /// node's accounting and those pods are returned so the caller can act.
    pub fn upsert_node(&mut self, spec: &NodeSpec) -> Result<(NodeId, Vec<PodKey>), LedgerError> {
        spec.validate()?;
        let models = &mut self.models;
        let mut state = NodeState::new(spec, &mut |m| Ledger::model_id(models, m));
        let id = match self.by_name.get(&spec.name) {
            Some(id) => *id,
            None => {
                let id = NodeId(self.nodes.len() as u32);
                self.nodes.push(None);
                self.by_name.insert(spec.name.clone(), id);
                id
            }
        };
        let mut lost = Vec::new();
        let mut keys: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|(_, e)| e.node == id)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        for key in keys {
            let Some(entry) = self.pods.get_mut(&key) else {
                continue;
            };
            // Re-resolve devices by UUID: positions may have moved.
            let mut takes = Vec::new();
            let mut ok = true;
            for grant in entry.alloc.containers.iter().flat_map(|c| &c.gpus) {
                let Some(pos) = state.gpus.iter().position(|g| g.uuid == grant.uuid) else {
                    ok = false;
                    continue;
                };
                let mig = match &grant.mig_uuid {
                    None => None,
                    Some(u) => match state.gpus[pos].mig.iter().position(|m| &m.uuid == u) {
                        Some(m) => Some(m),
                        None => {
                            ok = false;
                            continue;
                        }
                    },
                };
                takes.push(Take {
                    pos,
                    bytes: grant.memory_bytes,
                    slices: grant.slices,
                    mig,
                });
            }
            apply_saturating(
                &mut state,
                &takes,
                entry.alloc.cpu_milli,
                entry.alloc.memory_bytes,
            );
            entry.takes = takes;
            if !ok {
                lost.push(key);
            }
        }
        state.refresh_sig();
        self.nodes[id.0 as usize] = Some(state);
        Ok((id, lost))
    }

    /// Removes a node; the pods on it are released and returned.
    pub fn remove_node(&mut self, name: &str) -> Vec<PodKey> {
        let Some(id) = self.by_name.remove(name) else {
            return Vec::new();
        };
        self.nodes[id.0 as usize] = None;
        let mut gone: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|(_, e)| e.node == id)
            .map(|(k, _)| k.clone())
            .collect();
        gone.sort();
        for k in &gone {
            self.pods.remove(k);
        }
        gone
    }

    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    pub fn node_name(&self, id: NodeId) -> Option<&str> {
        self.node(id).map(|n| n.name.as_str())
    }

    /// Ids of all nodes, in ledger order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_some())
            .map(|(i, _)| NodeId(i as u32))
    }

    pub fn node_count(&self) -> usize {
        self.by_name.len()
    }

    pub(crate) fn node(&self, id: NodeId) -> Option<&NodeState> {
        self.nodes.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Used and free resources of a node.
    pub fn usage(&self, id: NodeId) -> Option<NodeUsage> {
        let n = self.node(id)?;
        Some(NodeUsage {
            name: n.name.clone(),
            gpus: n
                .gpus
                .iter()
                .map(|g| GpuUsage {
                    index: g.index,
                    uuid: g.uuid.clone(),
                    product: self
                        .models
                        .get(g.model as usize)
                        .cloned()
                        .unwrap_or_default(),
                    healthy: g.healthy,
                    total_bytes: g.total,
                    free_bytes: g.free,
                    slices_total: g.slices_total,
                    slices_free: g.slices_free,
                    mig_total: g.mig.len(),
                    mig_free: g.mig.iter().filter(|m| !m.taken).count(),
                })
                .collect(),
            cpu_total: n.cpu_total,
            cpu_free: n.cpu_free,
            memory_total: n.mem_total,
            memory_free: n.mem_free,
        })
    }

    /// Resolves a demand against the model table; do it once per pod and
    /// test the result against many nodes.
    pub fn prepare<'d>(&self, demand: &'d crate::PodDemand) -> Prepared<'d> {
        Prepared::new(demand, &self.models)
    }

    /// Binds a policy (and, for `fgd` and `gpupack`, the typical pod mix) to
    /// this ledger. Rebuild it when the typical mix changes, or when
    /// [`Ledger::scorer_key`] does.
    pub fn scorer(&self, policy: Policy, typical: &TypicalPods) -> Scorer {
        Scorer::new(policy, typical, &self.models, &self.gpu_totals())
    }

    /// What a [`Scorer`] takes from the ledger (its GPU models and GPU
    /// sizes), hashed: while it is unchanged, so is the scorer for a given
    /// policy and mix, whatever pods come and go.
    pub fn scorer_key(&self) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let mut totals = self.gpu_totals();
        totals.sort_unstable();
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one((&self.models, totals))
    }

    /// The distinct GPU sizes, in the order nodes bring them.
    fn gpu_totals(&self) -> Vec<u64> {
        let mut totals: Vec<u64> = Vec::new();
        for g in self.nodes.iter().flatten().flat_map(|n| &n.gpus) {
            if !totals.contains(&g.total) {
                totals.push(g.total);
            }
        }
        totals
    }

    /// Filter: does the pod fit on the node now, and if not, why and whether
    /// it ever could.
    pub fn check(&self, node: NodeId, prep: &Prepared<'_>) -> Result<(), Unfit> {
        let n = self.node_or_unfit(node)?;
        fit::with_work(|w| fit::check(n, prep, &mut fit::Tightest, w))
    }

    fn node_or_unfit(&self, node: NodeId) -> Result<&NodeState, Unfit> {
        self.node(node).ok_or(Unfit {
            shortfall: fit::Shortfall::Model {
                allowed: "node not in ledger".into(),
            },
            permanent: true,
        })
    }

    /// Prioritize: the policy's score for the node (higher is better), or why
    /// the pod does not fit.
    pub fn score(&self, node: NodeId, prep: &Prepared<'_>, scorer: &Scorer) -> Result<f64, Unfit> {
        let n = self.node_or_unfit(node)?;
        let pos = node.0 as usize;
        fit::with_work(|w| {
            let cpu_after = n.cpu_free.saturating_sub(prep.demand.cpu_milli);
            let mut pick = Pick::for_scoring(scorer, &self.models, cpu_after);
            fit::check(n, prep, &mut pick, w)?;
            Ok(self.score_plan(n, pos, prep, scorer, pick, w))
        })
    }

    /// The policy's score for the plan in `w`, made with `pick`.
    fn score_plan(
        &self,
        n: &NodeState,
        pos: usize,
        prep: &Prepared<'_>,
        scorer: &Scorer,
        pick: Pick<'_>,
        w: &fit::Work,
    ) -> f64 {
        let frag_pick = match pick {
            Pick::Frag { best, .. } => best,
            _ => None,
        };
        policy::score(
            scorer,
            &self.models,
            n,
            pos,
            prep,
            &w.plan,
            &w.free,
            frag_pick,
        )
    }

    /// Bind: the concrete devices the policy gives the pod on this node.
    pub fn choose(
        &self,
        node: NodeId,
        prep: &Prepared<'_>,
        scorer: &Scorer,
        rng: &mut dyn RngCore,
    ) -> Result<Allocation, Unfit> {
        let n = self.node_or_unfit(node)?;
        let cpu_after = n.cpu_free.saturating_sub(prep.demand.cpu_milli);
        let mut pick = match scorer.policy {
            Policy::Random => Pick::Random(rng),
            _ => Pick::for_scoring(scorer, &self.models, cpu_after),
        };
        fit::with_work(|w| {
            fit::check(n, prep, &mut pick, w)?;
            Ok(self.allocation(n, prep, &w.plan))
        })
    }

    pub(crate) fn allocation(
        &self,
        n: &NodeState,
        prep: &Prepared<'_>,
        plan: &fit::Plan,
    ) -> Allocation {
        Allocation {
            node: n.name.clone(),
            containers: prep
                .demand
                .containers
                .iter()
                .zip(plan.containers())
                .map(|(c, takes)| ContainerGrant {
                    name: c.name.clone(),
                    gpus: takes
                        .iter()
                        .map(|t| {
                            let g = &n.gpus[t.pos];
                            GpuGrant {
                                index: g.index,
                                uuid: g.uuid.clone(),
                                memory_bytes: t.bytes,
                                slices: t.slices,
                                mig_uuid: t.mig.map(|m| g.mig[m].uuid.clone()),
                            }
                        })
                        .collect(),
                })
                .collect(),
            cpu_milli: prep.demand.cpu_milli,
            memory_bytes: prep.demand.memory_bytes,
        }
    }

    /// Makes [`Ledger::decide`] break equal scores by a fixed pseudo-random
    /// node order (drawn from `seed`) rather than anew at every decision.
    ///
    /// The FGD paper's simulator gives its nodes random name prefixes and
    /// then settles ties by node order, so equal-scoring pods keep landing on
    /// the same nodes — a packing effect its published packing and FGD
    /// results depend on. Replays compared with them do the same. The
    /// `random` policy keeps drawing at random.
    pub fn order_ties(&mut self, seed: u64) {
        self.tie_seed = Some(seed);
    }

    /// The whole decision over every node: the best-scoring node (ties broken
    /// uniformly at random, as kube-scheduler does, unless
    /// [`Ledger::order_ties`] fixed an order) and the devices there.
    /// `None` when the pod fits nowhere.
    pub fn decide(
        &self,
        prep: &Prepared<'_>,
        scorer: &Scorer,
        rng: &mut dyn RngCore,
    ) -> Option<Allocation> {
        let d = prep.demand;
        let mut best: Option<(f64, usize)> = None;
        let mut ties = 0u32;
        let tie_seed = self.tie_seed.filter(|_| scorer.policy != Policy::Random);
        let mut memo = StateMemo::new();
        let mut work = fit::Work::default();
        for (pos, slot) in self.nodes.iter().enumerate() {
            let Some(n) = slot else { continue };
            if n.cpu_free < d.cpu_milli || n.mem_free < d.memory_bytes {
                continue;
            }
            let s = if scorer.policy == Policy::FirstFit {
                match fit::plan(n, prep, fit::View::Now, &mut fit::Tightest, &mut work) {
                    Ok(_) => {
                        best = Some((0.0, pos));
                        break;
                    }
                    Err(_) => continue,
                }
            } else {
                memo.get_or(n.sig, || self.eval_fast(n, pos, prep, scorer, &mut work))
            };
            let Some(s) = s else { continue };
            match best {
                Some((b, _)) if s < b => {}
                Some((b, best_pos)) if s == b => {
                    if let Some(seed) = tie_seed {
                        if tie_rank(seed, pos) < tie_rank(seed, best_pos) {
                            best = Some((s, pos));
                        }
                        continue;
                    }
                    ties += 1;
                    if rng.random_range(0..ties) == 0 {
                        best = Some((s, pos));
                    }
                }
                _ => {
                    best = Some((s, pos));
                    ties = 1;
                }
            }
        }
        let (_, pos) = best?;
        self.choose(NodeId(pos as u32), prep, scorer, rng).ok()
    }

    /// Score without building a failure reason.
    fn eval_fast(
        &self,
        n: &NodeState,
        pos: usize,
        prep: &Prepared<'_>,
        scorer: &Scorer,
        w: &mut fit::Work,
    ) -> Option<f64> {
        let cpu_after = n.cpu_free.saturating_sub(prep.demand.cpu_milli);
        let mut pick = Pick::for_scoring(scorer, &self.models, cpu_after);
        fit::plan(n, prep, fit::View::Now, &mut pick, w).ok()?;
        Some(self.score_plan(n, pos, prep, scorer, pick, w))
    }

    /// The typical-pod fragmentation measure summed over all nodes, and the
    /// idle GPU it is measured against, both in thousandths of a GPU.
    pub fn fragmentation(&self, scorer: &Scorer) -> (f64, u64) {
        let mut frag = 0.0;
        let mut idle = 0;
        for n in self.nodes.iter().flatten() {
            frag += scorer.node_frag(n, &self.models).value;
            idle += n.idle_milli();
        }
        (frag, idle)
    }

    /// Records that `pod` holds `alloc`. Refused whole if the pod already
    /// holds something, a device is unknown or unhealthy, or anything would
    /// be over-committed.
    pub fn place(&mut self, pod: PodKey, alloc: Allocation) -> Result<(), LedgerError> {
        self.hold(pod, alloc, None, true)
    }

    /// Whether [`Ledger::place`] would take `alloc` now, without taking it:
    /// every device known, healthy and free enough, nothing over-committed.
    pub fn admits(&self, alloc: &Allocation) -> Result<(), LedgerError> {
        let id = self
            .node_id(&alloc.node)
            .ok_or_else(|| LedgerError::UnknownNode(alloc.node.clone()))?;
        let Some(Some(n)) = self.nodes.get(id.0 as usize) else {
            return Err(LedgerError::UnknownNode(alloc.node.clone()));
        };
        room_for(n, alloc, true).map(|_| ())
    }

    /// Like [`Ledger::place`] for a pod already running (e.g. when rebuilding
    /// after a restart): devices that turned unhealthy are accepted, capacity
    /// is still never over-committed.
    pub fn adopt(&mut self, pod: PodKey, alloc: Allocation) -> Result<(), LedgerError> {
        self.hold(pod, alloc, None, false)
    }

    /// Holds `alloc` for `pod` until caller time `expires_at` (see
    /// [`Ledger::expire`]) or until [`Ledger::confirm`] makes it a placement.
    pub fn reserve(
        &mut self,
        pod: PodKey,
        alloc: Allocation,
        expires_at: u64,
    ) -> Result<(), LedgerError> {
        self.hold(pod, alloc, Some(expires_at), true)
    }

    /// Turns a reservation into a placement.
    pub fn confirm(&mut self, pod: &PodKey) -> Result<(), LedgerError> {
        match self.pods.get_mut(pod) {
            None => Err(LedgerError::NotPlaced(pod.clone())),
            Some(e) if e.expires_at.is_none() => Err(LedgerError::NotReserved(pod.clone())),
            Some(e) => {
                e.expires_at = None;
                Ok(())
            }
        }
    }

    /// Releases every reservation that lapses at or before `now`; returns them.
    pub fn expire(&mut self, now: u64) -> Vec<(PodKey, Allocation)> {
        let mut due: Vec<PodKey> = self
            .pods
            .iter()
            .filter(|(_, e)| e.expires_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        due.sort();
        due.into_iter()
            .filter_map(|k| self.release(&k).map(|a| (k, a)))
            .collect()
    }

    /// Gives back everything the pod holds (placed or reserved).
    pub fn release(&mut self, pod: &PodKey) -> Option<Allocation> {
        let entry = self.pods.remove(pod)?;
        if let Some(Some(n)) = self.nodes.get_mut(entry.node.0 as usize) {
            for t in &entry.takes {
                let g = &mut n.gpus[t.pos];
                match t.mig {
                    Some(m) => g.mig[m].taken = false,
                    None => {
                        g.free = (g.free + t.bytes).min(g.total);
                        g.slices_free = (g.slices_free + t.slices).min(g.slices_total);
                    }
                }
                g.refresh_milli();
            }
            n.cpu_free = (n.cpu_free + entry.alloc.cpu_milli).min(n.cpu_total);
            n.mem_free = (n.mem_free + entry.alloc.memory_bytes).min(n.mem_total);
            n.refresh_sig();
        }
        Some(entry.alloc)
    }

    /// What a pod holds and whether it is only reserved (with its expiry).
    pub fn holding(&self, pod: &PodKey) -> Option<(&Allocation, Option<u64>)> {
        self.pods.get(pod).map(|e| (&e.alloc, e.expires_at))
    }

    /// Pods holding resources, in no particular order.
    pub fn pods(&self) -> impl Iterator<Item = (&PodKey, &Allocation)> {
        self.pods.iter().map(|(k, e)| (k, &e.alloc))
    }

    fn hold(
        &mut self,
        pod: PodKey,
        alloc: Allocation,
        expires_at: Option<u64>,
        need_healthy: bool,
    ) -> Result<(), LedgerError> {
        if self.pods.contains_key(&pod) {
            return Err(LedgerError::AlreadyPlaced(pod));
        }
        let id = self
            .node_id(&alloc.node)
            .ok_or_else(|| LedgerError::UnknownNode(alloc.node.clone()))?;
        let Some(Some(n)) = self.nodes.get_mut(id.0 as usize) else {
            return Err(LedgerError::UnknownNode(alloc.node.clone()));
        };
        let takes = room_for(n, &alloc, need_healthy)?;
        for t in &takes {
            let g = &mut n.gpus[t.pos];
            match t.mig {
                Some(m) => g.mig[m].taken = true,
                None => {
                    g.free -= t.bytes;
                    g.slices_free -= t.slices;
                }
            }
            g.refresh_milli();
        }
        n.cpu_free -= alloc.cpu_milli;
        n.mem_free -= alloc.memory_bytes;
        n.refresh_sig();
        self.pods.insert(
            pod,
            Entry {
                node: id,
                alloc,
                takes,
                expires_at,
            },
        );
        Ok(())
    }
}

/// The devices `alloc` takes on `n`, if they and its CPU and memory are
/// free now.
fn room_for(
    n: &NodeState,
    alloc: &Allocation,
    need_healthy: bool,
) -> Result<Vec<Take>, LedgerError> {
    let takes = resolve(n, alloc, need_healthy)?;
    if alloc.cpu_milli > n.cpu_free || alloc.memory_bytes > n.mem_free {
        return Err(LedgerError::DoesNotFit(format!(
            "node {} has {} mCPU and {} bytes of memory free",
            n.name, n.cpu_free, n.mem_free
        )));
    }
    Ok(takes)
}

/// Maps an allocation's grants onto device positions and checks that they
/// fit together right now.
fn resolve(
    n: &NodeState,
    alloc: &Allocation,
    need_healthy: bool,
) -> Result<Vec<Take>, LedgerError> {
    let unknown = |what: String| LedgerError::UnknownDevice {
        node: n.name.clone(),
        what,
    };
    let mut free: Vec<u64> = n.gpus.iter().map(|g| g.free).collect();
    let mut slices: Vec<u32> = n.gpus.iter().map(|g| g.slices_free).collect();
    let mut mig_taken: Vec<Vec<bool>> = n
        .gpus
        .iter()
        .map(|g| g.mig.iter().map(|m| m.taken).collect())
        .collect();
    let mut takes = Vec::new();
    for c in &alloc.containers {
        for (k, grant) in c.gpus.iter().enumerate() {
            if c.gpus[..k]
                .iter()
                .any(|o| o.uuid == grant.uuid && o.mig_uuid == grant.mig_uuid)
            {
                return Err(LedgerError::DoesNotFit(format!(
                    "container {} lists GPU {} twice",
                    c.name, grant.uuid
                )));
            }
            let pos = n
                .gpus
                .iter()
                .position(|g| g.uuid == grant.uuid)
                .ok_or_else(|| unknown(grant.uuid.clone()))?;
            let g = &n.gpus[pos];
            if need_healthy && !g.healthy {
                return Err(LedgerError::DoesNotFit(format!(
                    "GPU {} is unhealthy",
                    g.uuid
                )));
            }
            let mig = match &grant.mig_uuid {
                Some(u) => {
                    let m = g
                        .mig
                        .iter()
                        .position(|m| &m.uuid == u)
                        .ok_or_else(|| unknown(u.clone()))?;
                    if mig_taken[pos][m] || (need_healthy && !g.mig[m].healthy) {
                        return Err(LedgerError::DoesNotFit(format!(
                            "MIG instance {u} is not free"
                        )));
                    }
                    mig_taken[pos][m] = true;
                    Some(m)
                }
                None => {
                    if !g.mig.is_empty() {
                        return Err(LedgerError::DoesNotFit(format!(
                            "GPU {} is in MIG mode; grant a MIG instance",
                            g.uuid
                        )));
                    }
                    if grant.memory_bytes > free[pos]
                        || grant.slices > slices[pos]
                        || grant.slices == 0
                    {
                        return Err(LedgerError::DoesNotFit(format!(
                            "GPU {} has {} bytes and {} slices free; {} bytes and {} slices asked",
                            g.uuid, free[pos], slices[pos], grant.memory_bytes, grant.slices
                        )));
                    }
                    free[pos] -= grant.memory_bytes;
                    slices[pos] -= grant.slices;
                    None
                }
            };
            takes.push(Take {
                pos,
                bytes: grant.memory_bytes,
                slices: grant.slices,
                mig,
            });
        }
    }
    Ok(takes)
}

/// Re-applies grants after an inventory change, never below zero.
fn apply_saturating(n: &mut NodeState, takes: &[Take], cpu: u64, mem: u64) {
    for t in takes {
        let g = &mut n.gpus[t.pos];
        match t.mig {
            Some(m) => g.mig[m].taken = true,
            None => {
                g.free = g.free.saturating_sub(t.bytes);
                g.slices_free = g.slices_free.saturating_sub(t.slices);
            }
        }
        g.refresh_milli();
    }
    n.cpu_free = n.cpu_free.saturating_sub(cpu);
    n.mem_free = n.mem_free.saturating_sub(mem);
}

/// Maps policy scores onto kube-scheduler's integer range `0..=max`
/// (min–max scaled; all equal scores map to `max`).
pub fn scale_scores(scores: &[f64], max: i64) -> Vec<i64> {
    let lo = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    scores
        .iter()
        .map(|&s| {
            if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
                max
            } else {
                (((s - lo) / (hi - lo)) * max as f64).round() as i64
            }
        })
        .collect()
}

/// A node's place in the fixed tie order of `seed`: a bijective mix of the
/// node's position, so every seed gives one permutation of the nodes.
/// Scores of node states seen in one decision, so that nodes in equal states
/// (empty ones, full ones, alike ones) are evaluated once. Direct-mapped: a
/// state that collides with another is evaluated again, which costs time but
/// never changes a score; the table stays small enough for the CPU's caches
/// whatever the cluster's size.
struct StateMemo {
    /// Per slot: the state's signature and its score.
    slots: Vec<Option<(u64, Option<f64>)>>,
}

impl StateMemo {
    const SLOTS: usize = 1 << 11;

    fn new() -> StateMemo {
        StateMemo {
            slots: vec![None; Self::SLOTS],
        }
    }

    fn get_or(&mut self, sig: u64, eval: impl FnOnce() -> Option<f64>) -> Option<f64> {
        // Signatures are multiplicative hashes: their high bits mix best.
        let i = (sig >> (64 - Self::SLOTS.trailing_zeros())) as usize;
        if let Some((seen, s)) = self.slots[i]
            && seen == sig
        {
            return s;
        }
        let s = eval();
        self.slots[i] = Some((sig, s));
        s
    }
}

fn tie_rank(seed: u64, pos: usize) -> u64 {
    let mut x = (pos as u64) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

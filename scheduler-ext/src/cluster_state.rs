//! What the extender knows of the cluster: every node's GPU inventory and
//! every pod's holding, as a placement ledger. Pure (no I/O, no clock): the
//! watchers in `watch.rs` feed it, the HTTP handlers read it.
//!
//! Invariants:
//! - A pod is held at most once: by its bound assignment (which wins), or by
//!   a pending reservation (a bind in flight, from the node's reservations
//!   annotation or from this replica's own bind) until the reservation expires.
//! - A node without a valid inventory takes nothing; pods bound to it are
//!   remembered and held again when its inventory (re)appears.
//! - Unhealthy GPUs take no new pods; pods already on them keep holding.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use placement::{
    Allocation, Candidate, DisruptionBudget, GpuNeed, Ledger, MemoryNeed, NodeId, PodDemand,
    PodKey, Policy, Preemption, PreemptionQuery, Scorer, TypicalPods, scale_scores,
};
use proto::assignment::PodAssignment;
use proto::extender::{HostPriority, MAX_EXTENDER_PRIORITY};
use proto::inventory::{GpuNodeInventory, NodeInventory};

use rand::SeedableRng;

use crate::alike::{NotClear, Pending, choose_clear, devices_only};
use crate::demand::PodNeeds;
use crate::mix::PodMix;
use crate::reservations::Reservations;
use crate::translate::{allocation_of, assignment_of, node_spec};

/// Something the state could not take in; the adapters log and count these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// An inventory that does not validate; the node takes nothing.
    BadInventory { node: String, reason: String },
    /// A bound pod whose assignment does not fit the node's inventory.
    BadHolding { pod: PodKey, reason: String },
    /// A reservations annotation that does not parse.
    BadReservations { node: String, reason: String },
}

/// The answer to `filter` for a set of candidate nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterOutcome {
    pub feasible: Vec<String>,
    /// Nodes that may fit once other pods leave.
    pub failed: BTreeMap<String, String>,
    /// Nodes that cannot fit however pods move.
    pub unresolvable: BTreeMap<String, String>,
}

/// Per-node GPU memory, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMemory {
    pub node: String,
    /// Memory of healthy, non-MIG GPUs plus MIG instances.
    pub total_bytes: u64,
    pub allocated_bytes: u64,
}

struct NodeEntry {
    inventory: Arc<NodeInventory>,
    /// Reservations this node's annotation holds in the ledger.
    annotated: Vec<PodKey>,
    /// Preemptors' nominations whose victims still hold the GPUs: held as
    /// soon as the victims are gone (bind enforces them before that).
    waiting: Vec<Nomination>,
    /// Preemptors' nominations held in the ledger.
    nominated: Vec<Nomination>,
}

/// A preemptor's nomination from a node's annotation.
#[derive(Clone, Debug)]
struct Nomination {
    key: PodKey,
    alloc: Allocation,
    expires_at: u64,
    victims: Vec<String>,
}

/// How long a settled pod's UID is remembered: far beyond any reservation
/// lifetime, so that no annotation entry of it can hold GPUs again.
const SETTLED_RETENTION_SECS: u64 = 3600;

/// The cluster as the ledger sees it.
pub struct ClusterState {
    ledger: Ledger,
    nodes: HashMap<String, NodeEntry>,
    /// Nodes whose inventory is present but invalid, with the reason.
    invalid: HashMap<String, String>,
    /// Bound, unfinished pods with an assignment, by key.
    bound: HashMap<PodKey, PodAssignment>,
    /// Bound pods by UID, to tell reservations of bound pods apart.
    bound_uids: HashMap<String, PodKey>,
    /// Bound pods' priorities (`spec.priority`), to rank preemption victims.
    priorities: HashMap<PodKey, i32>,
    /// UIDs of bound pods kubelet has admitted (`proto::pod::is_admitted`):
    /// alike pods need not be kept apart from them.
    admitted: HashSet<String>,
    /// Pods seen deleted, finished or bound without an assignment, by UID,
    /// with the time they were: their reservations, still listed in a
    /// node's annotation until they expire or are pruned, hold nothing.
    settled: HashMap<String, u64>,
    /// The latest time the state was told (seconds).
    now: u64,
    /// Each node's state signature, for answering many nodes in the same
    /// state once per request.
    sigs: HashMap<String, Signature>,
    policy: Policy,
    typical: TypicalPods,
    /// Pods the typical mix was derived from (0: the built-in mix).
    typical_pods: usize,
    /// Every GPU pod's demand, pending or bound: what the typical mix is
    /// derived from.
    mix: PodMix,
    /// Bound pods changed since the typical mix was derived.
    typical_stale: bool,
    scorer: Scorer,
    /// [`Ledger::scorer_key`] when the scorer was built; `None`: rebuild.
    scorer_key: Option<u64>,
    /// Filter and prioritize answers kept across requests.
    verdicts: std::sync::Mutex<Verdicts>,
}

/// Filter and prioritize answers by node state (its [`Signature`]) and
/// demand, kept across requests: the replicas of a Deployment meet the same
/// node states one after another, all but the few nodes that changed, so a
/// large cluster costs a lookup per node rather than a fit or a score. Valid
/// while the scorer is unchanged; cleared when it is rebuilt, and when full.
#[derive(Default)]
struct Verdicts {
    fits: HashMap<(u64, u64), Result<(), (String, bool)>>,
    scores: HashMap<(u64, u64), Option<f64>>,
}

impl Verdicts {
    /// Entries kept of each kind before starting over.
    const MAX: usize = 1 << 16;

    fn make_room(&mut self) {
        if self.fits.len() >= Self::MAX {
            self.fits.clear();
        }
        if self.scores.len() >= Self::MAX {
            self.scores.clear();
        }
    }
}

/// A node's shape and what each pod holds there, hashed. Nodes with equal
/// signatures are in equal states: a pod fits them alike, with the same
/// reason and score. (Different states with equal signatures would need a
/// 64-bit collision; bind re-checks against the API regardless.)
///
/// It also caches what the per-node hot path of filter and prioritize
/// needs, so that each candidate costs one lookup.
struct Signature {
    id: NodeId,
    unit: u64,
    shape: u64,
    holdings: HashMap<PodKey, u64>,
    /// Wrapping sum of `holdings`: order-free, updated in O(1).
    sum: u64,
    /// `hash(shape, sum)`, kept current.
    value: u64,
}

impl Signature {
    fn refresh(&mut self) {
        self.value = hash_of(&(self.shape, self.sum));
    }
}

fn hash_of<T: std::hash::Hash>(v: &T) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(v)
}

fn shape_of(inv: &NodeInventory) -> u64 {
    let gpus: Vec<_> = inv
        .gpus
        .iter()
        .map(|g| {
            let migs: Vec<_> = g
                .mig_instances
                .iter()
                .map(|m| (&m.profile, m.memory_bytes, m.health.is_healthy()))
                .collect();
            (
                g.index,
                &g.product,
                g.memory_bytes,
                g.health.is_healthy(),
                g.numa_node,
                g.mig_enabled,
                migs,
            )
        })
        .collect();
    let links: Vec<_> = inv
        .links
        .iter()
        .map(|l| (l.a, l.b, l.nvlinks, l.nvswitch, l.pcie as u8))
        .collect();
    hash_of(&(inv.slices_per_gpu, inv.memory_unit_bytes, gpus, links))
}

fn holding_hash(a: &Allocation) -> u64 {
    let grants: Vec<_> = a
        .containers
        .iter()
        .flat_map(|c| &c.gpus)
        .map(|g| (g.index, g.memory_bytes, g.slices, &g.mig_uuid))
        .collect();
    // CPU and host memory too: two holdings of the same GPUs with different
    // CPU leave the node in different states.
    hash_of(&(grants, a.cpu_milli, a.memory_bytes))
}

impl ClusterState {
    /// Releases whatever the pod holds, keeping signatures in step.
    fn release(&mut self, key: &PodKey) -> Option<Allocation> {
        let alloc = self.ledger.release(key)?;
        self.forget_holding(&alloc.node, key);
        Some(alloc)
    }

    fn forget_holding(&mut self, node: &str, key: &PodKey) {
        if let Some(sig) = self.sigs.get_mut(node)
            && let Some(h) = sig.holdings.remove(key)
        {
            sig.sum = sig.sum.wrapping_sub(h);
            sig.refresh();
        }
    }

    fn note_holding(&mut self, key: &PodKey, alloc: &Allocation) {
        let h = holding_hash(alloc);
        let Some(sig) = self.sigs.get_mut(&alloc.node) else {
            return;
        };
        if let Some(old) = sig.holdings.insert(key.clone(), h) {
            sig.sum = sig.sum.wrapping_sub(old);
        }
        sig.sum = sig.sum.wrapping_add(h);
        sig.refresh();
    }

    fn hold(
        &mut self,
        key: PodKey,
        alloc: Allocation,
        expires_at: Option<u64>,
    ) -> Result<(), String> {
        let noted = alloc.clone();
        match expires_at {
            None => self.ledger.adopt(key.clone(), alloc),
            Some(t) => self.ledger.reserve(key.clone(), alloc, t),
        }
        .map_err(|e| e.to_string())?;
        self.note_holding(&key, &noted);
        Ok(())
    }

    pub fn new(policy: Policy) -> ClusterState {
        let ledger = Ledger::new();
        let typical = default_typical();
        let scorer = ledger.scorer(policy, &typical);
        let ledger_key = ledger.scorer_key();
        ClusterState {
            ledger,
            nodes: HashMap::new(),
            invalid: HashMap::new(),
            bound: HashMap::new(),
            bound_uids: HashMap::new(),
            priorities: HashMap::new(),
            admitted: HashSet::new(),
            settled: HashMap::new(),
            now: 0,
            sigs: HashMap::new(),
            policy,
            typical,
            typical_pods: 0,
            mix: PodMix::default(),
            typical_stale: false,
            scorer_key: Some(ledger_key),
            scorer,
            verdicts: Default::default(),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The typical pod mix the fragmentation measure uses.
    pub fn typical(&self) -> &TypicalPods {
        &self.typical
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The inventory of a node, when it has a valid one.
    pub fn inventory(&self, node: &str) -> Option<Arc<NodeInventory>> {
        self.nodes.get(node).map(|n| n.inventory.clone())
    }

    /// Whether a bound pod with this UID is known.
    pub fn is_bound(&self, uid: &str) -> bool {
        self.bound_uids.contains_key(uid)
    }

    /// Adds or replaces a node's inventory (and the reservations its
    /// annotation carries, live at `now`).
    pub fn apply_inventory(&mut self, obj: &GpuNodeInventory, now: u64) -> Vec<Problem> {
        self.now = self.now.max(now);
        let mut problems = Vec::new();
        let name = obj.spec.node_name.clone();
        if let Err(e) = obj.validate() {
            let node = obj.metadata.name.clone().unwrap_or(name);
            self.remove_inventory(&node);
            self.invalid.insert(node.clone(), e.to_string());
            problems.push(Problem::BadInventory {
                node,
                reason: e.to_string(),
            });
            return problems;
        }
        let spec = node_spec(&obj.spec);
        let id = match self.ledger.upsert_node(&spec) {
            Ok((id, _)) => id,
            Err(e) => {
                self.remove_inventory(&name);
                self.invalid.insert(name.clone(), e.to_string());
                problems.push(Problem::BadInventory {
                    node: name,
                    reason: e.to_string(),
                });
                return problems;
            }
        };
        self.invalid.remove(&name);
        let shape = shape_of(&obj.spec);
        let unit = obj.spec.memory_unit_bytes;
        let sig = self.sigs.entry(name.clone()).or_insert_with(|| Signature {
            id,
            unit,
            shape,
            holdings: HashMap::new(),
            sum: 0,
            value: 0,
        });
        (sig.id, sig.unit, sig.shape) = (id, unit, shape);
        sig.refresh();
        let inventory = Arc::new(obj.spec.clone());
        let previous = self.nodes.insert(
            name.clone(),
            NodeEntry {
                inventory: inventory.clone(),
                annotated: Vec::new(),
                waiting: Vec::new(),
                nominated: Vec::new(),
            },
        );
        // Holdings re-resolve against the new inventory: re-adopt every pod
        // bound here (a GPU may have vanished or been renumbered).
        let on_node: Vec<(PodKey, PodAssignment)> = self
            .bound
            .iter()
            .filter(|(_, a)| a.node == name)
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        for (key, a) in on_node {
            self.release(&key);
            if let Err(reason) = self.adopt(&key, &a, &inventory) {
                problems.push(Problem::BadHolding { pod: key, reason });
            }
        }
        // Reservations: drop the ones the previous annotation held, take
        // the current ones.
        for key in previous.map(|p| p.annotated).unwrap_or_default() {
            if !self.bound.contains_key(&key) {
                self.release(&key);
            }
        }
        let value = obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::reservations::ANNOTATION));
        match Reservations::parse(value.map(String::as_str)) {
            Ok(r) => {
                let mut annotated = Vec::new();
                let mut waiting = Vec::new();
                let mut nominated = Vec::new();
                for (uid, entry) in r.live(now) {
                    if self.is_settled(uid) || entry.assignment.node != name {
                        continue;
                    }
                    let key = PodKey::new(&entry.namespace, &entry.name, uid);
                    let Ok(alloc) = allocation_of(&entry.assignment, &inventory) else {
                        continue;
                    };
                    // A local reservation for the same pod is replaced.
                    self.release(&key);
                    let held = self
                        .hold(key.clone(), alloc.clone(), Some(entry.expires_at))
                        .is_ok();
                    if held {
                        annotated.push(key.clone());
                    }
                    if !entry.victims.is_empty() {
                        let n = Nomination {
                            key,
                            alloc,
                            expires_at: entry.expires_at,
                            victims: entry.victims.clone(),
                        };
                        if held {
                            nominated.push(n);
                        } else {
                            waiting.push(n);
                        }
                    }
                }
                if let Some(n) = self.nodes.get_mut(&name) {
                    n.annotated = annotated;
                    n.waiting = waiting;
                    n.nominated = nominated;
                }
            }
            Err(e) => problems.push(Problem::BadReservations {
                node: name,
                reason: e.to_string(),
            }),
        }
        self.rebuild_scorer();
        problems
    }

    /// Forgets a node's inventory: it takes nothing until it is back.
    pub fn remove_inventory(&mut self, node: &str) {
        self.ledger.remove_node(node);
        self.sigs.remove(node);
        self.nodes.remove(node);
        self.invalid.remove(node);
    }

    /// Replaces every inventory (after a re-list).
    pub fn replace_inventories(&mut self, objs: &[GpuNodeInventory], now: u64) -> Vec<Problem> {
        let keep: std::collections::HashSet<String> = objs
            .iter()
            .filter_map(|o| o.metadata.name.clone())
            .collect();
        let gone: Vec<String> = self
            .nodes
            .keys()
            .chain(self.invalid.keys())
            .filter(|n| !keep.contains(*n))
            .cloned()
            .collect();
        for n in gone {
            self.remove_inventory(&n);
        }
        objs.iter()
            .flat_map(|o| self.apply_inventory(o, now))
            .collect()
    }

    /// Holds a bound pod's assignment. A bound assignment is the truth: a
    /// reservation (a bind in flight, an assumption, a nomination) that
    /// holds any of its devices is stale and gives way.
    fn adopt(
        &mut self,
        key: &PodKey,
        a: &PodAssignment,
        inv: &NodeInventory,
    ) -> Result<(), String> {
        let alloc = allocation_of(a, inv)?;
        if self.hold(key.clone(), alloc.clone(), None).is_ok() {
            return Ok(());
        }
        let devices = |x: &Allocation| -> Vec<(String, Option<String>)> {
            x.containers
                .iter()
                .flat_map(|c| &c.gpus)
                .map(|g| (g.uuid.clone(), g.mig_uuid.clone()))
                .collect()
        };
        let ours = devices(&alloc);
        let stale: Vec<PodKey> = self
            .sigs
            .get(&alloc.node)
            .map(|sig| {
                sig.holdings
                    .keys()
                    .filter(|k| {
                        self.ledger.holding(k).is_some_and(|(held, expires)| {
                            expires.is_some()
                                && devices(held).iter().any(|d| {
                                    ours.iter().any(|o| {
                                        o.0 == d.0 && (o.1.is_none() || d.1.is_none() || o.1 == d.1)
                                    })
                                })
                        })
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for k in &stale {
            tracing::debug!(pod = %key, stale = %k, "a reservation gives way to a bound assignment");
            self.release(k);
        }
        self.hold(key.clone(), alloc, None)
    }

    /// Records what a pod holds now: `Some` when it is bound with an
    /// assignment and unfinished, `None` when it holds nothing (unbound,
    /// finished, no or malformed assignment).
    pub fn apply_pod(&mut self, key: PodKey, assignment: Option<PodAssignment>) -> Vec<Problem> {
        match assignment {
            None => {
                if self.bound.remove(&key).is_some() {
                    self.bound_uids.remove(&key.uid);
                    self.typical_stale = true;
                }
                self.priorities.remove(&key);
                // Bound without an assignment, or finished: whatever a
                // reservation held for it is free.
                let freed = self.release(&key).map(|a| a.node);
                self.settle(&key.uid);
                if let Some(node) = freed {
                    self.hold_nominations(&node);
                }
                Vec::new()
            }
            Some(a) => {
                if self.bound.get(&key) == Some(&a) {
                    return Vec::new();
                }
                // A reservation (or an older holding) gives way to the
                // bound assignment.
                self.release(&key);
                self.typical_stale = true;
                self.bound.insert(key.clone(), a.clone());
                self.bound_uids.insert(key.uid.clone(), key.clone());
                let Some(inv) = self.nodes.get(&a.node).map(|n| n.inventory.clone()) else {
                    return Vec::new();
                };
                match self.adopt(&key, &a, &inv) {
                    Ok(()) => Vec::new(),
                    Err(reason) => vec![Problem::BadHolding { pod: key, reason }],
                }
            }
        }
    }

    /// A pod was deleted: it holds nothing any more, reserved or bound.
    pub fn remove_pod(&mut self, key: &PodKey) {
        self.mix.forget(&key.uid);
        self.typical_stale |= self.bound.remove(key).is_some();
        self.priorities.remove(key);
        self.bound_uids.remove(&key.uid);
        let freed = self.release(key).map(|a| a.node);
        self.settle(&key.uid);
        if let Some(node) = freed {
            self.hold_nominations(&node);
        }
    }

    /// Holds the nominations on `node` that waited for their victims, now
    /// that they fit.
    fn hold_nominations(&mut self, node: &str) {
        let Some(waiting) = self
            .nodes
            .get_mut(node)
            .map(|n| std::mem::take(&mut n.waiting))
        else {
            return;
        };
        let mut still = Vec::new();
        for w in waiting {
            if self.is_settled(&w.key.uid) || w.expires_at <= self.now {
                continue;
            }
            if self
                .hold(w.key.clone(), w.alloc.clone(), Some(w.expires_at))
                .is_ok()
            {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.annotated.push(w.key.clone());
                    n.nominated.push(w);
                }
            } else {
                still.push(w);
            }
        }
        if let Some(n) = self.nodes.get_mut(node) {
            n.waiting = still;
        }
    }

    /// Where a pending pod is nominated after a preemption, and the victims
    /// it waits for (still bound, by this replica's watch).
    pub fn nomination_for(&self, uid: &str) -> Option<(String, Vec<String>)> {
        if self.is_settled(uid) {
            return None;
        }
        self.nodes.iter().find_map(|(name, n)| {
            let w = n
                .waiting
                .iter()
                .chain(&n.nominated)
                .find(|w| w.key.uid == uid && w.expires_at > self.now)?;
            let left = w
                .victims
                .iter()
                .filter(|v| self.bound_uids.contains_key(*v))
                .cloned()
                .collect();
            Some((name.clone(), left))
        })
    }

    fn settle(&mut self, uid: &str) {
        self.admitted.remove(uid);
        self.settled.insert(uid.to_string(), self.now);
    }

    /// Records whether kubelet has admitted a bound pod.
    pub fn note_admitted(&mut self, uid: &str, admitted: bool) {
        if admitted {
            self.admitted.insert(uid.to_string());
        } else {
            self.admitted.remove(uid);
        }
    }

    /// Whether the pod watch showed kubelet admitting this pod. Admission
    /// is never undone, so `true` is certain; `false` may be a watch behind.
    pub fn is_admitted(&self, uid: &str) -> bool {
        self.admitted.contains(uid)
    }

    /// Whether the pod watch shows this pod bound to `node`.
    pub fn is_bound_on(&self, uid: &str, node: &str) -> bool {
        self.bound_uids
            .get(uid)
            .and_then(|k| self.bound.get(k))
            .is_some_and(|a| a.node == node)
    }

    /// Pods the watch shows bound to `node` with an assignment.
    pub fn bound_on(&self, node: &str) -> Vec<(PodKey, PodAssignment)> {
        let mut on: Vec<(PodKey, PodAssignment)> = self
            .bound
            .iter()
            .filter(|(_, a)| a.node == node)
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect();
        on.sort_by(|a, b| a.0.cmp(&b.0));
        on
    }

    /// Pods holding GPUs on `node` that kubelet has not admitted yet: binds
    /// in flight (reservations) and bound pods not yet admitted, rebuilt
    /// from the ledger (devices only, without engine settings).
    pub fn pending_on(&self, node: &str) -> Vec<Pending> {
        let (Some(sig), Some(entry)) = (self.sigs.get(node), self.nodes.get(node)) else {
            return Vec::new();
        };
        let mut pending: Vec<Pending> = sig
            .holdings
            .keys()
            .filter_map(|k| {
                let (alloc, expires) = self.ledger.holding(k)?;
                let awaiting = expires.is_some()
                    || (self.bound.contains_key(k) && !self.admitted.contains(&k.uid));
                awaiting.then(|| Pending {
                    who: k.to_string(),
                    assignment: assignment_of(alloc, &entry.inventory),
                })
            })
            .collect();
        pending.sort_by(|a, b| a.who.cmp(&b.who));
        pending
    }

    /// kube-scheduler's "assume": the moment a bind arrives, the pod's GPUs
    /// on `node` count as taken here (held like a reservation, until
    /// `expires_at`), so that filters of the next pods already see them.
    /// The GPUs are chosen as bind chooses them; `None` when the pod is
    /// bound already or does not fit there by this replica's view.
    pub fn assume(
        &mut self,
        key: &PodKey,
        needs: &PodNeeds,
        node: &str,
        expires_at: u64,
    ) -> Option<Allocation> {
        if self.bound.contains_key(key) {
            return None;
        }
        self.release(key);
        let (id, unit) = self.sigs.get(node).map(|s| (s.id, s.unit))?;
        let inventory = self.nodes.get(node)?.inventory.clone();
        let demand = needs.demand(unit);
        let prep = self.ledger.prepare(&demand);
        let pending = self.pending_on(node);
        let alloc = choose_clear(
            &self.ledger,
            id,
            &prep,
            &self.scorer,
            &inventory,
            &pending,
            None,
            &devices_only,
            &mut tie_breaker(key),
        )
        .ok()?;
        self.hold(key.clone(), alloc.clone(), Some(expires_at))
            .ok()?;
        Some(alloc)
    }

    /// Gives back what [`ClusterState::assume`] (or a reservation) held for
    /// a pod whose bind failed; a bound pod keeps its holding.
    pub fn unassume(&mut self, key: &PodKey) {
        if !self.bound.contains_key(key) {
            self.release(key);
        }
    }

    /// The pending pod on `node` that keeps this pod off it for now (see
    /// [`crate::alike`]), if any.
    fn awaiting_on(&self, node: &str, needs: &PodNeeds) -> Option<String> {
        let pending = self.pending_on(node);
        if pending.is_empty() {
            return None;
        }
        let sig = self.sigs.get(node)?;
        let inventory = &self.nodes.get(node)?.inventory;
        let demand = needs.demand(sig.unit);
        let prep = self.ledger.prepare(&demand);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        match choose_clear(
            &self.ledger,
            sig.id,
            &prep,
            &self.scorer,
            inventory,
            &pending,
            None,
            &devices_only,
            &mut rng,
        ) {
            Err(NotClear::Awaiting(other)) => Some(other),
            Ok(_) | Err(NotClear::Unfit(_)) => None,
        }
    }

    /// Whether a reservation for this pod UID holds nothing: the pod is
    /// bound (its assignment holds instead), or deleted or finished.
    pub fn is_settled(&self, uid: &str) -> bool {
        self.bound_uids.contains_key(uid) || self.is_gone(uid)
    }

    /// Whether the pod was seen deleted or finished (or bound without an
    /// assignment): it will never be admitted with GPUs. Unlike a bound
    /// pod, it needs no check against the node's pod list.
    pub fn is_gone(&self, uid: &str) -> bool {
        self.settled.contains_key(uid)
    }

    /// Replaces every pod holding (after a re-list); pending reservations stay.
    pub fn replace_pods(&mut self, pods: Vec<(PodKey, PodAssignment)>) -> Vec<Problem> {
        let keep: std::collections::HashSet<&PodKey> = pods.iter().map(|(k, _)| k).collect();
        let gone: Vec<PodKey> = self
            .bound
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        for k in gone {
            self.remove_pod(&k);
        }
        pods.into_iter()
            .flat_map(|(k, a)| self.apply_pod(k, Some(a)))
            .collect()
    }

    /// Holds `alloc` for a pod this replica just bound, until the pod watch
    /// shows it bound or `expires_at` passes.
    pub fn reserve(&mut self, key: PodKey, alloc: Allocation, expires_at: u64) {
        if self.bound.contains_key(&key) {
            return;
        }
        self.release(&key);
        // A refusal means the ledger already holds what the API showed the
        // bind; the watch will bring the truth.
        let _ = self.hold(key, alloc, Some(expires_at));
    }

    /// Releases reservations that lapsed by `now`.
    pub fn expire(&mut self, now: u64) -> usize {
        self.now = self.now.max(now);
        // Long after any reservation of theirs has expired.
        self.settled
            .retain(|_, at| now.saturating_sub(*at) < SETTLED_RETENTION_SECS);
        let due = self.ledger.expire(now);
        for (key, alloc) in &due {
            self.forget_holding(&alloc.node, key);
            for n in self.nodes.values_mut() {
                n.annotated.retain(|k| k != key);
            }
        }
        due.len()
    }

    /// A pending pod asks for `demand` (`None`: nothing gpupack places, or
    /// not sizeable yet).
    pub fn note_pending_demand(&mut self, uid: &str, demand: Option<PodDemand>) {
        self.mix.set_pending(uid, demand);
    }

    /// A bound pod's spec asks for `demand`.
    pub fn note_bound_demand(&mut self, uid: &str, demand: Option<PodDemand>) {
        self.mix.set_bound(uid, demand);
    }

    /// Every pending pod's demand, after the pending watch re-lists.
    pub fn replace_pending_demands(&mut self, pods: Vec<(String, PodDemand)>) {
        self.mix.replace_pending(pods);
    }

    /// Every bound pod's demand, after the bound watch re-lists.
    pub fn replace_bound_demands(&mut self, pods: Vec<(String, PodDemand)>) {
        self.mix.replace_bound(pods);
    }

    /// Re-derives the typical pod mix from every pod that asks for GPUs now,
    /// bound or pending (the fragmentation measure's view of the workload);
    /// the built-in mix while there are none. Bound pods count by their
    /// spec, or by what they hold where the spec could not be sized.
    pub fn refresh_typical(&mut self) {
        self.typical_stale = false;
        self.mix.take_changed();
        let mut demands: Vec<PodDemand> = Vec::new();
        let mut held: HashSet<&str> = HashSet::new();
        for (key, a) in self.ledger.pods() {
            held.insert(key.uid.as_str());
            demands.push(match self.mix.get(&key.uid) {
                Some(d) => d.clone(),
                None => demand_of(a),
            });
        }
        for (uid, d) in self.mix.pending() {
            if !held.contains(uid) {
                demands.push(d.clone());
            }
        }
        let typical = if demands.is_empty() {
            default_typical()
        } else {
            TypicalPods::from_workload(&demands, placement::TYPICAL_COVERAGE)
        };
        self.typical_pods = demands.len();
        if typical != self.typical {
            self.typical = typical;
            self.scorer_key = None;
            self.rebuild_scorer();
        }
    }

    /// [`ClusterState::refresh_typical`] if any pod came, went or changed
    /// since it last ran.
    pub fn refresh_typical_if_changed(&mut self) -> bool {
        let changed = self.mix.take_changed() || self.typical_stale;
        if changed {
            self.refresh_typical();
        }
        changed
    }

    /// How many pods the typical mix was derived from (0: the built-in mix).
    pub fn typical_pod_count(&self) -> usize {
        self.typical_pods
    }

    /// Rebuilds the scorer when what it depends on changed (the mix, or the
    /// ledger's GPU models and sizes), and with it forgets every verdict.
    fn rebuild_scorer(&mut self) {
        let key = self.ledger.scorer_key();
        if self.scorer_key == Some(key) {
            return;
        }
        self.scorer = self.ledger.scorer(self.policy, &self.typical);
        self.scorer_key = Some(key);
        let verdicts = self.verdicts.get_mut().unwrap_or_else(|e| e.into_inner());
        *verdicts = Verdicts::default();
    }

    fn verdicts(&self) -> std::sync::MutexGuard<'_, Verdicts> {
        self.verdicts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// kube-scheduler's filter: every candidate node the pod fits on now,
    /// and for each other node why not.
    pub fn filter(&self, needs: &PodNeeds, candidates: &[&str]) -> FilterOutcome {
        let mut out = FilterOutcome::default();
        if needs.is_empty() {
            out.feasible = candidates.iter().map(|s| s.to_string()).collect();
            return out;
        }
        let mut demands: Vec<(u64, PodDemand, u64)> = Vec::new();
        let mut verdicts = self.verdicts();
        verdicts.make_room();
        for name in candidates {
            let fit = match self.sigs.get(*name) {
                Some(sig) => {
                    let (demand, key) = demand_for(&mut demands, needs, sig.unit);
                    verdicts
                        .fits
                        .entry((sig.value, key))
                        .or_insert_with(|| {
                            let prep = self.ledger.prepare(demand);
                            self.ledger
                                .check(sig.id, &prep)
                                .map_err(|u| (u.to_string(), u.permanent))
                        })
                        .clone()
                }
                None => Err(self.missing(name)),
            };
            match fit {
                Ok(_) => out.feasible.push(name.to_string()),
                Err((reason, true)) => {
                    out.unresolvable.insert(name.to_string(), reason);
                }
                Err((reason, false)) => {
                    out.failed.insert(name.to_string(), reason);
                }
            }
        }
        // Alike pods of one wave go to nodes where they can bind at once;
        // only where every fitting node is still admitting an alike pod do
        // they stay, and bind waits for kubelet there.
        let (clear, held_up): (Vec<_>, Vec<_>) = out
            .feasible
            .drain(..)
            .map(|n| {
                let other = self.awaiting_on(&n, needs);
                (n, other)
            })
            .partition(|(_, other)| other.is_none());
        let clear: Vec<String> = clear.into_iter().map(|(n, _)| n).collect();
        if clear.is_empty() {
            out.feasible = held_up.into_iter().map(|(n, _)| n).collect();
        } else {
            out.feasible = clear;
            for (n, other) in held_up {
                out.failed.insert(
                    n,
                    format!(
                        "node is still admitting pod {}, whose containers ask for the same amount on other GPUs",
                        other.unwrap_or_default()
                    ),
                );
            }
        }
        out
    }

    /// kube-scheduler's prioritize: the policy's score for each candidate,
    /// scaled to 0..=10 over the nodes that fit; nodes that do not fit get 0.
    pub fn prioritize(&self, needs: &PodNeeds, candidates: &[&str]) -> Vec<HostPriority> {
        if needs.is_empty() {
            return candidates
                .iter()
                .map(|h| HostPriority {
                    host: h.to_string(),
                    score: 0,
                })
                .collect();
        }
        let mut demands: Vec<(u64, PodDemand, u64)> = Vec::new();
        let mut verdicts = self.verdicts();
        verdicts.make_room();
        let mut raw: Vec<Option<f64>> = Vec::with_capacity(candidates.len());
        for name in candidates {
            let Some(sig) = self.sigs.get(*name) else {
                raw.push(None);
                continue;
            };
            let (demand, key) = demand_for(&mut demands, needs, sig.unit);
            let score = || {
                let prep = self.ledger.prepare(demand);
                self.ledger.score(sig.id, &prep, &self.scorer).ok()
            };
            // First-fit scores by position, so equal states differ.
            let s = if self.policy == Policy::FirstFit {
                score()
            } else {
                *verdicts
                    .scores
                    .entry((sig.value, key))
                    .or_insert_with(score)
            };
            // A node still admitting an alike pod ranks last (see filter).
            let s = s.filter(|_| self.awaiting_on(name, needs).is_none());
            raw.push(s);
        }
        let fits: Vec<f64> = raw.iter().flatten().copied().collect();
        let mut scaled = scale_scores(&fits, MAX_EXTENDER_PRIORITY).into_iter();
        candidates
            .iter()
            .zip(raw)
            .map(|(h, s)| HostPriority {
                host: h.to_string(),
                score: match s {
                    Some(_) => scaled.next().unwrap_or(0),
                    None => 0,
                },
            })
            .collect()
    }

    /// Why a node without a (valid) inventory takes nothing.
    fn missing(&self, name: &str) -> (String, bool) {
        match self.invalid.get(name) {
            Some(reason) => (format!("GPU inventory is invalid: {reason}"), true),
            None => (
                "no GPU inventory (is the gpupack device plugin running on this node?)".into(),
                true,
            ),
        }
    }

    /// Records a bound pod's priority (`spec.priority`; none is 0), which
    /// ranks it as a preemption victim.
    pub fn note_priority(&mut self, key: &PodKey, priority: Option<i32>) {
        self.priorities.insert(key.clone(), priority.unwrap_or(0));
    }

    /// kube-scheduler's victims on `node` for a pod of `priority`, trimmed
    /// to the cheapest set that frees GPUs the pod fits on (see
    /// [`Ledger::select_victims`]), or why evicting them all is not enough.
    ///
    /// The extender judges GPUs only: victims holding no GPU here were
    /// chosen by kube-scheduler for what it judges (CPU, memory, ports) and
    /// are kept. A victim whose priority is unknown is ranked just below the
    /// preemptor, as kube-scheduler offers only lower-priority pods, so
    /// victims known to rank lower are preferred.
    pub fn trim_victims(
        &self,
        node: &str,
        needs: &PodNeeds,
        priority: i32,
        victims: &[&str],
    ) -> Result<Vec<String>, String> {
        let Some(entry) = self.nodes.get(node) else {
            return Err(self.missing(node).0);
        };
        if needs.is_empty() {
            return Ok(victims.iter().map(|v| v.to_string()).collect());
        }
        let Some(id) = self.ledger.node_id(node) else {
            return Err(self.missing(node).0);
        };
        // Bound pods, and pods whose bind is in flight (kube-scheduler has
        // assumed them there), by UID.
        let here: HashMap<&str, &PodKey> = self
            .ledger
            .pods()
            .filter(|(_, a)| a.node == node)
            .map(|(k, _)| (k.uid.as_str(), k))
            .collect();
        let mut kept = Vec::new();
        let mut candidates = Vec::new();
        for &uid in victims {
            match here.get(uid) {
                Some(&key) => candidates.push(Candidate {
                    pod: key.clone(),
                    priority: self
                        .priorities
                        .get(key)
                        .copied()
                        .unwrap_or(priority.saturating_sub(1)),
                    budgets: Vec::new(),
                }),
                None => kept.push(uid.to_string()),
            }
        }
        let demand = needs.demand(entry.inventory.memory_unit_bytes);
        let prep = self.ledger.prepare(&demand);
        let query = PreemptionQuery {
            priority,
            candidates: &candidates,
            budgets: &[],
        };
        let chosen = self
            .ledger
            .select_victims(id, &prep, &query)
            .map_err(|e| e.to_string())?;
        kept.extend(chosen.victims.into_iter().map(|k| k.uid));
        Ok(kept)
    }

    /// The cheapest preemption on `node` for a pod of `priority` (see
    /// [`Ledger::select_victims`]): every pod bound there below that
    /// priority is a candidate, `budgets_of` naming the PodDisruptionBudgets
    /// (positions in `budgets`) that select it.
    pub fn plan_preemption(
        &self,
        node: &str,
        needs: &PodNeeds,
        priority: i32,
        budgets: &[DisruptionBudget],
        budgets_of: &dyn Fn(&PodKey) -> Vec<usize>,
    ) -> Result<Preemption, String> {
        let Some(entry) = self.nodes.get(node) else {
            return Err(self.missing(node).0);
        };
        let Some(id) = self.ledger.node_id(node) else {
            return Err(self.missing(node).0);
        };
        let mut candidates: Vec<Candidate> = self
            .bound
            .iter()
            .filter(|(_, a)| a.node == node)
            .map(|(k, _)| Candidate {
                pod: k.clone(),
                priority: self.priorities.get(k).copied().unwrap_or(0),
                budgets: budgets_of(k),
            })
            .collect();
        candidates.sort_by(|a, b| a.pod.cmp(&b.pod));
        let demand = needs.demand(entry.inventory.memory_unit_bytes);
        let prep = self.ledger.prepare(&demand);
        let query = PreemptionQuery {
            priority,
            candidates: &candidates,
            budgets,
        };
        self.ledger
            .select_victims(id, &prep, &query)
            .map_err(|e| e.to_string())
    }

    /// The pod's memory unit on a node (for bind).
    pub fn memory_unit(&self, node: &str) -> Option<u64> {
        self.nodes.get(node).map(|n| n.inventory.memory_unit_bytes)
    }

    /// GPU memory per node: what is held and what there is.
    pub fn memory_by_node(&self) -> Vec<NodeMemory> {
        let mut allocated: HashMap<&str, u64> = HashMap::new();
        for (_, a) in self.ledger.pods() {
            *allocated.entry(a.node.as_str()).or_default() += a.gpu_memory_bytes();
        }
        let mut out: Vec<NodeMemory> = self
            .nodes
            .iter()
            .map(|(name, n)| NodeMemory {
                node: name.clone(),
                total_bytes: n
                    .inventory
                    .gpus
                    .iter()
                    .filter(|g| g.health.is_healthy())
                    .map(|g| g.memory_bytes)
                    .sum(),
                allocated_bytes: allocated.get(name.as_str()).copied().unwrap_or(0),
            })
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// Fragmentation of the whole cluster as a fraction (0–1) of its idle
    /// GPU capacity, under the typical pod mix.
    pub fn fragmentation(&self) -> f64 {
        let (frag, idle) = self.ledger.fragmentation(&self.scorer);
        if idle == 0 { 0.0 } else { frag / idle as f64 }
    }
}

/// The pod's demand on nodes of memory unit `unit`, and its hash (the
/// verdicts' key), made once per unit.
fn demand_for<'d>(
    demands: &'d mut Vec<(u64, PodDemand, u64)>,
    needs: &PodNeeds,
    unit: u64,
) -> (&'d PodDemand, u64) {
    let pos = match demands.iter().position(|(u, _, _)| *u == unit) {
        Some(p) => p,
        None => {
            let demand = needs.demand(unit);
            let key = hash_of(&demand);
            demands.push((unit, demand, key));
            demands.len() - 1
        }
    };
    (&demands[pos].1, demands[pos].2)
}

/// The demand that would take exactly what an allocation holds (for the
/// typical pod mix).
fn demand_of(a: &Allocation) -> PodDemand {
    let containers = a
        .containers
        .iter()
        .filter_map(|c| {
            let first = c.gpus.first()?;
            let gpu = match &first.mig_uuid {
                Some(_) => return None,
                None if first.slices > 1 => GpuNeed::Gpus {
                    count: c.gpus.len() as u32,
                    memory: MemoryNeed::Whole,
                    max_link: None,
                },
                None => GpuNeed::Gpus {
                    count: c.gpus.len() as u32,
                    memory: MemoryNeed::Bytes(first.memory_bytes),
                    max_link: None,
                },
            };
            Some(placement::ContainerDemand {
                name: c.name.clone(),
                gpu,
            })
        })
        .collect();
    PodDemand {
        containers,
        ..PodDemand::default()
    }
}

/// The mix assumed before anything is placed: LLM servers on one GPU
/// sharing it (small models), one whole GPU, and tensor-parallel sets of
/// two, four and eight whole GPUs.
/// Ties among equally good GPU sets are broken by the pod, so that every
/// replica (and every retry) makes the same choice.
pub fn tie_breaker(key: &PodKey) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(hash_of(&(&key.namespace, &key.name)))
}

pub fn default_typical() -> TypicalPods {
    TypicalPods::new(vec![
        (PodDemand::gpus(1, MemoryNeed::Bytes(20 << 30)), 3.0),
        (PodDemand::gpus(1, MemoryNeed::Bytes(40 << 30)), 2.0),
        (PodDemand::gpus(1, MemoryNeed::Whole), 2.0),
        (PodDemand::gpus(2, MemoryNeed::Whole), 1.0),
        (PodDemand::gpus(4, MemoryNeed::Whole), 1.0),
        (PodDemand::gpus(8, MemoryNeed::Whole), 0.5),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{inventory, pod};
    use crate::translate::assignment_of;
    use proptest::prelude::*;

    fn needs(gpus: u32, units: Option<u64>) -> PodNeeds {
        PodNeeds::from_pod(&pod("ns", "p", "u", gpus, units)).unwrap()
    }

    fn state(nodes: &[(&str, u32)]) -> ClusterState {
        let mut s = ClusterState::new(Policy::Gpupack);
        for (n, g) in nodes {
            assert!(s.apply_inventory(&inventory(n, *g), 0).is_empty());
        }
        s
    }

    /// Binds a pod the way the extender does and records it as the watch would.
    fn bind(
        s: &mut ClusterState,
        node: &str,
        uid: &str,
        gpus: u32,
        units: Option<u64>,
    ) -> PodAssignment {
        let inv = s.inventory(node).unwrap();
        let n = needs(gpus, units);
        let demand = n.demand(1 << 30);
        let id = s.ledger.node_id(node).unwrap();
        let alloc = s
            .ledger
            .choose(id, &s.ledger.prepare(&demand), &s.scorer, &mut rand::rng())
            .unwrap();
        let a = assignment_of(&alloc, &inv);
        assert!(
            s.apply_pod(PodKey::new("ns", uid, uid), Some(a.clone()))
                .is_empty()
        );
        a
    }

    #[test]
    fn the_typical_mix_counts_pending_and_bound_pods_once_each() {
        let mut s = state(&[("a", 8)]);
        assert!(!s.refresh_typical_if_changed());
        assert_eq!(s.typical_pod_count(), 0);
        assert_eq!(s.typical(), &default_typical());
        let twenty = needs(1, Some(20)).demand(1 << 30);
        let whole = needs(2, None).demand(1 << 30);
        s.replace_pending_demands(vec![("x".into(), twenty.clone())]);
        s.note_pending_demand("y", Some(whole.clone()));
        s.note_pending_demand("z", Some(whole.clone()));
        assert!(s.refresh_typical_if_changed());
        assert_eq!(s.typical_pod_count(), 3);
        let mix = TypicalPods::from_workload(
            &[twenty.clone(), whole.clone(), whole.clone()],
            placement::TYPICAL_COVERAGE,
        );
        assert_eq!(s.typical(), &mix);
        // x is bound: it counts once, by its spec, and the mix stays.
        s.note_bound_demand("x", Some(twenty.clone()));
        bind(&mut s, "a", "x", 1, Some(20));
        assert!(s.refresh_typical_if_changed());
        assert_eq!(s.typical_pod_count(), 3);
        assert_eq!(s.typical(), &mix);
        // A bound pod whose spec could not be sized counts by what it holds.
        bind(&mut s, "a", "w", 1, Some(20));
        assert!(s.refresh_typical_if_changed());
        assert_eq!(s.typical_pod_count(), 4);
        // Deleted pods leave the mix; with none left it is the built-in one.
        for uid in ["x", "w"] {
            s.remove_pod(&PodKey::new("ns", uid, uid));
        }
        s.note_pending_demand("y", None);
        s.note_pending_demand("z", None);
        assert!(s.refresh_typical_if_changed());
        assert_eq!(s.typical_pod_count(), 0);
        assert_eq!(s.typical(), &default_typical());
    }

    #[test]
    fn filter_returns_every_feasible_node_and_reasons_for_the_rest() {
        let mut s = state(&[("a", 8), ("b", 8), ("c", 2)]);
        bind(&mut s, "b", "x", 8, None);
        let out = s.filter(&needs(4, Some(160)), &["a", "b", "c", "d"]);
        assert_eq!(out.feasible, ["a"]);
        let b = &out.failed["b"];
        assert!(
            b.contains("needs 4 GPUs with 40.0 GiB free") && b.contains("largest free: 0"),
            "{b}"
        );
        assert!(
            out.unresolvable["c"].contains("largest free: 2"),
            "{:?}",
            out.unresolvable
        );
        assert!(out.unresolvable["d"].contains("no GPU inventory"));
    }

    #[test]
    fn pods_without_gpu_requests_pass_everywhere() {
        let s = state(&[]);
        let out = s.filter(&PodNeeds::default(), &["x", "y"]);
        assert_eq!(out.feasible, ["x", "y"]);
    }

    /// A reservation on devices the watch shows bound to another pod (a
    /// bind whose outcome this replica never learnt, another replica's
    /// bind) gives way: the bound pod is held, the reservation released.
    #[test]
    fn a_bound_assignment_wins_over_a_stale_reservation_on_its_gpu() {
        let mut s = state(&[("a", 1)]);
        let inv = s.inventory("a").unwrap();
        let id = s.ledger.node_id("a").unwrap();
        let demand = needs(1, None).demand(1 << 30);
        let alloc = s
            .ledger
            .choose(id, &s.ledger.prepare(&demand), &s.scorer, &mut rand::rng())
            .unwrap();
        let stale = PodKey::new("ns", "stale", "stale");
        s.reserve(stale.clone(), alloc.clone(), 1_000);
        assert!(s.ledger.holding(&stale).is_some());
        let bound = PodKey::new("ns", "bound", "bound");
        let problems = s.apply_pod(bound.clone(), Some(assignment_of(&alloc, &inv)));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(s.ledger.holding(&stale).is_none());
        assert!(s.ledger.holding(&bound).is_some());
        assert!(s.is_bound_on("bound", "a"));
    }

    #[test]
    fn deletion_and_completion_release() {
        let mut s = state(&[("a", 1)]);
        bind(&mut s, "a", "x", 1, None);
        assert!(s.filter(&needs(1, None), &["a"]).feasible.is_empty());
        s.remove_pod(&PodKey::new("ns", "x", "x"));
        assert_eq!(s.filter(&needs(1, None), &["a"]).feasible, ["a"]);
        bind(&mut s, "a", "y", 1, None);
        s.apply_pod(PodKey::new("ns", "y", "y"), None);
        assert_eq!(s.filter(&needs(1, None), &["a"]).feasible, ["a"]);
    }

    #[test]
    fn inventory_loss_takes_nothing_and_its_return_restores_holdings() {
        let mut s = state(&[("a", 2)]);
        bind(&mut s, "a", "x", 1, None);
        s.remove_inventory("a");
        let out = s.filter(&needs(1, None), &["a"]);
        assert!(out.unresolvable.contains_key("a"));
        s.apply_inventory(&inventory("a", 2), 0);
        assert_eq!(s.filter(&needs(1, None), &["a"]).feasible, ["a"]);
        assert!(
            s.filter(&needs(2, None), &["a"]).feasible.is_empty(),
            "x still holds a GPU"
        );
    }

    #[test]
    fn a_pod_seen_before_its_node_is_held_when_the_node_appears() {
        let mut s = state(&[("a", 1)]);
        let a = bind(&mut s, "a", "x", 1, None);
        let mut fresh = ClusterState::new(Policy::Gpupack);
        fresh.apply_pod(PodKey::new("ns", "x", "x"), Some(a));
        fresh.apply_inventory(&inventory("a", 1), 0);
        assert!(fresh.filter(&needs(1, None), &["a"]).feasible.is_empty());
    }

    #[test]
    fn unhealthy_gpus_take_nothing() {
        let mut s = ClusterState::new(Policy::Gpupack);
        let mut inv = inventory("a", 2);
        inv.spec.gpus[0].health = proto::inventory::Health::Unhealthy;
        s.apply_inventory(&inv, 0);
        assert_eq!(s.filter(&needs(1, None), &["a"]).feasible, ["a"]);
        let out = s.filter(&needs(2, None), &["a"]);
        assert!(out.unresolvable["a"].contains("largest free: 1"), "{out:?}");
    }

    #[test]
    fn invalid_inventory_is_named_in_the_reason() {
        let mut s = ClusterState::new(Policy::Gpupack);
        let mut inv = inventory("a", 2);
        inv.spec.gpus[1].uuid = inv.spec.gpus[0].uuid.clone();
        let problems = s.apply_inventory(&inv, 0);
        assert!(matches!(&problems[..], [Problem::BadInventory { .. }]));
        let out = s.filter(&needs(1, None), &["a"]);
        assert!(out.unresolvable["a"].contains("duplicate UUID"), "{out:?}");
    }

    #[test]
    fn a_model_on_mig_is_checked_against_the_instances_memory() {
        let mut s = ClusterState::new(Policy::Gpupack);
        let mut inv = inventory("mig", 1);
        inv.spec.gpus[0].mig_enabled = true;
        // 1g.10gb on an 80 GB A100 has 9.5 GiB, below the name's figure.
        inv.spec.gpus[0].mig_instances = vec![proto::inventory::MigInstance {
            uuid: "MIG-0000-1111".into(),
            profile: "1g.10gb".into(),
            memory_bytes: 9728 << 20,
            gpu_instance_id: 1,
            compute_instance_id: 0,
            health: proto::inventory::Health::Healthy,
        }];
        assert!(s.apply_inventory(&inv, 0).is_empty());
        let small = PodNeeds::from_pod(&crate::demand::tests::mig_server(
            "Qwen/Qwen2.5-0.5B",
            serde_json::json!({}),
        ))
        .unwrap();
        assert_eq!(s.filter(&small, &["mig"]).feasible, ["mig"]);
        let large = PodNeeds::from_pod(&crate::demand::tests::mig_server(
            "meta-llama/Llama-3.1-8B-Instruct",
            serde_json::json!({}),
        ))
        .unwrap();
        let out = s.filter(&large, &["mig"]);
        let why = &out.unresolvable["mig"];
        assert!(
            why.contains("on a MIG 1g.10gb instance; those here have 9.5 GiB"),
            "{out:?}"
        );
    }

    #[test]
    fn annotated_reservations_hold_until_they_expire() {
        let mut s = state(&[("a", 1)]);
        // An assignment of the node's GPU, from a pod since deleted.
        let a = bind(&mut s, "a", "gone", 1, None);
        s.remove_pod(&PodKey::new("ns", "gone", "gone"));
        let entry = |name: &str| crate::reservations::Reservation {
            namespace: "ns".into(),
            name: name.into(),
            expires_at: 100,
            holder: "other".into(),
            assignment: a.clone(),
            victims: vec![],
        };
        let annotated = |r: &Reservations| {
            let mut inv = inventory("a", 1);
            inv.metadata.annotations =
                Some([(crate::reservations::ANNOTATION.to_string(), r.to_json())].into());
            inv
        };
        // The deleted pod's entry, still in the annotation, holds nothing.
        let mut r = Reservations::empty();
        r.pods.insert("gone".into(), entry("gone"));
        s.apply_inventory(&annotated(&r), 40);
        assert_eq!(s.filter(&needs(1, None), &["a"]).feasible, ["a"]);
        // Another replica's bind in flight holds until it expires.
        let mut r = Reservations::empty();
        r.pods.insert("x".into(), entry("x"));
        let inv = annotated(&r);
        s.apply_inventory(&inv, 50);
        assert!(s.filter(&needs(1, None), &["a"]).feasible.is_empty());
        s.expire(100);
        assert_eq!(s.filter(&needs(1, None), &["a"]).feasible, ["a"]);
        // Expired entries in the annotation are not taken again.
        s.apply_inventory(&inv, 150);
        assert_eq!(s.filter(&needs(1, None), &["a"]).feasible, ["a"]);
    }

    #[test]
    fn alike_pods_awaiting_kubelet_steer_the_next_replica_elsewhere() {
        let mut s = state(&[("a", 2), ("b", 2)]);
        // Four 20 GiB replicas fill GPU 0 of a, interchangeably; kubelet
        // has admitted none of them yet.
        for i in 0..4 {
            let key = PodKey::new("ns", format!("r{i}"), format!("r{i}"));
            let alloc = s.assume(&key, &needs(1, Some(20)), "a", 100).unwrap();
            assert_eq!(alloc.containers[0].gpus[0].index, 0, "shares GPU 0");
        }
        // The fifth would need GPU 1 of a, which the device plugin could
        // mistake for theirs: it goes to b while b is clear...
        let out = s.filter(&needs(1, Some(20)), &["a", "b"]);
        assert_eq!(out.feasible, ["b"]);
        assert!(
            out.failed["a"].contains("still admitting pod ns/r"),
            "{out:?}"
        );
        let scores = s.prioritize(&needs(1, Some(20)), &["a", "b"]);
        assert_eq!((scores[0].score, scores[1].score), (0, 10));
        // ... and stays on a when nowhere is clear (bind waits there).
        assert_eq!(s.filter(&needs(1, Some(20)), &["a"]).feasible, ["a"]);
        // Once bound and admitted, the replicas constrain nothing.
        for i in 0..4 {
            let key = PodKey::new("ns", format!("r{i}"), format!("r{i}"));
            let (alloc, _) = s.ledger.holding(&key).unwrap();
            let a = assignment_of(&alloc.clone(), &s.inventory("a").unwrap());
            s.apply_pod(key.clone(), Some(a));
            s.note_admitted(&key.uid, true);
        }
        assert_eq!(
            s.filter(&needs(1, Some(20)), &["a", "b"]).feasible,
            ["a", "b"]
        );
        // A failed bind gives its assumed GPUs back.
        let late = PodKey::new("ns", "late", "late");
        s.assume(&late, &needs(2, None), "b", 100).unwrap();
        assert!(s.filter(&needs(1, None), &["b"]).feasible.is_empty());
        s.unassume(&late);
        assert_eq!(s.filter(&needs(1, None), &["b"]).feasible, ["b"]);
    }

    #[test]
    fn prioritize_scales_fitting_nodes_and_zeroes_the_rest() {
        let mut s = state(&[("a", 8), ("b", 8), ("c", 1)]);
        bind(&mut s, "a", "x", 1, Some(40));
        let scores = s.prioritize(&needs(1, Some(40)), &["a", "b", "c"]);
        let by: BTreeMap<_, _> = scores.iter().map(|h| (h.host.as_str(), h.score)).collect();
        assert!(by.values().all(|s| (0..=10).contains(s)));
        assert_eq!(
            by["a"], 10,
            "packing onto the half-used GPU avoids fragmenting b: {by:?}"
        );
        assert!(by["b"] < by["a"]);
    }

    #[test]
    fn preemption_trims_victims_to_those_that_free_the_gpus_needed() {
        let mut s = state(&[("a", 2)]);
        // x and y share GPU 0 or 1; z holds the other GPU's memory.
        bind(&mut s, "a", "x", 1, Some(30));
        bind(&mut s, "a", "y", 1, Some(30));
        bind(&mut s, "a", "z", 1, Some(70));
        for (uid, prio) in [("x", 5), ("y", 5), ("z", 1)] {
            s.note_priority(&PodKey::new("ns", uid, uid), Some(prio));
        }
        let n = needs(1, Some(60));
        let kept = s
            .trim_victims("a", &n, 10, &["x", "y", "z", "no-gpu"])
            .unwrap();
        assert_eq!(
            kept,
            vec!["no-gpu".to_string(), "z".to_string()],
            "the lowest-priority holder goes; a victim holding no GPU is kube-scheduler's call"
        );
        let why = s.trim_victims("a", &n, 10, &[]).unwrap_err();
        assert!(why.contains("0 of them"), "{why}");
        // Equal priority is never evicted, whatever kube-scheduler offers.
        let why = s.trim_victims("a", &n, 1, &["z"]).unwrap_err();
        assert!(why.contains("0 of them"), "{why}");
        assert!(s.trim_victims("b", &n, 10, &["z"]).is_err(), "unknown node");
    }

    impl ClusterState {
        fn forget_verdicts(&self) {
            *self.verdicts() = Verdicts::default();
        }
    }

    proptest! {
        /// Filter and prioritize answered from the verdicts kept across
        /// requests equal the answers computed afresh, after every bind,
        /// release, inventory change and change of the typical mix.
        #[test]
        fn kept_verdicts_are_never_stale(ops in proptest::collection::vec((0u8..5, 0usize..3, 1u32..4, proptest::option::of(1u64..60)), 1..40)) {
            let names = ["a", "b", "c"];
            let mut s = state(&[("a", 4), ("b", 4), ("c", 2)]);
            let mut live: Vec<String> = Vec::new();
            let probes = [needs(1, Some(30)), needs(2, None), needs(1, None), needs(3, Some(90))];
            for (i, (op, node, gpus, units)) in ops.into_iter().enumerate() {
                let uid = format!("p{i}");
                match op {
                    0 | 1 => {
                        let n = needs(gpus, units.map(|u| u * gpus as u64));
                        if s.filter(&n, &[names[node]]).feasible.is_empty() { continue; }
                        bind(&mut s, names[node], &uid, gpus, units.map(|u| u * gpus as u64));
                        live.push(uid);
                    }
                    2 if !live.is_empty() => {
                        let uid = live.remove(node % live.len());
                        s.remove_pod(&PodKey::new("ns", &uid, &uid));
                    }
                    3 => {
                        // Pods waiting change the typical mix: the scorer,
                        // and with it every verdict, is new.
                        s.note_pending_demand(&uid, Some(needs(gpus, units.map(|u| u * gpus as u64)).demand(1 << 30)));
                        let before = s.typical().clone();
                        s.refresh_typical_if_changed();
                        if s.typical() != &before {
                            prop_assert!(s.verdicts().scores.is_empty() && s.verdicts().fits.is_empty());
                        }
                    }
                    _ => {
                        s.remove_inventory(names[node]);
                        s.apply_inventory(&inventory(names[node], if node == 2 { 2 } else { 4 }), 0);
                    }
                }
                for probe in &probes {
                    let (filtered, scored) = (s.filter(probe, &names), s.prioritize(probe, &names));
                    s.forget_verdicts();
                    prop_assert_eq!(&filtered, &s.filter(probe, &names));
                    prop_assert_eq!(&scored, &s.prioritize(probe, &names));
                }
            }
        }

        /// Whatever is bound and released, what the ledger holds is exactly
        /// the sum of the live assignments, and releasing everything gives
        /// back an empty cluster.
        #[test]
        fn holdings_match_assignments(ops in proptest::collection::vec((0u8..4, 0usize..3, 1u32..4, proptest::option::of(1u64..60)), 1..40)) {
            let names = ["a", "b", "c"];
            let mut s = state(&[("a", 4), ("b", 4), ("c", 2)]);
            let empty = s.memory_by_node();
            let mut live: Vec<(String, PodAssignment)> = Vec::new();
            for (i, (op, node, gpus, units)) in ops.into_iter().enumerate() {
                let uid = format!("p{i}");
                match op {
                    0 | 1 => {
                        let n = needs(gpus, units.map(|u| u * gpus as u64));
                        if s.filter(&n, &[names[node]]).feasible.is_empty() { continue; }
                        let a = bind(&mut s, names[node], &uid, gpus, units.map(|u| u * gpus as u64));
                        live.push((uid, a));
                    }
                    2 if !live.is_empty() => {
                        let (uid, _) = live.remove(node % live.len());
                        s.remove_pod(&PodKey::new("ns", &uid, &uid));
                    }
                    _ => {
                        s.remove_inventory(names[node]);
                        s.apply_inventory(&inventory(names[node], if node == 2 { 2 } else { 4 }), 0);
                    }
                }
                for m in s.memory_by_node() {
                    let expect: u64 = live.iter().filter(|(_, a)| a.node == m.node)
                        .flat_map(|(_, a)| &a.containers).flat_map(|c| &c.gpus).map(|g| g.memory_bytes).sum();
                    prop_assert_eq!(m.allocated_bytes, expect, "node {}", m.node);
                    prop_assert!(m.allocated_bytes <= m.total_bytes);
                }
            }
            // Answering all nodes at once (states shared through their
            // signatures) equals answering each alone, except that nodes
            // still admitting an alike pod give way to nodes that are not.
            for probe in [needs(1, Some(30)), needs(2, None), needs(1, None)] {
                let together = s.filter(&probe, &names);
                for n in names {
                    let alone = s.filter(&probe, &[n]);
                    let fits_alone = alone.feasible.len() == 1;
                    if together.feasible.contains(&n.to_string()) {
                        prop_assert!(fits_alone);
                    } else if fits_alone {
                        prop_assert!(together.failed[n].contains("still admitting"), "{:?}", together.failed.get(n));
                        prop_assert!(!together.feasible.is_empty());
                    } else {
                        prop_assert_eq!(together.failed.get(n), alone.failed.get(n));
                    }
                }
            }
            for (uid, _) in live {
                s.remove_pod(&PodKey::new("ns", &uid, &uid));
            }
            prop_assert_eq!(s.memory_by_node(), empty);
        }
    }
}

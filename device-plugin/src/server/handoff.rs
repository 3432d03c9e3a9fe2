//! The handoff: giving each container the GPUs the scheduler assigned,
//! although kubelet never says which pod it is admitting.
//!
//! # Design
//!
//! The scheduler extender writes a [`PodAssignment`] into the Binding, so a
//! pod is never bound to this node without it. A watch on pods with
//! `spec.nodeName=<this node>` keeps a local cache of them ([`PodRecord`]),
//! in the order they were bound (the order kubelet receives them through its
//! own watch of the same selector, and so the order it admits them in).
//!
//! From the cache, every (pod, container, resource) that is assigned and not
//! yet allocated is a *pending request*, with an expected device *shape*:
//! one slice on each assigned GPU (`gpupack.io/gpu`), the assigned bytes in
//! memory units on each assigned GPU (`gpupack.io/gpu-memory`), or the
//! assigned MIG instances (`gpupack.io/mig-*`). kubelet's calls carry only
//! the resource, a size and device IDs; because device IDs name their GPU,
//! those suffice to test a pending request:
//!
//! - a candidate must request exactly `size` of the resource, and its shape
//!   must be achievable from the available devices (GetPreferredAllocation)
//!   or equal the shape of the devices kubelet chose (Allocate);
//! - candidates are ranked: the container matched last, while it still has
//!   resources pending (kubelet does one container at a time, its resources
//!   in random order, one Allocate each); then that pod's other containers;
//!   then every other pod in binding order.
//!
//! GetPreferredAllocation answers with the best candidate's devices (memory
//! units: exactly the assigned bytes per GPU), so kubelet picks the assigned
//! GPUs. Allocate accepts only device IDs whose shape equals a pending
//! assignment's, and answers from that assignment; two candidates can both
//! match only if they have the same GPUs and the same sizes, which makes
//! them interchangeable. Devices that match no assignment are refused while
//! any assigned request of that resource and size is pending (the pod would
//! otherwise run on GPUs the scheduler booked for someone else); a pod
//! without an assignment (placed by another scheduler) is answered from the
//! devices kubelet chose. When nothing matches at all, the caller waits
//! briefly for the pod cache to catch up before deciding
//! ([`AllocateOutcome::Retry`]); GetPreferredAllocation waits likewise
//! while the cache holds no request of its size ([`Handoff::has_pending`]),
//! since kubelet's pod watch may be ahead of the plugin's.
//!
//! Afterwards, PodResources shows which devices kubelet recorded for which
//! container; [`Handoff::verify`] compares that with the assignments and
//! [`Handoff::observe`] learns allocations made before a plugin restart, so
//! running pods are never mistaken for pending ones. Everything here is
//! local state: no call made by kubelet ever waits on the API server.

use std::collections::{BTreeMap, HashMap};

use proto::assignment::{ContainerAssignment, EngineSizing, PodAssignment};
use proto::resources::{DeviceId, Resource, mig_resource_name};

/// A pod bound to this node, as the handoff needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRecord {
    /// Pod UID.
    pub uid: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Binding order: lower was bound (seen bound) earlier.
    pub order: u64,
    /// What the scheduler assigned.
    pub assignment: AssignmentState,
    /// Containers (init containers first) requesting gpupack resources.
    pub containers: Vec<ContainerRequests>,
    /// Whether the pod has finished (its devices are free again).
    pub terminated: bool,
    /// Whether kubelet has admitted the pod (its status shows it): kubelet
    /// allocates every container's devices at admission, so none of its
    /// requests is pending, whatever this process has seen allocated.
    pub admitted: bool,
}

/// A pod's assignment annotation.
#[derive(Debug, Clone, PartialEq)]
pub enum AssignmentState {
    /// No annotation: placed by another scheduler.
    None,
    /// A valid assignment.
    Valid(PodAssignment),
    /// An annotation that does not parse; nothing may match it.
    Invalid(String),
}

/// What one container requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRequests {
    /// Container name.
    pub name: String,
    /// Requested amount per gpupack resource.
    pub requests: Vec<(Resource, u32)>,
}

impl ContainerRequests {
    fn amount(&self, resource: &Resource) -> Option<u32> {
        self.requests
            .iter()
            .find(|(r, _)| r == resource)
            .map(|(_, n)| *n)
    }
}

/// A device shape: device count per (kind, UUID), sorted.
pub type Shape = Vec<(u8, String, u32)>;

fn kind_of(id: &DeviceId) -> u8 {
    match id {
        DeviceId::Slice { .. } => 0,
        DeviceId::MemoryUnit { .. } => 1,
        DeviceId::Mig { .. } => 2,
    }
}

/// The shape of a list of device IDs; `Err` for an ID that is not ours.
pub fn shape_of(ids: &[String]) -> Result<Shape, String> {
    let mut counts: BTreeMap<(u8, String), u32> = BTreeMap::new();
    for id in ids {
        let d = DeviceId::parse(id).map_err(|e| e.to_string())?;
        *counts
            .entry((kind_of(&d), d.uuid().to_string()))
            .or_default() += 1;
    }
    Ok(counts.into_iter().map(|((k, u), n)| (k, u, n)).collect())
}

/// Splits a container's memory request over its GPUs: the assigned bytes
/// rounded up to units when they add up to the request (the normal case),
/// else rounded down, else evenly, as kubelet counts memory over all GPUs.
pub fn memory_split(request: u32, gpus: &[(String, u64)], unit_bytes: u64) -> Vec<(String, u32)> {
    if gpus.is_empty() {
        return vec![];
    }
    let unit = unit_bytes.max(1);
    let as_units = |f: &dyn Fn(u64) -> u64| -> Vec<u32> {
        gpus.iter()
            .map(|(_, b)| u32::try_from(f(*b)).unwrap_or(u32::MAX))
            .collect()
    };
    let sum = |v: &[u32]| v.iter().map(|&x| u64::from(x)).sum::<u64>();
    let ceil = as_units(&|b| proto::resources::units_needed(b, unit));
    let floor = as_units(&|b| b / unit);
    let units = if sum(&ceil) == u64::from(request) {
        ceil
    } else if sum(&floor) == u64::from(request) {
        floor
    } else {
        let k = u32::try_from(gpus.len()).unwrap_or(u32::MAX);
        (0..k)
            .map(|i| request / k + u32::from(i < request % k))
            .collect()
    };
    gpus.iter()
        .zip(units)
        .filter(|(_, n)| *n > 0)
        .map(|((u, _), n)| (u.clone(), n))
        .collect()
}

/// The device shape a container's assignment implies for a resource and
/// request size, or `None` when the assignment cannot satisfy the request.
pub fn expected_shape(
    c: &ContainerAssignment,
    resource: &Resource,
    request: u32,
    unit_bytes: u64,
) -> Option<Shape> {
    let mut shape: Shape = match resource {
        Resource::Gpu => {
            if c.gpus.len() != usize::try_from(request).ok()? {
                return None;
            }
            c.gpus.iter().map(|g| (0, g.uuid.clone(), 1)).collect()
        }
        Resource::GpuMemory => {
            let gpus: Vec<(String, u64)> = c
                .gpus
                .iter()
                .map(|g| (g.uuid.clone(), g.memory_bytes))
                .collect();
            let split = memory_split(request, &gpus, unit_bytes);
            if split.iter().map(|(_, n)| u64::from(*n)).sum::<u64>() != u64::from(request) {
                return None;
            }
            split.into_iter().map(|(u, n)| (1, u, n)).collect()
        }
        Resource::Mig(_) => {
            let migs: Vec<_> = c
                .mig
                .iter()
                .filter(|m| {
                    Resource::parse(&mig_resource_name(&m.profile)).as_ref() == Some(resource)
                })
                .collect();
            if migs.len() != usize::try_from(request).ok()? {
                return None;
            }
            migs.iter().map(|m| (2, m.uuid.clone(), 1)).collect()
        }
    };
    shape.sort();
    Some(shape)
}

/// Identifies one container of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerKey {
    /// Pod UID.
    pub uid: String,
    /// Container name.
    pub container: String,
}

/// What a container is given, for building the Allocate response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// GPUs in assignment order, with the bytes assigned on each when known.
    pub gpus: Vec<(String, Option<u64>)>,
    /// MIG instance UUIDs.
    pub mig: Vec<String>,
    /// How the extender sized the container's engine, when it did.
    pub engine: Option<EngineSizing>,
}

impl Plan {
    fn from_assignment(c: &ContainerAssignment) -> Plan {
        Plan {
            gpus: c
                .gpus
                .iter()
                .map(|g| (g.uuid.clone(), Some(g.memory_bytes)))
                .collect(),
            mig: c.mig.iter().map(|m| m.uuid.clone()).collect(),
            engine: c.engine,
        }
    }

    /// The plan implied by device IDs alone (no assignment).
    pub fn from_devices(ids: &[String], unit_bytes: u64) -> Plan {
        let mut gpus: Vec<(String, Option<u64>)> = Vec::new();
        let mut mig = Vec::new();
        for id in ids {
            match DeviceId::parse(id) {
                Ok(DeviceId::Slice { gpu_uuid, .. }) => {
                    if !gpus.iter().any(|(u, _)| *u == gpu_uuid) {
                        gpus.push((gpu_uuid, None));
                    }
                }
                Ok(DeviceId::MemoryUnit { gpu_uuid, .. }) => {
                    match gpus.iter_mut().find(|(u, _)| *u == gpu_uuid) {
                        Some((_, b)) => *b = Some(b.unwrap_or(0) + unit_bytes),
                        None => gpus.push((gpu_uuid, Some(unit_bytes))),
                    }
                }
                Ok(DeviceId::Mig { mig_uuid }) => mig.push(mig_uuid),
                Err(_) => {}
            }
        }
        // Sorted, so that every response of a container names them alike.
        gpus.sort();
        mig.sort();
        Plan {
            gpus,
            mig,
            engine: None,
        }
    }
}

/// How an Allocate call was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocateOutcome {
    /// Matched a pending assignment.
    Assigned {
        /// Who it was matched to.
        key: ContainerKey,
        /// What the container gets.
        plan: Plan,
    },
    /// The devices match the assignments of several pods that differ, and
    /// waiting did not tell them apart: refused rather than guessed, since
    /// a guess could hand one pod another's GPUs.
    Ambiguous {
        /// Why, for kubelet's event.
        reason: String,
    },
    /// Matched a pod without an assignment; answered from kubelet's devices.
    Unassigned {
        /// The pod's container.
        key: ContainerKey,
        /// What the container gets.
        plan: Plan,
    },
    /// Nothing known matches; answered from kubelet's devices.
    Unknown {
        /// What the container gets.
        plan: Plan,
    },
    /// Nothing matched yet; wait for the pod cache and ask again.
    Retry,
    /// The devices contradict every pending assignment of this resource and
    /// size; kubelet must not start the container with them.
    Refused {
        /// Why, for kubelet's event.
        reason: String,
    },
}

/// A container whose recorded devices differ from its assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `namespace/name`.
    pub pod: String,
    /// Pod UID.
    pub uid: String,
    /// Container name.
    pub container: String,
    /// Resource name.
    pub resource: String,
    /// Expected shape.
    pub expected: Shape,
    /// What kubelet recorded.
    pub found: Shape,
}

#[derive(Debug, Clone)]
struct PodState {
    record: PodRecord,
    /// (container, resource name) → device IDs kubelet holds for it.
    allocated: HashMap<(String, String), Vec<String>>,
}

impl PodState {
    /// Whether this container already holds its devices of `resource`:
    /// seen allocated, or the pod is past admission.
    fn holds(&self, container: &str, resource: &str) -> bool {
        self.record.admitted
            || self
                .allocated
                .contains_key(&(container.to_string(), resource.to_string()))
    }
}

/// (container, resource name, device IDs) as PodResources reports them.
type HeldDevices = (String, String, Vec<String>);

/// The handoff state: the pod cache and what has been allocated.
#[derive(Debug, Clone)]
pub struct Handoff {
    pods: HashMap<String, PodState>,
    /// kubelet's latest PodResources report, by (namespace, name): applied
    /// to a pod when the cache learns of it, whichever comes first.
    recorded: HashMap<(String, String), Vec<HeldDevices>>,
    /// Whether `recorded` has been filled once.
    reported: bool,
    last: Option<ContainerKey>,
    unit_bytes: u64,
}

/// A pending request under consideration.
struct Candidate<'a> {
    key: ContainerKey,
    rank: (u8, u64, usize),
    assignment: &'a ContainerAssignment,
    shape: Shape,
}

impl Handoff {
    /// An empty cache for a node with this memory unit.
    pub fn new(unit_bytes: u64) -> Handoff {
        Handoff {
            pods: HashMap::new(),
            recorded: HashMap::new(),
            reported: false,
            last: None,
            unit_bytes,
        }
    }

    /// Adds or updates a pod; terminated pods are forgotten (kubelet frees
    /// their devices).
    pub fn upsert(&mut self, record: PodRecord) {
        if record.terminated {
            self.remove(&record.uid);
            return;
        }
        match self.pods.get_mut(&record.uid) {
            Some(state) => {
                let order = state.record.order.min(record.order);
                state.record = record;
                state.record.order = order;
            }
            None => {
                let mut allocated = HashMap::new();
                let name = (record.namespace.clone(), record.name.clone());
                for (container, resource, ids) in self.recorded.get(&name).into_iter().flatten() {
                    allocated.insert((container.clone(), resource.clone()), ids.clone());
                }
                self.pods
                    .insert(record.uid.clone(), PodState { record, allocated });
            }
        }
    }

    /// Forgets a deleted pod.
    pub fn remove(&mut self, uid: &str) {
        self.pods.remove(uid);
        if self.last.as_ref().is_some_and(|k| k.uid == uid) {
            self.last = None;
        }
    }

    /// Replaces the cache after a re-list, keeping what is known to be
    /// allocated for pods that are still there.
    pub fn replace_all(&mut self, records: Vec<PodRecord>) {
        let mut old = std::mem::take(&mut self.pods);
        for r in records {
            let uid = r.uid.clone();
            self.upsert(r);
            if let (Some(prev), Some(now)) = (old.remove(&uid), self.pods.get_mut(&uid)) {
                now.allocated = prev.allocated;
                now.record.order = now.record.order.min(prev.record.order);
            }
        }
        if self
            .last
            .as_ref()
            .is_some_and(|k| !self.pods.contains_key(&k.uid))
        {
            self.last = None;
        }
    }

    /// Number of pods in the cache.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    fn pod_by_name(&self, namespace: &str, name: &str) -> Option<&PodState> {
        self.pods
            .values()
            .find(|p| p.record.namespace == namespace && p.record.name == name)
    }

    /// Records allocations kubelet reports through PodResources (devices
    /// held by `namespace/name`'s `container` for `resource`).
    pub fn observe(
        &mut self,
        namespace: &str,
        name: &str,
        container: &str,
        resource: &str,
        ids: &[String],
    ) {
        if ids.is_empty() {
            return;
        }
        let uid = match self.pod_by_name(namespace, name) {
            Some(p) => p.record.uid.clone(),
            None => return,
        };
        if let Some(p) = self.pods.get_mut(&uid) {
            p.allocated
                .insert((container.to_string(), resource.to_string()), ids.to_vec());
        }
    }

    /// Takes one whole PodResources report: what every pod's containers
    /// hold. Pods not in the cache yet (after a restart the report can
    /// come first) get theirs when the cache learns of them.
    pub fn observe_report(&mut self, pods: &[RecordedPod]) {
        self.recorded = pods
            .iter()
            .map(|p| ((p.namespace.clone(), p.name.clone()), p.devices.clone()))
            .collect();
        for p in pods {
            for (container, resource, ids) in &p.devices {
                self.observe(&p.namespace, &p.name, container, resource, ids);
            }
        }
        self.reported = true;
    }

    /// PodResources cannot be read: nothing more is to be learnt from it,
    /// so calls stop waiting for a report (pod statuses still tell which
    /// pods kubelet has admitted).
    pub fn report_unavailable(&mut self) {
        self.reported = true;
    }

    /// Whether a PodResources report has been taken since this process
    /// started: before it, running pods may look pending.
    pub fn has_report(&self) -> bool {
        self.reported
    }

    /// Whether this container's request for `resource` is still pending.
    pub fn is_pending(&self, key: &ContainerKey, resource: &Resource) -> bool {
        self.pods.get(&key.uid).is_some_and(|p| {
            !p.holds(&key.container, &resource.name())
                && p.record
                    .containers
                    .iter()
                    .any(|c| c.name == key.container && c.amount(resource).is_some())
        })
    }

    /// Whether any cached container, assigned or not, still waits for
    /// exactly `size` of `resource`. When none does, the pod kubelet is
    /// admitting is not in the cache yet: kubelet's pod watch and the
    /// plugin's are separate, and kubelet's can be ahead.
    pub fn has_pending(&self, resource: &Resource, size: u32) -> bool {
        let rname = resource.name();
        self.pods.values().any(|p| {
            p.record
                .containers
                .iter()
                .any(|c| c.amount(resource) == Some(size) && !p.holds(&c.name, &rname))
        })
    }

    fn rank(&self, p: &PodState, container_pos: usize, container: &str) -> (u8, u64, usize) {
        let tier = match &self.last {
            Some(k) if k.uid == p.record.uid && k.container == container => 0,
            Some(k) if k.uid == p.record.uid => 1,
            _ => 2,
        };
        (tier, p.record.order, container_pos)
    }

    /// Pending assigned requests for `resource` of exactly `size`, best
    /// first, each with its expected shape. Assignments that cannot meet
    /// the request are reported in `broken`.
    fn candidates(&self, resource: &Resource, size: u32) -> (Vec<Candidate<'_>>, bool) {
        self.candidates_where(resource, size, &|_| true)
    }

    /// [`Handoff::candidates`] limited to assignments passing `keep`, a
    /// cheap test that spares computing shapes that cannot match.
    fn candidates_where(
        &self,
        resource: &Resource,
        size: u32,
        keep: &dyn Fn(&ContainerAssignment) -> bool,
    ) -> (Vec<Candidate<'_>>, bool) {
        let mut out = Vec::new();
        let mut any_assigned = false;
        let rname = resource.name();
        for p in self.pods.values() {
            for (pos, c) in p.record.containers.iter().enumerate() {
                if c.amount(resource) != Some(size) || p.holds(&c.name, &rname) {
                    continue;
                }
                match &p.record.assignment {
                    AssignmentState::None => {}
                    AssignmentState::Invalid(_) => any_assigned = true,
                    AssignmentState::Valid(a) => {
                        any_assigned = true;
                        let Some(ca) = a.container(&c.name) else {
                            continue;
                        };
                        if !keep(ca) {
                            continue;
                        }
                        let Some(shape) = expected_shape(ca, resource, size, self.unit_bytes)
                        else {
                            continue;
                        };
                        out.push(Candidate {
                            key: ContainerKey {
                                uid: p.record.uid.clone(),
                                container: c.name.clone(),
                            },
                            rank: self.rank(p, pos, &c.name),
                            assignment: ca,
                            shape,
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.key.cmp(&b.key)));
        (out, any_assigned)
    }

    /// The device IDs to prefer, steering kubelet to the best pending
    /// assignment that the available devices can satisfy; `None` when no
    /// assignment applies (the caller then uses topology preferences).
    pub fn preferred(
        &self,
        resource: &Resource,
        available: &[String],
        must_include: &[String],
        size: u32,
    ) -> Option<(ContainerKey, Vec<String>)> {
        let (cands, _) = self.candidates(resource, size);
        cands
            .into_iter()
            .find_map(|c| pick(&c.shape, available, must_include).map(|ids| (c.key, ids)))
    }

    /// The first (by rank) container of a pod without an assignment that
    /// requests `size` of `resource` and has not been allocated it yet.
    fn first_unassigned(&self, resource: &Resource, size: u32) -> Option<ContainerKey> {
        let rname = resource.name();
        let mut first: Option<((u8, u64, usize), ContainerKey)> = None;
        for p in self.pods.values() {
            if p.record.assignment != AssignmentState::None {
                continue;
            }
            for (pos, c) in p.record.containers.iter().enumerate() {
                if c.amount(resource) != Some(size) || p.holds(&c.name, &rname) {
                    continue;
                }
                let cand = (
                    self.rank(p, pos, &c.name),
                    ContainerKey {
                        uid: p.record.uid.clone(),
                        container: c.name.clone(),
                    },
                );
                if first.as_ref().is_none_or(|f| cand < *f) {
                    first = Some(cand);
                }
            }
        }
        first.map(|(_, key)| key)
    }

    /// Decides an Allocate call for `ids` of `resource`. `last_try` is set
    /// once the caller has waited for the pod cache; before that, a call
    /// that matches nothing yields [`AllocateOutcome::Retry`].
    pub fn allocate(
        &mut self,
        resource: &Resource,
        ids: &[String],
        last_try: bool,
    ) -> AllocateOutcome {
        // Until kubelet's PodResources report is in, a running pod's
        // request can look pending (right after a restart of this process).
        if !self.reported && !last_try {
            return AllocateOutcome::Retry;
        }
        let shape = match shape_of(ids) {
            Ok(s) => s,
            Err(e) => {
                return AllocateOutcome::Refused {
                    reason: format!("kubelet sent a device ID this plugin never advertised: {e}"),
                };
            }
        };
        let size = u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let rname = resource.name();
        let named = |ca: &ContainerAssignment| {
            shape.iter().all(|(_, u, _)| {
                ca.gpus.iter().any(|g| g.uuid == *u) || ca.mig.iter().any(|m| m.uuid == *u)
            })
        };
        let (cands, any_assigned) = self.candidates_where(resource, size, &named);
        let mut matching = cands.iter().filter(|c| c.shape == shape);
        if let Some(best) = matching.next() {
            // kubelet admits one pod at a time, its containers in order: a
            // pod it is part-way through, and that pod's own containers,
            // are told apart by rank. Between pods not yet started, only
            // the devices can tell, and here they do not.
            let others: Vec<&Candidate<'_>> = matching
                .filter(|c| {
                    best.rank.0 == 2
                        && c.key.uid != best.key.uid
                        && !c.assignment.interchangeable_with(best.assignment)
                })
                .collect();
            if !others.is_empty() {
                if !last_try {
                    return AllocateOutcome::Retry;
                }
                let who: Vec<String> = std::iter::once(best)
                    .chain(others)
                    .take(4)
                    .map(|c| {
                        let p = &self.pods[&c.key.uid].record;
                        format!("{}/{} container {}", p.namespace, p.name, c.key.container)
                    })
                    .collect();
                return AllocateOutcome::Ambiguous {
                    reason: format!(
                        "devices {} of {rname} match the differing assignments of {}; cannot tell which pod kubelet is admitting",
                        ids.join(","),
                        who.join(", ")
                    ),
                };
            }
            let key = best.key.clone();
            let plan = Plan::from_assignment(best.assignment);
            self.record(&key, &rname, ids, resource);
            return AllocateOutcome::Assigned { key, plan };
        }
        drop(cands);

        // A pod without an assignment that requests this much.
        if let Some(key) = self.first_unassigned(resource, size) {
            self.record(&key, &rname, ids, resource);
            // The container's devices of every resource so far: the last
            // response kubelet merges then describes all of them.
            let all = self.devices_of(&key);
            return AllocateOutcome::Unassigned {
                key,
                plan: Plan::from_devices(&all, self.unit_bytes),
            };
        }
        if !last_try {
            return AllocateOutcome::Retry;
        }
        if any_assigned {
            let (all, _) = self.candidates(resource, size);
            let described: Vec<String> = all
                .iter()
                .take(3)
                .map(|c| {
                    let p = &self.pods[&c.key.uid].record;
                    format!("{}/{} container {}", p.namespace, p.name, c.key.container)
                })
                .collect();
            let pending = if described.is_empty() {
                "a pod whose assignment cannot be read".to_string()
            } else {
                described.join(", ")
            };
            return AllocateOutcome::Refused {
                reason: format!(
                    "devices {} of {rname} match no gpupack assignment; pending: {pending}",
                    ids.join(",")
                ),
            };
        }
        AllocateOutcome::Unknown {
            plan: Plan::from_devices(ids, self.unit_bytes),
        }
    }

    /// Every device ID a container holds, slices before memory units.
    fn devices_of(&self, key: &ContainerKey) -> Vec<String> {
        let Some(p) = self.pods.get(&key.uid) else {
            return vec![];
        };
        let mut held: Vec<(&(String, String), &Vec<String>)> = p
            .allocated
            .iter()
            .filter(|((c, _), _)| *c == key.container)
            .collect();
        held.sort_by_key(|((_, r), _)| r.as_str());
        held.into_iter()
            .flat_map(|(_, ids)| ids.iter().cloned())
            .collect()
    }

    /// For a cached container without an assignment: keep its resources on
    /// the same GPUs. kubelet merges a container's responses keeping the
    /// first value of each variable, so they must agree. When it already
    /// holds devices, the next resource follows their GPUs (slices on its
    /// memory GPUs, memory split evenly over its slice GPUs); when memory
    /// comes first for a container that also asks for `k` GPUs, the units
    /// go evenly onto the `k` best-connected GPUs that can hold them.
    pub fn preferred_unassigned(
        &self,
        inv: &proto::inventory::NodeInventory,
        resource: &Resource,
        available: &[String],
        must_include: &[String],
        size: u32,
    ) -> Option<Vec<String>> {
        let key = match &self.last {
            Some(k) if self.is_pending(k, resource) => k.clone(),
            _ => self.first_unassigned(resource, size)?,
        };
        let p = self.pods.get(&key.uid)?;
        if p.record.assignment != AssignmentState::None {
            return None;
        }
        let c = p
            .record
            .containers
            .iter()
            .find(|c| c.name == key.container)?;
        if c.amount(resource) != Some(size) {
            return None;
        }
        let mut gpus: Vec<String> = Vec::new();
        for id in self.devices_of(&key) {
            if let Ok(DeviceId::Slice { gpu_uuid, .. } | DeviceId::MemoryUnit { gpu_uuid, .. }) =
                DeviceId::parse(&id)
                && !gpus.contains(&gpu_uuid)
            {
                gpus.push(gpu_uuid);
            }
        }
        if gpus.is_empty() {
            // Nothing held yet: only memory first needs a decision here.
            let k = usize::try_from(c.amount(&Resource::Gpu)?).ok()?;
            if *resource != Resource::GpuMemory || k == 0 {
                return None;
            }
            let per_gpu = usize::try_from(size).ok()?.div_ceil(k);
            let mut free: BTreeMap<String, usize> = BTreeMap::new();
            for id in available {
                if let Ok(d) = DeviceId::parse(id) {
                    *free.entry(d.uuid().to_string()).or_default() += 1;
                }
            }
            let eligible: Vec<String> = free
                .into_iter()
                .filter(|(_, n)| *n >= per_gpu)
                .map(|(g, _)| format!("{g}::s0"))
                .collect();
            gpus = crate::server::preferred::gpu_slices(inv, &eligible, &[], k)
                .iter()
                .filter_map(|id| DeviceId::parse(id).ok().map(|d| d.uuid().to_string()))
                .collect();
            if gpus.len() != k {
                return None;
            }
        }
        let mut shape: Shape = match resource {
            Resource::Gpu if gpus.len() == usize::try_from(size).ok()? => {
                gpus.iter().map(|g| (0, g.clone(), 1)).collect()
            }
            Resource::GpuMemory => {
                let even: Vec<(String, u64)> = gpus.iter().map(|g| (g.clone(), 0)).collect();
                memory_split(size, &even, self.unit_bytes)
                    .into_iter()
                    .map(|(g, n)| (1, g, n))
                    .collect()
            }
            _ => return None,
        };
        shape.sort();
        pick(&shape, available, must_include)
    }

    fn record(&mut self, key: &ContainerKey, rname: &str, ids: &[String], resource: &Resource) {
        if let Some(p) = self.pods.get_mut(&key.uid) {
            p.allocated
                .insert((key.container.clone(), rname.to_string()), ids.to_vec());
        }
        let more = self.pods.get(&key.uid).is_some_and(|p| {
            p.record.containers.iter().any(|c| {
                c.requests.iter().any(|(r, _)| {
                    !p.holds(&c.name, &r.name()) && (c.name != key.container || r != resource)
                })
            })
        });
        self.last = more.then(|| key.clone());
    }

    /// Compares what kubelet recorded (`namespace/name` → container →
    /// resource → device IDs) with the assignments.
    pub fn verify(&self, recorded: &[RecordedPod]) -> Vec<Mismatch> {
        let mut out = Vec::new();
        for rp in recorded {
            let Some(p) = self.pod_by_name(&rp.namespace, &rp.name) else {
                continue;
            };
            let AssignmentState::Valid(a) = &p.record.assignment else {
                continue;
            };
            for (container, resource, ids) in &rp.devices {
                let Some(r) = Resource::parse(resource) else {
                    continue;
                };
                let Some(ca) = a.container(container) else {
                    out.push(mismatch(p, container, resource, vec![], ids));
                    continue;
                };
                let size = p
                    .record
                    .containers
                    .iter()
                    .find(|c| &c.name == container)
                    .and_then(|c| c.amount(&r))
                    .unwrap_or(u32::try_from(ids.len()).unwrap_or(u32::MAX));
                let expected = expected_shape(ca, &r, size, self.unit_bytes).unwrap_or_default();
                if shape_of(ids).ok().as_ref() != Some(&expected) {
                    out.push(mismatch(p, container, resource, expected, ids));
                }
            }
        }
        out
    }
}

fn mismatch(
    p: &PodState,
    container: &str,
    resource: &str,
    expected: Shape,
    ids: &[String],
) -> Mismatch {
    Mismatch {
        pod: format!("{}/{}", p.record.namespace, p.record.name),
        uid: p.record.uid.clone(),
        container: container.to_string(),
        resource: resource.to_string(),
        expected,
        found: shape_of(ids).unwrap_or_default(),
    }
}

/// Devices kubelet recorded for one pod, from PodResources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// (container, resource name, device IDs).
    pub devices: Vec<(String, String, Vec<String>)>,
}

/// Chooses device IDs realizing `shape` from `available`, taking
/// `must_include` first; `None` when impossible.
pub fn pick(shape: &Shape, available: &[String], must_include: &[String]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut need: BTreeMap<(u8, String), u32> = shape
        .iter()
        .map(|(k, u, n)| ((*k, u.clone()), *n))
        .collect();
    for id in must_include {
        let d = DeviceId::parse(id).ok()?;
        let slot = need.get_mut(&(kind_of(&d), d.uuid().to_string()))?;
        *slot = slot.checked_sub(1)?;
        out.push(id.clone());
    }
    let must: std::collections::HashSet<&str> = must_include.iter().map(String::as_str).collect();
    let mut avail: Vec<(DeviceId, &String)> = available
        .iter()
        .filter(|id| !must.contains(id.as_str()))
        .filter_map(|id| DeviceId::parse(id).ok().map(|d| (d, id)))
        .collect();
    avail.sort();
    for (d, id) in avail {
        if let Some(slot) = need.get_mut(&(kind_of(&d), d.uuid().to_string()))
            && *slot > 0
        {
            *slot -= 1;
            out.push(id.clone());
        }
    }
    need.values().all(|&n| n == 0).then_some(out)
}

#[cfg(test)]
mod tests;

//! The cluster's state as the API shows it (plus, on the local target, what
//! each kubelet admitted), and the invariants every scenario checks.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use kubelet_standin::PodAllocation;
use proto::assignment::{ANNOTATION, PodAssignment};
use proto::inventory::{GpuNodeInventory, LinkLevel};
use proto::resources::{DOMAIN, env};

/// A snapshot of the cluster.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    pub pods: Vec<Pod>,
    pub inventories: Vec<GpuNodeInventory>,
    pub events: Vec<Event>,
    /// Per node, the pods its kubelet admitted (local target only).
    pub admitted: Option<BTreeMap<String, Vec<PodAllocation>>>,
}

/// What the invariant checks found; every list should be empty.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// A GPU's memory held beyond its size, a whole GPU or MIG instance
    /// held twice, or one kubelet device given to two containers.
    pub double_bookings: Vec<String>,
    /// Bound pods that ask for gpupack resources without a valid assignment.
    pub lost_assignments: Vec<String>,
    /// Containers whose environment does not name exactly their assignment.
    pub env_mismatches: Vec<String>,
    /// Multi-GPU containers not on NVLink/NVSwitch-connected GPUs on a node
    /// that has such links.
    pub link_violations: Vec<String>,
}

impl Findings {
    pub fn is_clean(&self) -> bool {
        self.double_bookings.is_empty()
            && self.lost_assignments.is_empty()
            && self.env_mismatches.is_empty()
            && self.link_violations.is_empty()
    }
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether a pod asks for any gpupack resource.
pub fn wants_gpupack(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| &s.containers).any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            r.limits
                .iter()
                .chain(r.requests.iter())
                .flatten()
                .any(|(k, _)| k.starts_with(&format!("{DOMAIN}/")))
        })
    })
}

impl ClusterView {
    pub async fn read(client: &kube::Client) -> Result<ClusterView> {
        let lp = ListParams::default();
        Ok(ClusterView {
            pods: Api::<Pod>::all(client.clone()).list(&lp).await?.items,
            inventories: Api::<GpuNodeInventory>::all(client.clone())
                .list(&lp)
                .await?
                .items,
            events: Api::<Event>::all(client.clone()).list(&lp).await?.items,
            admitted: None,
        })
    }

    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
    }

    pub fn phase(&self, name: &str) -> Option<String> {
        self.pod(name)
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.clone())
    }

    /// A pod condition's (status, reason).
    pub fn pod_condition(&self, name: &str, kind: &str) -> Option<(String, String)> {
        self.pod(name)
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == kind))
            .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
    }

    pub fn node_of(&self, name: &str) -> Option<String> {
        self.pod(name)
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.clone())
    }

    /// Pods that are bound and not finished.
    pub fn live_bound(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().filter(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                && !proto::pod::is_finished(p)
        })
    }

    pub fn running(&self) -> usize {
        self.pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count()
    }

    /// The assignment on a pod, if it has a valid one.
    pub fn assignment(pod: &Pod) -> Option<PodAssignment> {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
            .and_then(|t| PodAssignment::from_json(t).ok())
    }

    pub fn inventory(&self, node: &str) -> Option<&GpuNodeInventory> {
        self.inventories.iter().find(|i| i.spec.node_name == node)
    }

    /// Events on a pod, as `(reason, message)`.
    pub fn events_of(&self, name: &str) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| {
                (
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Per node and GPU UUID, the memory bound pods hold, by pod.
    pub fn bookings(&self) -> BTreeMap<(String, String), Vec<(String, u64)>> {
        let mut out: BTreeMap<(String, String), Vec<(String, u64)>> = BTreeMap::new();
        for pod in self.live_bound() {
            let Some(a) = Self::assignment(pod) else {
                continue;
            };
            for c in &a.containers {
                for g in &c.gpus {
                    out.entry((a.node.clone(), g.uuid.clone()))
                        .or_default()
                        .push((key(pod), g.memory_bytes));
                }
                for m in &c.mig {
                    out.entry((a.node.clone(), m.uuid.clone()))
                        .or_default()
                        .push((key(pod), 0));
                }
            }
        }
        out
    }

    /// Checks every invariant.
    pub fn check(&self) -> Findings {
        let mut f = Findings::default();
        for ((node, uuid), holders) in self.bookings() {
            let names: Vec<&str> = holders.iter().map(|(p, _)| p.as_str()).collect();
            if uuid.starts_with("MIG-") {
                if holders.len() > 1 {
                    f.double_bookings
                        .push(format!("{node} {uuid}: MIG instance held by {names:?}"));
                }
                continue;
            }
            let size = self
                .inventory(&node)
                .and_then(|i| i.spec.gpu(&uuid))
                .map(|g| g.memory_bytes);
            let held: u64 = holders.iter().map(|(_, b)| b).sum();
            match size {
                Some(size) if held > size => f.double_bookings.push(format!(
                    "{node} {uuid}: {held} bytes held of {size} by {names:?}"
                )),
                Some(_) => {}
                None => f.double_bookings.push(format!(
                    "{node} {uuid}: not in the inventory, held by {names:?}"
                )),
            }
        }
        for pod in self.live_bound() {
            if !wants_gpupack(pod) {
                continue;
            }
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            match Self::assignment(pod) {
                None => f
                    .lost_assignments
                    .push(format!("{} on {node}: no valid assignment", key(pod))),
                Some(a) if a.node != node => f.lost_assignments.push(format!(
                    "{}: assigned on {} but bound to {node}",
                    key(pod),
                    a.node
                )),
                Some(a) => {
                    if let Some(inv) = self.inventory(&node) {
                        let has_links =
                            inv.spec.links.iter().any(|l| {
                                matches!(l.level(), LinkLevel::NvLink | LinkLevel::NvSwitch)
                            });
                        for c in a.containers.iter().filter(|c| c.gpus.len() > 1) {
                            let level = worst_link(
                                inv,
                                &c.gpus.iter().map(|g| g.index).collect::<Vec<_>>(),
                            );
                            if has_links
                                && !matches!(level, Some(LinkLevel::NvLink | LinkLevel::NvSwitch))
                            {
                                f.link_violations.push(format!(
                                    "{} container {}: GPUs {:?} joined by {level:?}",
                                    key(pod),
                                    c.name,
                                    c.gpus.iter().map(|g| g.index).collect::<Vec<_>>()
                                ));
                            }
                        }
                    }
                }
            }
        }
        if let Some(admitted) = &self.admitted {
            self.check_admitted(admitted, &mut f);
        }
        f
    }

    fn check_admitted(&self, admitted: &BTreeMap<String, Vec<PodAllocation>>, f: &mut Findings) {
        for (node, pods) in admitted {
            let mut seen: BTreeMap<(String, String), String> = BTreeMap::new();
            for alloc in pods {
                for c in &alloc.containers {
                    for (resource, devices) in &c.devices {
                        for d in devices {
                            let who = format!("{}/{} {}", alloc.namespace, alloc.name, c.name);
                            if let Some(prev) =
                                seen.insert((resource.clone(), d.id.clone()), who.clone())
                            {
                                f.double_bookings.push(format!(
                                    "{node}: device {} of {resource} given to {prev} and {who}",
                                    d.id
                                ));
                            }
                        }
                    }
                }
                let Some(pod) = self
                    .pods
                    .iter()
                    .find(|p| p.metadata.uid.as_deref() == Some(alloc.uid.as_str()))
                else {
                    continue;
                };
                let Some(a) = Self::assignment(pod) else {
                    continue;
                };
                for c in &alloc.containers {
                    let Some(ca) = a.container(&c.name) else {
                        if !c.devices.is_empty() {
                            f.env_mismatches.push(format!(
                                "{} {}: devices but no assignment",
                                key(pod),
                                c.name
                            ));
                        }
                        continue;
                    };
                    let list = |name: &str| -> BTreeSet<String> {
                        c.env(name)
                            .map(|v| {
                                v.split(',')
                                    .filter(|s| !s.is_empty())
                                    .map(String::from)
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    let gpus: BTreeSet<String> = ca.gpus.iter().map(|g| g.uuid.clone()).collect();
                    let migs: BTreeSet<String> = ca.mig.iter().map(|m| m.uuid.clone()).collect();
                    let visible: BTreeSet<String> = gpus.union(&migs).cloned().collect();
                    let mut problems = Vec::new();
                    if list(env::GPU_UUIDS) != gpus {
                        problems.push(format!(
                            "{}={:?}, assigned {gpus:?}",
                            env::GPU_UUIDS,
                            c.env(env::GPU_UUIDS)
                        ));
                    }
                    if list(env::MIG_UUIDS) != migs {
                        problems.push(format!(
                            "{}={:?}, assigned {migs:?}",
                            env::MIG_UUIDS,
                            c.env(env::MIG_UUIDS)
                        ));
                    }
                    if list(env::NVIDIA_VISIBLE_DEVICES) != visible {
                        problems.push(format!(
                            "{}={:?}, assigned {visible:?}",
                            env::NVIDIA_VISIBLE_DEVICES,
                            c.env(env::NVIDIA_VISIBLE_DEVICES)
                        ));
                    }
                    if !ca.gpus.is_empty() {
                        let uuids: Vec<String> = c
                            .env(env::GPU_UUIDS)
                            .map(|v| v.split(',').map(String::from).collect())
                            .unwrap_or_default();
                        let bytes: Vec<String> = c
                            .env(env::GPU_MEMORY_BYTES)
                            .map(|v| v.split(',').map(String::from).collect())
                            .unwrap_or_default();
                        for g in &ca.gpus {
                            let got = uuids
                                .iter()
                                .position(|u| *u == g.uuid)
                                .and_then(|i| bytes.get(i));
                            if got.map(String::as_str) != Some(g.memory_bytes.to_string().as_str())
                            {
                                problems.push(format!(
                                    "{} for {}: {got:?}, assigned {}",
                                    env::GPU_MEMORY_BYTES,
                                    g.uuid,
                                    g.memory_bytes
                                ));
                            }
                        }
                    }
                    // A sized engine gets the extender's flag and KV bytes.
                    if let Some(e) = ca.engine {
                        let want = [
                            (
                                env::GPU_MEMORY_UTILIZATION,
                                env::fraction_text(u64::from(e.memory_flag)),
                            ),
                            (env::KV_CACHE_BYTES, e.kv_cache_bytes.to_string()),
                        ];
                        for (name, value) in want {
                            if c.env(name) != Some(value.as_str()) {
                                problems.push(format!("{name}={:?}, sized {value}", c.env(name)));
                            }
                        }
                    }
                    if !problems.is_empty() {
                        f.env_mismatches.push(format!(
                            "{} {}: {}",
                            key(pod),
                            c.name,
                            problems.join("; ")
                        ));
                    }
                }
            }
        }
    }

    /// One line per pod that is not running: name, phase, node, and the
    /// status message (kubelet's reason for a failed admission).
    pub fn summary(&self) -> String {
        self.pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running"))
            .map(|p| {
                format!(
                    "{} {} {} {}",
                    key(p),
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default(),
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    p.status
                        .as_ref()
                        .and_then(|s| s.message.clone())
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The weakest link among the GPUs (by index) on a node.
pub fn worst_link(inv: &GpuNodeInventory, indices: &[u32]) -> Option<LinkLevel> {
    let mut worst: Option<LinkLevel> = None;
    for (i, a) in indices.iter().enumerate() {
        for b in &indices[i + 1..] {
            let level = inv
                .spec
                .link_level(*a, *b)
                .unwrap_or(LinkLevel::CrossSocket);
            worst = Some(worst.map_or(level, |w| w.max(level)));
        }
    }
    worst
}

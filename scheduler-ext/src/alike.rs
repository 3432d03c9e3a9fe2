//! Alike pods awaiting kubelet: choosing a pod's GPUs so that the device
//! plugin can never confuse it with another pod on the node that kubelet
//! has not admitted yet.
//!
//! kubelet tells the device plugin amounts and device IDs, never the pod
//! (see `bind.rs`). Two unadmitted pods on one node whose containers ask
//! for the same amounts must therefore hold identical assignments (either
//! set of devices is right for either pod), or the second must wait until
//! kubelet has admitted the first. Replicas of one Deployment are alike by
//! construction and arrive together, so rather than making them wait, a
//! pod is given, in this order:
//!
//! 1. the policy's choice, when no pending pod could be mistaken for it;
//! 2. a copy of a pending alike pod's assignment (same devices, same sizes),
//!    when those devices still have room for it;
//! 3. nothing: it waits for kubelet, and the pod it waits for is named.
//!
//! Bind decides with this rule; filter and prioritize apply the same rule to
//! steer the replicas of one wave to nodes where they can bind at once.

use placement::{Allocation, Ledger, NodeId, Prepared, Scorer};
use proto::assignment::{ContainerAssignment, PodAssignment};
use proto::inventory::NodeInventory;
use rand::RngCore;

use crate::translate::{allocation_of, assignment_of};

/// A pod on the node that kubelet has not admitted yet: bound, or with a
/// bind in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// `namespace/name`, for messages.
    pub who: String,
    pub assignment: PodAssignment,
}

/// Why no GPUs were chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotClear {
    /// The pod does not fit on the node at all.
    Unfit(String),
    /// It fits, but only on devices the device plugin could mistake for
    /// those of this pending pod (`namespace/name`).
    Awaiting(String),
}

/// The pod's GPUs on `node` by the rule above. `preferred` (what this
/// replica assumed when the bind arrived) is taken when it still fits, so
/// that the bind lands where filter saw room. `sized` completes an
/// assignment as the pod would get it (its engine settings, which the
/// device plugin hands over with the devices), so that it is compared
/// with `pending` as the plugin will compare them.
#[allow(clippy::too_many_arguments)]
pub fn choose_clear(
    ledger: &Ledger,
    node: NodeId,
    prep: &Prepared<'_>,
    scorer: &Scorer,
    inv: &NodeInventory,
    pending: &[Pending],
    preferred: Option<&Allocation>,
    sized: &dyn Fn(&mut PodAssignment),
    rng: &mut dyn RngCore,
) -> Result<Allocation, NotClear> {
    let chosen = match preferred.filter(|a| ledger.admits(a).is_ok()) {
        Some(a) => a.clone(),
        None => ledger
            .choose(node, prep, scorer, rng)
            .map_err(|u| NotClear::Unfit(u.to_string()))?,
    };
    let mut ours = assignment_of(&chosen, inv);
    sized(&mut ours);
    let Some(first) = confusable_with(&ours, pending) else {
        return Ok(chosen);
    };
    for p in pending {
        let Some(mut copy) = same_devices_as(&ours, &p.assignment) else {
            continue;
        };
        sized(&mut copy);
        if confusable_with(&copy, pending).is_some() {
            continue;
        }
        let Ok(mut alloc) = allocation_of(&copy, inv) else {
            continue;
        };
        alloc.cpu_milli = chosen.cpu_milli;
        alloc.memory_bytes = chosen.memory_bytes;
        if ledger.admits(&alloc).is_ok() {
            return Ok(alloc);
        }
    }
    Err(NotClear::Awaiting(first.to_string()))
}

/// For [`choose_clear`] where assignments are compared by their devices
/// alone: views rebuilt from the ledger, which keeps allocations and not
/// engine settings (filter's steering; bind compares the assignments it
/// reads, settings included).
pub fn devices_only(_: &mut PodAssignment) {}

/// The first pending pod the device plugin could mistake for `ours`: a
/// container asking for the same number of GPUs, the same total memory, or
/// the same MIG profiles, on devices that differ (see
/// [`ContainerAssignment::confusable_with`]).
pub fn confusable_with<'p>(ours: &PodAssignment, pending: &'p [Pending]) -> Option<&'p str> {
    pending
        .iter()
        .find(|p| {
            ours.containers
                .iter()
                .any(|c| p.assignment.containers.iter().any(|o| c.confusable_with(o)))
        })
        .map(|p| p.who.as_str())
}

/// `other`'s assignment with `ours`'s container names, when each container
/// asks for exactly the same amounts (GPU count, memory per GPU, MIG
/// profiles): then the two pods can hold identical devices.
fn same_devices_as(ours: &PodAssignment, other: &PodAssignment) -> Option<PodAssignment> {
    fn amounts(c: &ContainerAssignment) -> (Vec<u64>, Vec<&str>) {
        let mut memory: Vec<u64> = c.gpus.iter().map(|g| g.memory_bytes).collect();
        memory.sort_unstable();
        let mut profiles: Vec<&str> = c.mig.iter().map(|m| m.profile.as_str()).collect();
        profiles.sort_unstable();
        (memory, profiles)
    }
    if ours.containers.len() != other.containers.len()
        || ours
            .containers
            .iter()
            .zip(&other.containers)
            .any(|(a, b)| amounts(a) != amounts(b))
    {
        return None;
    }
    let mut copy = other.clone();
    copy.node = ours.node.clone();
    for (c, o) in copy.containers.iter_mut().zip(&ours.containers) {
        c.name = o.name.clone();
    }
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::PodNeeds;
    use crate::translate::node_spec;
    use placement::{PodKey, Policy, TypicalPods};
    use proto::assignment::{AssignedGpu, AssignedMig};
    use rand::SeedableRng;

    fn node() -> NodeInventory {
        crate::synthetic::inventory("n", 4).spec
    }

    fn needs(gpus: u32, units: u64) -> PodNeeds {
        PodNeeds::from_pod(&crate::synthetic::pod("ns", "p", "u", gpus, Some(units))).unwrap()
    }

    fn ledger_with(inv: &NodeInventory, held: &[(&str, &PodAssignment)]) -> (Ledger, NodeId) {
        let mut l = Ledger::new();
        let (id, _) = l.upsert_node(&node_spec(inv)).unwrap();
        for (uid, a) in held {
            l.adopt(
                PodKey::new("ns", *uid, *uid),
                allocation_of(a, inv).unwrap(),
            )
            .unwrap();
        }
        (l, id)
    }

    fn choose(
        inv: &NodeInventory,
        held: &[(&str, &PodAssignment)],
        pending: &[Pending],
        gib: u64,
    ) -> Result<PodAssignment, NotClear> {
        let (l, id) = ledger_with(inv, held);
        let needs = needs(1, gib);
        let demand = needs.demand(inv.memory_unit_bytes);
        let prep = l.prepare(&demand);
        let scorer = l.scorer(Policy::Gpupack, &TypicalPods::default());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        choose_clear(
            &l,
            id,
            &prep,
            &scorer,
            inv,
            pending,
            None,
            &devices_only,
            &mut rng,
        )
        .map(|a| assignment_of(&a, inv))
    }

    #[test]
    fn an_alike_pod_shares_the_pending_pods_gpu_while_it_has_room() {
        let inv = node();
        let first = choose(&inv, &[], &[], 20).unwrap();
        let pending = [Pending {
            who: "ns/first".into(),
            assignment: first.clone(),
        }];
        let second = choose(&inv, &[("first", &first)], &pending, 20).unwrap();
        assert!(second.containers[0].interchangeable_with(&first.containers[0]));
        // Four 20 GiB pods fill the 80 GiB GPU; the fifth alike pod would
        // need another GPU and so waits for kubelet.
        let held: Vec<(&str, &PodAssignment)> =
            ["a", "b", "c", "d"].iter().map(|u| (*u, &first)).collect();
        assert_eq!(
            choose(&inv, &held, &pending, 20),
            Err(NotClear::Awaiting("ns/first".into()))
        );
    }

    #[test]
    fn a_pending_pod_sized_for_other_engine_settings_is_not_shared() {
        let inv = node();
        let sizing = |flag: u32| {
            move |a: &mut PodAssignment| {
                for c in &mut a.containers {
                    c.engine = Some(proto::assignment::EngineSizing {
                        memory_flag: flag,
                        kv_cache_bytes: 1 << 30,
                    });
                }
            }
        };
        let choose_sized = |held: &[(&str, &PodAssignment)],
                            pending: &[Pending],
                            sized: &dyn Fn(&mut PodAssignment)| {
            let (l, id) = ledger_with(&inv, held);
            let needs = needs(1, 20);
            let demand = needs.demand(inv.memory_unit_bytes);
            let prep = l.prepare(&demand);
            let scorer = l.scorer(Policy::Gpupack, &TypicalPods::default());
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            choose_clear(&l, id, &prep, &scorer, &inv, pending, None, sized, &mut rng)
        };
        let mut first = choose(&inv, &[], &[], 20).unwrap();
        sizing(2300)(&mut first);
        let pending = [Pending {
            who: "ns/first".into(),
            assignment: first.clone(),
        }];
        let held = [("first", &first)];
        // The same settings: the pending pod's devices are shared.
        let same = choose_sized(&held, &pending, &sizing(2300)).unwrap();
        assert_eq!(
            assignment_of(&same, &inv).containers[0].gpus,
            first.containers[0].gpus
        );
        // Other settings on the same amounts: the device plugin could hand
        // over the wrong ones, so the pod waits for kubelet.
        assert_eq!(
            choose_sized(&held, &pending, &sizing(2400)),
            Err(NotClear::Awaiting("ns/first".into()))
        );
    }

    #[test]
    fn admitted_or_different_pods_do_not_constrain() {
        let inv = node();
        let first = choose(&inv, &[], &[], 20).unwrap();
        let held = [("first", &first)];
        // Nothing pending: the policy's choice.
        assert!(choose(&inv, &held, &[], 20).is_ok());
        // A pending pod of another size on another GPU count is not alike.
        let two = {
            let (l, id) = ledger_with(&inv, &[]);
            let demand = needs(2, 60).demand(inv.memory_unit_bytes);
            let scorer = l.scorer(Policy::Gpupack, &TypicalPods::default());
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let a = l
                .choose(id, &l.prepare(&demand), &scorer, &mut rng)
                .unwrap();
            assignment_of(&a, &inv)
        };
        let pending = [Pending {
            who: "ns/two".into(),
            assignment: two.clone(),
        }];
        assert!(choose(&inv, &[("two", &two)], &pending, 20).is_ok());
    }

    fn gpus(list: &[(&str, u64)]) -> PodAssignment {
        PodAssignment {
            version: proto::assignment::VERSION.into(),
            node: "n".into(),
            containers: vec![ContainerAssignment {
                name: "server".into(),
                gpus: list
                    .iter()
                    .enumerate()
                    .map(|(i, (u, gib))| AssignedGpu {
                        uuid: format!("GPU-{u}"),
                        index: i as u32,
                        memory_bytes: gib << 30,
                    })
                    .collect(),
                mig: vec![],
                engine: None,
            }],
        }
    }

    fn mig(uuid: &str, profile: &str) -> PodAssignment {
        PodAssignment {
            version: proto::assignment::VERSION.into(),
            node: "n".into(),
            containers: vec![ContainerAssignment {
                name: "server".into(),
                gpus: vec![],
                mig: vec![AssignedMig {
                    uuid: format!("MIG-{uuid}"),
                    parent_uuid: "GPU-p".into(),
                    profile: profile.into(),
                }],
                engine: None,
            }],
        }
    }

    fn first(ours: &PodAssignment, others: &[PodAssignment]) -> Option<String> {
        let pending: Vec<Pending> = others
            .iter()
            .enumerate()
            .map(|(i, a)| Pending {
                who: format!("ns/p{i}"),
                assignment: a.clone(),
            })
            .collect();
        confusable_with(ours, &pending).map(str::to_string)
    }

    #[test]
    fn same_request_on_other_gpus_is_confusable() {
        let ours = gpus(&[("a", 20)]);
        assert_eq!(first(&ours, &[gpus(&[("b", 20)])]), Some("ns/p0".into()));
        // Same GPU count, other memory: the slice request alone is alike.
        assert_eq!(first(&ours, &[gpus(&[("b", 30)])]), Some("ns/p0".into()));
        // Same total memory over a different GPU count.
        assert_eq!(
            first(&ours, &[gpus(&[("b", 10), ("c", 10)])]),
            Some("ns/p0".into())
        );
        assert_eq!(
            first(&mig("x", "1g.10gb"), &[mig("y", "1g.10gb")]),
            Some("ns/p0".into())
        );
    }

    #[test]
    fn interchangeable_or_different_requests_are_not() {
        let ours = gpus(&[("a", 20)]);
        assert_eq!(first(&ours, &[gpus(&[("a", 20)])]), None);
        assert_eq!(first(&ours, &[gpus(&[("b", 30), ("c", 30)])]), None);
        assert_eq!(first(&mig("x", "1g.10gb"), &[mig("y", "3g.40gb")]), None);
        assert_eq!(first(&ours, &[]), None);
    }
}

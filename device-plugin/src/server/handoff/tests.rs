use super::*;
use proptest::prelude::*;
use proto::assignment::{AssignedGpu, AssignedMig};

const GIB: u64 = 1 << 30;

fn gpu(i: u32) -> String {
    format!("GPU-{i:08}")
}

fn ca(name: &str, gpus: &[(u32, u64)]) -> ContainerAssignment {
    ContainerAssignment {
        name: name.into(),
        gpus: gpus
            .iter()
            .map(|&(i, gib)| AssignedGpu {
                uuid: gpu(i),
                index: i,
                memory_bytes: gib * GIB,
            })
            .collect(),
        mig: vec![],
        engine: None,
    }
}

/// A handoff that has taken kubelet's (empty) PodResources report.
fn handoff() -> Handoff {
    let mut h = Handoff::new(GIB);
    h.observe_report(&[]);
    h
}

fn pod(uid: &str, order: u64, containers: Vec<(ContainerAssignment, bool)>) -> PodRecord {
    let reqs = containers
        .iter()
        .map(|(c, with_memory)| {
            let n = u32::try_from(c.gpus.len()).unwrap();
            let mut requests = vec![(Resource::Gpu, n)];
            if *with_memory {
                let total: u64 = c.gpus.iter().map(|g| g.memory_bytes.div_ceil(GIB)).sum();
                requests.push((Resource::GpuMemory, u32::try_from(total).unwrap()));
            }
            ContainerRequests {
                name: c.name.clone(),
                requests,
            }
        })
        .collect();
    PodRecord {
        uid: uid.into(),
        namespace: "ns".into(),
        name: format!("pod-{uid}"),
        order,
        assignment: AssignmentState::Valid(PodAssignment {
            version: "v1".into(),
            node: "n".into(),
            containers: containers.into_iter().map(|(c, _)| c).collect(),
        }),
        containers: reqs,
        terminated: false,
        admitted: false,
    }
}

/// Every device of a 4-GPU node with 4 slices and 80 units each.
fn all_devices(resource: &Resource) -> Vec<String> {
    let mut out = vec![];
    for g in 0..4 {
        match resource {
            Resource::Gpu => out.extend((0..4).map(|s| format!("{}::s{s}", gpu(g)))),
            Resource::GpuMemory => out.extend((0..80).map(|u| format!("{}::m{u}", gpu(g)))),
            Resource::Mig(_) => {}
        }
    }
    out
}

fn gpus_of(ids: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ids
        .iter()
        .map(|i| DeviceId::parse(i).unwrap().uuid().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn memory_split_follows_assigned_bytes() {
    let g = |b: &[u64]| -> Vec<(String, u64)> {
        b.iter()
            .enumerate()
            .map(|(i, &x)| (gpu(i as u32), x))
            .collect()
    };
    assert_eq!(
        memory_split(30, &g(&[20 * GIB, 10 * GIB]), GIB),
        vec![(gpu(0), 20), (gpu(1), 10)]
    );
    // 19.5 GiB rounds up to 20 units when that is what was requested...
    assert_eq!(
        memory_split(20, &g(&[19 * GIB + GIB / 2]), GIB),
        vec![(gpu(0), 20)]
    );
    // ...and down when the request says so.
    assert_eq!(
        memory_split(19, &g(&[19 * GIB + GIB / 2]), GIB),
        vec![(gpu(0), 19)]
    );
    // Otherwise split evenly, as kubelet counts.
    assert_eq!(
        memory_split(5, &g(&[GIB, GIB]), GIB),
        vec![(gpu(0), 3), (gpu(1), 2)]
    );
    assert!(memory_split(5, &[], GIB).is_empty());
}

#[test]
fn steers_and_accepts_the_assigned_gpus_in_either_order() {
    for memory_first in [false, true] {
        let mut h = handoff();
        h.upsert(pod("a", 1, vec![(ca("vllm", &[(2, 30), (3, 30)]), true)]));
        let mut order = vec![(Resource::Gpu, 2u32), (Resource::GpuMemory, 60)];
        if memory_first {
            order.reverse();
        }
        for (r, n) in order {
            let avail = all_devices(&r);
            let (key, ids) = h.preferred(&r, &avail, &[], n).unwrap();
            assert_eq!(key.container, "vllm");
            assert_eq!(gpus_of(&ids), vec![gpu(2), gpu(3)]);
            assert_eq!(ids.len(), n as usize);
            match h.allocate(&r, &ids, false) {
                AllocateOutcome::Assigned { plan, .. } => {
                    assert_eq!(
                        plan.gpus,
                        vec![(gpu(2), Some(30 * GIB)), (gpu(3), Some(30 * GIB))]
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(!h.is_pending(
            &ContainerKey {
                uid: "a".into(),
                container: "vllm".into()
            },
            &Resource::Gpu
        ));
    }
}

#[test]
fn devices_pick_the_pod_not_the_age() {
    let mut h = handoff();
    h.upsert(pod("old", 1, vec![(ca("c", &[(0, 10)]), false)]));
    h.upsert(pod("new", 2, vec![(ca("c", &[(1, 10)]), false)]));
    let ids = vec![format!("{}::s3", gpu(1))];
    match h.allocate(&Resource::Gpu, &ids, false) {
        AllocateOutcome::Assigned { key, .. } => assert_eq!(key.uid, "new"),
        other => panic!("{other:?}"),
    }
    // The older one is still pending and still steered to.
    let (key, ids) = h
        .preferred(&Resource::Gpu, &all_devices(&Resource::Gpu), &[], 1)
        .unwrap();
    assert_eq!((key.uid.as_str(), gpus_of(&ids)), ("old", vec![gpu(0)]));
}

#[test]
fn multi_container_pod_gets_each_containers_gpus() {
    let mut h = handoff();
    h.upsert(pod(
        "p",
        1,
        vec![
            (ca("a", &[(0, 20)]), true),
            (ca("b", &[(1, 40), (2, 40)]), true),
        ],
    ));
    // kubelet: container a (memory first), then container b (gpu first).
    for (r, n, want) in [
        (Resource::GpuMemory, 20, vec![gpu(0)]),
        (Resource::Gpu, 1, vec![gpu(0)]),
        (Resource::Gpu, 2, vec![gpu(1), gpu(2)]),
        (Resource::GpuMemory, 80, vec![gpu(1), gpu(2)]),
    ] {
        let (_, ids) = h.preferred(&r, &all_devices(&r), &[], n).unwrap();
        assert_eq!(gpus_of(&ids), want);
        assert!(matches!(
            h.allocate(&r, &ids, false),
            AllocateOutcome::Assigned { .. }
        ));
    }
}

#[test]
fn devices_matching_differing_assignments_are_refused_not_guessed() {
    // Two pods on the same GPU, same requests, different bytes: the devices
    // cannot tell them apart. The handoff waits for more (a PodResources
    // report, the pod cache) and then refuses rather than hand one pod the
    // other's assignment.
    let mut h = handoff();
    h.upsert(pod("x", 1, vec![(ca("c", &[(0, 10)]), true)]));
    let mut y = pod("y", 2, vec![(ca("c", &[(0, 10)]), true)]);
    if let AssignmentState::Valid(a) = &mut y.assignment {
        a.containers[0].gpus[0].memory_bytes = 10 * GIB - 1;
    }
    h.upsert(y);
    let mem: Vec<String> = (0..10).map(|u| format!("{}::m{u}", gpu(0))).collect();
    assert_eq!(
        h.allocate(&Resource::GpuMemory, &mem, false),
        AllocateOutcome::Retry
    );
    match h.allocate(&Resource::GpuMemory, &mem, true) {
        AllocateOutcome::Ambiguous { reason } => {
            assert!(
                reason.contains("ns/pod-x") && reason.contains("ns/pod-y"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Once kubelet has admitted one of them, the other is the one.
    let mut x = pod("x", 1, vec![(ca("c", &[(0, 10)]), true)]);
    x.admitted = true;
    h.upsert(x);
    let AllocateOutcome::Assigned { key, .. } = h.allocate(&Resource::GpuMemory, &mem, false)
    else {
        panic!()
    };
    assert_eq!(key.uid, "y");
}

#[test]
fn running_pods_never_look_pending_after_a_restart() {
    // A restarted plugin: the pod cache lists a running server (admitted by
    // kubelet, devices not yet seen through PodResources) and a newcomer.
    let mut h = Handoff::new(GIB);
    let mut server = pod("server", 1, vec![(ca("c", &[(1, 51)]), true)]);
    server.admitted = true;
    h.upsert(server);
    h.upsert(pod("new", 2, vec![(ca("c", &[(3, 10)]), true)]));
    // Until PodResources has been read, Allocate waits.
    let slice = vec![format!("{}::s0", gpu(3))];
    assert_eq!(
        h.allocate(&Resource::Gpu, &slice, false),
        AllocateOutcome::Retry
    );
    h.observe_report(&[]);
    // Steered to the newcomer's GPU, never the server's.
    let (key, ids) = h
        .preferred(&Resource::Gpu, &all_devices(&Resource::Gpu), &[], 1)
        .unwrap();
    assert_eq!(key.uid, "new");
    assert_eq!(gpus_of(&ids), vec![gpu(3)]);
    // A report that comes before the pod cache is applied when it fills.
    let mut h = Handoff::new(GIB);
    h.observe_report(&[RecordedPod {
        namespace: "ns".into(),
        name: "pod-server".into(),
        devices: vec![(
            "c".into(),
            "gpupack.io/gpu".into(),
            vec![format!("{}::s0", gpu(1))],
        )],
    }]);
    h.upsert(pod("server", 1, vec![(ca("c", &[(1, 51)]), true)]));
    h.upsert(pod("new", 2, vec![(ca("c", &[(3, 10)]), true)]));
    let (key, _) = h
        .preferred(&Resource::Gpu, &all_devices(&Resource::Gpu), &[], 1)
        .unwrap();
    assert_eq!(key.uid, "new");
}

#[test]
fn unassigned_pod_gets_kubelets_choice_and_strangers_are_refused() {
    let mut h = handoff();
    h.upsert(pod("g", 1, vec![(ca("c", &[(0, 10)]), false)]));
    let ids = vec![format!("{}::s0", gpu(3))];
    assert_eq!(
        h.allocate(&Resource::Gpu, &ids, false),
        AllocateOutcome::Retry
    );
    match h.allocate(&Resource::Gpu, &ids, true) {
        AllocateOutcome::Refused { reason } => assert!(reason.contains("pod-g"), "{reason}"),
        other => panic!("{other:?}"),
    }
    h.upsert(PodRecord {
        uid: "other".into(),
        namespace: "ns".into(),
        name: "other".into(),
        order: 2,
        assignment: AssignmentState::None,
        containers: vec![ContainerRequests {
            name: "c".into(),
            requests: vec![(Resource::Gpu, 1)],
        }],
        terminated: false,
        admitted: false,
    });
    match h.allocate(&Resource::Gpu, &ids, false) {
        AllocateOutcome::Unassigned { key, plan } => {
            assert_eq!(key.uid, "other");
            assert_eq!(plan.gpus, vec![(gpu(3), None)]);
        }
        other => panic!("{other:?}"),
    }
    // With no pod known at all, the last try answers from kubelet's devices.
    let mut empty = handoff();
    let mem = vec![format!("{}::m0", gpu(1)), format!("{}::m1", gpu(1))];
    match empty.allocate(&Resource::GpuMemory, &mem, true) {
        AllocateOutcome::Unknown { plan } => assert_eq!(plan.gpus, vec![(gpu(1), Some(2 * GIB))]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        empty.allocate(&Resource::Gpu, &["garbage".to_string()], true),
        AllocateOutcome::Refused { .. }
    ));
}

#[test]
fn invalid_assignment_blocks_rather_than_guesses() {
    let mut h = handoff();
    let mut p = pod("bad", 1, vec![(ca("c", &[(0, 10)]), false)]);
    p.assignment = AssignmentState::Invalid("assignment: node: must name the node".into());
    h.upsert(p);
    let ids = vec![format!("{}::s0", gpu(0))];
    assert!(h.preferred(&Resource::Gpu, &ids, &[], 1).is_none());
    assert!(matches!(
        h.allocate(&Resource::Gpu, &ids, true),
        AllocateOutcome::Refused { .. }
    ));
}

#[test]
fn restarted_pod_does_not_inherit_and_finished_pods_leave() {
    let mut h = handoff();
    h.upsert(pod("v1", 1, vec![(ca("c", &[(0, 10)]), false)]));
    let ids = vec![format!("{}::s0", gpu(0))];
    assert!(matches!(
        h.allocate(&Resource::Gpu, &ids, false),
        AllocateOutcome::Assigned { .. }
    ));
    // Same name, new UID, new assignment on GPU 1.
    let mut again = pod("v2", 2, vec![(ca("c", &[(1, 10)]), false)]);
    again.name = "pod-v1".into();
    h.upsert(again);
    let (key, pref) = h
        .preferred(&Resource::Gpu, &all_devices(&Resource::Gpu), &[], 1)
        .unwrap();
    assert_eq!((key.uid.as_str(), gpus_of(&pref)), ("v2", vec![gpu(1)]));
    let mut done = pod("v1", 1, vec![]);
    done.terminated = true;
    h.upsert(done);
    assert_eq!(h.len(), 1);
}

#[test]
fn observed_allocations_are_not_pending_and_survive_relist() {
    let mut h = handoff();
    let p = pod("r", 1, vec![(ca("c", &[(0, 10)]), false)]);
    h.upsert(p.clone());
    h.observe(
        "ns",
        "pod-r",
        "c",
        "gpupack.io/gpu",
        &[format!("{}::s2", gpu(0))],
    );
    assert!(
        h.preferred(&Resource::Gpu, &all_devices(&Resource::Gpu), &[], 1)
            .is_none()
    );
    h.replace_all(vec![p]);
    assert!(
        h.preferred(&Resource::Gpu, &all_devices(&Resource::Gpu), &[], 1)
            .is_none()
    );
}

#[test]
fn verify_reports_only_mismatches() {
    let mut h = handoff();
    h.upsert(pod("m", 1, vec![(ca("c", &[(0, 10), (1, 10)]), true)]));
    let good = RecordedPod {
        namespace: "ns".into(),
        name: "pod-m".into(),
        devices: vec![(
            "c".into(),
            "gpupack.io/gpu".into(),
            vec![format!("{}::s0", gpu(0)), format!("{}::s3", gpu(1))],
        )],
    };
    assert!(h.verify(std::slice::from_ref(&good)).is_empty());
    let mut bad = good.clone();
    bad.devices[0].2[1] = format!("{}::s0", gpu(2));
    let m = h.verify(&[bad]);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].pod, "ns/pod-m");
    assert_eq!(m[0].resource, "gpupack.io/gpu");
}

#[test]
fn mig_requests_match_their_instances() {
    let mut h = handoff();
    let c = ContainerAssignment {
        name: "c".into(),
        gpus: vec![],
        mig: vec![AssignedMig {
            uuid: "MIG-b".into(),
            parent_uuid: gpu(0),
            profile: "1g.10gb".into(),
        }],
        engine: None,
    };
    let r = Resource::Mig("1g.10gb".into());
    let mut p = pod("mig", 1, vec![]);
    p.assignment = AssignmentState::Valid(PodAssignment {
        version: "v1".into(),
        node: "n".into(),
        containers: vec![c],
    });
    p.containers = vec![ContainerRequests {
        name: "c".into(),
        requests: vec![(r.clone(), 1)],
    }];
    h.upsert(p);
    let avail = vec!["MIG-a".to_string(), "MIG-b".to_string()];
    assert_eq!(
        h.preferred(&r, &avail, &[], 1).unwrap().1,
        vec!["MIG-b".to_string()]
    );
    assert!(matches!(
        h.allocate(&r, &["MIG-a".to_string()], true),
        AllocateOutcome::Refused { .. }
    ));
    match h.allocate(&r, &["MIG-b".to_string()], true) {
        AllocateOutcome::Assigned { plan, .. } => assert_eq!(plan.mig, vec!["MIG-b".to_string()]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn pick_respects_must_include_and_availability() {
    let shape: Shape = vec![(1, gpu(0), 2)];
    let avail: Vec<String> = (0..3).map(|u| format!("{}::m{u}", gpu(0))).collect();
    assert_eq!(
        pick(&shape, &avail, &[avail[2].clone()]).unwrap(),
        vec![avail[2].clone(), avail[0].clone()]
    );
    assert!(pick(&shape, &avail[..1], &[]).is_none());
    assert!(pick(&shape, &avail, &[format!("{}::m0", gpu(1))]).is_none());
}

/// A random node as the scheduler would fill it: up to 5 pods on 4 GPUs
/// (4 slices, 80 units each), each with 1-2 containers of 1-2 GPUs and
/// 1-40 GiB per GPU, some requesting memory units too; containers that
/// would overcommit a GPU are left out, as the scheduler would not place them.
fn arb_pods() -> impl Strategy<Value = Vec<PodRecord>> {
    let container = (
        prop::sample::subsequence(vec![0u32, 1, 2, 3], 1..=2),
        1u64..=40,
        any::<bool>(),
    );
    prop::collection::vec(prop::collection::vec(container, 1..=2), 1..=5).prop_map(|pods| {
        let mut slices = [0u32; 4];
        let mut units = [0u64; 4];
        pods.into_iter()
            .enumerate()
            .filter_map(|(i, cs)| {
                let containers: Vec<(ContainerAssignment, bool)> = cs
                    .into_iter()
                    .enumerate()
                    .filter(|(_, (gpus, gib, _))| {
                        let fits = gpus
                            .iter()
                            .all(|&g| slices[g as usize] < 4 && units[g as usize] + gib <= 80);
                        if fits {
                            for &g in gpus {
                                slices[g as usize] += 1;
                                units[g as usize] += gib;
                            }
                        }
                        fits
                    })
                    .map(|(j, (gpus, gib, mem))| {
                        let g: Vec<(u32, u64)> = gpus.into_iter().map(|x| (x, gib)).collect();
                        (ca(&format!("c{j}"), &g), mem)
                    })
                    .collect();
                (!containers.is_empty()).then(|| pod(&format!("p{i}"), i as u64, containers))
            })
            // The extender binds no pod that the plugin could confuse with
            // another still waiting for kubelet on the node.
            .fold(Vec::<PodRecord>::new(), |mut kept, p| {
                let confusable = kept.iter().any(|k| {
                    containers_of(k)
                        .iter()
                        .any(|a| containers_of(&p).iter().any(|b| a.confusable_with(b)))
                });
                if !confusable {
                    kept.push(p);
                }
                kept
            })
    })
}

fn containers_of(p: &PodRecord) -> Vec<ContainerAssignment> {
    match &p.assignment {
        AssignmentState::Valid(a) => a.containers.clone(),
        _ => vec![],
    }
}

fn assigned(p: &PodRecord, container: &str) -> ContainerAssignment {
    let AssignmentState::Valid(a) = &p.assignment else {
        panic!()
    };
    a.container(container).unwrap().clone()
}

proptest! {
    /// kubelet admits pods in binding order, containers in order, resources
    /// in random order, following the preferred allocation: every container
    /// receives its own assignment or one interchangeable with it.
    #[test]
    fn admitted_containers_get_their_assignment(pods in arb_pods(), flips in prop::collection::vec(any::<bool>(), 20)) {
        let mut h = handoff();
        for p in &pods { h.upsert(p.clone()); }
        let mut taken: Vec<String> = vec![];
        let mut flip = flips.into_iter().cycle();
        for p in &pods {
            for c in &p.containers {
                let mut reqs = c.requests.clone();
                if flip.next().unwrap() { reqs.reverse(); }
                for (r, n) in reqs {
                    let avail: Vec<String> = all_devices(&r).into_iter().filter(|d| !taken.contains(d)).collect();
                    let (_, ids) = h.preferred(&r, &avail, &[], n).expect("the scheduler never overcommits");
                    taken.extend(ids.iter().cloned());
                    match h.allocate(&r, &ids, true) {
                        AllocateOutcome::Assigned { plan, key, .. } => {
                            let got = ContainerAssignment {
                                name: String::new(),
                                gpus: plan.gpus.iter().map(|(u, b)| AssignedGpu { uuid: u.clone(), index: 0, memory_bytes: b.unwrap() }).collect(),
                                mig: vec![],
                                engine: None,
                            };
                            let want = assigned(p, &c.name);
                            prop_assert!(got.interchangeable_with(&want), "{:?} got {:?} ({:?}), assigned {:?}", (&p.uid, &c.name), key, got, want);
                            let mut planned: Vec<String> = plan.gpus.iter().map(|(u, _)| u.clone()).collect();
                            planned.sort();
                            prop_assert_eq!(planned, gpus_of(&ids));
                        }
                        other => prop_assert!(false, "{other:?}"),
                    }
                }
            }
        }
    }

    /// Whatever devices kubelet picks, an accepted Allocate names exactly
    /// the GPUs of those devices, and only from a pending assignment.
    #[test]
    fn accepted_devices_always_match_the_plan(pods in arb_pods(), picks in prop::collection::vec(prop::sample::subsequence((0..16usize).collect::<Vec<_>>(), 1..=2), 1..10)) {
        let mut h = handoff();
        for p in &pods { h.upsert(p.clone()); }
        let slices = all_devices(&Resource::Gpu);
        for pick in picks {
            let ids: Vec<String> = pick.iter().map(|&i| slices[i].clone()).collect();
            if gpus_of(&ids).len() != ids.len() { continue; }
            match h.allocate(&Resource::Gpu, &ids, true) {
                AllocateOutcome::Assigned { plan, .. } => {
                    let mut planned: Vec<String> = plan.gpus.iter().map(|(u, _)| u.clone()).collect();
                    planned.sort();
                    prop_assert_eq!(planned, gpus_of(&ids));
                }
                AllocateOutcome::Unknown { plan } => {
                    let mut planned: Vec<String> = plan.gpus.iter().map(|(u, _)| u.clone()).collect();
                    planned.sort();
                    prop_assert_eq!(planned, gpus_of(&ids));
                }
                AllocateOutcome::Refused { .. } | AllocateOutcome::Ambiguous { .. } => {}
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }
}

#[test]
fn pending_requests_are_known_by_resource_and_size() {
    let mut h = handoff();
    assert!(!h.has_pending(&Resource::Gpu, 1));
    h.upsert(pod("a", 1, vec![(ca("c", &[(0, 10)]), true)]));
    assert!(h.has_pending(&Resource::Gpu, 1));
    assert!(h.has_pending(&Resource::GpuMemory, 10));
    assert!(!h.has_pending(&Resource::Gpu, 2));
    assert!(!h.has_pending(&Resource::GpuMemory, 9));
    let ids = vec![format!("{}::s0", gpu(0))];
    assert!(matches!(
        h.allocate(&Resource::Gpu, &ids, false),
        AllocateOutcome::Assigned { .. }
    ));
    // Allocated: a call for one GPU now cannot be for this pod.
    assert!(!h.has_pending(&Resource::Gpu, 1));
    assert!(h.has_pending(&Resource::GpuMemory, 10));
}

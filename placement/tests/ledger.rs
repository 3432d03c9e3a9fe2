#![allow(clippy::unwrap_used)]
//! Ledger behaviour: feasibility reasons, device choice, holds and releases.

use placement::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const GIB: u64 = 1 << 30;

fn gpu(i: u32, gib: u64) -> GpuSpec {
    GpuSpec {
        index: i,
        uuid: format!("GPU-{i}"),
        product: "NVIDIA A100-SXM4-80GB".into(),
        memory_bytes: gib * GIB,
        health: Health::Healthy,
        numa_node: Some(i / 4),
        mig: vec![],
    }
}

/// Four GPUs: 0-1 and 2-3 NVLinked pairs, the pairs only across sockets.
fn node(name: &str) -> NodeSpec {
    let mut links = vec![];
    for a in 0..4u32 {
        for b in a + 1..4 {
            let nv = a / 2 == b / 2;
            links.push(LinkSpec {
                a,
                b,
                nvlinks: if nv { 4 } else { 0 },
                nvswitch: false,
                pcie: PcieLevel::CrossSocket,
            });
        }
    }
    NodeSpec {
        name: name.into(),
        gpus: (0..4).map(|i| gpu(i, 80)).collect(),
        links,
        slices_per_gpu: 4,
        cpu_milli: 64_000,
        memory_bytes: 512 * GIB,
    }
}

fn key(n: &str) -> PodKey {
    PodKey::new("ns", n, format!("uid-{n}"))
}

fn nvlink_pair(gib: u64) -> PodDemand {
    PodDemand {
        containers: vec![ContainerDemand {
            name: "server".into(),
            gpu: GpuNeed::Gpus {
                count: 2,
                memory: MemoryNeed::Bytes(gib * GIB),
                max_link: Some(LinkLevel::NvLink),
            },
        }],
        ..Default::default()
    }
}

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(7)
}

#[test]
fn multi_gpu_container_gets_an_nvlinked_pair() {
    let mut l = Ledger::new();
    let (id, _) = l.upsert_node(&node("n1")).unwrap();
    // Fill GPU 1 so the 0-1 pair is broken; 2-3 is the only NVLink pair left.
    let big = PodDemand::gpus(1, MemoryNeed::Bytes(70 * GIB));
    let s = l.scorer(Policy::Gpupack, &TypicalPods::default());
    let mut a = l.choose(id, &l.prepare(&big), &s, &mut rng()).unwrap();
    a.containers[0].gpus[0] = l
        .usage(id)
        .map(|u| GpuGrant {
            index: 1,
            uuid: u.gpus[1].uuid.clone(),
            memory_bytes: 70 * GIB,
            slices: 1,
            mig_uuid: None,
        })
        .unwrap();
    l.place(key("big"), a).unwrap();
    let d = nvlink_pair(40);
    let a = l.choose(id, &l.prepare(&d), &s, &mut rng()).unwrap();
    let idx: Vec<u32> = a.containers[0].gpus.iter().map(|g| g.index).collect();
    assert_eq!(idx, vec![2, 3]);
}

#[test]
fn filter_reason_names_the_link_domain_and_what_is_free() {
    let mut l = Ledger::new();
    let (id, _) = l.upsert_node(&node("n1")).unwrap();
    for (n, gpu_index) in [("a", 0u32), ("b", 2u32)] {
        let alloc = Allocation {
            node: "n1".into(),
            containers: vec![ContainerGrant {
                name: "c".into(),
                gpus: vec![GpuGrant {
                    index: gpu_index,
                    uuid: format!("GPU-{gpu_index}"),
                    memory_bytes: 60 * GIB,
                    slices: 1,
                    mig_uuid: None,
                }],
            }],
            cpu_milli: 0,
            memory_bytes: 0,
        };
        l.place(key(n), alloc).unwrap();
    }
    let d = nvlink_pair(38);
    let err = l.check(id, &l.prepare(&d)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container server needs 2 GPUs with 38.0 GiB free on one NVLink domain; largest free: 1"
    );
    assert!(!err.permanent, "fits once others leave");
}

#[test]
fn too_large_a_request_can_never_fit() {
    let mut l = Ledger::new();
    let (id, _) = l.upsert_node(&node("n1")).unwrap();
    let d = PodDemand::gpus(1, MemoryNeed::Bytes(100 * GIB));
    let err = l.check(id, &l.prepare(&d)).unwrap_err();
    assert!(err.permanent);
    let d = PodDemand::gpus(1, MemoryNeed::Whole).with_models(["H100"]);
    let err = l.check(id, &l.prepare(&d)).unwrap_err();
    assert!(err.permanent);
    assert!(
        err.to_string()
            .contains("no GPU of an allowed model (H100)")
    );
    let d = PodDemand::gpus(1, MemoryNeed::Whole).with_cpu(65_000, 0);
    let err = l.check(id, &l.prepare(&d)).unwrap_err();
    assert!(err.permanent);
    assert_eq!(err.to_string(), "needs 65 CPU; free: 64");
}

#[test]
fn unhealthy_gpus_take_nothing() {
    let mut spec = node("n1");
    for g in &mut spec.gpus[1..] {
        g.health = Health::Unhealthy;
    }
    let mut l = Ledger::new();
    let (id, _) = l.upsert_node(&spec).unwrap();
    let s = l.scorer(Policy::BestFit, &TypicalPods::default());
    let one = PodDemand::gpus(1, MemoryNeed::Bytes(GIB));
    let a = l.choose(id, &l.prepare(&one), &s, &mut rng()).unwrap();
    assert_eq!(a.containers[0].gpus[0].index, 0);
    let two = PodDemand::gpus(2, MemoryNeed::Bytes(GIB));
    let err = l.check(id, &l.prepare(&two)).unwrap_err();
    assert!(err.permanent);
    // A grant on an unhealthy GPU is refused for new pods, adopted for running ones.
    let mut bad = a.clone();
    bad.containers[0].gpus[0].index = 1;
    bad.containers[0].gpus[0].uuid = "GPU-1".into();
    assert!(l.place(key("new"), bad.clone()).is_err());
    l.adopt(key("running"), bad).unwrap();
}

#[test]
fn never_over_commits_and_refuses_whole() {
    let mut l = Ledger::new();
    let (id, _) = l.upsert_node(&node("n1")).unwrap();
    let grant = |gib: u64| Allocation {
        node: "n1".into(),
        containers: vec![ContainerGrant {
            name: "c".into(),
            gpus: vec![GpuGrant {
                index: 0,
                uuid: "GPU-0".into(),
                memory_bytes: gib * GIB,
                slices: 1,
                mig_uuid: None,
            }],
        }],
        cpu_milli: 1000,
        memory_bytes: GIB,
    };
    l.place(key("a"), grant(50)).unwrap();
    let before = l.clone();
    assert!(matches!(
        l.place(key("b"), grant(31)),
        Err(LedgerError::DoesNotFit(_))
    ));
    assert!(matches!(
        l.place(key("a"), grant(1)),
        Err(LedgerError::AlreadyPlaced(_))
    ));
    assert_eq!(l, before);
    assert_eq!(l.usage(id).unwrap().gpus[0].free_bytes, 30 * GIB);
}

#[test]
fn reservations_expire_by_caller_time_and_confirm() {
    let mut l = Ledger::new();
    let (id, _) = l.upsert_node(&node("n1")).unwrap();
    let empty = l.clone();
    let s = l.scorer(Policy::Gpupack, &TypicalPods::default());
    let d = PodDemand::gpus(1, MemoryNeed::Whole);
    let p = l.prepare(&d);
    let a = l.choose(id, &p, &s, &mut rng()).unwrap();
    l.reserve(key("a"), a, 100).unwrap();
    let b = l.choose(id, &l.prepare(&d), &s, &mut rng()).unwrap();
    assert_eq!(l.holding(&key("a")).unwrap().1, Some(100));
    l.confirm(&key("a")).unwrap();
    l.reserve(key("b"), b.clone(), 200).unwrap();
    assert!(l.expire(199).is_empty());
    let gone = l.expire(200);
    assert_eq!(gone, vec![(key("b"), b)]);
    assert!(l.holding(&key("a")).is_some());
    assert!(matches!(
        l.confirm(&key("a")),
        Err(LedgerError::NotReserved(_))
    ));
    l.release(&key("a")).unwrap();
    assert_eq!(l, empty);
}

#[test]
fn mig_instances_are_granted_by_profile() {
    let mut spec = node("n1");
    spec.gpus[3].mig = (0..2)
        .map(|i| MigSpec {
            uuid: format!("MIG-{i}"),
            profile: "3g.40gb".into(),
            memory_bytes: 40 * GIB,
            health: Health::Healthy,
        })
        .collect();
    let mut l = Ledger::new();
    let (id, _) = l.upsert_node(&spec).unwrap();
    let s = l.scorer(Policy::BestFit, &TypicalPods::default());
    let d = PodDemand {
        containers: vec![ContainerDemand {
            name: "c".into(),
            gpu: GpuNeed::Mig {
                profile: "3g.40gb".into(),
                min_memory: 0,
            },
        }],
        ..Default::default()
    };
    for n in ["a", "b"] {
        let a = l.choose(id, &l.prepare(&d), &s, &mut rng()).unwrap();
        assert_eq!(a.containers[0].gpus[0].index, 3);
        l.place(key(n), a).unwrap();
    }
    let err = l.check(id, &l.prepare(&d)).unwrap_err();
    assert!(!err.permanent);
    assert!(err.to_string().contains("MIG 3g.40gb"));
    // Whole-GPU work never lands on the MIG GPU.
    let whole = PodDemand::gpus(4, MemoryNeed::Whole);
    assert!(l.check(id, &l.prepare(&whole)).unwrap_err().permanent);
}

#[test]
fn decide_picks_a_node_and_first_fit_the_first() {
    let mut l = Ledger::new();
    for n in ["n1", "n2", "n3"] {
        l.upsert_node(&node(n)).unwrap();
    }
    let d = PodDemand::gpus(1, MemoryNeed::Bytes(10 * GIB));
    let ff = l.scorer(Policy::FirstFit, &TypicalPods::default());
    let a = l.decide(&l.prepare(&d), &ff, &mut rng()).unwrap();
    assert_eq!(a.node, "n1");
    let too_big = PodDemand::gpus(5, MemoryNeed::Whole);
    for p in Policy::ALL {
        let s = l.scorer(
            p,
            &TypicalPods::from_workload([&d], placement::TYPICAL_COVERAGE),
        );
        assert!(
            l.decide(&l.prepare(&too_big), &s, &mut rng()).is_none(),
            "{p}"
        );
        assert!(l.decide(&l.prepare(&d), &s, &mut rng()).is_some(), "{p}");
    }
}

#[test]
fn packing_policies_fill_used_gpus_first() {
    let mut l = Ledger::new();
    l.upsert_node(&node("n1")).unwrap();
    l.upsert_node(&node("n2")).unwrap();
    let d = PodDemand::gpus(1, MemoryNeed::Milli(300));
    let t = TypicalPods::from_workload([&d], placement::TYPICAL_COVERAGE);
    for p in [
        Policy::Gpupack,
        Policy::Fgd,
        Policy::BestFit,
        Policy::Packing,
    ] {
        let mut l = l.clone();
        let s = l.scorer(p, &t);
        let a = l.decide(&l.prepare(&d), &s, &mut rng()).unwrap();
        let first = (a.node.clone(), a.containers[0].gpus[0].index);
        l.place(key("a"), a).unwrap();
        let b = l.decide(&l.prepare(&d), &s, &mut rng()).unwrap();
        assert_eq!(
            (b.node.clone(), b.containers[0].gpus[0].index),
            first,
            "{p}"
        );
    }
}

#[test]
fn inventory_update_keeps_holdings() {
    let mut l = Ledger::new();
    let (id, _) = l.upsert_node(&node("n1")).unwrap();
    let s = l.scorer(Policy::Gpupack, &TypicalPods::default());
    let d = PodDemand::gpus(1, MemoryNeed::Bytes(10 * GIB));
    let a = l.choose(id, &l.prepare(&d), &s, &mut rng()).unwrap();
    let used = a.containers[0].gpus[0].index as usize;
    l.place(key("a"), a).unwrap();
    let mut spec = node("n1");
    spec.gpus[used].health = Health::Unhealthy;
    let (_, lost) = l.upsert_node(&spec).unwrap();
    assert!(lost.is_empty());
    let u = l.usage(id).unwrap();
    assert_eq!(u.gpus[used].free_bytes, 70 * GIB);
    assert!(!u.gpus[used].healthy);
    l.release(&key("a")).unwrap();
    assert_eq!(l.usage(id).unwrap().gpus[used].free_bytes, 80 * GIB);
    assert_eq!(l.remove_node("n1"), Vec::<PodKey>::new());
    assert!(l.node_id("n1").is_none());
}

#[test]
fn policies_parse_by_name_and_scores_scale() {
    assert_eq!("best-fit".parse::<Policy>().unwrap(), Policy::BestFit);
    assert_eq!("FGD".parse::<Policy>().unwrap(), Policy::Fgd);
    assert!("nope".parse::<Policy>().is_err());
    assert_eq!(scale_scores(&[1.0, 2.0, 3.0], 10), vec![0, 5, 10]);
    assert_eq!(scale_scores(&[4.0, 4.0], 10), vec![10, 10]);
}

/// A node of `gpus` whole GPUs and `cores` CPUs, no links.
fn plain(name: &str, gpus: u32, cores: u64) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        gpus: (0..gpus).map(|i| gpu(i, 80)).collect(),
        links: vec![],
        slices_per_gpu: 4,
        cpu_milli: cores * 1000,
        memory_bytes: 512 * GIB,
    }
}

#[test]
fn gpupack_sends_cpu_only_pods_where_they_strand_no_gpu() {
    // 8 GPUs with 12 cores each, as whole-GPU pods of 11 cores need, and a
    // node with CPU to spare. A CPU-only pod on the first would leave a GPU
    // without the CPU its typical pod brings.
    let mut l = Ledger::new();
    l.upsert_node(&plain("tight", 8, 96)).unwrap();
    l.upsert_node(&plain("roomy", 2, 104)).unwrap();
    let gpu_pod = PodDemand::gpus(1, MemoryNeed::Whole).with_cpu(11_000, 0);
    let cpu_pod = PodDemand::default().with_cpu(12_000, 0);
    let typical = TypicalPods::from_workload(
        [&gpu_pod, &gpu_pod, &gpu_pod, &cpu_pod],
        placement::TYPICAL_COVERAGE,
    );
    let s = l.scorer(Policy::Gpupack, &typical);
    let prep = l.prepare(&cpu_pod);
    let tight = l.score(l.node_id("tight").unwrap(), &prep, &s).unwrap();
    let roomy = l.score(l.node_id("roomy").unwrap(), &prep, &s).unwrap();
    assert!(roomy > tight, "roomy {roomy} vs tight {tight}");
    let fgd = l.scorer(Policy::Fgd, &typical);
    let tight_fgd = l.score(l.node_id("tight").unwrap(), &prep, &fgd).unwrap();
    let roomy_fgd = l.score(l.node_id("roomy").unwrap(), &prep, &fgd).unwrap();
    assert!(roomy_fgd <= tight_fgd, "FGD alone does not see it");
}

#[test]
fn ordered_ties_go_to_one_node_and_random_keeps_drawing() {
    let mut l = Ledger::new();
    for n in 0..16 {
        l.upsert_node(&plain(&format!("n{n}"), 4, 64)).unwrap();
    }
    let d = PodDemand::gpus(1, MemoryNeed::Bytes(10 * GIB));
    let typical = TypicalPods::from_workload([&d], placement::TYPICAL_COVERAGE);
    let chosen = |l: &Ledger, p: Policy, seed: u64| -> std::collections::BTreeSet<String> {
        let s = l.scorer(p, &typical);
        (0..20)
            .map(|k| {
                let a = l.decide(&l.prepare(&d), &s, &mut ChaCha8Rng::seed_from_u64(seed + k));
                a.unwrap().node
            })
            .collect()
    };
    // All nodes are empty and alike: every policy ties on all of them.
    assert!(chosen(&l, Policy::BestFit, 1).len() > 1);
    l.order_ties(7);
    assert_eq!(chosen(&l, Policy::BestFit, 1).len(), 1);
    assert_eq!(chosen(&l, Policy::BestFit, 1), chosen(&l, Policy::Fgd, 99));
    assert!(chosen(&l, Policy::Random, 1).len() > 1);
}

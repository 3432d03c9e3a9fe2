#![allow(clippy::unwrap_used)]
//! Decision time per pod at 5,000 nodes × 8 GPUs.
//!
//! Run: `cargo bench -p placement --bench decision`. Prints p50/p99 for
//! (a) the extender's path: filter (`check`) and prioritize (`score`) on
//! every node, and (b) `decide` (all nodes, identical states scored once),
//! after 20 unmeasured decisions that measure every node state once, as in a
//! scheduler that has been running. Three passes over 200 pods; each pod's
//! median of the three is kept.

use std::time::Instant;

use placement::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NODES: usize = 5_000;
const GPUS: u32 = 8;
const GIB: u64 = 1 << 30;

fn node(n: usize) -> NodeSpec {
    let mut links = vec![];
    for a in 0..GPUS {
        for b in a + 1..GPUS {
            links.push(LinkSpec {
                a,
                b,
                nvlinks: 18,
                nvswitch: n.is_multiple_of(2),
                pcie: if a / 4 == b / 4 {
                    PcieLevel::SameNuma
                } else {
                    PcieLevel::CrossSocket
                },
            });
        }
    }
    NodeSpec {
        name: format!("node-{n:05}"),
        gpus: (0..GPUS)
            .map(|i| GpuSpec {
                index: i,
                uuid: format!("GPU-{n}-{i}"),
                product: if n.is_multiple_of(3) {
                    "NVIDIA A100-SXM4-80GB".into()
                } else {
                    "NVIDIA H100 80GB HBM3".into()
                },
                memory_bytes: 80 * GIB,
                health: Health::Healthy,
                numa_node: Some(i / 4),
                mig: vec![],
            })
            .collect(),
        links,
        slices_per_gpu: 8,
        cpu_milli: 192_000,
        memory_bytes: 2048 * GIB,
    }
}

fn demand(rng: &mut ChaCha8Rng) -> PodDemand {
    let (count, gib) = match rng.random_range(0..10) {
        0..=4 => (1, rng.random_range(8..40)),
        5..=7 => (2, rng.random_range(20..70)),
        8 => (4, rng.random_range(30..75)),
        _ => (8, 70),
    };
    PodDemand {
        containers: vec![ContainerDemand {
            name: "server".into(),
            gpu: GpuNeed::Gpus {
                count,
                memory: MemoryNeed::Bytes(gib * GIB),
                max_link: (count > 1).then_some(LinkLevel::NvLink),
            },
        }],
        allowed_models: vec![],
        cpu_milli: 4_000 * count as u64,
        memory_bytes: 32 * GIB * count as u64,
    }
}

/// Timed passes over the pods.
const PASSES: usize = 3;

fn median(mut v: [f64; PASSES]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[PASSES / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut ledger = Ledger::new();
    for n in 0..NODES {
        ledger.upsert_node(&node(n)).unwrap();
    }
    let mix: Vec<PodDemand> = (0..200).map(|_| demand(&mut rng)).collect();
    // The mix as the extender takes it from the pods it sees.
    let typical = TypicalPods::from_workload(mix.iter(), placement::TYPICAL_COVERAGE);
    // Fill to about 60 % of GPU memory with a mixed, diverse occupancy.
    let fill = ledger.scorer(Policy::Random, &typical);
    let mut k = 0;
    let mut placed_gib = 0u64;
    while placed_gib < (NODES as u64 * GPUS as u64 * 80) * 6 / 10 {
        let d = demand(&mut rng);
        let Some(a) = ledger.decide(&ledger.prepare(&d), &fill, &mut rng) else {
            break;
        };
        placed_gib += a.gpu_memory_bytes() / GIB;
        ledger
            .place(PodKey::new("bench", format!("fill-{k}"), ""), a)
            .unwrap();
        k += 1;
    }
    println!(
        "{NODES} nodes x {GPUS} GPUs, {k} pods placed ({placed_gib} GiB), {} typical pod kinds",
        typical.pods().len()
    );
    let pods: Vec<PodDemand> = (0..200).map(|_| demand(&mut rng)).collect();
    for policy in [Policy::Gpupack, Policy::Fgd, Policy::BestFit] {
        let scorer = ledger.scorer(policy, &typical);
        // Warm up as a running scheduler is: every node state measured once.
        for d in pods.iter().take(20) {
            std::hint::black_box(ledger.decide(&ledger.prepare(d), &scorer, &mut rng));
        }
        // Three passes over all pods, each pod's median kept: a pause of
        // the machine (another process, an interrupt) falls in one pass and
        // is not the code's.
        let mut filter_score = vec![[0.0; PASSES]; pods.len()];
        let mut decide = vec![[0.0; PASSES]; pods.len()];
        let mut feasible = 0usize;
        for pass in 0..PASSES {
            for (k, d) in pods.iter().enumerate() {
                let t = Instant::now();
                let prep = ledger.prepare(d);
                let mut best = f64::NEG_INFINITY;
                for id in ledger.node_ids() {
                    match ledger.score(id, &prep, &scorer) {
                        Ok(s) => {
                            feasible += usize::from(pass == 0);
                            best = best.max(s);
                        }
                        Err(unfit) => {
                            std::hint::black_box((unfit.to_string(), unfit.permanent));
                        }
                    }
                }
                std::hint::black_box(best);
                filter_score[k][pass] = t.elapsed().as_secs_f64() * 1e3;
                let t = Instant::now();
                std::hint::black_box(ledger.decide(&ledger.prepare(d), &scorer, &mut rng));
                decide[k][pass] = t.elapsed().as_secs_f64() * 1e3;
            }
        }
        let mut filter_score: Vec<f64> = filter_score.into_iter().map(median).collect();
        let mut decide: Vec<f64> = decide.into_iter().map(median).collect();
        println!(
            "{policy:<8} filter+score all nodes: p50 {:.2} ms, p99 {:.2} ms (mean feasible nodes {}) | decide: p50 {:.2} ms, p99 {:.2} ms",
            pct(&mut filter_score, 0.5),
            pct(&mut filter_score, 0.99),
            feasible / pods.len(),
            pct(&mut decide, 0.5),
            pct(&mut decide, 0.99),
        );
    }
}

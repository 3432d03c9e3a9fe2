//! Filter + prioritize latency and throughput, with JSON bodies as
//! kube-scheduler sends them in `nodeCacheCapable: true` mode (the whole
//! pod, every candidate node name), against a cluster of 8-GPU nodes about
//! half full.
//!
//! ```sh
//! cargo bench -p scheduler-ext --bench extender -- [--nodes 500,5000] [--decisions 400] [--seconds 3]
//! ```
//!
//! Prints, per cluster size, p50/p99/max of one decision (filter then
//! prioritize, parsing and answering included) and the decisions per
//! second one thread sustains.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use placement::PodKey;
use rand::{Rng, SeedableRng};
use scheduler_ext::PodNeeds;
use scheduler_ext::cluster_state::ClusterState;
use scheduler_ext::events::Events;
use scheduler_ext::http::{App, filter_reply, prioritize_reply};
use scheduler_ext::metrics::Metrics;
use scheduler_ext::synthetic::{inventory, pod};
use scheduler_ext::translate::assignment_of;
use scheduler_ext::watch::Readiness;

const GPUS: u32 = 8;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A cluster of `nodes` nodes with pods on about half their GPU memory.
fn cluster(nodes: usize, rng: &mut rand_chacha::ChaCha8Rng) -> ClusterState {
    let mut s = ClusterState::new(placement::Policy::Gpupack);
    for i in 0..nodes {
        s.apply_inventory(&inventory(&format!("node-{i:05}"), GPUS), 0);
    }
    let sizes: [(u32, Option<u64>); 5] = [
        (1, Some(20)),
        (1, Some(40)),
        (1, None),
        (2, None),
        (4, Some(160)),
    ];
    let mut n = 0;
    for i in 0..nodes {
        let node = format!("node-{i:05}");
        let inv = s.inventory(&node).unwrap();
        let id = s.ledger().node_id(&node).unwrap();
        for _ in 0..rng.random_range(0..5) {
            let (gpus, units) = sizes[rng.random_range(0..sizes.len())];
            let needs = PodNeeds::from_pod(&pod("ml", "x", "x", gpus, units)).unwrap();
            let demand = needs.demand(1 << 30);
            let scorer = s.ledger().scorer(s.policy(), s.typical());
            let prep = s.ledger().prepare(&demand);
            let Ok(alloc) = s.ledger().choose(id, &prep, &scorer, rng) else {
                continue;
            };
            let a = assignment_of(&alloc, &inv);
            n += 1;
            let key = PodKey::new("ml", format!("filler-{n}"), format!("uid-{n}"));
            s.apply_pod(key, Some(a));
        }
    }
    s.refresh_typical();
    s
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let sizes: Vec<usize> = arg("--nodes")
        .unwrap_or_else(|| "500,5000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let decisions: usize = arg("--decisions")
        .map(|s| s.parse().unwrap())
        .unwrap_or(400);
    let seconds: f64 = arg("--seconds").map(|s| s.parse().unwrap()).unwrap_or(3.0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    println!("filter+prioritize, nodeCacheCapable: true, {GPUS} GPUs per node, one thread");
    for nodes in sizes {
        let state = cluster(nodes, &mut rng);
        let names: Vec<String> = (0..nodes).map(|i| format!("node-{i:05}")).collect();
        let app = App {
            state: Arc::new(RwLock::new(state)),
            binder: None,
            events: Events::disabled(),
            metrics: Arc::new(Metrics::new()),
            readiness: Arc::new(Readiness::default()),
            models: Arc::new(model_source::Offline),
            preemptor: None,
        };
        app.readiness.set_ready();
        // Bodies as kube-scheduler sends them: the full pod, all names.
        let bodies: Vec<Vec<u8>> = [(1, Some(40)), (4, Some(160)), (1, None), (2, Some(60))]
            .iter()
            .enumerate()
            .map(|(i, (g, u))| {
                let p = pod("ml", &format!("llm-{i}"), &format!("uid-llm-{i}"), *g, *u);
                serde_json::to_vec(
                    &serde_json::json!({"Pod": p, "Nodes": null, "NodeNames": names}),
                )
                .unwrap()
            })
            .collect();
        let body_kib = bodies[0].len() / 1024;
        let mut feasible = 0usize;
        let only = arg("--only").unwrap_or_default();
        let mut once = |k: usize| {
            let body = &bodies[k % bodies.len()];
            if only != "prioritize" {
                let (f, _) = filter_reply(&app, body);
                feasible = f.node_names.as_ref().map_or(0, Vec::len);
            }
            if only != "filter" {
                let p = prioritize_reply(&app, body).unwrap();
                assert_eq!(p.len(), nodes);
            }
        };
        for k in 0..20 {
            once(k);
        }
        let mut lat = Vec::with_capacity(decisions);
        for k in 0..decisions {
            let t = Instant::now();
            once(k);
            lat.push(t.elapsed());
        }
        lat.sort();
        let start = Instant::now();
        let mut done = 0usize;
        while start.elapsed().as_secs_f64() < seconds {
            once(done);
            done += 1;
        }
        let rate = done as f64 / start.elapsed().as_secs_f64();
        println!(
            "nodes {nodes:>5}  body {body_kib:>4} KiB  feasible(last) {feasible:>5}  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  sustained {rate:>8.0} decisions/s",
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat.last().unwrap().as_secs_f64() * 1e3,
        );
    }
}

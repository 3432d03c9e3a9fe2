//! The shipped LLM fleet (`gpupack/workloads/mixed-fleet.yaml`, 71 pods on
//! 11 nodes) replayed through kube-scheduler's sequence (the driver, with
//! the extender as shipped, against the API stand-in and kubelet's
//! admission writes), in the arrival order `gpupack simulate --workload`
//! uses for a seed: the same seed places every pod in the same place twice,
//! as many pods as `gpupack simulate` places with the extender's policy,
//! with no bind rejected.
//!
//! The simulator's fragmentation measure uses the whole workload's pod
//! mix; the extender derives its mix from every GPU pod it sees, pending or
//! bound, so once it has seen the pods waiting it uses the same mix.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apiserver_standin::{ApiServer, ResourceType};
use e2e::admission::{AdmissionOptions, AdmissionSimulator};
use e2e::fleet::{self, Placements};
use e2e::scheduler::{DriverOptions, SchedulerDriver};
use e2e::spec::NAMESPACE;
use e2e::view::ClusterView;
use gpupack::simulate::workload::{self, Workload, replay};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use proto::inventory::GpuNodeInventory;

/// What one replay through the driver ended with.
struct DriverRun {
    placements: Placements,
    bind_rejections: u64,
    failures: Vec<(String, String)>,
}

/// Replays `order` through the driver with `seed`, binds awaited, until
/// `expected` pods are bound (or 120 s pass), then lets it run for another
/// half second to catch binds beyond the expected count.
async fn through_driver(
    w: &Workload,
    order: &[usize],
    seed: u64,
    expected: usize,
) -> Result<DriverRun> {
    let api = ApiServer::start().await?;
    api.register(ResourceType::gpu_node_inventory());
    let harness = api.client_as("e2e").await?;
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<Namespace>::all(harness.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    for spec in &w.fleet.specs {
        let inv = fleet::inventory(spec);
        let (cpu, memory) = fleet::capacity(spec);
        api.store()
            .put_as(&e2e::inprocess::node(&inv, &cpu, &memory)?)?;
        api.store().put_as(&GpuNodeInventory::for_node(inv))?;
    }
    let admission = AdmissionSimulator::start(
        api.client_as("kubelet").await?,
        AdmissionOptions {
            admit_after: Duration::from_millis(20),
            running_after: Duration::from_millis(50),
        },
    );
    let (ext, url) = e2e::inprocess::start_extender(&api).await?;
    let pods: Api<Pod> = Api::namespaced(harness.clone(), NAMESPACE);
    for (k, &d) in order.iter().enumerate() {
        pods.create(
            &PostParams::default(),
            &fleet::pod(k, &w.deployments[d]).build(),
        )
        .await
        .with_context(|| format!("creating pod {k}"))?;
    }
    // The pending pods reach the extender's typical mix within a second.
    let seen = Instant::now() + Duration::from_secs(10);
    loop {
        let count = ext
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .typical_pod_count();
        if count == order.len() {
            break;
        }
        if Instant::now() > seen {
            bail!(
                "the extender's typical mix counts {count} pods, not the {} pending",
                order.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut options = DriverOptions::shipped(&url)?;
    options.sequential_binds = true;
    options.seed = seed;
    let driver = SchedulerDriver::start(api.client_as("kube-scheduler").await?, options);
    let deadline = Instant::now() + Duration::from_secs(120);
    while driver.stats().binds_ok < expected as u64 {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = driver.stats();
    drop(driver);
    ext.shutdown().await;
    drop(admission);
    let mut placements = Placements::new();
    for p in api.store().list_as::<Pod>(Some(NAMESPACE))? {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let Some(a) = ClusterView::assignment(&p) else {
            bail!(
                "pod {:?} is bound without a readable assignment",
                p.metadata.name
            );
        };
        let mut devices: Vec<String> = a
            .containers
            .iter()
            .flat_map(|c| {
                c.gpus
                    .iter()
                    .map(|g| format!("gpu{}", g.index))
                    .chain(c.mig.iter().map(|m| m.uuid.clone()))
            })
            .collect();
        devices.sort();
        placements.insert(p.metadata.name.clone().unwrap_or_default(), (node, devices));
    }
    api.stop().await;
    Ok(DriverRun {
        placements,
        bind_rejections: stats.bind_errors,
        failures: stats.failures,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_replays_through_the_driver_as_the_simulator_places_it() {
    let w = workload::parse(workload::EXAMPLE_PATH, workload::EXAMPLE).unwrap();
    let policy = e2e::inprocess::shipped_extender_config().unwrap().policy;
    // `gpupack simulate`'s mix: the whole workload's.
    let typical = replay::typical_pods(&w.deployments);
    for seed in [42, 43] {
        let order = replay::order(&w.deployments, seed);
        let simulated = replay::replay(&w, &order, policy, &typical, seed).unwrap();
        let first = through_driver(&w, &order, seed, simulated.placed)
            .await
            .unwrap();
        eprintln!(
            "seed {seed}: simulator placed {} of {}; driver bound {} with {} bind rejections",
            simulated.placed,
            order.len(),
            first.placements.len(),
            first.bind_rejections
        );
        assert_eq!(first.bind_rejections, 0, "{:?}", first.failures);
        assert_eq!(
            first.placements.len(),
            simulated.placed,
            "seed {seed}: pods placed through the driver and by the simulator; failures: {:?}",
            first.failures.iter().take(5).collect::<Vec<_>>()
        );
        let again = through_driver(&w, &order, seed, simulated.placed)
            .await
            .unwrap();
        let differ: Vec<String> = first
            .placements
            .iter()
            .filter(|(pod, at)| again.placements.get(*pod) != Some(*at))
            .map(|(pod, at)| format!("{pod}: {at:?} then {:?}", again.placements.get(pod)))
            .collect();
        assert!(
            differ.is_empty() && again.placements.len() == first.placements.len(),
            "seed {seed}: a second run placed differently: {differ:#?}"
        );
    }
}

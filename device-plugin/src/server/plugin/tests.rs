//! The plugin's gRPC handlers under input kubelet would never send:
//! unknown, foreign and repeated IDs, huge lists, odd sizes. Answers may
//! only name devices the plugin advertised for the resource asked about.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proto::deviceplugin::{
    ContainerAllocateRequest, ContainerPreferredAllocationRequest, PreferredAllocationRequest,
};
use tonic::Code;

use super::*;
use crate::resource::backend::simulated;

fn service(file: &str, resource: Resource) -> DevicePluginService {
    let inventory = simulated::load_example(file);
    let (_tx, snapshots) = watch::channel(Arc::new(Snapshot {
        generation: 1,
        inventory,
    }));
    let ctx = Arc::new(PluginContext {
        snapshots,
        handoff: Arc::new(HandoffHandle::new(1 << 30)),
        metrics: Arc::new(Metrics::new()),
        strategy: DeviceListStrategy::Envvar,
        handoff_wait: Duration::ZERO,
        allocated: Arc::new(Notify::new()),
        delivered: Arc::new(Delivered::default()),
    });
    DevicePluginService::new(resource, ctx, CancellationToken::new())
}

fn ids_of(svc: &DevicePluginService, resource: &Resource) -> Vec<String> {
    known_devices(&svc.snapshot(), resource)
        .into_iter()
        .collect()
}

fn sorted_ids(svc: &DevicePluginService) -> Vec<String> {
    let mut v = ids_of(svc, &svc.resource);
    v.sort();
    v
}

fn preferred_request(
    available: Vec<String>,
    must: Vec<String>,
    size: i32,
) -> Request<PreferredAllocationRequest> {
    Request::new(PreferredAllocationRequest {
        container_requests: vec![ContainerPreferredAllocationRequest {
            available_device_i_ds: available,
            must_include_device_i_ds: must,
            allocation_size: size,
        }],
    })
}

fn allocate_request(ids: Vec<String>) -> Request<AllocateRequest> {
    Request::new(AllocateRequest {
        container_requests: vec![ContainerAllocateRequest { devices_ids: ids }],
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const H100: &str = "h100-sxm-8x-nvswitch.yaml";

#[test]
fn preferred_refuses_ids_that_are_no_device_of_the_resource() {
    let rt = runtime();
    let svc = service(H100, Resource::GpuMemory);
    let units = sorted_ids(&svc);
    let err = rt
        .block_on(svc.get_preferred_allocation(preferred_request(
            units.clone(),
            vec!["zzz".into()],
            2,
        )))
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("mustInclude: zzz is not a device of gpupack.io/gpu-memory"),
        "{err}"
    );

    let slice = ids_of(&svc, &Resource::Gpu).pop().unwrap();
    let err = rt
        .block_on(svc.get_preferred_allocation(preferred_request(vec![slice.clone()], vec![], 1)))
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains(&slice), "{err}");

    let long = "x".repeat(1 << 20);
    let err = rt
        .block_on(svc.get_preferred_allocation(preferred_request(vec![long], vec![], 1)))
        .unwrap_err();
    assert!(err.message().len() < 400, "{}", err.message().len());
}

#[test]
fn preferred_names_each_device_once() {
    let rt = runtime();
    let svc = service(H100, Resource::GpuMemory);
    let units = sorted_ids(&svc);
    let twice = vec![units[0].clone(), units[0].clone(), units[1].clone()];
    let answer = rt
        .block_on(svc.get_preferred_allocation(preferred_request(twice, vec![], 2)))
        .unwrap()
        .into_inner();
    let ids = &answer.container_responses[0].device_i_ds;
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_ne!(ids[0], ids[1], "{ids:?}");
}

#[test]
fn preferred_is_fast_on_huge_lists() {
    let rt = runtime();
    for resource in [Resource::Gpu, Resource::GpuMemory] {
        let svc = service(H100, resource.clone());
        let all = sorted_ids(&svc);
        // 100,000 available IDs and 20,000 must-include ones, as a
        // misbehaving caller could send: the node's IDs over and over, and a
        // size beyond what the must-include IDs cover.
        let available: Vec<String> = all.iter().cycle().take(100_000).cloned().collect();
        let half = &all[..all.len() / 2];
        let must: Vec<String> = half.iter().cycle().take(20_000).cloned().collect();
        let start = Instant::now();
        let answer = rt
            .block_on(svc.get_preferred_allocation(preferred_request(available, must, 40_000)))
            .unwrap()
            .into_inner();
        let took = start.elapsed();
        println!(
            "{}: GetPreferredAllocation with 100,000 available and 20,000 must-include IDs in {took:?}",
            resource.name()
        );
        let ids = &answer.container_responses[0].device_i_ds;
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| all.contains(id)), "{ids:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}

#[test]
fn allocate_refuses_empty_and_repeated_lists() {
    let rt = runtime();
    let svc = service(H100, Resource::GpuMemory);
    let units = sorted_ids(&svc);
    let err = rt
        .block_on(svc.allocate(allocate_request(vec![])))
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("names no device"), "{err}");
    let err = rt
        .block_on(svc.allocate(allocate_request(vec![units[3].clone(), units[3].clone()])))
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains(&format!(
            "device {} of gpupack.io/gpu-memory is listed twice",
            units[3]
        )),
        "{err}"
    );
    let ok = rt
        .block_on(svc.allocate(allocate_request(vec![units[3].clone()])))
        .unwrap();
    assert_eq!(ok.into_inner().container_responses.len(), 1);
}

/// One ID a fuzzed request may carry: the resource's own, another
/// resource's, another node's, or junk.
fn any_id(own: Vec<String>, foreign: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(own),
        1 => proptest::sample::select(foreign),
        1 => "[a-zA-Z0-9:_.-]{0,40}",
        1 => Just(String::new()),
    ]
}

fn id_list(own: &[String], foreign: &[String]) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(any_id(own.to_vec(), foreign.to_vec()), 0..48)
}

/// Every service this node and the MIG node run, with the IDs of the others.
fn services() -> Vec<(DevicePluginService, Vec<String>, Vec<String>)> {
    let mig = service("a100-mig.yaml", Resource::Mig("1g.10gb".into()));
    let mig_ids = sorted_ids(&mig);
    let gpu = service(H100, Resource::Gpu);
    let mem = service(H100, Resource::GpuMemory);
    let (gpu_ids, mem_ids) = (sorted_ids(&gpu), sorted_ids(&mem));
    vec![
        (
            gpu,
            gpu_ids.clone(),
            [mem_ids.clone(), mig_ids.clone()].concat(),
        ),
        (
            mem,
            mem_ids.clone(),
            [gpu_ids.clone(), mig_ids.clone()].concat(),
        ),
        (mig, mig_ids, [gpu_ids, mem_ids].concat()),
    ]
}

const CASES: u32 = 256;
/// Generous: a debug build answers these in milliseconds.
const ANSWER_LIMIT: Duration = Duration::from_secs(2);

#[test]
fn fuzzed_preferred_allocation_names_only_offered_devices() {
    let rt = runtime();
    let calls = std::cell::Cell::new(0u32);
    for (svc, own, foreign) in services() {
        let known: HashSet<String> = own.iter().cloned().collect();
        let requests = (id_list(&own, &foreign), id_list(&own, &foreign), -3i32..80);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: CASES,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&requests, |(available, must, size)| {
                calls.set(calls.get() + 1);
                let offered: HashSet<String> = available.iter().chain(&must).cloned().collect();
                let start = Instant::now();
                let answer = rt.block_on(svc.get_preferred_allocation(preferred_request(
                    available.clone(),
                    must.clone(),
                    size,
                )));
                prop_assert!(start.elapsed() < ANSWER_LIMIT, "{:?}", start.elapsed());
                let all_known = offered.iter().all(|id| known.contains(id));
                match answer {
                    Ok(a) => {
                        prop_assert!(all_known, "accepted unknown IDs");
                        let ids = &a.get_ref().container_responses[0].device_i_ds;
                        let unique: HashSet<&String> = ids.iter().collect();
                        prop_assert_eq!(unique.len(), ids.len(), "repeated: {:?}", ids);
                        prop_assert!(ids.len() <= usize::try_from(size).unwrap_or(0));
                        for id in ids {
                            prop_assert!(offered.contains(id), "{} was not offered", id);
                        }
                    }
                    Err(e) => {
                        prop_assert!(!all_known, "refused known IDs: {}", e);
                        prop_assert_eq!(e.code(), Code::InvalidArgument);
                        prop_assert!(e.message().len() < 400);
                    }
                }
                Ok(())
            })
            .unwrap();
    }
    let calls = calls.get();
    println!("GetPreferredAllocation fuzzing: {calls} calls over 3 resources");
    assert!(calls >= 3 * CASES);
}

#[test]
fn fuzzed_allocate_accepts_only_distinct_offered_devices() {
    let rt = runtime();
    let calls = std::cell::Cell::new(0u32);
    for (svc, own, foreign) in services() {
        let known: HashSet<String> = own.iter().cloned().collect();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: CASES,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&id_list(&own, &foreign), |ids| {
                calls.set(calls.get() + 1);
                let start = Instant::now();
                let answer = rt.block_on(svc.allocate(allocate_request(ids.clone())));
                prop_assert!(start.elapsed() < ANSWER_LIMIT, "{:?}", start.elapsed());
                let distinct: HashSet<&String> = ids.iter().collect();
                let valid = !ids.is_empty()
                    && distinct.len() == ids.len()
                    && ids.iter().all(|id| known.contains(id));
                match answer {
                    Ok(a) => {
                        prop_assert!(valid, "accepted {:?}", ids);
                        prop_assert_eq!(a.get_ref().container_responses.len(), 1);
                    }
                    Err(e) => {
                        prop_assert!(!valid, "refused {:?}: {}", ids, e);
                        prop_assert_eq!(e.code(), Code::InvalidArgument);
                        prop_assert!(e.message().len() < 400);
                    }
                }
                Ok(())
            })
            .unwrap();
    }
    let calls = calls.get();
    println!("Allocate fuzzing: {calls} calls over 3 resources");
    assert!(calls >= 3 * CASES);
}

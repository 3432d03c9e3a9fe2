//! Prints the device plugin's figures on a simulated 8x H100 node:
//! steady-state RSS of the real binary (API server and kubelet stand-ins
//! attached), registration time after `kubelet.sock` appears, and Allocate
//! latency over the unix socket with 20 and 2,000 pending assignments.
//!
//! `cargo bench -p device-plugin --bench plugin`
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apiserver_standin::{ApiServer, ResourceType};
use device_plugin::app;
use device_plugin::config::Cli;
use device_plugin::server::handoff::{AssignmentState, ContainerRequests, PodRecord};
use kubelet_standin::{Kubelet, Options, Order};
use proto::assignment::{AssignedGpu, ContainerAssignment, PodAssignment};
use proto::deviceplugin::device_plugin_client::DevicePluginClient;
use proto::deviceplugin::{AllocateRequest, ContainerAllocateRequest};
use proto::resources::Resource;

const NODE: &str = "bench-node";

fn node_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("simulated/h100-sxm-8x-nvswitch.yaml")
}

fn plugin_args(dir: &Path, extra: &[String]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--node-name".into(),
        NODE.into(),
        "--backend".into(),
        "simulated".into(),
        "--simulated-file".into(),
        node_file().display().to_string(),
        "--device-plugin-dir".into(),
        dir.display().to_string(),
        "--pod-resources-socket".into(),
        dir.join("pod-resources/kubelet.sock").display().to_string(),
        "--http-listen".into(),
        "127.0.0.1:0".into(),
    ];
    a.extend(extra.iter().cloned());
    a
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn rss_and_registration() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let server = ApiServer::start().await.unwrap();
    server.register(ResourceType::gpu_node_inventory());
    let kubeconfig = files.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let kubelet = Kubelet::new(Options::new(dir.path()).order(Order::Random { seed: 1 }))
        .await
        .unwrap();
    let extra = vec!["--kubeconfig".to_string(), kubeconfig.display().to_string()];
    let log = std::env::var_os("GPUPACK_BENCH_LOG");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpupack-device-plugin"))
        .args(plugin_args(dir.path(), &extra))
        // GPUPACK_BENCH_LOG=<file> keeps the plugin's info log there.
        .env("RUST_LOG", if log.is_some() { "info" } else { "warn" })
        .stderr(match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        })
        .spawn()
        .unwrap();
    kubelet
        .wait_for_registrations(2, Duration::from_secs(20))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = rss_kib(child.id());
    println!(
        "steady-state RSS, 8 simulated GPUs (API server and kubelet attached): {:.1} MiB (goal <= 15 MiB)",
        rss as f64 / 1024.0
    );

    let mut times = Vec::new();
    for round in 0..20 {
        kubelet.stop().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = kubelet.accepted_registrations();
        let t = Instant::now();
        kubelet.start().await.unwrap();
        kubelet
            .wait_for_registrations(before + 2, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        times.push(t.elapsed());
        if log.is_some() {
            eprintln!("round {round}: {:?}", t.elapsed());
        }
    }
    times.sort();
    println!(
        "registration after kubelet.sock appears (both resources, 20 kubelet restarts): p50 {:.1} ms, max {:.1} ms (goal <= 100 ms)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    let rss = rss_kib(child.id());
    println!("RSS after the restarts: {:.1} MiB", rss as f64 / 1024.0);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

async fn allocate_latency(pods: usize) {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::new(Options::new(dir.path())).await.unwrap();
    let mut args = vec!["gpupack-device-plugin".to_string()];
    args.extend(plugin_args(
        dir.path(),
        &[
            "--no-kubernetes".into(),
            "--verify-interval-secs".into(),
            "3600".into(),
        ],
    ));
    let cli = Cli::load_from(args).unwrap();
    let backend = app::backend(&cli.config).unwrap();
    let running = app::start(cli.config, backend).await.unwrap();
    kubelet
        .wait_for_registrations(2, Duration::from_secs(10))
        .await
        .unwrap();
    let inv = running.snapshots.borrow().inventory.clone();
    running.handoff.update(|h| {
        for i in 0..pods {
            let gpu = &inv.gpus[i % inv.gpus.len()];
            h.upsert(PodRecord {
                uid: format!("uid-{i}"),
                namespace: "bench".into(),
                name: format!("pod-{i}"),
                order: i as u64,
                assignment: AssignmentState::Valid(PodAssignment {
                    version: "v1".into(),
                    node: NODE.into(),
                    containers: vec![ContainerAssignment {
                        name: "server".into(),
                        gpus: vec![AssignedGpu {
                            uuid: gpu.uuid.clone(),
                            index: gpu.index,
                            memory_bytes: 8 << 30,
                        }],
                        mig: vec![],
                        engine: None,
                    }],
                }),
                containers: vec![ContainerRequests {
                    name: "server".into(),
                    requests: vec![(Resource::Gpu, 1)],
                }],
                terminated: false,
                admitted: false,
            });
        }
    });
    let channel = device_plugin::server::uds::connect(dir.path().join("gpupack-gpu.sock"))
        .await
        .unwrap();
    let mut client = DevicePluginClient::new(channel);
    let mut times = Vec::with_capacity(pods);
    for i in 0..pods {
        let gpu = &inv.gpus[i % inv.gpus.len()];
        let req = AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: vec![format!("{}::s{}", gpu.uuid, i % 4)],
            }],
        };
        let t = Instant::now();
        let resp = client.allocate(req).await.unwrap().into_inner();
        times.push(t.elapsed());
        assert_eq!(
            resp.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"], gpu.uuid,
            "allocation {i} went to the wrong GPU"
        );
    }
    times.sort();
    println!(
        "Allocate over the unix socket, matched to one of up to {pods} pending assignments: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (goal p99 <= 2 ms)",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    running.stop().await.unwrap();
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        rss_and_registration().await;
        allocate_latency(20).await;
        allocate_latency(2000).await;
    });
}

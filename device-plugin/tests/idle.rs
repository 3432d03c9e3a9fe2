//! An idle plugin costs next to no CPU, whatever is switched on: measured
//! on the real binary from the kernel's account of the process (all its
//! threads), not from a timer inside it.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_gpupack-device-plugin");

/// Seconds of CPU (user + system, every thread) the process has used.
/// `/proc/<pid>/stat` counts in USER_HZ, 100 per second on Linux.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `extra`, lets it settle, and returns the share
/// of one core it used over the following `window`.
async fn idle_share(
    dir: &std::path::Path,
    extra: &[&str],
    drop_admin: bool,
    window: Duration,
) -> f64 {
    let mut a = args(dir, &simulated("l40s-pcie-4x-2socket.yaml"), extra);
    a.remove(0);
    if drop_admin {
        let i = a.iter().position(|s| s == "--admin-listen").unwrap();
        a.drain(i..i + 2);
    }
    let child = Killed(
        Command::new(BIN)
            .args(&a)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Start-up (discovery, registration, first publication) is not idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = child.0.id();
    let before = cpu_seconds(pid);
    tokio::time::sleep(window).await;
    let used = cpu_seconds(pid) - before;
    used / window.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_plugin_uses_almost_no_cpu_in_every_configuration() {
    let api = apiserver_standin::ApiServer::start().await.unwrap();
    api.register(apiserver_standin::ResourceType::gpu_node_inventory());
    let files = tempfile::tempdir().unwrap();
    let kubeconfig = files.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let kc = kubeconfig.display().to_string();

    // (admin listener, Kubernetes, kubelet up)
    let cases = [
        (true, false, true),
        (false, false, true),
        (true, true, true),
        (false, true, true),
        (false, false, false),
        (false, true, false),
    ];
    let window = Duration::from_secs(3);
    let mut runs = Vec::new();
    for (admin, kubernetes, kubelet_up) in cases {
        let kc = kc.clone();
        runs.push(tokio::spawn(async move {
            let dir = tempfile::tempdir().unwrap();
            let _kubelet = if kubelet_up {
                Some(kubelet(dir.path(), 5).await)
            } else {
                None
            };
            let extra: Vec<&str> = if kubernetes {
                vec!["--kubeconfig", &kc]
            } else {
                vec![]
            };
            let share = idle_share(dir.path(), &extra, !admin, window).await;
            (admin, kubernetes, kubelet_up, share)
        }));
    }
    let mut report = Vec::new();
    for r in runs {
        report.push(r.await.unwrap());
    }
    for (admin, kubernetes, kubelet_up, share) in &report {
        assert!(
            *share < 0.05,
            "idle plugin used {:.0} % of a core (admin listener {admin}, Kubernetes {kubernetes}, kubelet up {kubelet_up}); all: {report:?}",
            share * 100.0
        );
    }
}

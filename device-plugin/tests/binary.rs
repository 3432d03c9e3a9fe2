//! The `gpupack-device-plugin` binary: inventory printing, the one-line
//! NVML error, and SIGTERM.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_gpupack-device-plugin");

#[test]
fn inventory_subcommand_prints_valid_json() {
    let out = Command::new(BIN)
        .args(["inventory", "--backend", "simulated", "--node-name", "n7"])
        .arg("--simulated-file")
        .arg(simulated("a100-sxm-8x-nvlink.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inv = proto::inventory::NodeInventory::from_json(&String::from_utf8(out.stdout).unwrap())
        .unwrap();
    assert_eq!(inv.node_name, "n7");
    assert_eq!(inv.gpus.len(), 8);
    assert_eq!(
        inv.link_level(0, 3),
        Some(proto::inventory::LinkLevel::NvLink)
    );
}

#[test]
fn missing_nvml_is_one_clear_line() {
    let out = Command::new(BIN)
        .args([
            "inventory",
            "--backend",
            "nvml",
            "--nvml-library",
            "/nonexistent/libnvidia-ml.so.1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/libnvidia-ml.so.1"), "{err}");
    assert!(
        err.contains("NVIDIA driver") && err.contains("container runtime"),
        "{err}"
    );
}

#[test]
fn malformed_simulated_file_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "gpus:\n  - product: X\n    memory: 80GiB\n    numaNode: zero\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["inventory", "--backend", "simulated", "--simulated-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("{}:4: gpus[0].numaNode", file.display())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_removes_sockets_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path(), 21).await;
    let mut a = args(dir.path(), &simulated("l40s-pcie-4x-2socket.yaml"), &[]);
    a.remove(0);
    let mut child = Command::new(BIN)
        .args(&a)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    kubelet
        .wait_for_registrations(2, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(dir.path().join("gpupack-gpu.sock").exists());
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0));
    assert!(!dir.path().join("gpupack-gpu.sock").exists());
    assert!(!dir.path().join("gpupack-gpu-memory.sock").exists());
}

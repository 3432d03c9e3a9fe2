//! Starting the device plugin in-process next to a kubelet stand-in.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use device_plugin::app::{self, Running};
use device_plugin::config::Cli;
use kubelet_standin::{Kubelet, Options, Order};

pub const NODE: &str = "gpu-node-1";

pub fn simulated(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("simulated")
        .join(file)
}

/// Plugin arguments for a node file in `dir`, without Kubernetes unless
/// `extra` adds a kubeconfig.
pub fn args(dir: &Path, file: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "gpupack-device-plugin",
        "--node-name",
        NODE,
        "--backend",
        "simulated",
        "--http-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--handoff-wait-ms",
        "300",
        "--verify-interval-secs",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("--simulated-file".into());
    a.push(file.display().to_string());
    a.push("--device-plugin-dir".into());
    a.push(dir.display().to_string());
    a.push("--pod-resources-socket".into());
    a.push(dir.join("pod-resources/kubelet.sock").display().to_string());
    if !extra.contains(&"--kubeconfig") {
        a.push("--no-kubernetes".into());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

pub async fn start_plugin(args: Vec<String>) -> Running {
    let cli = Cli::load_from(args).unwrap();
    let backend = app::backend(&cli.config).unwrap();
    app::start(cli.config, backend).await.unwrap()
}

pub fn kubelet_options(dir: &Path, seed: u64) -> Options {
    Options::new(dir)
        .order(Order::Random { seed })
        .dial_timeout(Duration::from_secs(5))
}

pub async fn kubelet(dir: &Path, seed: u64) -> Kubelet {
    Kubelet::new(kubelet_options(dir, seed)).await.unwrap()
}

/// POSTs to the admin endpoint.
pub async fn admin_post(running: &Running, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = running.admin_addr.unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

/// GETs from an HTTP address.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

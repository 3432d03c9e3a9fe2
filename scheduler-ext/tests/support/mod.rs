//! Shared setup: an API server stand-in, extenders started against it, and
//! a minimal HTTP client speaking to them as kube-scheduler does.
#![allow(clippy::unwrap_used, dead_code)]

use std::time::Duration;

use apiserver_standin::{ApiServer, ResourceType};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use proto::inventory::GpuNodeInventory;
use scheduler_ext::{Args, Config, Extender, system_clock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn cluster() -> (ApiServer, Client) {
    let server = ApiServer::start().await.unwrap();
    server.register(ResourceType::gpu_node_inventory());
    let client = server.client().await.unwrap();
    (server, client)
}

/// The nodes of the captured bodies: node-1 with eight free GPUs, node-2
/// with one GPU in MIG mode and no instances, which can never take a shared
/// request.
pub const NODE_OK: &str = "fake-gpu-node-1";
pub const NODE_NEVER: &str = "fake-gpu-node-2";

/// Publishes the inventories of [`NODE_OK`] and [`NODE_NEVER`].
pub async fn add_fixture_nodes(client: &Client) {
    add_node(client, &scheduler_ext::synthetic::inventory(NODE_OK, 8)).await;
    let mut never = scheduler_ext::synthetic::inventory(NODE_NEVER, 1);
    never.spec.gpus[0].mig_enabled = true;
    add_node(client, &never).await;
}

pub async fn add_node(client: &Client, inv: &GpuNodeInventory) {
    let api: Api<GpuNodeInventory> = Api::all(client.clone());
    api.create(&PostParams::default(), inv).await.unwrap();
}

/// Creates the pod and returns it as stored (with its UID).
pub async fn add_pod(client: &Client, pod: &Pod) -> Pod {
    let ns = pod.metadata.namespace.clone().unwrap();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut p = pod.clone();
    p.metadata.uid = None;
    api.create(&PostParams::default(), &p).await.unwrap()
}

pub async fn extender(client: &Client, identity: &str) -> Extender {
    let ext = start_extender(
        client,
        Args {
            identity: Some(identity.into()),
            ..Args::default()
        },
    )
    .await;
    eventually("extender ready", || async { ext.readiness.is_ready() }).await;
    ext
}

/// Starts an extender with `args` on a free local port, without waiting
/// for its ledger.
pub async fn start_extender(client: &Client, args: Args) -> Extender {
    let config = Config::resolve(Args {
        listen: args.listen.or(Some("127.0.0.1:0".parse().unwrap())),
        event_interval_seconds: args.event_interval_seconds.or(Some(1)),
        ..args
    })
    .unwrap();
    Extender::start(client.clone(), &config, system_clock())
        .await
        .unwrap()
}

/// A body captured from kube-scheduler (`proto/tests/fixtures`), in
/// `nodeCacheCapable` mode `ncc-true` or `ncc-false`, asking for gpupack's
/// memory resource instead of the capture's `example.com/gpu-memory`.
pub fn fixture(mode: &str, name: &str) -> String {
    let path = format!(
        "{}/../proto/tests/fixtures/extender/{mode}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap()
        .replace("example.com/gpu-memory", "gpupack.io/gpu-memory")
}

/// Polls `check` until it holds, for up to 10 s.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// One HTTP/1.1 exchange, as Go's client would send it.
pub async fn http(ext: &Extender, method: &str, path: &str, body: &str) -> (u16, String) {
    http_at(ext.addr(), method, path, body).await
}

/// [`http`] to any address.
pub async fn http_at(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    exchange(s, &addr.to_string(), method, path, body)
        .await
        .unwrap()
}

/// One HTTP/1.1 exchange over any connection (plain or TLS); `Err` with
/// what came back when that is no HTTP answer.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A server refusing an oversized body may close before reading it all;
    // its answer is still there to read.
    let _ = s.write_all(req.as_bytes()).await;
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text
        .split_once("\r\n\r\n")
        .filter(|(head, _)| head.starts_with("HTTP/"))
    else {
        return Err(format!("no HTTP answer (read: {read:?}): {text:?}"));
    };
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

pub async fn post_json(ext: &Extender, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let (status, text) = http(ext, "POST", path, &body.to_string()).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// kube-scheduler's filter/prioritize body for a pod, names only
/// (`nodeCacheCapable: true`).
pub fn args(pod: &Pod, nodes: &[&str]) -> serde_json::Value {
    serde_json::json!({"Pod": pod, "Nodes": null, "NodeNames": nodes})
}

pub fn bind_args(pod: &Pod, node: &str) -> serde_json::Value {
    serde_json::json!({
        "PodName": pod.metadata.name, "PodNamespace": pod.metadata.namespace,
        "PodUID": pod.metadata.uid, "Node": node
    })
}

/// Does what kubelet does once it has admitted the bound pods: writes their
/// status. Binds of pods with alike requests on other GPUs wait for this.
pub async fn kubelet_admits_bound_pods(client: &Client, namespace: &str) {
    use kube::ResourceExt;
    use kube::api::{ListParams, Patch, PatchParams};
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        if bound {
            let status = serde_json::json!({ "status": { "phase": "Running" } });
            pods.patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
        }
    }
}

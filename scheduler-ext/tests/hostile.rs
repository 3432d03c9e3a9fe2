//! The extender under hostile clients: oversized names, work that outlives
//! the request timeout, clients that trickle a request head, and more
//! connections than it holds. Health checks keep answering throughout.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn extender_with(
    client: &kube::Client,
    args: scheduler_ext::Args,
) -> scheduler_ext::Extender {
    let ext = start_extender(
        client,
        scheduler_ext::Args {
            identity: Some("hostile".into()),
            ..args
        },
    )
    .await;
    eventually("extender ready", || async { ext.readiness.is_ready() }).await;
    ext
}

fn model_pod(model: &str) -> Value {
    json!({
        "metadata": {"name": "llm", "namespace": "ns", "uid": "u-llm",
            "annotations": {"gpupack.io/model": model}},
        "spec": {"containers": [{"name": "vllm",
            "resources": {"requests": {"gpupack.io/gpu": "1"}, "limits": {"gpupack.io/gpu": "1"}}}]}
    })
}

/// Times a GET of `/healthz` on a fresh connection.
async fn health_latency(addr: std::net::SocketAddr) -> Duration {
    let start = Instant::now();
    let (status, _) = http_at(addr, "GET", "/healthz", "").await;
    assert_eq!(status, 200);
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_megabyte_model_name_is_refused_at_once_and_health_answers() {
    let (_server, client) = cluster().await;
    add_fixture_nodes(&client).await;
    let ext = extender_with(&client, scheduler_ext::Args::default()).await;
    let name = "m".repeat(4 << 20);
    let body = json!({"Pod": model_pod(&name), "Nodes": null, "NodeNames": [NODE_OK, NODE_NEVER]})
        .to_string();
    let addr = ext.addr();
    let request = tokio::spawn(async move {
        let start = Instant::now();
        let answer = http_at(addr, "POST", "/filter", &body).await;
        (answer, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let health = health_latency(addr).await;
    let ((status, text), took) = request.await.unwrap();
    println!(
        "4 MiB model name: filter answered {status} in {took:?}; /healthz meanwhile in {health:?}"
    );
    assert_eq!(status, 200, "{text:.300}");
    let reply: Value = serde_json::from_str(&text).unwrap();
    let reason = reply["FailedAndUnresolvableNodes"][NODE_OK]
        .as_str()
        .unwrap_or_else(|| panic!("{reply}"));
    assert!(
        reason.contains("model name is 4194304 bytes long; a name is at most 193 bytes"),
        "{reason}"
    );
    assert!(
        reason.len() <= proto::clip::MESSAGE_LIMIT,
        "{}",
        reason.len()
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(health < Duration::from_secs(1), "{health:?}");
    ext.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_past_the_request_timeout_is_answered_408_at_the_deadline() {
    let (_server, client) = cluster().await;
    add_fixture_nodes(&client).await;
    let ext = extender_with(
        &client,
        scheduler_ext::Args {
            request_timeout_ms: Some(200),
            ..Default::default()
        },
    )
    .await;
    // Hundreds of thousands of candidate nodes: seconds of decoding and
    // filtering in a debug build, far past the 200 ms timeout.
    let names: Vec<String> = (0..300_000).map(|i| format!("node-{i:07}")).collect();
    let body = json!({"Pod": model_pod("meta-llama/Llama-3.1-8B-Instruct"), "Nodes": null, "NodeNames": names})
        .to_string();
    let addr = ext.addr();
    let request = tokio::spawn(async move {
        let start = Instant::now();
        let answer = http_at(addr, "POST", "/filter", &body).await;
        (answer, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let health = health_latency(addr).await;
    let ((status, _), took) = request.await.unwrap();
    println!(
        "300,000-node filter with a 200 ms timeout: {status} after {took:?}; /healthz in {health:?}"
    );
    assert_eq!(status, 408, "answered after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(health < Duration::from_secs(1), "{health:?}");
    ext.shutdown().await;
}

/// Reads until the server closes the connection or `limit` passes; the
/// time it closed, if it did.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_trickled_request_head_is_cut_off_but_idle_keep_alive_is_kept() {
    let (_server, client) = cluster().await;
    add_fixture_nodes(&client).await;
    let ext = extender_with(
        &client,
        scheduler_ext::Args {
            request_timeout_ms: Some(300),
            ..Default::default()
        },
    )
    .await;
    let addr = ext.addr();

    // Half a request line, then a header every 100 ms.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /filter HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        let start = Instant::now();
        let mut closed = None;
        while start.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
                closed = Some(start.elapsed());
                break;
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
            {
                closed = Some(start.elapsed());
                break;
            }
        }
        closed
    });

    // A keep-alive connection, idle three times the header deadline
    // between two requests, still serves the second.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut buf = vec![0u8; 4096];
    kept.write_all(get).await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(900)).await;
    kept.write_all(get).await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "idle keep-alive connection was closed: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    let closed = trickle.await.unwrap();
    println!("trickled request head: connection closed after {closed:?} (header deadline 300 ms)");
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(2)),
        "a trickled head held its connection: {closed:?}"
    );

    // A silent connection (no byte of a request) is not cut by the header
    // deadline.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        closed_within(&mut silent, Duration::from_millis(900)).await,
        None
    );
    ext.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_health_answers_after() {
    let (_server, client) = cluster().await;
    add_fixture_nodes(&client).await;
    let ext = extender_with(
        &client,
        scheduler_ext::Args {
            max_connections: Some(4),
            ..Default::default()
        },
    )
    .await;
    let addr = ext.addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut excess = TcpStream::connect(addr).await.unwrap();
    let closed = closed_within(&mut excess, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "a fifth connection was held open");
    drop(held);
    let mut answered = false;
    for _ in 0..50 {
        let s = TcpStream::connect(addr).await.unwrap();
        if let Ok((200, _)) = exchange(s, "x", "GET", "/healthz", "").await {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "health did not answer once connections closed");
    ext.shutdown().await;
}

/// Log output captured from the test's thread (every task of a
/// current-thread runtime runs there).
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn megabyte_names_reach_logs_and_replies_clipped() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (_server, client) = cluster().await;
    add_fixture_nodes(&client).await;
    let ext = extender_with(&client, scheduler_ext::Args::default()).await;
    let long = "p".repeat(1 << 20);
    let bind = json!({"PodName": long, "PodNamespace": "ns", "PodUID": "u", "Node": NODE_OK});
    let reply = post_json(&ext, "/bind", &bind).await;
    let error = reply["Error"].as_str().unwrap();
    assert!(
        error.contains("PodName is 1048576 bytes long; Kubernetes names are at most 253"),
        "{error:.300}"
    );
    let bad = json!({"metadata": {"name": long, "namespace": "ns", "uid": "u"},
        "spec": {"containers": [{"name": long, "resources": {"requests": {"gpupack.io/gpu": long}}}]}});
    let reply = post_json(
        &ext,
        "/filter",
        &json!({"Pod": bad, "NodeNames": [NODE_OK]}),
    )
    .await;
    let reason = reply["FailedAndUnresolvableNodes"][NODE_OK]
        .as_str()
        .unwrap();
    assert!(
        reason.len() <= proto::clip::MESSAGE_LIMIT,
        "{}",
        reason.len()
    );
    assert!(reason.contains("more bytes]"), "{reason}");
    // Let the Event publisher run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ext.shutdown().await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    println!(
        "{} bytes of log for two requests with 1 MiB names",
        text.len()
    );
    assert!(text.contains("bind failed"), "{text}");
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 4096, "a log line of {longest} bytes");
}

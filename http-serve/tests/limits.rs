//! What a client can hold of a server: connections beyond the cap are
//! closed on accept, and a request head that does not arrive by the header
//! deadline closes its connection.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use http_serve::{Connections, Deadlines, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

async fn start(max: usize, header: Duration) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let conns = Connections {
        deadlines: Deadlines {
            header,
            idle: Deadlines::IDLE,
        },
        max,
    };
    let router = Router::new().route("/", get(|| async { "ok" }));
    tokio::spawn(serve(
        listener,
        router,
        None,
        conns,
        stop.clone(),
        Duration::from_millis(100),
    ));
    (addr, stop)
}

/// Reads until the server closes the connection, or `within` passes.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn get_root(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_on_accept() {
    let (addr, stop) = start(2, Duration::from_secs(10)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(
            !closed_within(&mut s, Duration::from_millis(200)).await,
            "a connection within the cap is kept"
        );
        held.push(s);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut third, Duration::from_secs(2)).await,
        "the third connection is closed"
    );
    // A place frees when a connection ends.
    held.pop();
    let mut answer = String::new();
    for _ in 0..50 {
        answer = get_root(addr).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    stop.cancel();
}

#[tokio::test]
async fn a_head_trickled_past_the_deadline_closes_the_connection() {
    let (addr, stop) = start(8, Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    let t = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "the connection stays open"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    // A whole request is answered.
    assert!(get_root(addr).await.starts_with("HTTP/1.1 200"));
    stop.cancel();
}

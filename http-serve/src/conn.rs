//! Deadlines on a connection's reads that the HTTP library does not give.
//!
//! hyper's `header_read_timeout` also runs while a keep-alive connection
//! waits for its next request, and closes it at the moment kube-scheduler
//! may be sending a POST on it, which Go does not retry. So the deadlines
//! here follow what the client does:
//!
//! - from the first byte of a request to its head being read: the header
//!   deadline (short; a client trickling a header is dropped);
//! - while the server handles a request: none here (the request timeout);
//! - idle between requests: the idle deadline, longer than Go's 90 s
//!   `IdleConnTimeout`, so the client always closes an idle connection first.
//!
//! HTTP/2 connections (which interleave pings and settings with requests)
//! get the header deadline only until their first request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The read deadlines of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// From the first byte of a request to the end of its head.
    pub header: Duration,
    /// Between requests.
    pub idle: Duration,
}

impl Deadlines {
    /// The idle deadline outlasting Go's default `IdleConnTimeout` (90 s).
    pub const IDLE: Duration = Duration::from_secs(120);
}

/// What the IO side and the service side of one connection share.
#[derive(Debug)]
pub struct Tracker {
    in_flight: AtomicUsize,
    inner: Mutex<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// When the connection last became idle.
    idle_since: Instant,
    /// A request head has begun and no request has reached the service
    /// since.
    head_pending: bool,
    /// The read side parked while a request was served; woken when the last
    /// one ends so the idle deadline starts to count.
    parked: Option<Waker>,
    /// The connection opened with the HTTP/2 preface.
    http2: bool,
    /// An HTTP/2 connection that has sent a request: header deadline off.
    http2_settled: bool,
}

impl Tracker {
    fn new() -> Arc<Tracker> {
        Arc::new(Tracker {
            in_flight: AtomicUsize::new(0),
            inner: Mutex::new(Shared {
                idle_since: Instant::now(),
                head_pending: false,
                parked: None,
                http2: false,
                http2_settled: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request reached the service: its head is read. Hold the returned
    /// guard until the response is produced.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut s = self.lock();
        s.head_pending = false;
        s.http2_settled |= s.http2;
        drop(s);
        InFlight(self.clone())
    }
}

/// A request being served; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<Tracker>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let mut s = self.0.lock();
            s.idle_since = Instant::now();
            if let Some(w) = s.parked.take() {
                w.wake();
            }
        }
    }
}

/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// A connection's IO with the read deadlines of [`Deadlines`].
pub struct Guarded<IO> {
    io: IO,
    tracker: Arc<Tracker>,
    deadlines: Deadlines,
    timer: Pin<Box<Sleep>>,
    /// The connection's first bytes, up to the length of the HTTP/2 preface.
    opening: Vec<u8>,
    /// When the pending request head began.
    head_started: Option<Instant>,
}

/// Wraps `io`; the tracker goes to the service side of the connection.
pub fn guard<IO>(io: IO, deadlines: Deadlines) -> (Guarded<IO>, Arc<Tracker>) {
    let tracker = Tracker::new();
    let guarded = Guarded {
        io,
        tracker: tracker.clone(),
        deadlines,
        timer: Box::pin(tokio::time::sleep(deadlines.idle)),
        opening: Vec::new(),
        head_started: None,
    };
    (guarded, tracker)
}

impl<IO> Guarded<IO> {
    /// Bytes arrived: the first byte after idleness begins a request head.
    fn on_bytes(&mut self, bytes: &[u8]) {
        let mut s = self.tracker.lock();
        if self.opening.len() < H2_PREFACE.len() {
            let take = (H2_PREFACE.len() - self.opening.len()).min(bytes.len());
            self.opening.extend_from_slice(&bytes[..take]);
            s.http2 = self.opening == H2_PREFACE;
        }
        if self.tracker.in_flight.load(Ordering::SeqCst) == 0 && !s.head_pending && !s.http2_settled
        {
            s.head_pending = true;
            self.head_started = Some(Instant::now());
        }
    }

    /// The deadline that applies while no bytes arrive, if any; parks the
    /// waker while a request is served.
    fn deadline(&mut self, cx: &Context<'_>) -> Option<(Instant, &'static str)> {
        let mut s = self.tracker.lock();
        if self.tracker.in_flight.load(Ordering::SeqCst) > 0 {
            s.parked = Some(cx.waker().clone());
            return None;
        }
        if s.head_pending && !s.http2_settled {
            let started = self.head_started.unwrap_or(s.idle_since);
            return Some((started + self.deadlines.header, "request head"));
        }
        Some((s.idle_since + self.deadlines.idle, "idle"))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = &buf.filled()[before..];
                if !filled.is_empty() {
                    this.on_bytes(filled);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((at, what)) = this.deadline(cx) else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != at {
                    this.timer.as_mut().reset(at);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{what} deadline passed"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SHORT: Deadlines = Deadlines {
        header: Duration::from_millis(100),
        idle: Duration::from_millis(400),
    };

    async fn read_error(io: &mut Guarded<tokio::io::DuplexStream>) -> (io::Error, Duration) {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 64];
        loop {
            match io.read(&mut buf).await {
                Ok(0) => panic!("closed instead of timing out"),
                Ok(_) => continue,
                Err(e) => return (e, start.elapsed()),
            }
        }
    }

    #[tokio::test]
    async fn an_idle_connection_gets_the_idle_deadline() {
        let (_client, server) = tokio::io::duplex(64);
        let (mut io, _tracker) = guard(server, SHORT);
        let (e, took) = read_error(&mut io).await;
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("idle"), "{e}");
        assert!(took >= SHORT.idle, "{took:?}");
    }

    #[tokio::test]
    async fn a_begun_request_head_gets_the_header_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut io, _tracker) = guard(server, SHORT);
        client.write_all(b"POST /fil").await.unwrap();
        let (e, took) = read_error(&mut io).await;
        assert!(e.to_string().contains("request head"), "{e}");
        assert!(took >= SHORT.header && took < SHORT.idle, "{took:?}");
    }

    #[tokio::test]
    async fn no_read_deadline_while_a_request_is_served_then_idle_again() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut io, tracker) = guard(server, SHORT);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let serving = tracker.request_started();
        let waited = tokio::time::timeout(SHORT.idle + SHORT.header, io.read(&mut buf)).await;
        assert!(
            waited.is_err(),
            "a deadline ran during the request: {waited:?}"
        );
        drop(serving);
        let (e, took) = read_error(&mut io).await;
        assert!(e.to_string().contains("idle"), "{e}");
        assert!(took >= SHORT.idle, "{took:?}");
    }

    #[tokio::test]
    async fn http2_connections_lose_the_header_deadline_after_their_first_request() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut io, tracker) = guard(server, SHORT);
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        drop(tracker.request_started());
        // A ping between requests: no header deadline, only the idle one.
        client.write_all(b"ping").await.unwrap();
        let (e, took) = read_error(&mut io).await;
        assert!(e.to_string().contains("idle"), "{e}");
        assert!(took >= SHORT.idle - SHORT.header, "{took:?}");
    }
}

//! kubelet 1.25 and older: calls to a device plugin carry the plugin
//! socket's path as the HTTP/2 `:authority` (grpc-go dials the path as its
//! target). grpc-go servers accept any authority; servers built on Rust's
//! `h2` refuse it as malformed. The request is written here frame by frame,
//! since Rust's HTTP clients cannot send such an authority.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), first byte's
/// high bits zero.
fn hpack_int(out: &mut Vec<u8>, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(value as u8);
        return;
    }
    out.push(max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal header field without indexing, new name, no Huffman coding.
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_int(out, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Opens `method` on the plugin at `socket` as kubelet 1.25 does. `Ok` when
/// the server answered with response headers; `Err` with what the server
/// did otherwise (reset the stream, closed the connection).
pub async fn call_with_path_authority(
    socket: &Path,
    method: &str,
    timeout: Duration,
) -> Result<(), String> {
    let attempt = async {
        let mut conn = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("dial {}: {e}", socket.display()))?;
        let mut block = Vec::new();
        literal(&mut block, ":method", "POST");
        literal(&mut block, ":scheme", "http");
        literal(&mut block, ":path", method);
        literal(&mut block, ":authority", &socket.display().to_string());
        literal(&mut block, "content-type", "application/grpc");
        literal(&mut block, "te", "trailers");
        let mut out = PREFACE.to_vec();
        frame(&mut out, FRAME_SETTINGS, 0, 0, &[]);
        frame(&mut out, FRAME_HEADERS, FLAG_END_HEADERS, 1, &block);
        conn.write_all(&out).await.map_err(|e| e.to_string())?;
        loop {
            let mut head = [0u8; 9];
            conn.read_exact(&mut head)
                .await
                .map_err(|e| format!("connection closed: {e}"))?;
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len.min(1 << 20)];
            conn.read_exact(&mut payload)
                .await
                .map_err(|e| format!("connection closed: {e}"))?;
            match kind {
                FRAME_SETTINGS if flags & FLAG_ACK == 0 => {
                    let mut ack = Vec::new();
                    frame(&mut ack, FRAME_SETTINGS, FLAG_ACK, 0, &[]);
                    conn.write_all(&ack).await.map_err(|e| e.to_string())?;
                }
                FRAME_HEADERS if stream == 1 => return Ok(()),
                FRAME_RST_STREAM if stream == 1 => {
                    let code = payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or_default();
                    let name = match code {
                        0x1 => "PROTOCOL_ERROR",
                        0x2 => "INTERNAL_ERROR",
                        0x7 => "REFUSED_STREAM",
                        _ => "error",
                    };
                    return Err(format!(
                        "stream reset by the plugin: {name} ({code:#x}), the request's headers refused"
                    ));
                }
                FRAME_GOAWAY => return Err("connection closed by the plugin (GOAWAY)".into()),
                _ => {}
            }
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err("no answer".into()))
}

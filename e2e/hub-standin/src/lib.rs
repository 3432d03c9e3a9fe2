//! A stand-in for the Hugging Face Hub's file API, for tests that must not
//! reach the network.
//!
//! Serves `GET`/`HEAD /{org}/{name}/resolve/{revision}/{file}` as the Hub
//! does: `Range` requests answered 206 with `Content-Range`; gated repos
//! answered 401 without a token and 403 with a wrong one; 404 with the
//! Hub's `X-Error-Code` (`RepoNotFound`, `EntryNotFound`); safetensors files
//! (LFS objects on the Hub) redirected 302 to a content URL. A safetensors
//! file is stored as its header only: its data is virtual zeros, so a
//! checkpoint of any size costs a few kilobytes.

pub mod checkpoint;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, Response, StatusCode, header};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use checkpoint::{Scheme, Tensor, checkpoint_files};

/// Largest body served whole; a safetensors file's virtual data is only
/// ever read by range.
const MAX_WHOLE_BODY: u64 = 16 << 20;

/// A file of a repository.
#[derive(Debug, Clone)]
pub enum File {
    Bytes(Vec<u8>),
    /// A safetensors file: its 8-byte length and JSON header are real, the
    /// `data_len` bytes after them read as zeros.
    Safetensors {
        header: Vec<u8>,
        data_len: u64,
    },
}

impl File {
    fn len(&self) -> u64 {
        match self {
            File::Bytes(b) => b.len() as u64,
            File::Safetensors { header, data_len } => 8 + header.len() as u64 + data_len,
        }
    }

    /// Bytes `[start, end)`, `end` within the file.
    fn slice(&self, start: u64, end: u64) -> Vec<u8> {
        match self {
            File::Bytes(b) => b[start as usize..end as usize].to_vec(),
            File::Safetensors { header, .. } => {
                let mut prefix = (header.len() as u64).to_le_bytes().to_vec();
                prefix.extend_from_slice(header);
                (start..end)
                    .map(|i| prefix.get(i as usize).copied().unwrap_or(0))
                    .collect()
            }
        }
    }
}

/// One repository.
#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub files: BTreeMap<String, File>,
    /// The token a gated repo accepts; `None`: public.
    pub gated_token: Option<String>,
    /// How long every answer of this repo takes.
    pub delay: Duration,
}

impl Repo {
    pub fn file(mut self, name: &str, bytes: impl Into<Vec<u8>>) -> Repo {
        self.files
            .insert(name.to_string(), File::Bytes(bytes.into()));
        self
    }

    /// Adds several files at once (e.g. [`checkpoint_files`]).
    pub fn files(mut self, files: impl IntoIterator<Item = (String, File)>) -> Repo {
        self.files.extend(files);
        self
    }

    pub fn gated(mut self, token: &str) -> Repo {
        self.gated_token = Some(token.to_string());
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Repo {
        self.delay = delay;
        self
    }
}

struct Shared {
    repos: BTreeMap<String, Repo>,
    requests: AtomicU64,
}

/// A running stand-in; stops when dropped.
pub struct HubStandin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for HubStandin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HubStandin {
    /// Serves `repos` (keyed `org/name`) on a free localhost port.
    pub async fn start(repos: BTreeMap<String, Repo>) -> std::io::Result<HubStandin> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            repos,
            requests: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/{org}/{name}/resolve/{revision}/{*file}", get(resolve))
            .route("/lfs/{org}/{name}/{*file}", get(content))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(HubStandin { addr, shared, task })
    }

    /// What `HF_ENDPOINT` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered so far (redirects count).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

fn answer(status: StatusCode, code: Option<&str>, message: &str) -> Response<Body> {
    let mut r = Response::builder().status(status);
    if let Some(code) = code {
        r = r.header("x-error-code", code);
    }
    r.body(Body::from(message.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

async fn resolve(
    State(shared): State<Arc<Shared>>,
    Path((org, name, _revision, file)): Path<(String, String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response<Body> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let id = format!("{org}/{name}");
    let Some(repo) = shared.repos.get(&id) else {
        return answer(
            StatusCode::NOT_FOUND,
            Some("RepoNotFound"),
            "Repository not found",
        );
    };
    tokio::time::sleep(repo.delay).await;
    if let Some(token) = &repo.gated_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => {
                return answer(
                    StatusCode::UNAUTHORIZED,
                    Some("GatedRepo"),
                    "Access to this model is restricted. You must be authenticated.",
                );
            }
            Some(t) if t != token => {
                return answer(
                    StatusCode::FORBIDDEN,
                    Some("GatedRepo"),
                    "Access to this model is restricted and you are not in the authorized list.",
                );
            }
            Some(_) => {}
        }
    }
    let Some(f) = repo.files.get(&file) else {
        return answer(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            "Entry not found",
        );
    };
    // LFS objects live elsewhere: the Hub answers with a redirect.
    if matches!(f, File::Safetensors { .. }) {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, format!("/lfs/{id}/{file}"))
            .body(Body::empty())
            .unwrap_or_else(|_| Response::new(Body::empty()));
    }
    serve(f, &method, &headers)
}

async fn content(
    State(shared): State<Arc<Shared>>,
    Path((org, name, file)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response<Body> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    match shared
        .repos
        .get(&format!("{org}/{name}"))
        .and_then(|r| r.files.get(&file))
    {
        Some(f) => serve(f, &method, &headers),
        None => answer(StatusCode::NOT_FOUND, None, "no such object"),
    }
}

/// `bytes=a-b` or `bytes=a-` within a file of `len` bytes.
fn range(value: &str, len: u64) -> Option<(u64, u64)> {
    let (a, b) = value.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        len
    } else {
        b.parse::<u64>().ok()?.saturating_add(1).min(len)
    };
    (start < end).then_some((start, end))
}

fn serve(f: &File, method: &Method, headers: &HeaderMap) -> Response<Body> {
    let len = f.len();
    let requested = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match requested {
        Some(r) => match range(r, len) {
            Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e),
            None => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Body::empty())
                    .unwrap_or_else(|_| Response::new(Body::empty()));
            }
        },
        None if len > MAX_WHOLE_BODY && method != Method::HEAD => {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "the stand-in serves large files by range only",
            );
        }
        None => (StatusCode::OK, 0, len),
    };
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes");
    if status == StatusCode::PARTIAL_CONTENT {
        r = r.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", end - 1),
        );
    }
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(f.slice(start, end))
    };
    r.body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

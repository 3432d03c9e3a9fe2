//! Errors of the stand-in itself ([`Error`]), and API errors in the exact `metav1.Status` shape the real API server sends,
//! so that kube-rs turns them into `kube::Error::Api` with the same code and
//! reason a component would see against a cluster.

use std::net::SocketAddr;

use serde_json::{Value, json};

/// Errors starting, restarting or connecting to the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write kubeconfig {path}: {source}")]
    WriteKubeconfig {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot serialize the kubeconfig: {0}")]
    SerializeKubeconfig(#[source] serde_json::Error),
    #[error("invalid kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("cannot build a client: {0}")]
    Client(#[from] kube::Error),
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// A failed API call: HTTP code, `Status.reason` and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `Status.details`: the object the error is about, where there is one.
    pub details: Option<Details>,
}

/// `Status.details` (`name`, `group`, `kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    pub name: String,
    pub group: String,
    pub kind: String,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// A URL that names no resource this server serves.
    pub fn no_such_resource() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 422 without an object (e.g. a JSON patch whose `test` op failed).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 410: the requested resourceVersion has been compacted away.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// A server-side failure (500 InternalError, 503 ServiceUnavailable, ...).
    pub fn server(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            503 => "ServiceUnavailable",
            504 => "Timeout",
            429 => "TooManyRequests",
            _ => "InternalError",
        };
        Self::new(code, reason, message)
    }

    /// The `metav1.Status` body.
    pub fn status_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = json!({ "name": d.name, "kind": d.kind });
            if !d.group.is_empty() {
                details["group"] = json!(d.group);
            }
            v["details"] = details;
        }
        v
    }
}

/// The `metav1.Status{status: Success}` that binding and some deletes return.
pub fn success_status(code: u16) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": code,
    })
}

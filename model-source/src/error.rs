//! Why a model could not be read. Each message names the cause and what to
//! set or fix, as it ends up in a pod's Event or on a terminal.

use std::time::Duration;

/// A failure to read a model's files.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{name:?} is not a Hugging Face model id or directory: {problem}")]
    BadName { name: String, problem: &'static str },

    #[error(
        "{repo} is gated or private: the Hub answered {status} for {file}; set HF_TOKEN to a token \
         of an account that has access (in the cluster: an env var of the extender from a Secret)"
    )]
    Gated {
        repo: String,
        file: String,
        status: u16,
    },

    #[error("{repo} does not exist on the Hub at {endpoint} (404); check the model id")]
    RepoNotFound { repo: String, endpoint: String },

    #[error("{repo} has no {file} (404); only transformers-style checkpoints can be sized")]
    FileNotFound { repo: String, file: String },

    #[error("{url}: no answer within {after:?}; the Hub (HF_ENDPOINT) is slow or unreachable")]
    Timeout { url: String, after: Duration },

    #[error("{url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },

    #[error("{url}: reading the answer: {source}")]
    Body {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    #[error("{url}: the Hub answered {status}")]
    Status { url: String, status: u16 },

    #[error("{url}: more than {limit} redirects")]
    TooManyRedirects { url: String, limit: usize },

    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge { what: String, limit: u64 },

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("HF_ENDPOINT {endpoint:?} is not an http(s) URL")]
    BadEndpoint { endpoint: String },

    #[error("TLS roots: {0}")]
    Tls(#[source] std::io::Error),

    #[error("{what}: {source}")]
    Malformed {
        what: String,
        #[source]
        source: estimator::EstimateError,
    },
}

//! The Hugging Face Hub's file API, as `huggingface_hub` uses it:
//! `{HF_ENDPOINT}/{repo}/resolve/{revision}/{file}` with a bearer token,
//! following the redirects to LFS content, with `Range` for safetensors
//! headers. Small requests only: nothing here downloads weights.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::error::SourceError;
use crate::files::ModelFiles;
use crate::registry::Fetch;

/// The public Hub, when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Redirects followed per request (the Hub uses one or two).
const MAX_REDIRECTS: usize = 5;

/// Longest model id accepted (the Hub's own limit is 96 per part).
const MAX_REPO_ID: usize = 200;

/// How to reach the Hub.
#[derive(Clone)]
pub struct HubSettings {
    pub endpoint: String,
    pub token: Option<String>,
    pub revision: String,
    /// Limit of one request, body included.
    pub timeout: Duration,
    /// What was read, kept on disk across restarts.
    pub cache: Option<crate::disk::DiskCache>,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("revision", &self.revision)
            .field("timeout", &self.timeout)
            .field(
                "cache",
                &self.cache.as_ref().map(|c| c.dir().display().to_string()),
            )
            .finish()
    }
}

impl HubSettings {
    /// `HF_ENDPOINT` and `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`) as
    /// `huggingface_hub` reads them; an empty variable counts as unset.
    pub fn from_env() -> HubSettings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        HubSettings {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            token: var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")),
            revision: "main".to_string(),
            timeout: Duration::from_secs(10),
            cache: None,
        }
    }
}

/// A client of one Hub endpoint.
#[derive(Clone)]
pub struct Hub {
    settings: HubSettings,
    endpoint: Uri,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

/// Checks a repo id the way the Hub names repos: `org/name` of letters,
/// digits, `-`, `_`, `.`, no `..`, bounded length.
pub fn check_repo_id(name: &str) -> Result<(), SourceError> {
    let bad = |problem| SourceError::BadName {
        name: name.chars().take(MAX_REPO_ID).collect(),
        problem,
    };
    if name.len() > MAX_REPO_ID {
        return Err(bad("longer than 200 characters"));
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad("expected organisation/name"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.chars().all(|c| ok(c) || c == '/') || name.contains("..") {
        return Err(bad("only letters, digits, '-', '_' and '.' are allowed"));
    }
    Ok(())
}

impl Hub {
    pub fn new(settings: HubSettings) -> Result<Hub, SourceError> {
        let endpoint: Uri = settings
            .endpoint
            .trim_end_matches('/')
            .parse()
            .ok()
            .filter(|u: &Uri| matches!(u.scheme_str(), Some("http" | "https")))
            .ok_or_else(|| SourceError::BadEndpoint {
                endpoint: settings.endpoint.clone(),
            })?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(b) => b,
            // No system CA bundle (a bare image): plain-HTTP endpoints still
            // work, and HTTPS ones fail naming the certificate.
            Err(e) => {
                tracing::warn!(error = %e, "no system TLS roots; HTTPS to the Hub will fail");
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| SourceError::Tls(std::io::Error::other(e)))?
                    .with_root_certificates(RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let https = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Hub {
            settings,
            endpoint,
            client,
        })
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    /// The files of `repo` (checked as a repo id).
    pub fn repo(&self, repo: &str) -> Result<HubRepo<'_>, SourceError> {
        check_repo_id(repo)?;
        Ok(HubRepo {
            hub: self,
            repo: repo.to_string(),
        })
    }

    fn url(&self, repo: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{file}",
            self.settings.endpoint.trim_end_matches('/'),
            self.settings.revision
        )
    }

    /// GETs `file` of `repo`, following redirects, within the timeout;
    /// `Ok(None)` when the repo has no such file.
    async fn get(
        &self,
        repo: &str,
        file: &str,
        range: Option<(u64, u64)>,
        max_bytes: u64,
    ) -> Result<Option<Bytes>, SourceError> {
        let url = self.url(repo, file);
        let limit = self.settings.timeout;
        match tokio::time::timeout(
            limit,
            self.get_following(repo, file, &url, range, max_bytes),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout { url, after: limit }),
        }
    }

    async fn get_following(
        &self,
        repo: &str,
        file: &str,
        first: &str,
        range: Option<(u64, u64)>,
        max_bytes: u64,
    ) -> Result<Option<Bytes>, SourceError> {
        let mut url = first.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let uri: Uri = url.parse().map_err(|_| SourceError::Status {
                url: url.clone(),
                status: 0,
            })?;
            let mut req = Request::get(uri.clone());
            // The token goes to the Hub only, never to a CDN it redirects to.
            if uri.authority() == self.endpoint.authority()
                && let Some(token) = &self.settings.token
                && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
            {
                req = req.header(header::AUTHORIZATION, v);
            }
            if let Some((start, len)) = range {
                let last = start.saturating_add(len.max(1)) - 1;
                req = req.header(header::RANGE, format!("bytes={start}-{last}"));
            }
            let req = req
                .header(header::USER_AGENT, "gpupack-model-source")
                .body(Empty::new())
                .map_err(|_| SourceError::Status {
                    url: url.clone(),
                    status: 0,
                })?;
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|source| SourceError::Transport {
                    url: url.clone(),
                    source,
                })?;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| SourceError::Status {
                        url: url.clone(),
                        status: status.as_u16(),
                    })?;
                url = if location.starts_with('/') {
                    let scheme = uri.scheme_str().unwrap_or("https");
                    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
                    format!("{scheme}://{authority}{location}")
                } else {
                    location.to_string()
                };
                continue;
            }
            let error_code = resp
                .headers()
                .get("x-error-code")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            match status {
                StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(SourceError::Gated {
                        repo: repo.to_string(),
                        file: file.to_string(),
                        status: status.as_u16(),
                    });
                }
                StatusCode::NOT_FOUND if error_code == "RepoNotFound" => {
                    return Err(SourceError::RepoNotFound {
                        repo: repo.to_string(),
                        endpoint: self.settings.endpoint.clone(),
                    });
                }
                StatusCode::NOT_FOUND | StatusCode::RANGE_NOT_SATISFIABLE => return Ok(None),
                other => {
                    return Err(SourceError::Status {
                        url,
                        status: other.as_u16(),
                    });
                }
            }
            let body = Limited::new(
                resp.into_body(),
                usize::try_from(max_bytes).unwrap_or(usize::MAX),
            )
            .collect()
            .await
            .map_err(|source| {
                if source.is::<http_body_util::LengthLimitError>() {
                    SourceError::TooLarge {
                        what: format!("{repo}/{file}"),
                        limit: max_bytes,
                    }
                } else {
                    SourceError::Body {
                        url: url.clone(),
                        source,
                    }
                }
            })?;
            return Ok(Some(body.to_bytes()));
        }
        Err(SourceError::TooManyRedirects {
            url: first.to_string(),
            limit: MAX_REDIRECTS,
        })
    }
}

/// One repository of a [`Hub`].
pub struct HubRepo<'a> {
    hub: &'a Hub,
    repo: String,
}

impl ModelFiles for HubRepo<'_> {
    fn describe(&self) -> String {
        self.repo.clone()
    }

    async fn read(&self, file: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(self
            .hub
            .get(&self.repo, file, None, max_bytes)
            .await?
            .map(|b| b.to_vec()))
    }

    async fn read_range(
        &self,
        file: &str,
        start: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        let got = self
            .hub
            .get(&self.repo, file, Some((start, len)), len)
            .await?;
        Ok(got.map(|b| b.to_vec()))
    }
}

impl Fetch for Hub {
    fn check(&self, key: &str) -> Result<(), String> {
        check_repo_id(key).map_err(|e| e.to_string())
    }

    /// From the disk cache when it holds the model, else from the Hub
    /// (then kept on disk).
    fn fetch(
        &self,
        key: String,
    ) -> futures::future::BoxFuture<'static, Result<estimator::ModelSpec, String>> {
        let hub = self.clone();
        Box::pin(async move {
            let repo = hub.repo(&key).map_err(|e| e.to_string())?;
            let what = repo.describe();
            let settings = hub.settings();
            let cache_key = format!("{}|{}|{key}", settings.endpoint, settings.revision);
            if let Some(facts) = settings.cache.as_ref().and_then(|c| c.get(&cache_key)) {
                tracing::debug!(model = %key, "model read from the disk cache");
                return crate::resolve::spec_of(&key, &what, &facts).map_err(|e| e.to_string());
            }
            let facts = crate::resolve::read_facts(&repo)
                .await
                .map_err(|e| e.to_string())?;
            let spec = crate::resolve::spec_of(&key, &what, &facts).map_err(|e| e.to_string())?;
            if let Some(cache) = &settings.cache {
                cache.put(&cache_key, &facts);
            }
            Ok(spec)
        })
    }
}

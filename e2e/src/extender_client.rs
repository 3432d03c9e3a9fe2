//! kube-scheduler's HTTP client for an extender: `POST {urlPrefix}/{verb}`
//! with a JSON body, the whole request bounded by `httpTimeout`, and any
//! status but 200 an error.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An answer other than 200 OK; the status stays readable (kube-scheduler
/// reports it as `code N` in its bind error).
#[derive(Debug, thiserror::Error)]
#[error("{url}: HTTP {status}: {body}")]
pub struct HttpStatusError {
    pub url: String,
    pub status: http::StatusCode,
    /// The start of the body.
    pub body: String,
}

/// One extender endpoint.
#[derive(Clone, Debug)]
pub struct ExtenderClient {
    base: String,
    timeout: Duration,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl ExtenderClient {
    /// `url_prefix` as in the scheduler configuration (a trailing `/` is
    /// trimmed, as kube-scheduler does).
    pub fn new(url_prefix: &str, timeout: Duration) -> ExtenderClient {
        ExtenderClient {
            base: url_prefix.trim_end_matches('/').to_string(),
            timeout,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub fn url_prefix(&self) -> &str {
        &self.base
    }

    /// Calls `verb` with `body` and decodes the reply. No answer within the
    /// timeout is an error that downcasts to [`tokio::time::error::Elapsed`],
    /// an answer but 200 one that downcasts to [`HttpStatusError`].
    pub async fn call<B: Serialize, R: DeserializeOwned>(&self, verb: &str, body: &B) -> Result<R> {
        let url = format!("{}/{verb}", self.base);
        let json = serde_json::to_vec(body).context("encoding the request")?;
        let request = http::Request::post(&url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .context("building the request")?;
        let answer = tokio::time::timeout(self.timeout, async {
            let response = self.http.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        })
        .await
        .with_context(|| format!("{url}: no answer within {:?}", self.timeout))?
        .with_context(|| format!("{url}: request failed"))?;
        let (status, body) = answer;
        if status != http::StatusCode::OK {
            return Err(HttpStatusError {
                url,
                status,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            }
            .into());
        }
        serde_json::from_slice(&body).with_context(|| format!("{url}: undecodable reply"))
    }

    /// GET on a path of the same server (`/readyz`, `/metrics`).
    pub async fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let origin = origin(&self.base);
        let uri: http::Uri = format!("{origin}{path}").parse().context("bad URL")?;
        let request = http::Request::get(uri)
            .body(Full::new(Bytes::new()))
            .context("building the request")?;
        let response = tokio::time::timeout(self.timeout, self.http.request(request))
            .await
            .context("timed out")??;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// `http://host:port` of a URL.
fn origin(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    let scheme = url.split_once("://").map_or("http", |(s, _)| s);
    format!("{scheme}://{host}")
}

/// `POST url` with no body; any status but 2xx is an error.
pub async fn post_empty(url: &str) -> Result<()> {
    let http: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let request = http::Request::post(url)
        .body(Full::new(Bytes::new()))
        .context("building the request")?;
    let response = tokio::time::timeout(Duration::from_secs(10), http.request(request))
        .await
        .with_context(|| format!("{url}: no answer"))?
        .with_context(|| format!("{url}: request failed"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        bail!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn origin_drops_the_path() {
        assert_eq!(
            super::origin("http://127.0.0.1:8888/gpupack"),
            "http://127.0.0.1:8888"
        );
        assert_eq!(super::origin("http://a:1"), "http://a:1");
    }
}

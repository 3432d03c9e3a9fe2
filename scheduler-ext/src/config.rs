//! Configuration: flags, the same names as `GPUPACK_EXT_*` environment
//! variables, and an optional YAML file (`--config`) with the flags' long
//! names as keys. A flag or variable wins over the file, the file over the
//! default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use placement::Policy;
use serde::Deserialize;

/// Command-line flags and environment variables.
#[derive(Parser, Debug, Default, Clone)]
#[command(
    name = "gpupack-scheduler-ext",
    about = "kube-scheduler extender that places pods on GPUs (filter, prioritize, bind)",
    version
)]
pub struct Args {
    /// YAML file with any of the settings below (keys are the long flag names).
    #[arg(long, env = "GPUPACK_EXT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve the extender, health and metrics on [default: 0.0.0.0:8888].
    #[arg(long, env = "GPUPACK_EXT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// A separate plain-HTTP address for /healthz, /readyz and /metrics; with it,
    /// --listen serves only the verbs, so they can stay on localhost next to
    /// kube-scheduler while probes and Prometheus reach the pod [default: none].
    #[arg(long, env = "GPUPACK_EXT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Path prefix of the verbs, as in the scheduler's `urlPrefix` [default: none].
    #[arg(long, env = "GPUPACK_EXT_URL_PREFIX")]
    pub url_prefix: Option<String>,
    /// Placement policy: gpupack, best-fit, spread, packing, fgd, first-fit, random [default: gpupack].
    #[arg(long, env = "GPUPACK_EXT_POLICY")]
    pub policy: Option<String>,
    /// PEM certificate chain; with --tls-key, serves HTTPS (the scheduler's `enableHTTPS`).
    #[arg(long, env = "GPUPACK_EXT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "GPUPACK_EXT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates; with it, HTTPS clients must present a certificate
    /// they signed (the scheduler's `tlsConfig.certFile`/`keyFile`). kubelet's
    /// HTTP probes present none: serve them on --metrics-listen [default: none].
    #[arg(long, env = "GPUPACK_EXT_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Largest request body in bytes [default: 67108864].
    #[arg(long, env = "GPUPACK_EXT_BODY_LIMIT_BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// Per-request timeout in milliseconds, also the limit for a TLS handshake; keep it under the scheduler's `httpTimeout` [default: 4000].
    #[arg(long, env = "GPUPACK_EXT_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Most client connections held open at once; more are closed on accept. Health probes share the cap unless served on --metrics-listen [default: 1024].
    #[arg(long, env = "GPUPACK_EXT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds a node's booking for a pod holds before its Binding exists; once bound, it holds until the pod is gone [default: 60].
    #[arg(long, env = "GPUPACK_EXT_RESERVATION_TTL_SECONDS")]
    pub reservation_ttl_seconds: Option<u64>,
    /// Attempts at a node's reservation before a bind gives up [default: 8].
    #[arg(long, env = "GPUPACK_EXT_BIND_ATTEMPTS")]
    pub bind_attempts: Option<u32>,
    /// Evict lower-priority pods for a pod no GPU set fits (kube-scheduler's own preemption cannot see per-GPU memory) [default: true].
    #[arg(long, env = "GPUPACK_EXT_PREEMPTION", value_parser = clap::builder::BoolishValueParser::new())]
    pub preemption: Option<bool>,
    /// Seconds the GPUs a preemption frees are held for its pod [default: 300].
    #[arg(long, env = "GPUPACK_EXT_NOMINATION_TTL_SECONDS")]
    pub nomination_ttl_seconds: Option<u64>,
    /// Least seconds between two Events of one kind on one pod [default: 60].
    #[arg(long, env = "GPUPACK_EXT_EVENT_INTERVAL_SECONDS")]
    pub event_interval_seconds: Option<u64>,
    /// Name of this replica in reservations and Events [default: $POD_NAME or $HOSTNAME].
    #[arg(long, env = "GPUPACK_EXT_IDENTITY")]
    pub identity: Option<String>,
    /// Seconds to finish in-flight requests after SIGTERM [default: 10].
    #[arg(long, env = "GPUPACK_EXT_SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "GPUPACK_EXT_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Hugging Face Hub to read the config and safetensors headers of models
    /// outside the catalog from; the token is read from HF_TOKEN [default: https://huggingface.co].
    #[arg(long, env = "HF_ENDPOINT")]
    pub hf_endpoint: Option<String>,
    /// Never consult the Hub: models outside the catalog are refused [default: false].
    #[arg(long, env = "HF_HUB_OFFLINE", value_parser = clap::builder::BoolishValueParser::new())]
    pub hub_offline: Option<bool>,
    /// Limit of one request to the Hub in milliseconds [default: 10000].
    #[arg(long, env = "GPUPACK_EXT_HUB_TIMEOUT_MS")]
    pub hub_timeout_ms: Option<u64>,
    /// Directory to keep what was read from the Hub in (a few KB per model,
    /// at most 1024 models, each read again after a day), so that a restart
    /// need not wait for the Hub [default: none].
    #[arg(long, env = "GPUPACK_EXT_MODEL_CACHE_DIR")]
    pub model_cache_dir: Option<PathBuf>,
}

/// The settings file; every key optional, unknown keys refused.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct File {
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    url_prefix: Option<String>,
    policy: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    body_limit_bytes: Option<usize>,
    request_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    reservation_ttl_seconds: Option<u64>,
    bind_attempts: Option<u32>,
    preemption: Option<bool>,
    nomination_ttl_seconds: Option<u64>,
    event_interval_seconds: Option<u64>,
    identity: Option<String>,
    shutdown_grace_seconds: Option<u64>,
    log_format: Option<String>,
    hf_endpoint: Option<String>,
    hub_offline: Option<bool>,
    hub_timeout_ms: Option<u64>,
    model_cache_dir: Option<PathBuf>,
}

/// Whether logs are for people or for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub url_prefix: String,
    pub policy: Policy,
    /// Certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA file clients' certificates are verified against; only with `tls`.
    pub tls_client_ca: Option<PathBuf>,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub reservation_ttl: Duration,
    pub bind_attempts: u32,
    /// `None`: the extender does not preempt; else how long a nomination holds.
    pub nomination_ttl: Option<Duration>,
    pub event_interval: Duration,
    pub identity: String,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// Where models outside the catalog are read; `None`: offline.
    pub hub: Option<model_source::HubSettings>,
}

/// A setting that cannot be used; names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{setting}: {problem}")]
    Invalid {
        setting: &'static str,
        problem: String,
    },
}

impl Config {
    /// Resolves flags over the file over the defaults.
    pub fn resolve(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        let invalid = |setting, problem: String| ConfigError::Invalid { setting, problem };
        let policy_name = args
            .policy
            .or(file.policy)
            .unwrap_or_else(|| "gpupack".into());
        let policy: Policy = policy_name
            .parse()
            .map_err(|e: placement::UnknownPolicy| invalid("policy", e.to_string()))?;
        let tls = match (
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls-key", "required with tls-cert".into())),
            (None, Some(_)) => return Err(invalid("tls-cert", "required with tls-key".into())),
        };
        let tls_client_ca = args.tls_client_ca.or(file.tls_client_ca);
        if tls_client_ca.is_some() && tls.is_none() {
            return Err(invalid(
                "tls-client-ca",
                "client certificates need HTTPS; set tls-cert and tls-key".into(),
            ));
        }
        let positive = |setting, v: u64| {
            if v == 0 {
                Err(invalid(setting, "must be greater than 0".into()))
            } else {
                Ok(v)
            }
        };
        let ttl = positive(
            "reservation-ttl-seconds",
            args.reservation_ttl_seconds
                .or(file.reservation_ttl_seconds)
                .unwrap_or(60),
        )?;
        if ttl < 10 {
            return Err(invalid(
                "reservation-ttl-seconds",
                format!("{ttl} is too short to outlive a bind; use at least 10"),
            ));
        }
        let log_format = match args
            .log_format
            .or(file.log_format)
            .as_deref()
            .unwrap_or("text")
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log-format",
                    format!("{other:?} is neither text nor json"),
                ));
            }
        };
        let hub = if args.hub_offline.or(file.hub_offline).unwrap_or(false) {
            None
        } else {
            let mut hub = model_source::HubSettings::from_env();
            if let Some(endpoint) = args.hf_endpoint.or(file.hf_endpoint) {
                hub.endpoint = endpoint;
            }
            hub.timeout = Duration::from_millis(positive(
                "hub-timeout-ms",
                args.hub_timeout_ms
                    .or(file.hub_timeout_ms)
                    .unwrap_or(10_000),
            )?);
            if let Some(dir) = args.model_cache_dir.or(file.model_cache_dir) {
                hub.cache = Some(
                    model_source::DiskCache::new(
                        dir,
                        model_source::DiskCache::MAX_ENTRIES,
                        model_source::DiskCache::MAX_AGE,
                    )
                    .map_err(|e| invalid("model-cache-dir", e.to_string()))?,
                );
            }
            model_source::Hub::new(hub.clone())
                .map_err(|e| invalid("hf-endpoint", e.to_string()))?;
            Some(hub)
        };
        let mut url_prefix = args.url_prefix.or(file.url_prefix).unwrap_or_default();
        if !url_prefix.is_empty() && !url_prefix.starts_with('/') {
            url_prefix.insert(0, '/');
        }
        Ok(Config {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8888))),
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            url_prefix: url_prefix.trim_end_matches('/').to_string(),
            policy,
            tls,
            tls_client_ca,
            body_limit_bytes: positive(
                "body-limit-bytes",
                args.body_limit_bytes
                    .or(file.body_limit_bytes)
                    .unwrap_or(64 << 20) as u64,
            )? as usize,
            request_timeout: Duration::from_millis(positive(
                "request-timeout-ms",
                args.request_timeout_ms
                    .or(file.request_timeout_ms)
                    .unwrap_or(4000),
            )?),
            max_connections: positive(
                "max-connections",
                args.max_connections
                    .or(file.max_connections)
                    .unwrap_or(1024) as u64,
            )? as usize,
            reservation_ttl: Duration::from_secs(ttl),
            bind_attempts: positive(
                "bind-attempts",
                u64::from(args.bind_attempts.or(file.bind_attempts).unwrap_or(8)),
            )? as u32,
            nomination_ttl: args
                .preemption
                .or(file.preemption)
                .unwrap_or(true)
                .then(|| {
                    positive(
                        "nomination-ttl-seconds",
                        args.nomination_ttl_seconds
                            .or(file.nomination_ttl_seconds)
                            .unwrap_or(300),
                    )
                    .map(Duration::from_secs)
                })
                .transpose()?,
            event_interval: Duration::from_secs(
                args.event_interval_seconds
                    .or(file.event_interval_seconds)
                    .unwrap_or(60),
            ),
            identity: args
                .identity
                .or(file.identity)
                .or_else(|| std::env::var("POD_NAME").ok())
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "gpupack-scheduler-ext".into()),
            shutdown_grace: Duration::from_secs(
                args.shutdown_grace_seconds
                    .or(file.shutdown_grace_seconds)
                    .unwrap_or(10),
            ),
            log_format,
            hub,
        })
    }
}

fn read_file(path: &Path) -> Result<File, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| ConfigError::Parse {
        path: shown,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn defaults() {
        let c = Config::resolve(Args::default()).unwrap();
        assert_eq!(c.listen.port(), 8888);
        assert_eq!(c.policy, Policy::Gpupack);
        assert_eq!(c.url_prefix, "");
        assert!(c.tls.is_none());
    }

    #[test]
    fn flags_win_over_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "policy: best-fit\nurl-prefix: scheduler/\nbind-attempts: 3"
        )
        .unwrap();
        let args = Args {
            config: Some(f.path().into()),
            policy: Some("spread".into()),
            ..Args::default()
        };
        let c = Config::resolve(args).unwrap();
        assert_eq!(c.policy, Policy::Spread);
        assert_eq!(c.url_prefix, "/scheduler");
        assert_eq!(c.bind_attempts, 3);
    }

    #[test]
    fn bad_settings_are_named() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "polcy: gpupack").unwrap();
        let e = Config::resolve(Args {
            config: Some(f.path().into()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("polcy"), "{e}");
        let e = Config::resolve(Args {
            policy: Some("greedy".into()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("policy:"), "{e}");
        let e = Config::resolve(Args {
            tls_cert: Some("c.pem".into()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("tls-key"), "{e}");
        let e = Config::resolve(Args {
            tls_client_ca: Some("ca.pem".into()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("tls-client-ca:"), "{e}");
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = Config::resolve(Args {
            model_cache_dir: Some(file.path().join("models")),
            ..Args::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("model-cache-dir:"), "{e}");
    }

    #[test]
    fn the_model_cache_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::resolve(Args {
            model_cache_dir: Some(dir.path().join("models")),
            ..Args::default()
        })
        .unwrap();
        let cache = c.hub.unwrap().cache.unwrap();
        assert!(cache.dir().is_dir());
        // Offline, nothing is read from the Hub and no cache is made.
        let c = Config::resolve(Args {
            model_cache_dir: Some(dir.path().join("unused")),
            hub_offline: Some(true),
            ..Args::default()
        })
        .unwrap();
        assert!(c.hub.is_none());
        assert!(!dir.path().join("unused").exists());
    }
}

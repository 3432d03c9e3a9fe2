//! The running service: the state, its watches, the binder, the event
//! publisher and the HTTP(S) listener, wired together; and graceful
//! shutdown (stop accepting, let in-flight requests finish within a grace
//! period).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use http_serve::{Connections, Deadlines, Tls, serve};
use kube::Client;
use kube::runtime::events::Reporter;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;

use crate::bind::{BindConfig, Binder, Clock};
use crate::cluster_state::ClusterState;
use crate::config::Config;
use crate::events::Events;
use crate::http::{App, Limits, ops_router, router, verbs_router};
use crate::metrics::Metrics;
use crate::watch::{self, Feeds, Readiness};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("Hugging Face Hub client: {0}")]
    Hub(#[source] model_source::SourceError),
}

/// A running extender.
pub struct Extender {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
    serving: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    pub readiness: Arc<Readiness>,
    pub state: Arc<RwLock<ClusterState>>,
    pub metrics: Arc<Metrics>,
}

impl Extender {
    /// Starts watching the API through `client` and serving on
    /// `config.listen` (port 0 picks a free one).
    pub async fn start(
        client: Client,
        config: &Config,
        clock: Clock,
    ) -> Result<Extender, StartError> {
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key, config.tls_client_ca.as_deref())?),
            None => None,
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let state = Arc::new(RwLock::new(ClusterState::new(config.policy)));
        let metrics = Arc::new(Metrics::new());
        let readiness = Arc::new(Readiness::default());
        // Models outside the catalog: resolved in the background, so that
        // no verb waits on the Hub.
        let hub: Arc<dyn model_source::ModelLookup> = match &config.hub {
            Some(hub) => match model_source::Hub::new(hub.clone()) {
                Ok(hub) => Arc::new(model_source::Registry::new(
                    hub,
                    model_source::RegistrySettings::default(),
                )),
                Err(e) => return Err(StartError::Hub(e)),
            },
            None => Arc::new(model_source::Offline),
        };
        let models: Arc<dyn model_source::ModelLookup> =
            Arc::new(crate::models::ModelSources::new(hub, client.clone()));
        let background = watch::spawn(
            client.clone(),
            Feeds {
                state: state.clone(),
                metrics: metrics.clone(),
                readiness: readiness.clone(),
                clock: clock.clone(),
                models: models.clone(),
            },
        );
        let binder = Binder::new(
            client.clone(),
            state.clone(),
            BindConfig {
                reservation_ttl: config.reservation_ttl.as_secs(),
                margin: (config.reservation_ttl.as_secs() / 3).max(1),
                attempts: config.bind_attempts,
                holder: config.identity.clone(),
                deadline: config.request_timeout,
            },
            clock.clone(),
        )
        .with_models(models.clone());
        let requeue_client = client.clone();
        let events = Events::start(
            client,
            Reporter {
                controller: "gpupack-scheduler-ext".into(),
                instance: Some(config.identity.clone()),
            },
            config.event_interval,
        );
        let preemptor = config.nomination_ttl.map(|ttl| {
            crate::preemption::Preemptor::new(
                requeue_client.clone(),
                state.clone(),
                binder.clone(),
                events.clone(),
                metrics.clone(),
                clock.clone(),
                ttl.as_secs(),
                config.identity.clone(),
            )
        });
        let app = Arc::new(App {
            state: state.clone(),
            binder: Some(binder),
            events,
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            models,
            preemptor,
        });
        let limits = Limits {
            body_bytes: config.body_limit_bytes,
            timeout: config.request_timeout,
            ..Limits::default()
        };
        let conns = Connections {
            deadlines: Deadlines {
                header: config.request_timeout,
                idle: Deadlines::IDLE,
            },
            max: config.max_connections,
        };
        let stop = CancellationToken::new();
        // With a separate metrics address, the verbs listener serves nothing
        // else: it can stay on localhost, reachable only by kube-scheduler.
        let (routes, ops) = match config.metrics_listen {
            None => (router(app, &config.url_prefix, &limits), None),
            Some(ops_addr) => {
                let ops_listener =
                    TcpListener::bind(ops_addr)
                        .await
                        .map_err(|source| StartError::Listen {
                            addr: ops_addr,
                            source,
                        })?;
                let bound = ops_listener
                    .local_addr()
                    .map_err(|source| StartError::Listen {
                        addr: ops_addr,
                        source,
                    })?;
                let task = tokio::spawn(serve(
                    ops_listener,
                    ops_router(app.clone()),
                    None,
                    conns,
                    stop.clone(),
                    config.shutdown_grace,
                ));
                (
                    verbs_router(app, &config.url_prefix, &limits),
                    Some((bound, task)),
                )
            }
        };
        let tls = tls.map(|acceptor| Tls {
            acceptor,
            handshake_timeout: config.request_timeout,
        });
        let serving = tokio::spawn(serve(
            listener,
            routes,
            tls,
            conns,
            stop.clone(),
            config.shutdown_grace,
        ));
        let metrics_addr = ops.as_ref().map(|(a, _)| *a);
        let mut background = background;
        if let Some((_, task)) = ops {
            background.push(task);
        }
        background.push(tokio::spawn(crate::requeue::run(
            requeue_client,
            readiness.clone(),
            metrics.clone(),
            stop.clone(),
        )));
        if config.tls_client_ca.is_some() && metrics_addr.is_none() {
            tracing::warn!(
                "HTTPS clients must present a certificate, also kubelet's probes of /healthz and /readyz, which cannot; serve those on --metrics-listen"
            );
        }
        tracing::info!(%addr, metrics = ?metrics_addr, tls = config.tls.is_some(), client_certs = config.tls_client_ca.is_some(), prefix = %config.url_prefix, policy = %config.policy, "serving");
        Ok(Extender {
            addr,
            metrics_addr,
            stop,
            serving,
            background,
            readiness,
            state,
            metrics,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where health and metrics are served when `--metrics-listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, waits for in-flight requests (up to the grace
    /// period), then stops the watches.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.serving.await;
        for task in self.background {
            task.abort();
        }
    }
}

/// The TLS side of the listener; with `client_ca`, a client must present a
/// certificate that CA signed (kube-scheduler sends its `tlsConfig`'s
/// `certFile`/`keyFile`), so no one else can ask for binds.
fn tls_acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, StartError> {
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| StartError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(path)? {
                roots
                    .add(ca)
                    .map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The PEM certificates in `path`; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, StartError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(StartError::Tls(format!(
            "{}: no certificate",
            path.display()
        )));
    }
    Ok(certs)
}

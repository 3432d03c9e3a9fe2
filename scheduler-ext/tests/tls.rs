//! HTTPS as kube-scheduler speaks it with `enableHTTPS` and a `tlsConfig`:
//! a CA and certificates made at test time, the captured filter body sent
//! over TLS by a client trusting that CA, and the refusals: plain HTTP on
//! the TLS port, a client that does not trust the server, and (with
//! `--tls-client-ca`) a client without a certificate that CA signed; and a
//! client that never finishes its handshake, dropped after the request timeout.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use scheduler_ext::{Args, Extender};
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The name in the server's certificate, as in `tlsConfig.serverName`.
const SERVER_NAME: &str = "gpupack-scheduler-ext.kube-system.svc";

/// A certificate authority made for one test.
struct Ca {
    der: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate signed by a [`Ca`], and its key.
struct Leaf {
    der: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `name`, for a server or for a client.
    fn issue(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Writes `text` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A cluster with the fixture nodes and an extender serving HTTPS with a
/// certificate `ca` signed; with `client_ca`, it also asks clients for theirs.
async fn https_extender(
    ca: &Ca,
    client_ca: Option<&Ca>,
    dir: &Path,
) -> (apiserver_standin::ApiServer, Extender) {
    let (server, client) = cluster().await;
    add_fixture_nodes(&client).await;
    let leaf = ca.issue(SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth);
    let ext = start_extender(
        &client,
        Args {
            identity: Some("tls".into()),
            tls_cert: Some(write(dir, "tls.crt", &leaf.cert_pem)),
            tls_key: Some(write(dir, "tls.key", &leaf.key_pem)),
            tls_client_ca: client_ca.map(|c| write(dir, "client-ca.crt", &c.pem)),
            // Probes and metrics on plain HTTP, as with client certificates
            // they must be.
            metrics_listen: client_ca.map(|_| "127.0.0.1:0".parse().unwrap()),
            ..Args::default()
        },
    )
    .await;
    eventually("extender ready", || async { ext.readiness.is_ready() }).await;
    (server, ext)
}

/// A TLS client trusting `trusted`, presenting `identity` if given.
fn client(trusted: &Ca, identity: Option<&Leaf>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.der.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der.clone()], leaf.key.clone_key())
            .unwrap(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// One exchange over HTTPS; `Err` where the handshake or the answer fails.
async fn https(
    connector: &TlsConnector,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    exchange(tls, SERVER_NAME, method, path, body).await
}

/// kube-scheduler's filter call, checked as in the plain-HTTP wire tests.
fn assert_filtered(reply: Result<(u16, String), String>) {
    let (status, text) = reply.unwrap();
    assert_eq!(status, 200, "{text}");
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["Error"], "", "{r}");
    assert_eq!(r["NodeNames"], json!([NODE_OK]), "{r}");
    assert!(
        r["FailedAndUnresolvableNodes"][NODE_NEVER].is_string(),
        "{r}"
    );
}

#[tokio::test]
async fn serves_the_captured_filter_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("gpupack test CA");
    let (_server, ext) = https_extender(&ca, None, dir.path()).await;
    let trusting = client(&ca, None);
    let filter = fixture("ncc-true", "filter-1.json");

    assert_filtered(https(&trusting, ext.addr(), "POST", "/filter", &filter).await);
    let (status, body) = https(&trusting, ext.addr(), "GET", "/readyz", "")
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "ready"));

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = exchange(
        TcpStream::connect(ext.addr()).await.unwrap(),
        "localhost",
        "POST",
        "/filter",
        &filter,
    )
    .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // A client that trusts another CA refuses the server's certificate.
    let stranger = client(&Ca::new("another CA"), None);
    let e = https(&stranger, ext.addr(), "POST", "/filter", &filter)
        .await
        .unwrap_err();
    assert!(e.contains("handshake") && e.contains("certificate"), "{e}");

    // The server still answers a trusting client, and the refused requests
    // never reached the verbs.
    assert_filtered(https(&trusting, ext.addr(), "POST", "/filter", &filter).await);
    let (_, metrics) = https(&trusting, ext.addr(), "GET", "/metrics", "")
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"gpupack_extender_requests_total{verb="filter",outcome="ok"} 2"#),
        "{metrics}"
    );
    ext.shutdown().await;
}

#[tokio::test]
async fn a_client_ca_admits_only_clients_it_signed() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("gpupack serving CA");
    let client_ca = Ca::new("gpupack client CA");
    let (_server, ext) = https_extender(&server_ca, Some(&client_ca), dir.path()).await;
    let filter = fixture("ncc-false", "filter-1.json");

    let scheduler = client_ca.issue("kube-scheduler", ExtendedKeyUsagePurpose::ClientAuth);
    let (status, text) = https(
        &client(&server_ca, Some(&scheduler)),
        ext.addr(),
        "POST",
        "/filter",
        &filter,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{text}");
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["Nodes"]["items"][0]["metadata"]["name"], NODE_OK, "{r}");

    // No certificate, or one from a CA the server does not know: refused
    // (in TLS 1.3 the client learns it on its first read).
    let anonymous = https(
        &client(&server_ca, None),
        ext.addr(),
        "POST",
        "/filter",
        &filter,
    )
    .await;
    assert!(
        anonymous.is_err(),
        "answered without a client certificate: {anonymous:?}"
    );
    let forged = server_ca.issue("kube-scheduler", ExtendedKeyUsagePurpose::ClientAuth);
    let forged = https(
        &client(&server_ca, Some(&forged)),
        ext.addr(),
        "POST",
        "/filter",
        &filter,
    )
    .await;
    assert!(
        forged.is_err(),
        "answered a client of another CA: {forged:?}"
    );

    // kubelet's probes, which present no certificate, use the plain
    // operations address.
    let ops = ext.metrics_addr().unwrap();
    assert_eq!(
        http_at(ops, "GET", "/readyz", "").await,
        (200, "ready".into())
    );
    let (_, metrics) = http_at(ops, "GET", "/metrics", "").await;
    assert!(
        metrics.contains(r#"gpupack_extender_requests_total{verb="filter",outcome="ok"} 1"#),
        "only the signed client was served: {metrics}"
    );
    ext.shutdown().await;
}

#[tokio::test]
async fn a_stalled_handshake_is_dropped_after_the_request_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("gpupack test CA");
    let (_server, ext) = https_extender(&ca, None, dir.path()).await;

    // Connects and never starts the handshake.
    let mut stalled = TcpStream::connect(ext.addr()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stalled.read(&mut buf))
        .await
        .expect("the server kept a stalled handshake open for 30 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection closed, got {read:?}"
    );
    // The default request timeout (4 s) bounds the handshake.
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(3),
        "closed before the timeout: {waited:?}"
    );

    // Others are still served.
    let filter = fixture("ncc-true", "filter-1.json");
    assert_filtered(https(&client(&ca, None), ext.addr(), "POST", "/filter", &filter).await);
    ext.shutdown().await;
}

//! The `gpupack-scheduler-ext` command line, as a library function so that
//! other binaries (the end-to-end harness) can run the very same program.

use crate::config::LogFormat;
use crate::{Args, Config, Extender, system_clock};
use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Runs the command line: what `gpupack-scheduler-ext` does.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let config = Config::resolve(Args::parse()).context("invalid configuration")?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let mut kube_config = kube::Config::infer()
        .await
        .context("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    // client-go retries a 429 or 5xx only when the server sends Retry-After;
    // kube's default layer retries them 15 times with backoff growing to
    // minutes, which turns an eviction a PodDisruptionBudget refuses (429)
    // into a stall of minutes. Every call here has its own deadline or backoff.
    kube_config.default_retry = false;
    let client =
        kube::Client::try_from(kube_config).context("cannot build a Kubernetes API client")?;
    let extender = Extender::start(client, &config, system_clock())
        .await
        .context("cannot start the extender")?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    extender.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

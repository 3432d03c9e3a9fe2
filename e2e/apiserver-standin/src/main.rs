//! `apiserver-standin`: serves the stand-in on a port and writes a
//! kubeconfig for other processes (the e2e harness, the gpupack binaries).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use apiserver_standin::{ApiServer, DEFAULT_CONSISTENT_LIST_COST, Options, ResourceType};
use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

#[derive(Parser, Debug)]
#[command(
    about = "Kubernetes API server stand-in: pods, nodes, events, leases and CRDs with real resourceVersion, watch and binding semantics"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "STANDIN_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at the server here.
    #[arg(long, env = "STANDIN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Serve a custom resource: GROUP/VERSION/PLURAL/KIND/SCOPE with SCOPE
    /// Cluster or Namespaced, optionally followed by /status. Repeatable.
    #[arg(long = "crd", value_name = "SPEC")]
    crds: Vec<String>,
    /// Serve the custom resources a CRD manifest (YAML, may hold several
    /// documents) declares. Repeatable.
    #[arg(long = "crd-file", value_name = "PATH")]
    crd_files: Vec<PathBuf>,
    /// Also serve gpupack's `gpunodeinventories.gpupack.io/v1`.
    #[arg(long)]
    gpupack_crds: bool,
    /// Changes kept for watches to resume from.
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// Interval between bookmarks on idle watches, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    bookmark_interval_ms: u64,
    /// Cost of a consistent list (no resourceVersion, served by etcd) per
    /// stored object of the listed resource, in microseconds; 0: free.
    #[arg(long, default_value_t = DEFAULT_CONSISTENT_LIST_COST.as_micros() as u64)]
    consistent_list_cost_us: u64,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn parse_crd_spec(spec: &str) -> anyhow::Result<ResourceType> {
    let parts: Vec<&str> = spec.split('/').collect();
    let (rt, status) = match parts.as_slice() {
        [g, v, p, k, scope, rest @ ..] => {
            let rt = match *scope {
                "Cluster" => ResourceType::cluster(g, v, p, k),
                "Namespaced" => ResourceType::namespaced(g, v, p, k),
                other => bail!("--crd {spec}: scope must be Cluster or Namespaced, not {other:?}"),
            };
            match rest {
                [] => (rt, false),
                ["status"] => (rt, true),
                _ => bail!("--crd {spec}: only /status may follow the scope"),
            }
        }
        _ => bail!("--crd {spec}: expected GROUP/VERSION/PLURAL/KIND/SCOPE[/status]"),
    };
    Ok(if status { rt.with_status() } else { rt })
}

fn crds_from_file(path: &PathBuf) -> anyhow::Result<Vec<ResourceType>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("{} is not valid YAML", path.display()))?;
    let mut types = Vec::new();
    for (i, value) in docs.into_iter().enumerate() {
        if value.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
            continue;
        }
        let crd: CustomResourceDefinition = serde_json::from_value(value).with_context(|| {
            format!(
                "{}: document {} is not a valid CustomResourceDefinition",
                path.display(),
                i + 1
            )
        })?;
        types.extend(
            ResourceType::from_crd(&crd)
                .with_context(|| format!("{}: document {}", path.display(), i + 1))?,
        );
    }
    if types.is_empty() {
        bail!("{}: holds no CustomResourceDefinition", path.display());
    }
    Ok(types)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init();
    }
    let mut types = Vec::new();
    for spec in &args.crds {
        types.push(parse_crd_spec(spec)?);
    }
    for path in &args.crd_files {
        types.extend(crds_from_file(path)?);
    }
    if args.gpupack_crds {
        types.push(ResourceType::gpu_node_inventory());
    }
    let options = Options {
        listen: args.listen,
        log_capacity: args.watch_history,
        bookmark_interval: Duration::from_millis(args.bookmark_interval_ms),
        types,
        consistent_list_cost: Duration::from_micros(args.consistent_list_cost_us),
        ..Options::default()
    };
    let server = ApiServer::start_with(options)
        .await
        .context("starting the API server stand-in")?;
    if let Some(path) = &args.kubeconfig {
        server
            .write_kubeconfig(path)
            .with_context(|| format!("writing kubeconfig {}", path.display()))?;
    }
    // Logs go to stderr; stdout carries this one line, for a parent process to read.
    println!("{}", server.url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for a shutdown signal")?;
    server.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_specs() {
        let rt =
            parse_crd_spec("gpupack.io/v1/gpunodeinventories/GpuNodeInventory/Cluster").unwrap();
        assert_eq!(rt, ResourceType::gpu_node_inventory());
        let rt = parse_crd_spec("x.io/v1/things/Thing/Namespaced/status").unwrap();
        assert!(rt.namespaced && rt.status_subresource);
        assert!(parse_crd_spec("x.io/v1/things/Thing/Global").is_err());
        assert!(parse_crd_spec("x.io/v1/things").is_err());
    }
}

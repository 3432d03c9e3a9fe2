//! `e2e demo`: the whole system on this machine. Started under the name of
//! a component (see `e2e::multicall`), the binary runs that component.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use e2e::local::{LocalCluster, LocalOptions};
use e2e::process::Programs;
use e2e::{report, spec};

#[derive(Parser)]
#[command(name = "e2e", about = "gpupack end to end")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Brings up 4 simulated GPU nodes with the real device plugins and
    /// extender, schedules an LLM mix, prints where everything went, and
    /// cleans up.
    Demo {
        /// Where to write the picture of GPU memory per node.
        #[arg(long, default_value = "gpupack-demo.svg")]
        svg: PathBuf,
    },
}

fn main() -> Result<()> {
    e2e::multicall::dispatch();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Demo { svg } => runtime.block_on(demo(svg)),
    }
}

async fn demo(svg: PathBuf) -> Result<()> {
    let start = Instant::now();
    let nodes = spec::default_cluster();
    println!(
        "starting {} simulated nodes ({}), the API server and kubelet stand-ins, {} device plugins and the extender...",
        nodes.len(),
        nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        nodes.len()
    );
    let cluster = LocalCluster::start(Programs::current()?, LocalOptions::new(nodes)).await?;
    println!(
        "up in {:.1} s; logs in {}",
        start.elapsed().as_secs_f64(),
        cluster.dir().display()
    );
    let workload = spec::default_workload();
    let names: Vec<String> = workload.iter().map(|p| p.name().to_string()).collect();
    cluster.submit(&workload).await?;
    let scheduled = Instant::now();
    let view = cluster
        .wait_for("every pod running", Duration::from_secs(40), |v| {
            names
                .iter()
                .all(|n| v.phase(n).as_deref() == Some("Running"))
        })
        .await;
    let view = match view {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e:#}");
            cluster.view().await?
        }
    };
    println!(
        "\n{} of {} pods running in {:.1} s\n",
        view.running(),
        names.len(),
        scheduled.elapsed().as_secs_f64()
    );
    print!("{}", report::text(&view));
    if let Ok((_, metrics)) = cluster.extenders[0].client.get_text("/metrics").await
        && let Some(ratio) = metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.split_once("fragmentation_ratio ").map(|(_, v)| v))
    {
        println!(
            "extender's fragmentation (share of idle GPU capacity the typical pod mix cannot use): {ratio}"
        );
    }
    let findings = view.check();
    println!(
        "\ndouble bookings: {}, lost assignments: {}, environment mismatches: {}, TP pods off NVLink: {}",
        findings.double_bookings.len(),
        findings.lost_assignments.len(),
        findings.env_mismatches.len(),
        findings.link_violations.len()
    );
    for problem in findings
        .double_bookings
        .iter()
        .chain(&findings.lost_assignments)
        .chain(&findings.env_mismatches)
        .chain(&findings.link_violations)
    {
        println!("  {problem}");
    }
    std::fs::write(&svg, report::svg(&view))
        .with_context(|| format!("writing {}", svg.display()))?;
    println!("wrote {}", svg.display());
    drop(cluster);
    println!(
        "done in {:.1} s; every process stopped and its files removed",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

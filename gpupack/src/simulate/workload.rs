//! `gpupack simulate --workload FILE.yaml`: LLM deployments on a GPU fleet.
//!
//! The file names node types (GPU model, memory, count, interconnect, MIG
//! layout) and deployments (model, dtype, tensor parallelism, context length,
//! concurrency, replicas). The estimator sizes each deployment's pods; every
//! policy then places them in a shuffled order per seed, and the report
//! gives, per policy, the median over seeds of pods placed, GPUs used, GPU
//! memory allocated and stranded, tensor-parallel placements by link level,
//! and failed pods by reason. Without any input, `gpupack simulate` runs
//! the first shipped example, so it works on a fresh clone.

pub mod deploy;
pub mod fleet;
pub mod replay;
mod report;
mod spec;

use std::fmt;

use anyhow::{Context, Result, bail};

pub use deploy::Deployment;
pub use fleet::Fleet;

use super::Args;

pub const GIB: u64 = 1 << 30;

/// Where the built-in example lives in the repository.
pub const EXAMPLE_PATH: &str = "gpupack/workloads/mixed-fleet.yaml";
/// The built-in example: a mixed fleet serving Llama, Mixtral and Qwen.
pub const EXAMPLE: &str = include_str!("../../workloads/mixed-fleet.yaml");

/// A workload file that cannot be used: the file, the line (0 when
/// unknown), the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub file: String,
    pub line: u64,
    pub field: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(file: &str, line: u64, field: &str, problem: impl Into<String>) -> Invalid {
        Invalid {
            file: file.to_string(),
            line,
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for Invalid {}

/// GiB with one decimal, for messages and tables.
pub fn gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / GIB as f64)
}

/// A parsed, sized workload.
#[derive(Debug, Clone)]
pub struct Workload {
    pub file: String,
    pub description: Option<String>,
    pub fleet: Fleet,
    pub deployments: Vec<Deployment>,
}

/// Parses a workload file's text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Workload, Invalid> {
    let w = spec::parse(file, text)?;
    let fleet = fleet::build(file, &w)?;
    let deployments = deploy::build(file, &w, &fleet)?;
    Ok(Workload {
        file: file.to_string(),
        description: w.description.clone(),
        fleet,
        deployments,
    })
}

pub fn run(args: &Args) -> Result<()> {
    if args.workload.is_some() && (args.trace_nodes.is_some() || !args.trace_pods.is_empty()) {
        bail!("give either --workload or --trace-nodes/--trace-pods, not both");
    }
    let trace_only = [
        ("--lp", args.lp),
        ("--published", args.published.is_some()),
        ("--sample-nodes", args.sample_nodes != 1),
        ("--memory-mode", args.memory_mode != "comparable"),
    ];
    if let Some((flag, _)) = trace_only.iter().find(|(_, given)| *given) {
        bail!("{flag} applies to the Alibaba trace replay, not to a workload file");
    }
    let policies = super::parse_policies(&args.policy)?;
    let seeds = super::parse_seeds(&args.seeds)?;
    let json = match args.format.as_str() {
        "table" => false,
        "json" => true,
        other => bail!("--format: {other:?} is neither table nor json"),
    };
    let (file, text) = match &args.workload {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => (format!("{EXAMPLE_PATH} (built in)"), EXAMPLE.to_string()),
    };
    let workload = parse(&file, &text)?;
    for (i, d) in workload.deployments.iter().enumerate() {
        if let Some(why) = &d.unplaceable {
            eprintln!(
                "warning: {file}: deployments[{i}] ({}): unplaceable: {why}",
                d.name
            );
        }
    }
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let runs = replay::simulate(&workload, &policies, &seeds, jobs)?;
    let summaries = report::summarize(&workload, &runs);
    let out = if json {
        serde_json::to_string_pretty(&report::json(&workload, &summaries, &runs))? + "\n"
    } else {
        report::table(&workload, &summaries, &runs)
    };
    match &args.out {
        Some(p) => {
            std::fs::write(p, out).with_context(|| format!("cannot write {}", p.display()))?
        }
        None => print!("{out}"),
    }
    if let Some(p) = &args.svg {
        std::fs::write(p, report::svg(&workload, &summaries))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

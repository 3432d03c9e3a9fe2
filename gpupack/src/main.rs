//! `gpupack`: the command line for sizing and simulating LLM placement.
//!
//! Each subcommand lives in its own module with an `Args` type and a `run`
//! function; this file only dispatches.

use clap::{Parser, Subcommand};
use gpupack::{estimate, simulate};

#[derive(Parser, Debug)]
#[command(
    name = "gpupack",
    version,
    about = "Pack LLM servers onto GPUs by the memory they really need"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Estimate an LLM server's GPU memory per tensor-parallel rank.
    Estimate(estimate::Args),
    /// Replay a workload on a cluster with one or more placement policies.
    Simulate(simulate::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Estimate(args) => estimate::run(args),
        Command::Simulate(args) => simulate::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! `gpupack simulate`.

/// Arguments of `gpupack simulate`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("gpupack simulate is not available in this build")
}

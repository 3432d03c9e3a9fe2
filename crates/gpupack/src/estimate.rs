//! `gpupack estimate`.

/// Arguments of `gpupack estimate`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("gpupack estimate is not available in this build")
}

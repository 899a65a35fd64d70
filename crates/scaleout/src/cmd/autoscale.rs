//! `scaleout autoscale`. Placeholder until its issue lands: it refuses to run rather than pretend.

use std::process::ExitCode;

/// Arguments of `scaleout autoscale`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `scaleout autoscale`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`scaleout autoscale` is not built yet")
}

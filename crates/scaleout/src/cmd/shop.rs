//! `scaleout shop`. Placeholder until its issue lands: it refuses to run rather than pretend.

use std::process::ExitCode;

/// Arguments of `scaleout shop`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `scaleout shop`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`scaleout shop` is not built yet")
}

//! `scaleout lb`. Placeholder until its issue lands: it refuses to run rather than pretend.

use std::process::ExitCode;

/// Arguments of `scaleout lb`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `scaleout lb`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`scaleout lb` is not built yet")
}

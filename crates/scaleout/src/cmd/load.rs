//! `scaleout load`. Placeholder until its issue lands: it refuses to run rather than pretend.

use std::process::ExitCode;

/// Arguments of `scaleout load`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `scaleout load`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`scaleout load` is not built yet")
}

//! `scaleout backend`. Placeholder until its issue lands: it refuses to run rather than pretend.

use std::process::ExitCode;

/// Arguments of `scaleout backend`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `scaleout backend`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`scaleout backend` is not built yet")
}

//! `scaleout up`. Placeholder until its issue lands: it refuses to run rather than pretend.

use std::process::ExitCode;

/// Arguments of `scaleout up`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `scaleout up`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`scaleout up` is not built yet")
}

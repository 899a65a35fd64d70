//! `scaleout audit`. Placeholder until its issue lands: it refuses to run rather than pretend.

use std::process::ExitCode;

/// Arguments of `scaleout audit`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `scaleout audit`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`scaleout audit` is not built yet")
}

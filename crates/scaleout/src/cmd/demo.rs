//! `scaleout demo`. Placeholder until its issue lands: it refuses to run rather than pretend.

use std::process::ExitCode;

/// Arguments of `scaleout demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `scaleout demo`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`scaleout demo` is not built yet")
}

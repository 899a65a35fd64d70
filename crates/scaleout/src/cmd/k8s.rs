//! `scaleout k8s`. Placeholder until its issue lands: it refuses to run rather than pretend.

use std::process::ExitCode;

/// Arguments of `scaleout k8s`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `scaleout k8s`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`scaleout k8s` is not built yet")
}

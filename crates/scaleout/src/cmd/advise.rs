//! `scaleout advise`. Placeholder until its issue lands: it refuses to run rather than pretend.

use std::process::ExitCode;

/// Arguments of `scaleout advise`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `scaleout advise`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`scaleout advise` is not built yet")
}

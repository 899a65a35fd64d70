//! `scaleout demo`: the main job. Glue only: the acts live in the `demo` crate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `scaleout demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where report.md, report.json, the charts and the instance logs go.
    #[arg(long, default_value = "demo-report")]
    out: PathBuf,
    /// Short (1 s) measurements: a fast smoke run with noisy figures.
    #[arg(long)]
    quick: bool,
    /// Run only these acts (comma-separated, 1-8; act 8 needs --db).
    #[arg(long, value_delimiter = ',')]
    acts: Vec<u8>,
    /// A PostgreSQL primary (postgres://...) for the replica act (act 8).
    #[arg(long)]
    db: Option<String>,
    /// A streaming replica of --db (repeatable), for act 8.
    #[arg(long, requires = "db")]
    replica: Vec<String>,
}

/// Runs `scaleout demo`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(bad) = args.acts.iter().find(|a| !(1..=8).contains(*a)) {
        anyhow::bail!("--acts: {bad} is not an act (1-8)");
    }
    if let Some(db) = &args.db
        && !db.starts_with("postgres://")
        && !db.starts_with("postgresql://")
    {
        anyhow::bail!("--db must be a postgres:// URL (the embedded SQLite acts need no flag)");
    }
    if args.acts.contains(&8) && args.db.is_none() {
        anyhow::bail!("--acts 8 needs --db postgres://... and --replica postgres://...");
    }
    let exe = std::env::current_exe().context("locating the scaleout executable")?;
    let cfg = demo::DemoConfig {
        exe,
        out_dir: args.out.clone(),
        quick: args.quick,
        acts: args.acts,
        verbose: true,
        postgres: args.db,
        replicas: args.replica,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(demo::run(cfg))?;
    println!("{}", demo::report::render_markdown(&report));
    eprintln!(
        "demo: report written to {}/report.md (and report.json, charts)",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

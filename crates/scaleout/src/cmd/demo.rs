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
    /// Run instances without CPU and memory envelopes (cgroups): every instance, the
    /// balancer and the generator then share every core, and the acts measure that.
    #[arg(long)]
    no_envelopes: bool,
    /// CPU of the unit envelope, cores (fractional) [default: an eighth of the host in
    /// quarter-core steps, 0.25 to 4: 0.25 on 2 cores].
    #[arg(long)]
    envelope_cpu: Option<f64>,
    /// Memory of every instance's envelope, MiB [default: 256].
    #[arg(long)]
    envelope_memory_mib: Option<u64>,
    /// Also write the report as JSON here (the same as `<out>/report.json`; `-`: to
    /// stdout, instead of the summary).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Runs `scaleout demo`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
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
        quick: args.quick,
        acts: args.acts,
        verbose: true,
        postgres: args.db,
        replicas: args.replica,
        envelopes: !args.no_envelopes,
        unit_cpu: args.envelope_cpu,
        memory_mib: args.envelope_memory_mib,
        ..demo::DemoConfig::new(exe, args.out.clone())
    };
    // Flags are checked before anything starts, naming the one at fault.
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(demo::run(cfg))?;
    if let Some(p) = &args.json {
        super::report::write_json(p, &report)?;
    }
    if !super::report::is_stdout(args.json.as_deref()) {
        println!("{}", demo::report::render_markdown(&report));
    }
    eprintln!(
        "demo: report written to {}/report.md (and report.json, charts)",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

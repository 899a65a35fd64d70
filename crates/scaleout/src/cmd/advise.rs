//! `scaleout advise`: read (or, with `--target`, measure) a sweep, fit the USL, find the
//! knee, name the bottleneck, and decide scale up / out / refactor with costs.

use std::path::PathBuf;
use std::process::ExitCode;

use advisor::{connections, cost::PriceTable, decision, sweep};
use anyhow::{Context, bail};

/// Arguments of `scaleout advise`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A saved sweep (JSON: {"kind": "concurrency"|"instances"|"workers", "points": [{"n", "throughput_rps", "p99_ms"?, "tiers"?}]}).
    #[arg(long, conflicts_with = "target")]
    report: Option<PathBuf>,
    /// Measure a concurrency sweep against this URL (loopback only) with the load generator.
    #[arg(long)]
    target: Option<String>,
    /// Concurrency levels for `--target`.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    levels: Vec<u32>,
    /// Seconds per level for `--target`.
    #[arg(long, default_value_t = 5)]
    seconds_per_level: u64,
    /// Requests per second today (default: the sweep's peak × 0.5).
    #[arg(long)]
    current_rps: Option<f64>,
    /// Growth factor to plan for (projected = current × growth).
    #[arg(long, default_value_t = 3.0)]
    growth: f64,
    /// App instance size today (a name in the price table).
    #[arg(long, default_value = "app.large")]
    app_size: String,
    /// App instances today.
    #[arg(long, default_value_t = 1)]
    instances: u32,
    /// The codebase is stateless (true) or keeps per-instance state (false); see `scaleout audit`.
    #[arg(long, conflicts_with = "audit")]
    stateless: Option<bool>,
    /// Audit this codebase and use its verdict (stateless or stateful) in the decision.
    #[arg(long)]
    audit: Option<PathBuf>,
    /// A price table (TOML) instead of the bundled one.
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Connection math: pool size per instance.
    #[arg(long)]
    pool_size: Option<u64>,
    /// Connection math: the database's max_connections.
    #[arg(long, default_value_t = 100)]
    max_connections: u64,
    /// Write the whole analysis as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs `scaleout advise`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let sweep = match (&args.report, &args.target) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            sweep::Sweep::from_json(&text)?
        }
        (None, Some(url)) => {
            super::advise_sweep::measure(url, &args.levels, args.seconds_per_level)?
        }
        _ => bail!("give either --report FILE or --target URL"),
    };
    let prices = match &args.prices {
        Some(p) => PriceTable::parse(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => PriceTable::bundled(),
    };
    if args.growth.is_nan() || args.growth <= 0.0 {
        bail!("--growth must be > 0");
    }
    let mut sweep = sweep;
    let mut audit_line = None;
    if let Some(path) = &args.audit {
        let report = audit::audit_path(path, &audit::Options::default())
            .with_context(|| format!("auditing {}", path.display()))?;
        let verdict = report.verdict();
        audit_line = Some(format!("audit of {}: {verdict}\n", path.display()));
        sweep.stateless = Some(!verdict.stateful);
    } else if sweep.stateless.is_none() {
        sweep.stateless = args.stateless;
    }
    let analysis = sweep::analyse(&sweep);
    let mut out = audit_line.unwrap_or_default();
    out.push_str(&sweep::render_text(&analysis));

    let peak = sweep
        .points
        .iter()
        .map(|p| p.throughput_rps)
        .fold(0.0, f64::max);
    let per_instance = match sweep.kind {
        sweep::SweepKind::Instances => sweep
            .points
            .iter()
            .find(|p| p.n == 1.0)
            .map(|p| p.throughput_rps)
            .unwrap_or(peak / args.instances as f64),
        _ => peak / args.instances as f64,
    };
    let current = args.current_rps.unwrap_or(peak * 0.5);
    let (out_sigma, out_kappa) = match (&analysis.usl, sweep.kind) {
        (Ok(f), sweep::SweepKind::Instances) => (f.sigma, f.kappa),
        _ => (0.02, 0.0),
    };
    let (up_sigma, up_kappa) = match (&analysis.usl, sweep.kind) {
        (Ok(f), sweep::SweepKind::Workers) => (f.sigma, f.kappa),
        _ => (0.05, 0.0),
    };
    let input = decision::DecisionInput {
        current_rps: current,
        projected_rps: current * args.growth,
        app_size: args.app_size.clone(),
        instances: args.instances,
        instance_capacity_rps: per_instance,
        up_sigma,
        up_kappa,
        out_sigma,
        out_kappa,
        stateless: sweep.stateless,
        bottleneck: analysis.diagnosis.bottleneck,
        ..Default::default()
    };
    let rec = decision::decide(&input, &prices)?;
    out.push_str(&format!(
        "decision: {:?} for {:.0} → {:.0} req/s (growth {}x; capacity needed {:.0}, today {:.0})\n  {}\n",
        rec.action, current, current * args.growth, args.growth, rec.required_rps, rec.current_capacity_rps, rec.reason
    ));
    for o in &rec.options {
        out.push_str(&format!(
            "  option {:<38} {:>9.0} {}/month  capacity {:>8.0} req/s  {}{}\n",
            o.name,
            o.monthly,
            rec.currency,
            o.capacity_rps,
            o.detail,
            if o.feasible { "" } else { "  [not enough]" }
        ));
    }
    let conn = args.pool_size.map(|pool| {
        let instances = rec
            .options
            .iter()
            .find(|o| o.name == "scale out" && o.feasible)
            .map(|o| o.instances)
            .unwrap_or(args.instances);
        connections::check(instances as u64, pool, args.max_connections, 3)
    });
    if let Some(c) = &conn {
        out.push_str(&format!("connections: {}\n", c.message));
    }
    print!("{out}");
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "sweep": sweep,
            "analysis": analysis,
            "decision": rec,
            "connections": conn,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

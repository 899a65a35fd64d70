//! `scaleout load`: the open-loop load generator. Parses flags (and an optional scenario
//! file) into a `load::RunConfig`, validated once, then calls `load::run` or
//! `load::find_max` and prints the report. Exit codes: 0 when every threshold held,
//! 1 when one failed (each named), 2 on bad input or an unreachable target.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

/// Arguments of `scaleout load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Target URL(s), `http://host:port/path`; several spread connections over them.
    /// Loopback only unless --allow-remote.
    pub urls: Vec<String>,
    /// Open loop: requests per second, scheduled whatever earlier requests do.
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,
    /// Closed loop (like wrk): --connections connections send back to back. Latency then
    /// hides server stalls; use for saturation throughput only.
    #[arg(long = "closed-loop")]
    pub closed_loop: bool,
    /// Closed loop: number of connections (default 64). Open loop: the pool's initial
    /// size (default 1; it grows up to --max-connections when the rate needs it).
    #[arg(short = 'c', long)]
    pub connections: Option<usize>,
    /// Generator threads (each with its own single-threaded runtime).
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: usize,
    /// Run length (e.g. 30s, 2m). A scenario's profile sets its own.
    #[arg(short = 'd', long, default_value = "10s")]
    pub duration: String,
    /// Write the JSON report here (`-` for stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG chart of rate and latency over time here.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Per-request timeout (connect + send + response to the last byte).
    #[arg(long, default_value = "5s")]
    pub timeout: String,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Extra header `Name: value`; repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Request body (`@FILE` reads a file).
    #[arg(short = 'b', long)]
    pub body: Option<String>,
    /// Scenario file (TOML): rate profile, weighted mix, sessions, thresholds.
    #[arg(short = 's', long)]
    pub scenario: Option<PathBuf>,
    /// Threshold that sets the exit code, e.g. `p99<250ms`, `errors<0.1%`, `rps>=1000`,
    /// `rate>=99%`; repeatable.
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// Open loop: connection cap (the pool grows to it when the rate needs it).
    #[arg(long = "max-connections", default_value_t = 512)]
    pub max_connections: usize,
    /// Speak HTTP/2 over cleartext (prior knowledge) instead of HTTP/1.1.
    #[arg(long)]
    pub h2c: bool,
    /// Allow targets outside loopback.
    #[arg(long = "allow-remote")]
    pub allow_remote: bool,
    /// A send this far behind its schedule counts as late.
    #[arg(long = "late-threshold", default_value = "10ms")]
    pub late_threshold: String,
    /// Length of a time slice in the per-slice report and chart.
    #[arg(long, default_value = "1s")]
    pub slice: String,
    /// Open loop: built-in check that achieved/target rate is at least this (`off` to drop it).
    #[arg(long = "min-rate", default_value = "99%")]
    pub min_rate: String,
    /// Seed of the request-mix and product draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Progress on stderr: auto (bar on a terminal, lines otherwise), bar, lines, off.
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Search mode: raise the rate step by step until --max-p99 / --max-errors break.
    #[arg(long = "find-max")]
    pub find_max: bool,
    /// Search mode: latency bound on p99 (from the intended send time).
    #[arg(long = "max-p99", default_value = "250ms")]
    pub max_p99: String,
    /// Search mode: error bound, percent of requests sent.
    #[arg(long = "max-errors", default_value = "0.1%")]
    pub max_errors: String,
    /// Search mode: first rate tried.
    #[arg(long = "start-rate", default_value_t = 100.0)]
    pub start_rate: f64,
    /// Search mode: rate multiplier per growth step.
    #[arg(long = "step-factor", default_value_t = 1.5)]
    pub step_factor: f64,
    /// Search mode: length of each step (default: --duration).
    #[arg(long = "step-duration")]
    pub step_duration: Option<String>,
    /// Search mode: most growth steps (bisection adds up to 4 more).
    #[arg(long = "max-steps", default_value_t = 12)]
    pub max_steps: u32,
}

fn dur(flag: &str, v: &str) -> anyhow::Result<Duration> {
    load::parse_duration(v).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
}

fn percent(flag: &str, v: &str) -> anyhow::Result<f64> {
    let n: f64 = v
        .trim()
        .trim_end_matches('%')
        .parse()
        .with_context(|| format!("--{flag}: {v:?} is not a percentage (e.g. 99%)"))?;
    if !(0.0..=100.0).contains(&n) {
        bail!("--{flag}: {v:?} must be within 0..=100%");
    }
    Ok(n / 100.0)
}

/// Flags (and scenario) into a validated run config.
fn build_config(a: &Args) -> anyhow::Result<load::RunConfig> {
    let duration = dur("duration", &a.duration)?;
    let first = a.urls.first().cloned().unwrap_or_default();
    let mut cfg = if a.closed_loop {
        if a.rate.is_some() {
            bail!("--rate and --closed-loop exclude each other (closed loop has no target rate)");
        }
        load::RunConfig::closed_loop(&first, a.connections.unwrap_or(64), duration)
    } else if let Some(r) = a.rate {
        load::RunConfig::open_loop(&first, r, duration).context("--rate")?
    } else if a.scenario.is_some() || a.find_max {
        // The scenario's profile (or the search) sets the rate; a placeholder until then.
        load::RunConfig::open_loop(&first, 1.0, duration)?
    } else {
        bail!("give --rate R (open loop), --closed-loop, --scenario FILE or --find-max");
    };
    cfg.targets = a.urls.clone();
    cfg.threads = a.threads;
    cfg.timeout = dur("timeout", &a.timeout)?;
    cfg.max_connections = a.max_connections;
    if !a.closed_loop {
        cfg.min_connections = a.connections.unwrap_or(1);
    }
    cfg.h2c = a.h2c;
    cfg.allow_remote = a.allow_remote;
    cfg.late_threshold = load::parse_duration_with(&a.late_threshold, "ms")
        .map_err(|e| anyhow::anyhow!("--late-threshold: {e}"))?;
    cfg.slice = dur("slice", &a.slice)?;
    cfg.seed = a.seed;
    cfg.min_rate_ratio = if a.min_rate == "off" {
        None
    } else {
        Some(percent("min-rate", &a.min_rate)?)
    };
    cfg.progress = match a.progress.as_str() {
        "auto" if std::io::stderr().is_terminal() => load::Progress::Bar,
        "auto" | "lines" => load::Progress::Lines,
        "bar" => load::Progress::Bar,
        "off" => load::Progress::Off,
        other => bail!("--progress: {other:?} is not one of auto, bar, lines, off"),
    };
    let method = load::parse_method(&a.method)?;
    let body = match a.body.as_deref() {
        Some(b) if b.starts_with('@') => Some(
            std::fs::read_to_string(&b[1..])
                .with_context(|| format!("--body: reading {}", &b[1..]))?,
        ),
        other => other.map(str::to_string),
    };
    let mut headers = Vec::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header {h:?}: expected `Name: value`"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    if a.method != "GET" || body.is_some() || !headers.is_empty() {
        let path = load::Target::parse(&first)
            .map(|t| t.path)
            .unwrap_or_else(|_| "/".into());
        cfg.requests = vec![load::RequestSpec {
            name: format!("{method} {path}"),
            weight: 1,
            method,
            path,
            headers,
            body,
            auth: false,
        }];
    }
    if let Some(p) = &a.scenario {
        let sc = load::load_scenario(p)?;
        sc.apply(&mut cfg)?;
    }
    for t in &a.thresholds {
        cfg.thresholds.push(load::Threshold::parse(t)?);
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `scaleout load`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = build_config(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let cancel = CancellationToken::new();
    rt.block_on(async move {
        let c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: stopping the schedule, draining in-flight requests");
                c.cancel();
            }
        });
        if args.find_max {
            search(&args, cfg, cancel).await
        } else {
            single(&args, cfg, cancel).await
        }
    })
}

async fn single(
    args: &Args,
    cfg: load::RunConfig,
    cancel: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let report = load::run(cfg, cancel).await?;
    print!("{}", report.render_text());
    if let Some(p) = &args.json {
        write_json(p, &report)?;
    }
    if let Some(p) = &args.chart {
        load::write_svg(&report, p)?;
    }
    Ok(verdict(
        &report
            .failed_thresholds()
            .iter()
            .map(|t| t.expr.clone())
            .collect::<Vec<_>>(),
    ))
}

async fn search(
    args: &Args,
    base: load::RunConfig,
    cancel: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let mut sc = load::SearchConfig::new(base, dur("max-p99", &args.max_p99)?);
    sc.max_error_rate = percent("max-errors", &args.max_errors)?;
    sc.start_rps = args.start_rate;
    sc.factor = args.step_factor;
    sc.step_duration = match &args.step_duration {
        Some(s) => dur("step-duration", s)?,
        None => dur("duration", &args.duration)?,
    };
    sc.max_steps = args.max_steps;
    if let Some(r) = sc.base.min_rate_ratio {
        sc.min_rate_ratio = r;
    }
    let report = load::find_max(sc, cancel).await?;
    println!("search bounds: {}", report.bounds);
    for s in &report.steps {
        println!(
            "  target {:>10.1}/s  achieved {:>10.1}/s  p99 {:>9.3} ms  errors {:>7.3}%  late {:>7}  {}",
            s.target_rps,
            s.achieved_rps,
            s.p99_ms,
            s.error_rate * 100.0,
            s.late_sends,
            if s.passed {
                "ok".to_string()
            } else {
                format!("FAILED: {}", s.reason)
            }
        );
    }
    println!(
        "max sustainable rate: {:.1}/s (first failing: {}); stopped: {}",
        report.max_sustainable_rps,
        report
            .first_failing_rps
            .map(|f| format!("{f:.1}/s"))
            .unwrap_or_else(|| "none".into()),
        report.stopped_because
    );
    if let Some(p) = &args.json {
        write_json(p, &report)?;
    }
    if let (Some(p), Some(best)) = (&args.chart, &report.best) {
        load::write_svg(best, p)?;
    }
    if report.max_sustainable_rps > 0.0 {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("no rate met the bounds");
        Ok(ExitCode::from(1))
    }
}

fn write_json<T: serde::Serialize>(path: &PathBuf, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    if path.as_os_str() == "-" {
        println!("{text}");
        return Ok(());
    }
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn verdict(failed: &[String]) -> ExitCode {
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("thresholds failed: {}", failed.join(", "));
        ExitCode::from(1)
    }
}

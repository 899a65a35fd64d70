//! `scaleout load`: the open-loop load generator. Parses flags (and an optional scenario
//! file) into a `load::RunConfig`, validated once, then calls `load::run` or
//! `load::find_max` and prints the report. Exit codes: 0 when every threshold held,
//! 1 when one failed (each named), 2 on bad input or an unreachable target.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::builder::TypedValueParser;
use tokio_util::sync::CancellationToken;

use super::grammar::{Dur, LegacyDur, LegacyPct, Pct, deprecated};
use super::report::{is_stdout, write_json};

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    /// A bar on a terminal, a line per second otherwise.
    Auto,
    /// A live bar redrawn in place.
    Bar,
    /// A plain line per second.
    Lines,
    /// Nothing.
    Off,
}

/// `--min-rate`: a percentage of the target rate, or `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinRate {
    /// No built-in rate check.
    Off,
    /// achieved/target must be at least this.
    AtLeast(Pct),
}

/// Parses `--min-rate` (`99%` or `off`).
#[derive(Debug, Clone, Copy)]
struct MinRateParser;

impl TypedValueParser for MinRateParser {
    type Value = MinRate;
    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<MinRate, clap::Error> {
        if value == "off" {
            return Ok(MinRate::Off);
        }
        LegacyPct.parse_ref(cmd, arg, value).map(MinRate::AtLeast)
    }
}

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
    #[arg(long)]
    pub connections: Option<usize>,
    /// Deprecated: `-c N` for --connections (`-c` is --config in every other command).
    #[arg(
        short = 'c',
        hide = true,
        conflicts_with = "connections",
        value_name = "N"
    )]
    pub connections_short: Option<usize>,
    /// Generator threads (each with its own single-threaded runtime).
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: usize,
    /// Run length (e.g. 30s, 2m). A scenario's profile sets its own.
    #[arg(short = 'd', long, default_value = "10s", value_parser = LegacyDur { bare_unit: "s" })]
    pub duration: Dur,
    /// Write the JSON report here (`-`: to stdout, instead of the text report).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG chart of rate and latency over time here.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Per-request timeout (connect + send + response to the last byte).
    #[arg(long, default_value = "5s", value_parser = LegacyDur { bare_unit: "s" })]
    pub timeout: Dur,
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
    #[arg(long = "late-threshold", default_value = "10ms", value_parser = LegacyDur { bare_unit: "ms" })]
    pub late_threshold: Dur,
    /// Length of a time slice in the per-slice report and chart.
    #[arg(long, default_value = "1s", value_parser = LegacyDur { bare_unit: "s" })]
    pub slice: Dur,
    /// Open loop: built-in check that achieved/target rate is at least this (`off` to drop it).
    #[arg(long = "min-rate", default_value = "99%", value_parser = MinRateParser)]
    pub min_rate: MinRate,
    /// Seed of the request-mix and product draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Progress on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// Search mode: raise the rate step by step until --max-p99 / --max-errors break.
    #[arg(long = "find-max")]
    pub find_max: bool,
    /// Search mode: latency bound on p99 (from the intended send time).
    #[arg(long = "max-p99", default_value = "250ms", value_parser = LegacyDur { bare_unit: "s" })]
    pub max_p99: Dur,
    /// Search mode: error bound, percent of requests sent.
    #[arg(long = "max-errors", default_value = "0.1%", value_parser = LegacyPct)]
    pub max_errors: Pct,
    /// Search mode: first rate tried.
    #[arg(long = "start-rate", default_value_t = 100.0)]
    pub start_rate: f64,
    /// Search mode: rate multiplier per growth step.
    #[arg(long = "step-factor", default_value_t = 1.5)]
    pub step_factor: f64,
    /// Search mode: length of each step (default: --duration).
    #[arg(long = "step-duration", value_parser = LegacyDur { bare_unit: "s" })]
    pub step_duration: Option<Dur>,
    /// Search mode: most growth steps (bisection adds up to 4 more).
    #[arg(long = "max-steps", default_value_t = 12)]
    pub max_steps: u32,
}

/// Flags (and scenario) into a validated run config.
fn build_config(a: &Args) -> anyhow::Result<load::RunConfig> {
    let duration = a.duration.0;
    let connections = match (a.connections, a.connections_short) {
        (_, Some(n)) => {
            deprecated(
                &format!("`-c {n}`"),
                &format!("`--connections {n}` (-c will mean --config, as in every other command)"),
            );
            Some(n)
        }
        (n, None) => n,
    };
    let first = a.urls.first().cloned().unwrap_or_default();
    let mut cfg = if a.closed_loop {
        if a.rate.is_some() {
            bail!("--rate and --closed-loop exclude each other (closed loop has no target rate)");
        }
        load::RunConfig::closed_loop(&first, connections.unwrap_or(64), duration)
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
    cfg.timeout = a.timeout.0;
    cfg.max_connections = a.max_connections;
    if !a.closed_loop {
        cfg.min_connections = connections.unwrap_or(1);
    }
    cfg.h2c = a.h2c;
    cfg.allow_remote = a.allow_remote;
    cfg.late_threshold = a.late_threshold.0;
    cfg.slice = a.slice.0;
    cfg.seed = a.seed;
    cfg.min_rate_ratio = match a.min_rate {
        MinRate::Off => None,
        MinRate::AtLeast(p) => Some(p.fraction()),
    };
    cfg.progress = match a.progress {
        ProgressArg::Auto if std::io::stderr().is_terminal() => load::Progress::Bar,
        ProgressArg::Auto | ProgressArg::Lines => load::Progress::Lines,
        ProgressArg::Bar => load::Progress::Bar,
        ProgressArg::Off => load::Progress::Off,
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
        let signal = super::signal::shutdown_signal();
        tokio::spawn(async move {
            signal.await;
            eprintln!("interrupted: stopping the schedule, draining in-flight requests");
            c.cancel();
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
    if !is_stdout(args.json.as_deref()) {
        print!("{}", report.render_text());
    }
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
    let mut sc = load::SearchConfig::new(base, args.max_p99.0);
    sc.max_error_rate = args.max_errors.fraction();
    sc.start_rps = args.start_rate;
    sc.factor = args.step_factor;
    sc.step_duration = args.step_duration.unwrap_or(args.duration).0;
    sc.max_steps = args.max_steps;
    if let Some(r) = sc.base.min_rate_ratio {
        sc.min_rate_ratio = r;
    }
    let report = load::find_max(sc, cancel).await?;
    if !is_stdout(args.json.as_deref()) {
        print!("{}", report.render_text());
    }
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

fn verdict(failed: &[String]) -> ExitCode {
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("thresholds failed: {}", failed.join(", "));
        ExitCode::from(1)
    }
}

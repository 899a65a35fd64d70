//! `scaleout audit PATH`: flag parsing and output only; the `audit` crate does the work.
//!
//! Exit codes: 0 when no finding is at or above `--min-severity`, 1 when some is, 2 on
//! error (returned through `main`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::grammar::deprecated;

/// Output formats of `scaleout audit`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Grouped by file, with the reason and the fix, then the verdict line.
    Text,
    /// Deprecated: use `--json FILE` (`-` for stdout).
    #[value(hide = true)]
    Json,
    /// SARIF 2.1.0 for GitHub code scanning.
    Sarif,
}

/// Severities accepted by `--min-severity`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MinSeverity {
    /// Everything, including read-mostly caches of reference data.
    Low,
    /// Inconsistent state: stale caches, limits multiplied by N, jobs run N times.
    Medium,
    /// State that breaks users outright: sessions, uploads, queues.
    High,
}

/// Arguments of `scaleout audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory (or single file) to audit.
    pub path: PathBuf,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Also write the JSON report (`{"verdict", "counts", "findings"}`) here; `-` writes
    /// it to stdout instead of the text.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Report only findings at or above this severity (also sets the exit code).
    #[arg(long, value_enum, default_value = "low")]
    pub min_severity: MinSeverity,
    /// Also audit test files (skipped by default: tests are not deployed).
    #[arg(long)]
    pub include_tests: bool,
    /// Parser threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// Runs `scaleout audit`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let min_severity = match args.min_severity {
        MinSeverity::Low => audit::Severity::Low,
        MinSeverity::Medium => audit::Severity::Medium,
        MinSeverity::High => audit::Severity::High,
    };
    let options = audit::Options {
        min_severity,
        threads: args.threads,
        include_tests: args.include_tests,
        ..audit::Options::default()
    };
    let report = audit::audit_path(&args.path, &options)
        .with_context(|| format!("auditing {}", args.path.display()))?;
    let with_newline = |mut s: String| {
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s
    };
    if matches!(args.format, Format::Json) {
        deprecated(
            "`--format json`",
            "`--json FILE` (or `--json -` for stdout)",
        );
    }
    if let Some(path) = &args.json {
        super::report::write_text(path, &with_newline(audit::render_json(&report)))?;
    }
    if !super::report::is_stdout(args.json.as_deref()) {
        let rendered = match args.format {
            Format::Text => audit::render_text(&report),
            Format::Json => audit::render_json(&report),
            Format::Sarif => audit::render_sarif(&report),
        };
        print!("{}", with_newline(rendered));
    }
    Ok(if report.has_findings_at(min_severity) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

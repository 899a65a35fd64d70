//! `scaleout autoscale`: autoscaling tools. `simulate` replays a demand trace against a
//! policy (by name or from a TOML policy file) with the `autoscale` crate's capacity model
//! and prints the SPEC elasticity metrics; `evaluate` runs every policy over the generated
//! trace families; `write-traces` regenerates the shipped traces.
//! Glue only: parsing, reading files, printing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use autoscale::evaluate::{self, SeedSet};
use autoscale::families::Family;
use autoscale::sim::{POLICY_NAMES, named_policy};
use autoscale::trace::generate;
use autoscale::{CapacityModel, Config, Trace, simulate};

use super::grammar::{Dur, Pct, deprecated};
use super::report;

/// Arguments of `scaleout autoscale`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

// Parsed once at start; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Replay a demand trace (CSV, requests/s per second) against a policy.
    Simulate(SimulateArgs),
    /// Run every policy on generated trace families (dev and held-out seeds) and report
    /// distributions of SLO violation, cost, peak and drops, with ratios to the HPA clone.
    Evaluate(EvaluateArgs),
    /// Write the shipped traces (step, sine, flash-crowd, daily) as CSV into a directory.
    WriteTraces {
        /// Output directory.
        #[arg(long, default_value = "crates/autoscale/traces")]
        dir: PathBuf,
    },
}

/// `--set` of `autoscale evaluate`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SetArg {
    /// Seeds 1..=16 of each family (the ones policies were tuned on).
    Dev,
    /// Seeds 1001..=1016 of each family (never used for tuning).
    HeldOut,
    /// Both.
    All,
}

#[derive(Debug, clap::Args)]
struct EvaluateArgs {
    /// Families to run (comma-separated); default: all of them.
    #[arg(long, value_delimiter = ',')]
    families: Vec<String>,
    /// Seed sets.
    #[arg(long, value_enum, default_value = "all")]
    set: SetArg,
    /// Target in-flight requests per instance given to every policy.
    #[arg(long, default_value_t = 6.0)]
    target_in_flight: f64,
    /// Worker threads (results do not depend on it).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Write the whole evaluation (every trace, every summary) as JSON ("-" for stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also sweep target settings per policy and write the Pareto chart (SVG) here.
    #[arg(long)]
    pareto_svg: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// Trace file (CSV: `rps` or `t,rps` per line; header and `#` comments allowed).
    #[arg(long)]
    trace: PathBuf,
    /// Policy: default, hpa, kpa, step, or a TOML policy file (the `[autoscale]` fields).
    #[arg(long, default_value = "default")]
    policy: String,
    /// Write the report as JSON to this file (`-`: to stdout, instead of the text).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the per-second timeline as CSV to this file.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Seed of the demand noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Requests per second one instance serves at full utilisation.
    #[arg(long, default_value_t = CapacityModel::default().capacity_rps)]
    capacity_rps: f64,
    /// Concurrent slots per instance (service time = workers / capacity).
    #[arg(long, default_value_t = CapacityModel::default().workers)]
    workers: u32,
    /// Time from launch until an instance is ready (whole seconds: the model steps once
    /// a second).
    #[arg(long, default_value_t = Dur::secs(CapacityModel::default().startup_s))]
    startup: Dur,
    /// Demand noise (standard deviation, percent of the trace value).
    #[arg(long, default_value_t = Pct(CapacityModel::default().noise_pct))]
    noise: Pct,
    /// Latency SLO (p99).
    #[arg(long, default_value_t = Dur::millis(CapacityModel::default().slo_p99_ms as u64))]
    slo_p99: Dur,
    /// Start-up time jitter (each launch takes start-up x (1 +- jitter)).
    #[arg(long, default_value_t = Pct(0.0))]
    startup_jitter: Pct,
    /// Chance a start-up fails and is relaunched (0%..=50%).
    #[arg(long, default_value_t = Pct(0.0))]
    fail_start: Pct,
    /// How long a new instance is cold (reduced capacity, ramping to full; whole seconds).
    #[arg(long, default_value_t = Dur::secs(0))]
    cold: Dur,
    /// Capacity of a just-ready instance (with --cold).
    #[arg(long, default_value_t = Pct(100.0))]
    cold_capacity: Pct,
    /// Compare with this policy on the same trace, model and seed (`none`: no column).
    #[arg(long, default_value = "hpa")]
    reference: String,
    /// Deprecated spellings (seconds, milliseconds and bare percentages).
    #[command(flatten)]
    old: OldSimulateFlags,
}

/// The pre-grammar spellings of `autoscale simulate`, hidden, warned about when used.
#[derive(Debug, clap::Args)]
struct OldSimulateFlags {
    #[arg(long = "startup-s", hide = true, conflicts_with = "startup")]
    startup_s: Option<u64>,
    #[arg(long = "noise-pct", hide = true, conflicts_with = "noise")]
    noise_pct: Option<f64>,
    #[arg(long = "slo-p99-ms", hide = true, conflicts_with = "slo_p99")]
    slo_p99_ms: Option<f64>,
    #[arg(
        long = "startup-jitter-pct",
        hide = true,
        conflicts_with = "startup_jitter"
    )]
    startup_jitter_pct: Option<f64>,
    #[arg(long = "fail-start-pct", hide = true, conflicts_with = "fail_start")]
    fail_start_pct: Option<f64>,
    #[arg(long = "cold-s", hide = true, conflicts_with = "cold")]
    cold_s: Option<u64>,
    #[arg(
        long = "cold-capacity-pct",
        hide = true,
        conflicts_with = "cold_capacity"
    )]
    cold_capacity_pct: Option<f64>,
}

/// The value of a flag that also has a deprecated spelling: the old one (warned) wins
/// when given (clap refuses both at once).
fn either<T: std::fmt::Display, U>(
    old: Option<T>,
    old_flag: &str,
    new_flag: &str,
    unit: &str,
    from_old: impl FnOnce(T) -> U,
    new: U,
) -> U {
    match old {
        Some(v) => {
            deprecated(
                &format!("`--{old_flag} {v}`"),
                &format!("`--{new_flag} {v}{unit}`"),
            );
            from_old(v)
        }
        None => new,
    }
}

/// Runs `scaleout autoscale`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Simulate(a) => simulate_cmd(a),
        Sub::Evaluate(a) => evaluate_cmd(a),
        Sub::WriteTraces { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            for name in generate::NAMES {
                let (trace, desc) = generate::by_name(name).expect("shipped trace name");
                let path = dir.join(format!("{name}.csv"));
                let comment = format!(
                    "{desc}\nGenerated by autoscale::trace::generate::{} (scaleout autoscale write-traces).",
                    name.replace('-', "_")
                );
                std::fs::write(&path, trace.to_csv(&comment))
                    .with_context(|| format!("write {}", path.display()))?;
                println!("wrote {} ({} s)", path.display(), trace.len_s());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_policy(policy: &str) -> anyhow::Result<Config> {
    if let Some(cfg) = named_policy(policy) {
        return Ok(cfg);
    }
    let path = PathBuf::from(policy);
    if !path.exists() {
        anyhow::bail!(
            "policy `{policy}` is neither a name ({}) nor an existing file",
            POLICY_NAMES.join(", ")
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read policy file {}", path.display()))?;
    Config::from_toml_str(&text).with_context(|| format!("policy file {}", path.display()))
}

impl SimulateArgs {
    /// The capacity model from the flags (old spellings included, with their warnings).
    fn model(&self) -> anyhow::Result<CapacityModel> {
        let o = &self.old;
        let startup_s = either(o.startup_s, "startup-s", "startup", "s", |v| v, {
            self.startup.whole_secs("--startup")?
        });
        let cold_s = either(o.cold_s, "cold-s", "cold", "s", |v| v, {
            self.cold.whole_secs("--cold")?
        });
        let pct = |old: Option<f64>, old_flag: &str, new_flag: &str, new: Pct| {
            either(old, old_flag, new_flag, "%", |v| v, new.0)
        };
        Ok(CapacityModel {
            capacity_rps: self.capacity_rps,
            workers: self.workers,
            startup_s,
            noise_pct: pct(o.noise_pct, "noise-pct", "noise", self.noise),
            slo_p99_ms: either(o.slo_p99_ms, "slo-p99-ms", "slo-p99", "ms", |v| v, {
                self.slo_p99.0.as_secs_f64() * 1e3
            }),
            startup_jitter_pct: pct(
                o.startup_jitter_pct,
                "startup-jitter-pct",
                "startup-jitter",
                self.startup_jitter,
            ),
            fail_start_pct: pct(
                o.fail_start_pct,
                "fail-start-pct",
                "fail-start",
                self.fail_start,
            ),
            cold_s,
            cold_capacity_pct: pct(
                o.cold_capacity_pct,
                "cold-capacity-pct",
                "cold-capacity",
                self.cold_capacity,
            ),
            ..CapacityModel::default()
        })
    }
}

fn simulate_cmd(a: SimulateArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_policy(&a.policy)?;
    let trace = Trace::from_path(&a.trace)?;
    let model = a.model()?;
    let run = simulate(&trace, &cfg, &model, a.seed)?;
    let r = &run.report;
    if let Some(p) = &a.json {
        report::write_json(p, r)?;
    }
    if let Some(p) = &a.timeline {
        std::fs::write(p, run.timeline_csv()).with_context(|| format!("write {}", p.display()))?;
    }
    if !report::is_stdout(a.json.as_deref()) {
        let reference = match a.reference.as_str() {
            "none" => None,
            name if name == a.policy => None,
            name => Some(simulate(&trace, &load_policy(name)?, &model, a.seed)?.report),
        };
        print!(
            "{}",
            r.render_text(&a.trace.display().to_string(), reference.as_ref())
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn evaluate_cmd(a: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let families = if a.families.is_empty() {
        Family::ALL.to_vec()
    } else {
        a.families
            .iter()
            .map(|n| {
                Family::from_name(n).with_context(|| {
                    format!(
                        "--families: unknown family `{n}` (known: {})",
                        Family::ALL.map(Family::as_str).join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let sets: Vec<SeedSet> = match a.set {
        SetArg::All => SeedSet::ALL.to_vec(),
        SetArg::Dev => vec![SeedSet::Dev],
        SetArg::HeldOut => vec![SeedSet::HeldOut],
    };
    if !(a.target_in_flight.is_finite() && a.target_in_flight > 0.0) {
        anyhow::bail!("--target-in-flight: must be a finite number > 0");
    }
    if a.threads == 0 || a.threads > 64 {
        anyhow::bail!("--threads: must be 1..=64");
    }
    let eval = evaluate::evaluate(&families, &sets, a.target_in_flight, a.threads)?;
    let to_stdout = a.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if let Some(p) = &a.json {
        let json = serde_json::to_string_pretty(&eval)?;
        if to_stdout {
            println!("{json}");
        } else {
            std::fs::write(p, format!("{json}\n"))
                .with_context(|| format!("write {}", p.display()))?;
        }
    }
    if !to_stdout {
        print!("{}", eval.to_text());
    }
    if let Some(p) = &a.pareto_svg {
        let points = evaluate::pareto(&families, &sets, a.threads)?;
        std::fs::write(p, evaluate::pareto_svg(&points))
            .with_context(|| format!("write {}", p.display()))?;
        if !to_stdout {
            println!("\nPareto (median over the same traces):");
            for pt in &points {
                println!(
                    "  {:<8} target {:>4}: slo_violation_s {:>6.0}  instance_seconds {:>8.0}",
                    pt.policy, pt.target_in_flight, pt.slo_violation_s, pt.instance_seconds
                );
            }
            println!("wrote {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! The `scaleout` binary: command-line glue only.
//!
//! Each subcommand lives in `cmd/<name>.rs` with its clap `Args` and a `run` that parses,
//! validates once, and hands over to the library crate that does the work. Nothing here
//! implements a feature (see ARCHITECTURE.md).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Scale a web service the way production teams do: measure, scale up, then out.
#[derive(Debug, Parser)]
#[command(name = "scaleout", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr: text (coloured only on a terminal and without NO_COLOR) or
    /// json (one object per line, for machines). `up` passes it on to its instances.
    #[arg(
        long,
        value_enum,
        global = true,
        default_value = "text",
        env = "SCALEOUT_LOG_FORMAT"
    )]
    log_format: cmd::log::LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The main job: bring up the whole system on embedded defaults, drive traffic
    /// through it, fail an instance, autoscale through a spike, and report.
    Demo(cmd::demo::Args),
    /// Balancer + fleet + autoscaler from a config file, until Ctrl-C.
    Up(cmd::up::Args),
    /// The HTTP load balancer alone.
    Lb(cmd::lb::Args),
    /// One instance of the reference shop service (or a shop maintenance command).
    Shop(cmd::shop::Args),
    /// Open-loop HTTP load generator.
    Load(cmd::load::Args),
    /// Measure or read a sweep, fit the USL, name the bottleneck, advise up/out/refactor.
    Advise(cmd::advise::Args),
    /// Find hidden per-instance state in a codebase.
    Audit(cmd::audit::Args),
    /// Autoscaling tools (trace simulator).
    Autoscale(cmd::autoscale::Args),
    /// Kubernetes manifests equal to the local config.
    K8s(cmd::k8s::Args),
    /// A fixed-response HTTP backend (tests, benches, trying the balancer).
    Backend(cmd::backend::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::log::set_format(cli.log_format);
    let result = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Up(a) => cmd::up::run(a),
        Command::Lb(a) => cmd::lb::run(a),
        Command::Shop(a) => cmd::shop::run(a),
        Command::Load(a) => cmd::load::run(a),
        Command::Advise(a) => cmd::advise::run(a),
        Command::Audit(a) => cmd::audit::run(a),
        Command::Autoscale(a) => cmd::autoscale::run(a),
        Command::K8s(a) => cmd::k8s::run(a),
        Command::Backend(a) => cmd::backend::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

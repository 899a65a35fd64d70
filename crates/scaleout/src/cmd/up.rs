//! `scaleout up`: balancer + fleet + autoscaler from one TOML file, until Ctrl-C/SIGTERM.
//!
//! Glue only: read the file (or the defaults), apply the flags, validate once (the field
//! is named before anything listens), then hand over to `fleet::up::run`.
//! Signals: SIGINT/SIGTERM stop everything (drain, SIGTERM, SIGKILL after grace);
//! SIGHUP starts a rolling restart of the instances.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::grammar::{Dur, deprecated};

/// Arguments of `scaleout up`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Deployment file with `[balancer]`, `[fleet]`, `[autoscale]`, `[service]` sections
    /// (every section optional). Without it: the shop on SQLite, 2 instances (1..=4).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Public listener of the balancer [default: the file's, else 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin API listener [default: the file's, else 127.0.0.1:8081]. A token is
    /// generated into `<data_dir>/admin-token` when the file sets none.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Instances to start with (must lie within the autoscaler's min..=max).
    #[arg(long)]
    pub instances: Option<u32>,
    /// CPU limit of each instance's envelope, cores, fractional (`--cpu 0.25`, like
    /// `docker run --cpus`) [default: the file's, else host cores / 8, 0.25..=4].
    #[arg(long)]
    pub cpu: Option<f64>,
    /// Memory limit of each instance's envelope, MiB; above it the kernel OOM-kills the
    /// instance, which is restarted like a crash [default: the file's, else 256].
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Run instances without envelopes (no CPU or memory limits). Without this flag `up`
    /// refuses to start where cgroups cannot be written (no root, no delegation).
    #[arg(long)]
    pub no_envelopes: bool,
    /// Time between status lines on stderr (`0`: none).
    #[arg(long, default_value_t = Dur::secs(2))]
    pub status_every: Dur,
    /// Deprecated spelling of --status-every, in seconds.
    #[arg(long = "status-every-s", hide = true, conflicts_with = "status_every")]
    pub status_every_s: Option<f64>,
}

/// Runs `scaleout up`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let mut cfg = match &args.config {
        Some(path) => fleet::DeploymentConfig::load(path)?,
        None => fleet::DeploymentConfig::default(),
    };
    if let Some(l) = args.listen {
        cfg.balancer.listen = l;
    }
    if let Some(n) = args.instances {
        cfg.fleet.instances = n;
    }
    if let Some(c) = args.cpu {
        cfg.fleet.resources.cpu = Some(c);
    }
    if let Some(m) = args.memory_mib {
        cfg.fleet.resources.memory_mib = Some(m);
    }
    if args.no_envelopes {
        cfg.fleet.resources.enforce = false;
    }
    let admin = args
        .admin
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081)));
    if args.admin.is_some() {
        cfg.balancer.admin.listen = Some(admin);
    }
    // Every check before anything is written, listens or starts: the file and flags,
    // then the service's own config check on the instance command line.
    cfg.validate()?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    super::preflight::check_service(&cfg, &exe)?;
    if let Some(token_file) = cfg.with_admin(admin)? {
        eprintln!(
            "scaleout up: admin API token generated into {} (mode 0600)",
            token_file.display()
        );
    }
    cfg.validate()?;
    if cfg.fleet.command.is_empty() && cfg.service.uses_jwt() {
        // One JWT key per deployment, created here once; every instance reads the file.
        let dir = &cfg.fleet.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(fleet::deployment::SHOP_JWT_SECRET_FILE);
        let (_, created) = shop::secret::load_or_create(&path)?;
        if created {
            eprintln!(
                "scaleout up: generated the shop's JWT key in {}",
                path.display()
            );
        }
    }
    let status_every = match args.status_every_s {
        Some(s) => {
            deprecated(
                &format!("--status-every-s {s}"),
                &format!("--status-every {s}s"),
            );
            if !(s.is_finite() && s >= 0.0) {
                anyhow::bail!("--status-every-s must be a number >= 0");
            }
            Duration::from_secs_f64(s)
        }
        None => args.status_every.0,
    };
    if super::log::format() == super::log::LogFormat::Json {
        // Instances log in the same format as `up` itself (they read the variable).
        cfg.fleet
            .env
            .entry("SCALEOUT_LOG_FORMAT".into())
            .or_insert_with(|| "json".into());
    }
    let opts = fleet::up::UpOptions {
        exe,
        status_every: (!status_every.is_zero()).then_some(status_every),
        rolling_restart_on_sighup: true,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        super::signal::cancel_on_shutdown_signal(shutdown.clone());
        fleet::up::run(cfg, opts, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

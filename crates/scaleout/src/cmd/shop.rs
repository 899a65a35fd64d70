//! `scaleout shop`: one instance of the reference shop service (glue only).
//!
//! Flags are parsed into `shop::ShopConfig` over the `[service]` section of `-c FILE`
//! (the deployment file `scaleout up` reads; flags win), validated once, then `shop::run`
//! serves until SIGTERM or Ctrl-C, after which in-flight requests finish and the process
//! exits 0.

use std::process::ExitCode;

use anyhow::Context;
use shop::{CacheKind, SessionKind, ShopConfig};
use tokio_util::sync::CancellationToken;

use super::grammar::{Dur, deprecated};

/// Arguments of `scaleout shop`: serve (no subcommand) or a maintenance subcommand.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Maintenance subcommand; without one, serve.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Serving flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Shop maintenance subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Move carts and orders to a new shard map: only users whose shard changes move,
    /// copied before deleted; safe to re-run after a crash. Prints one JSON line.
    Reshard(ReshardArgs),
    /// Grant or revoke the admin role (the only way anyone becomes an admin).
    Admin(AdminArgs),
}

/// Arguments of `scaleout shop admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// grant | revoke.
    #[command(subcommand)]
    pub change: AdminChange,
}

/// `grant USER` or `revoke USER`.
#[derive(Debug, clap::Subcommand)]
pub enum AdminChange {
    /// Make USER an admin (may change prices). Prints one JSON line.
    Grant(RoleArgs),
    /// Take the admin role from USER. Prints one JSON line.
    Revoke(RoleArgs),
}

/// The user and the database of a role change.
#[derive(Debug, clap::Args)]
pub struct RoleArgs {
    /// Username (must have signed up).
    pub user: String,
    /// Deployment file; its `[service]` section's `db` is used.
    #[arg(short = 'c', long = "config")]
    pub config: Option<std::path::PathBuf>,
    /// Primary database: `sqlite:PATH` or `postgres://...` [default: the config's, else
    /// sqlite:scaleout-shop.db].
    #[arg(long)]
    pub db: Option<String>,
}

/// Arguments of `scaleout shop reshard`.
#[derive(Debug, clap::Args)]
pub struct ReshardArgs {
    /// Shard map (TOML) the data is laid out by now.
    #[arg(long)]
    pub from: std::path::PathBuf,
    /// Shard map (TOML) to move the data to.
    #[arg(long)]
    pub to: std::path::PathBuf,
    /// Timeout of each database call.
    #[arg(long, default_value_t = Dur::secs(30))]
    pub op_timeout: Dur,
    /// Deprecated spelling of --op-timeout, in milliseconds.
    #[arg(long = "op-timeout-ms", hide = true, conflicts_with = "op_timeout")]
    pub op_timeout_ms: Option<u64>,
}

/// Serving flags of `scaleout shop`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Deployment file (the one `scaleout up` reads): its `[service]` section, same keys
    /// as these flags in snake_case (durations in ms: `max_replica_lag_ms`).
    #[arg(short = 'c', long = "config")]
    pub config: Option<std::path::PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
    /// Instance name, sent in the `x-instance-id` header [default: hostname-pid].
    #[arg(long)]
    pub instance_id: Option<String>,
    /// Primary database: `sqlite:PATH` or `postgres://...` [default: sqlite:scaleout-shop.db].
    #[arg(long)]
    pub db: Option<String>,
    /// A PostgreSQL streaming replica for stale-tolerant reads (repeatable).
    #[arg(long)]
    pub replica: Vec<String>,
    /// Redis URL; a comma-separated list of seeds means Redis Cluster.
    #[arg(long)]
    pub redis: Option<String>,
    /// Session store: jwt | redis | sql | memory (memory is the anti-pattern) [default: jwt].
    #[arg(long)]
    pub sessions: Option<SessionKind>,
    /// Cache: redis | sql | none [default: redis with --redis, else sql].
    #[arg(long)]
    pub cache: Option<CacheKind>,
    /// Tokio worker threads [default: one per core].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Connections per database pool in this instance [default: 8].
    #[arg(long)]
    pub pool_size: Option<u32>,
    /// Instances that will share the database (start is refused when
    /// expected-instances x pool-size > max_connections) [default: 1].
    #[arg(long)]
    pub expected_instances: Option<u32>,
    /// HS256 key for JWT sessions, at least 32 bytes (visible in `ps`: prefer the
    /// environment variable or --jwt-secret-file) [default: the key file].
    #[arg(long, env = "SCALEOUT_SHOP_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The deployment's JWT key file, read by every instance; created (mode 0600, 32
    /// random bytes) when missing; refused when group/world-readable or shorter than 32
    /// bytes [default: <sqlite db path>.jwt-secret; PostgreSQL needs this or the key].
    #[arg(long)]
    pub jwt_secret_file: Option<String>,
    /// Serve /metrics on this separate address (never on --listen) [default: no metrics].
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Password hashes allowed at once; excess gets 503 + Retry-After [default: 0 =
    /// min(2 x cores, hash-memory-budget-mib / 19)].
    #[arg(long)]
    pub hash_concurrency: Option<usize>,
    /// Memory all concurrent password hashes may use, MiB [default: 128].
    #[arg(long)]
    pub hash_memory_budget_mib: Option<u64>,
    /// Products generated into an empty database [default: 1000].
    #[arg(long)]
    pub seed_products: Option<u64>,
    /// Replicas lagging more than this are skipped [default: 1s].
    #[arg(long)]
    pub max_replica_lag: Option<Dur>,
    /// Deprecated spelling of --max-replica-lag, in milliseconds.
    #[arg(
        long = "max-replica-lag-ms",
        hide = true,
        conflicts_with = "max_replica_lag"
    )]
    pub max_replica_lag_ms: Option<u64>,
    /// Prefix of this shop's Redis and cache keys [default: shop].
    #[arg(long)]
    pub key_prefix: Option<String>,
    /// Shard map (TOML): serve each user's carts and orders from the shard that owns the
    /// user; users, products, sessions and cache stay on --db [default: none].
    #[arg(long)]
    pub shard_map: Option<std::path::PathBuf>,
    /// What this process does: web (serve HTTP) | worker (process the shop's jobs from
    /// --jobs-url until SIGTERM) [default: web].
    #[arg(long, default_value = "web")]
    pub role: Role,
    /// Where checkout's order confirmation runs: inline (in the request) | queue
    /// (enqueued on --jobs-url for `--role worker` processes) [default: inline].
    #[arg(long)]
    pub jobs: Option<shop::jobs::JobsMode>,
    /// The shared job queue: redis://..., postgres://... or sqlite:PATH [default: none].
    #[arg(long)]
    pub jobs_url: Option<String>,
    /// A job not acknowledged within this time is redelivered [default: 30s].
    #[arg(long)]
    pub jobs_visibility_timeout: Option<Dur>,
    /// Deprecated spelling of --jobs-visibility-timeout, in milliseconds.
    #[arg(
        long = "jobs-visibility-timeout-ms",
        hide = true,
        conflicts_with = "jobs_visibility_timeout"
    )]
    pub jobs_visibility_timeout_ms: Option<u64>,
    /// Simulated confirmation e-mail delay, spent by whoever confirms [default: 0s].
    #[arg(long)]
    pub jobs_email_delay: Option<Dur>,
    /// Deprecated spelling of --jobs-email-delay, in milliseconds.
    #[arg(
        long = "jobs-email-delay-ms",
        hide = true,
        conflicts_with = "jobs_email_delay"
    )]
    pub jobs_email_delay_ms: Option<u64>,
    /// Jobs one worker handles at once [default: 8].
    #[arg(long)]
    pub jobs_concurrency: Option<usize>,
    /// Queue name, [a-z0-9_]; web instances and workers must agree [default: shop].
    #[arg(long)]
    pub jobs_queue: Option<String>,
}

/// What one `scaleout shop` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Serve the shop over HTTP.
    Web,
    /// Process the shop's background jobs.
    Worker,
}

/// A millisecond flag value: the new duration flag, or the deprecated `-ms` one (warned).
fn millis(new: Option<Dur>, old: Option<u64>, name: &str) -> Option<u64> {
    match (new, old) {
        (_, Some(ms)) => {
            deprecated(&format!("--{name}-ms {ms}"), &format!("--{name} {ms}ms"));
            Some(ms)
        }
        (Some(d), None) => Some(d.as_millis_u64()),
        (None, None) => None,
    }
}

/// Reads the service section of `-c FILE` (defaults without a file), printing any
/// deprecation note.
fn read_config_file(path: Option<&std::path::Path>) -> anyhow::Result<ShopConfig> {
    let Some(path) = path else {
        return Ok(ShopConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (c, notes) =
        ShopConfig::from_toml_noting(&text).with_context(|| format!("in {}", path.display()))?;
    for n in notes {
        eprintln!("warning: {}: {n}", path.display());
    }
    Ok(c)
}

impl ServeArgs {
    /// The config: file (if any) then flags over it, validated.
    pub fn into_config(self) -> anyhow::Result<ShopConfig> {
        let mut c = read_config_file(self.config.as_deref())?;
        let max_replica_lag_ms = millis(
            self.max_replica_lag,
            self.max_replica_lag_ms,
            "max-replica-lag",
        );
        let jobs_visibility_timeout_ms = millis(
            self.jobs_visibility_timeout,
            self.jobs_visibility_timeout_ms,
            "jobs-visibility-timeout",
        );
        let jobs_email_delay_ms = millis(
            self.jobs_email_delay,
            self.jobs_email_delay_ms,
            "jobs-email-delay",
        );
        if let Some(v) = max_replica_lag_ms {
            c.max_replica_lag_ms = v;
        }
        if let Some(v) = jobs_visibility_timeout_ms {
            c.jobs_visibility_timeout_ms = v;
        }
        if let Some(v) = jobs_email_delay_ms {
            c.jobs_email_delay_ms = v;
        }
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* };
        }
        over!(
            listen,
            instance_id,
            db,
            sessions,
            workers,
            pool_size,
            expected_instances,
            jwt_secret,
            seed_products,
            hash_concurrency,
            hash_memory_budget_mib,
            key_prefix,
            jobs,
            jobs_concurrency,
            jobs_queue
        );
        if self.jobs_url.is_some() {
            c.jobs_url = self.jobs_url;
        }
        if !self.replica.is_empty() {
            c.replica = self.replica;
        }
        if self.redis.is_some() {
            c.redis = self.redis;
        }
        if self.cache.is_some() {
            c.cache = self.cache;
        }
        if self.metrics_listen.is_some() {
            c.metrics_listen = self.metrics_listen;
        }
        if self.jwt_secret_file.is_some() {
            c.jwt_secret_file = self.jwt_secret_file;
        }
        if let Some(path) = self.shard_map {
            c.shard_map = Some(path.display().to_string());
        }
        c.validate()?;
        Ok(c)
    }
}

/// Runs `scaleout shop`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    match args.action {
        Some(Action::Reshard(r)) => reshard(r),
        Some(Action::Admin(a)) => admin(a),
        None => serve(args.serve),
    }
}

fn reshard(args: ReshardArgs) -> anyhow::Result<ExitCode> {
    let from = shop::shard::ShardMap::from_file(&args.from)?;
    let to = shop::shard::ShardMap::from_file(&args.to)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let cancel = CancellationToken::new();
    let op_timeout = match args.op_timeout_ms {
        Some(ms) => {
            deprecated(
                &format!("--op-timeout-ms {ms}"),
                &format!("--op-timeout {ms}ms"),
            );
            std::time::Duration::from_millis(ms)
        }
        None => args.op_timeout.0,
    };
    let opts = shop::shard::ReshardOptions {
        op_timeout,
        ..Default::default()
    };
    let report = rt.block_on(async {
        let on_signal = cancel.clone();
        let signal = super::signal::shutdown_signal();
        tokio::spawn(async move {
            signal.await;
            tracing::warn!("stopping between users; re-run to finish");
            on_signal.cancel();
        });
        shop::shard::reshard(&from, &to, &opts, &cancel).await
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn admin(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let (grant, r) = match args.change {
        AdminChange::Grant(r) => (true, r),
        AdminChange::Revoke(r) => (false, r),
    };
    let mut cfg = read_config_file(r.config.as_deref())?;
    if let Some(db) = r.db {
        cfg.db = db;
    }
    // Only the database is used: no key, no listener, no pool math beyond one connection.
    cfg.pool_size = 1;
    cfg.expected_instances = 1;
    cfg.replica.clear();
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let change = rt.block_on(shop::admin::set_admin(&cfg, &r.user, grant))?;
    println!("{}", serde_json::to_string(&change)?);
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let role = args.role;
    let cfg = args.into_config()?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.workers > 0 {
        rt.worker_threads(cfg.workers);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        super::signal::cancel_on_shutdown_signal(shutdown.clone());
        match role {
            Role::Web => shop::run(cfg, shutdown).await,
            Role::Worker => shop::jobs::run_worker(cfg, shutdown).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

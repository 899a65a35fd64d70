//! `scaleout shop`: one instance of the reference shop service (glue only).
//!
//! Flags are parsed into `shop::ShopConfig` over the `[shop]` section of `-c FILE` (flags
//! win), validated once, then `shop::run` serves until SIGTERM or Ctrl-C, after which
//! in-flight requests finish and the process exits 0.

use std::process::ExitCode;

use anyhow::Context;
use shop::{CacheKind, SessionKind, ShopConfig};
use tokio_util::sync::CancellationToken;

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
    /// Config file with a `[shop]` section (its `db` is used).
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
    /// Timeout of each database call, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub op_timeout_ms: u64,
}

/// Serving flags of `scaleout shop`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file with a `[shop]` section (same keys as these flags, snake_case).
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
    /// Replicas lagging more than this are skipped [default: 1000].
    #[arg(long)]
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
    /// A job not acknowledged within this many ms is redelivered [default: 30000].
    #[arg(long)]
    pub jobs_visibility_timeout_ms: Option<u64>,
    /// Simulated confirmation e-mail delay, ms, spent by whoever confirms [default: 0].
    #[arg(long)]
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

impl ServeArgs {
    /// The config: file (if any) then flags over it, validated.
    pub fn into_config(self) -> anyhow::Result<ShopConfig> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                ShopConfig::from_toml(&text)?
            }
            None => ShopConfig::default(),
        };
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
            max_replica_lag_ms,
            hash_concurrency,
            hash_memory_budget_mib,
            key_prefix,
            jobs,
            jobs_visibility_timeout_ms,
            jobs_email_delay_ms,
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
    let opts = shop::shard::ReshardOptions {
        op_timeout: std::time::Duration::from_millis(args.op_timeout_ms),
        ..Default::default()
    };
    let report = rt.block_on(async {
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::warn!("Ctrl-C: stopping between users; re-run to finish");
                on_signal.cancel();
            }
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
    let mut cfg = match &r.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            ShopConfig::from_toml(&text)?
        }
        None => ShopConfig::default(),
    };
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
        let signals = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutdown signal received; draining");
            signals.cancel();
        });
        match role {
            Role::Web => shop::run(cfg, shutdown).await,
            Role::Worker => shop::jobs::run_worker(cfg, shutdown).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

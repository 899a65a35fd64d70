//! `scaleout lb`: the HTTP load balancer alone. Flags override the `[balancer]` section of
//! the config file; the result is validated once, before anything listens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Arguments of `scaleout lb`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file with a `[balancer]` section (other sections are ignored here).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Public listen address (HTTP/1.1 and h2c).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A backend: `[NAME=]URL[*WEIGHT]`, e.g. `http://127.0.0.1:9001` or `a=127.0.0.1:9001*3`.
    /// Repeat for several; replaces the file's backends.
    #[arg(long = "backend")]
    pub backends: Vec<String>,
    /// Selection strategy [default: the file's, else p2c_peak_ewma].
    #[arg(long, value_enum)]
    pub strategy: Option<super::grammar::StrategyArg>,
    /// Admin API listen address.
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Bearer token of the admin API.
    #[arg(long = "admin-token")]
    pub admin_token: Option<String>,
    /// Worker threads (each with its own runtime, listener and backend pool).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Protocol to the backends [default: the file's, else http1].
    #[arg(long = "upstream-protocol", value_enum)]
    pub upstream_protocol: Option<UpstreamProtocolArg>,
    /// Active health check: `GET <PATH>` must answer 2xx/3xx (e.g. `/healthz`). Without
    /// it (and without `balancer.health.path`) the check is a TCP connect, which works in
    /// front of any server.
    #[arg(long = "health-path")]
    pub health_path: Option<String>,
}

/// `--upstream-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UpstreamProtocolArg {
    /// HTTP/1.1 with keep-alive connections.
    Http1,
    /// HTTP/2 over cleartext, prior knowledge.
    H2c,
}

impl From<UpstreamProtocolArg> for proxy::UpstreamProtocol {
    fn from(p: UpstreamProtocolArg) -> Self {
        match p {
            UpstreamProtocolArg::Http1 => proxy::UpstreamProtocol::Http1,
            UpstreamProtocolArg::H2c => proxy::UpstreamProtocol::H2c,
        }
    }
}

/// Parses `[NAME=]URL[*WEIGHT]` into a backend entry.
fn parse_backend(s: &str) -> anyhow::Result<proxy::config::BackendConfig> {
    let (name, rest) = match s.split_once('=') {
        Some((n, r)) => (Some(n.to_string()), r),
        None => (None, s),
    };
    let (url, weight) = match rest.rsplit_once('*') {
        Some((u, w)) => (
            u,
            w.parse::<u32>()
                .with_context(|| format!("backend {s:?}: bad weight {w:?}"))?,
        ),
        None => (rest, 1),
    };
    let addr = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_string();
    anyhow::ensure!(
        !addr.contains('/'),
        "backend {s:?}: only http://host:port is supported (no path)"
    );
    proxy::config::check_backend_addr(&addr).map_err(|e| anyhow::anyhow!("backend {s:?}: {e}"))?;
    Ok(proxy::config::BackendConfig {
        name: name.unwrap_or_else(|| addr.clone()),
        addr,
        weight,
    })
}

/// Builds the validated config from the file and the flags.
pub fn build_config(args: &Args) -> anyhow::Result<proxy::Config> {
    let text = match &args.config {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => String::new(),
    };
    let mut cfg = proxy::parse_toml(&text)?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if !args.backends.is_empty() {
        cfg.backends = args
            .backends
            .iter()
            .map(|b| parse_backend(b))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(s) = args.strategy {
        cfg.strategy = s.0;
    }
    if let Some(a) = args.admin {
        cfg.admin.listen = Some(a);
    }
    if let Some(t) = &args.admin_token {
        cfg.admin.token = Some(t.clone());
    }
    if let Some(w) = args.workers {
        cfg.workers = w;
    }
    if let Some(p) = args.upstream_protocol {
        cfg.upstream_protocol = p.into();
    }
    if let Some(p) = &args.health_path {
        cfg.health.path = p.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// A balancer with no backend answers every request with 503. Without an admin API
/// nothing can add one, so that is refused; with one, it is a warning (backends are
/// expected to arrive through `POST /backends`).
pub fn no_backends_check(cfg: &proxy::Config) -> anyhow::Result<Option<String>> {
    if !cfg.backends.is_empty() {
        return Ok(None);
    }
    match cfg.admin.listen {
        None => anyhow::bail!(
            "no backends: every request would be answered 503 and, without an admin API, none could be added; pass --backend URL (repeatable), a [balancer] backends list in -c FILE, or --admin ADDR --admin-token TOKEN to add them at run time"
        ),
        Some(admin) => Ok(Some(format!(
            "warning: no backends: every request is answered 503 until one is added through the admin API on {admin} (POST /backends)"
        ))),
    }
}

/// Runs `scaleout lb` until SIGTERM or Ctrl-C, then drains and exits 0.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let cfg = build_config(&args)?;
    if let Some(warning) = no_backends_check(&cfg)? {
        eprintln!("{warning}");
    }
    // The control runtime (admin API, health checks, control loop) is one thread; the
    // request path runs on the proxy's own worker threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let proxy = proxy::Proxy::bind(cfg).await?;
        let h = proxy.handle();
        eprintln!(
            "scaleout lb listening on {}{} ({} backends, strategy {})",
            h.listen_addr(),
            h.admin_addr()
                .map(|a| format!(", admin on {a}"))
                .unwrap_or_default(),
            h.backends().len(),
            h.config().strategy,
        );
        let shutdown = CancellationToken::new();
        super::signal::cancel_on_shutdown_signal(shutdown.clone());
        proxy.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

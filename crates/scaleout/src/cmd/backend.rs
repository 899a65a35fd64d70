//! `scaleout backend`: a tiny fixed-response HTTP/1.1 + h2c server for tests, benches and
//! the balancer demo (the implementation is `proxy::testing_backend`).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::grammar::{Dur, deprecated};

/// Arguments of `scaleout backend`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Sent as `x-backend-id` on every response (default: the listen address).
    #[arg(long)]
    pub id: Option<String>,
    /// Body of ordinary responses (default: "ok from <id>\n").
    #[arg(long)]
    pub body: Option<String>,
    /// Delay added to every ordinary response (e.g. 5ms).
    #[arg(long, default_value_t = Dur::secs(0))]
    pub delay: Dur,
    /// Deprecated spelling of --delay, in milliseconds.
    #[arg(long = "delay-ms", hide = true, conflicts_with = "delay")]
    pub delay_ms: Option<u64>,
}

/// Runs `scaleout backend` until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let id = args.id.unwrap_or_else(|| args.listen.to_string());
    let body = args.body.unwrap_or_else(|| format!("ok from {id}\n"));
    let delay_ms = match args.delay_ms {
        Some(ms) => {
            deprecated(&format!("--delay-ms {ms}"), &format!("--delay {ms}ms"));
            ms
        }
        None => args.delay.as_millis_u64(),
    };
    let opts = proxy::testing_backend::BackendOptions { id, body, delay_ms };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let shutdown = CancellationToken::new();
        super::signal::cancel_on_shutdown_signal(shutdown.clone());
        eprintln!("scaleout backend listening on {}", listener.local_addr()?);
        proxy::testing_backend::serve(listener, opts, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

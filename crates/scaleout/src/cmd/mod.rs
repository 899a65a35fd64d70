//! One module per subcommand. Each owns its clap `Args` and a `run(args) -> Result<ExitCode>`.

pub mod advise;
pub mod advise_sweep;
pub mod audit;
pub mod autoscale;
pub mod backend;
pub mod demo;
pub mod k8s;
pub mod lb;
pub mod load;
pub mod preflight;
pub mod shop;
pub mod up;

#[allow(dead_code)] // used by the subcommands as they land
/// Installs the tracing subscriber once (RUST_LOG, default `info`), logging to stderr.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

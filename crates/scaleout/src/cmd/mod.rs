//! One module per subcommand. Each owns its clap `Args` and a `run(args) -> Result<ExitCode>`.
//! Shared by all of them: the flag grammar (`grammar`), logging (`log`), the shutdown
//! signal (`signal`) and report writing (`report`).

pub mod advise;
pub mod audit;
pub mod autoscale;
pub mod backend;
pub mod demo;
pub mod grammar;
pub mod k8s;
pub mod lb;
pub mod load;
pub mod log;
pub mod preflight;
pub mod report;
pub mod shop;
pub mod signal;
pub mod up;

pub use log::init_tracing;

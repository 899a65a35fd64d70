//! `scaleout k8s`: Kubernetes manifests (Deployment, Service, autoscaling/v2 HPA) equal
//! to the local deployment file. Glue only: the manifests are built by `fleet::k8s`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `scaleout k8s`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Deployment file (the same one `scaleout up` reads); defaults without it.
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Write deployment.yaml, service.yaml and hpa.yaml into this directory instead of
    /// one multi-document stream on stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

/// Runs `scaleout k8s`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = match &args.config {
        Some(path) => fleet::DeploymentConfig::load(path)?,
        None => fleet::DeploymentConfig::default(),
    };
    let manifests = fleet::k8s::manifests(&cfg);
    match &args.output {
        None => print!("{}", manifests.to_yaml()?),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            for (name, yaml) in manifests.files()? {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    // `[workers]`: the worker Deployment and its KEDA ScaledObject (fleet::k8s_workers).
    for path in fleet::k8s_workers::emit(&cfg, args.output.as_deref())? {
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

//! `scaleout k8s`: Kubernetes manifests (Deployment, Service, PodDisruptionBudget, the
//! autoscaler and its metrics-adapter side) equal to the local deployment file. Glue
//! only: the checks and the manifests are `fleet::k8s`'s; the service's own config check
//! is the one `scaleout up` runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Which component feeds the pods' metrics to the autoscaler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Autoscaler {
    /// An autoscaling/v2 HPA plus prometheus-adapter rules (core kinds only).
    Hpa,
    /// A KEDA ScaledObject with Prometheus triggers (needs KEDA installed).
    Keda,
}

/// Arguments of `scaleout k8s`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Deployment file (the same one `scaleout up` reads); defaults without it.
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Write one YAML file per manifest into this directory instead of one
    /// multi-document stream on stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// What scales the Deployment on the pods' metrics.
    #[arg(long, value_enum, default_value_t = Autoscaler::Hpa)]
    pub autoscaler: Autoscaler,
    /// Prometheus URL the KEDA operator queries (with `--autoscaler keda`).
    #[arg(long, default_value = "http://prometheus-operated.monitoring.svc:9090")]
    pub prometheus_url: String,
}

/// Runs `scaleout k8s`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = match &args.config {
        Some(path) => fleet::DeploymentConfig::load(path)?,
        None => fleet::DeploymentConfig::default(),
    };
    // What would not run on a cluster, then what the pods' own check would refuse: both
    // before any output, so a refused config leaves no partial manifests (exit 2).
    fleet::k8s::check(&cfg)?;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    super::preflight::check_service(&cfg, &exe)?;
    let adapter = match args.autoscaler {
        Autoscaler::Hpa => fleet::k8s::MetricsAdapter::PrometheusAdapter,
        Autoscaler::Keda => fleet::k8s::MetricsAdapter::Keda {
            prometheus_url: args.prometheus_url.clone(),
        },
    };
    let manifests = fleet::k8s::manifests_on(&cfg, fleet::process::available_cpus(), &adapter);
    if cfg.fleet.command.is_empty() {
        check_pod_command(&manifests.deployment)?;
    }
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
    if let Some(keys) =
        manifests.deployment["metadata"]["annotations"]["scaleout/secret-keys"].as_str()
    {
        eprintln!(
            "scaleout k8s: the pods read {keys} from the Secret `{}`; create it before applying, e.g. kubectl create secret generic {} --from-literal=db-url='postgres://...' --from-literal=jwt-secret=\"$(openssl rand -hex 32)\"",
            cfg.service.secret, cfg.service.secret
        );
    }
    // `[workers]`: the worker Deployment and its KEDA ScaledObject (fleet::k8s_workers).
    for path in fleet::k8s_workers::emit(&cfg, args.output.as_deref())? {
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The pod's own command line through the shop's check, with stand-ins for what the
/// Secret provides at run time (`$(SHOP_DB_URL)` etc.): the exact flags the pods will
/// run with, refused here rather than crash-looping there.
fn check_pod_command(deployment: &serde_json::Value) -> anyhow::Result<()> {
    let c = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut args: Vec<String> = c["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    anyhow::ensure!(
        args.first().map(String::as_str) == Some("shop"),
        "pod command is not the shop"
    );
    for a in &mut args {
        *a = if a == "$(SHOP_DB_URL)" || a.starts_with("$(SHOP_REPLICA_URL_") {
            "postgres://stand-in@db.invalid/shop".into()
        } else if a == "$(SHOP_REDIS_URL)" {
            "redis://redis.invalid:6379".into()
        } else {
            a.replace("$(POD_NAME)", "pod")
        };
    }
    super::preflight::check_shop_argv(&args[1..])
        .context("the pods' command line would exit at once")
}

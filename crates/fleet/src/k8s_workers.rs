//! Kubernetes manifests for the worker fleet (`[workers]`): a Deployment of
//! `scaleout shop --role worker` and a KEDA `ScaledObject` that scales it on the job
//! queue's backlog with the same rules as the local worker autoscaler.
//!
//! The trigger follows the queue's backend: `redis-streams` on the queue's stream length
//! (`XLEN` counts exactly the unfinished jobs, since an ack deletes its entry), or
//! `postgresql` counting the queue table's rows; a SQLite queue cannot be shared by pods,
//! so it gets a `prometheus` trigger on the workers' `scaleout_jobs_depth` and a note.
//! Mapping: `target_jobs_per_worker` is the trigger's target, `activation_jobs` its
//! activation value, `min_workers`/`max_workers` the replica bounds, `poll_ms` the polling
//! interval, `cooldown_ms` the cooldown period (to zero), `scale_down_window_ms` the
//! HPA's scale-down stabilisation and `max_step_up` a Pods scale-up policy.
//!
//! Pure: a [`DeploymentConfig`] in, JSON values out. Credentials never appear in a
//! manifest: the queue URL comes from the Secret `<service>-jobs` (key `url`; for a Redis
//! password, key `redis-password`).

use std::path::Path;

use serde_json::{Value, json};

use crate::FleetError;
use crate::deployment::DeploymentConfig;
use crate::k8s::CONTAINER_DATA_DIR;

/// The worker Deployment and its ScaledObject.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerManifests {
    /// `apps/v1` Deployment of the workers.
    pub deployment: Value,
    /// `keda.sh/v1alpha1` ScaledObject.
    pub scaled_object: Value,
}

/// The port workers serve `/healthz`, `/readyz` and `/metrics` on in the pod.
pub const WORKER_METRICS_PORT: u16 = 9090;
/// The environment variable holding the queue URL (from the Secret).
pub const JOBS_URL_ENV: &str = "SCALEOUT_JOBS_URL";
/// The environment variable holding the Redis password for KEDA (from the Secret).
pub const REDIS_PASSWORD_ENV: &str = "SCALEOUT_JOBS_REDIS_PASSWORD";

/// `host:port`, database index and whether a password is present, of a `redis://` URL.
fn redis_parts(url: &str) -> (String, u32, bool) {
    let rest = url.trim_start_matches("redis://");
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (hostport, db) = match rest.split_once('/') {
        Some((h, d)) => (h, d.parse().unwrap_or(0)),
        None => (rest, 0),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:6379")
    };
    let has_password = auth.is_some_and(|a| !a.split(':').nth(1).unwrap_or(a).is_empty());
    (hostport, db, has_password)
}

/// The worker manifests for `cfg` (which must be valid) as if on a host with `host_cores`
/// cores; `None` unless `[workers] enabled`.
pub fn manifests_on(cfg: &DeploymentConfig, host_cores: usize) -> Option<WorkerManifests> {
    let w = &cfg.workers;
    if !w.enabled {
        return None;
    }
    let name = format!("{}-worker", cfg.service.name);
    let labels = json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": "scaleout",
    });
    let selector = json!({ "app.kubernetes.io/name": name });
    let secret = format!("{}-jobs", cfg.service.name);
    let envelope = w.resources.envelope(host_cores);
    let quantities = json!({"cpu": envelope.k8s_cpu(), "memory": envelope.k8s_memory()});
    // The local worker command with in-cluster values; the queue URL from the Secret.
    let argv: Vec<String> = w
        .worker_command(
            &cfg.service.db,
            &cfg.service.shop_options(),
            Path::new(CONTAINER_DATA_DIR),
        )
        .iter()
        .map(|word| {
            word.replace("{exe}", "scaleout")
                .replace("{addr}", &format!("0.0.0.0:{WORKER_METRICS_PORT}"))
                .replace("{host}", "0.0.0.0")
                .replace("{port}", &WORKER_METRICS_PORT.to_string())
                .replace("{id}", "$(POD_NAME)")
                .replace("{data_dir}", CONTAINER_DATA_DIR)
        })
        .collect();
    let queue_in_cluster = w.queue_url.replace("{data_dir}", CONTAINER_DATA_DIR);
    let argv: Vec<String> = argv
        .into_iter()
        .map(|a| {
            if a == queue_in_cluster {
                format!("$({JOBS_URL_ENV})")
            } else {
                a
            }
        })
        .collect();
    let backend = if w.queue_url.starts_with("redis://") {
        "redis"
    } else if w.queue_url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": JOBS_URL_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": "url"}}}),
    ];
    let (trigger, note) = match backend {
        "redis" => {
            let (address, db, password) = redis_parts(&w.queue_url);
            let mut meta = json!({
                "address": address,
                "databaseIndex": db.to_string(),
                // No consumerGroup: KEDA then scales on XLEN, the unfinished jobs.
                "stream": format!("jobs:{{{}}}:stream", w.queue),
                "streamLength": w.target_jobs_per_worker.to_string(),
            });
            if password {
                meta["passwordFromEnv"] = json!(REDIS_PASSWORD_ENV);
                env.push(json!({"name": REDIS_PASSWORD_ENV, "valueFrom": {"secretKeyRef": {"name": secret, "key": "redis-password"}}}));
            }
            (
                json!({"type": "redis-streams", "metadata": meta}),
                Some(
                    "KEDA activates on a non-empty stream (activation_jobs has no streamLength equivalent); jobs waiting out a retry back-off sit in a sorted set, not the stream, and are not counted",
                ),
            )
        }
        "postgres" => (
            json!({
                "type": "postgresql",
                "metadata": {
                    "connectionFromEnv": JOBS_URL_ENV,
                    "query": format!("SELECT count(*) FROM jobs_{}", w.queue),
                    "targetQueryValue": w.target_jobs_per_worker.to_string(),
                    "activationTargetQueryValue": w.activation_jobs.to_string(),
                },
            }),
            None,
        ),
        _ => (
            json!({
                "type": "prometheus",
                "metadata": {
                    "serverAddress": "http://prometheus.monitoring.svc:9090",
                    "query": format!("max(scaleout_jobs_depth{{queue=\"{}\"}})", w.queue),
                    "threshold": w.target_jobs_per_worker.to_string(),
                    "activationThreshold": w.activation_jobs.to_string(),
                },
            }),
            Some(
                "a SQLite queue lives on one node and pods do not share it: use a redis:// or postgres:// queue in a cluster; serverAddress is a placeholder",
            ),
        ),
    };
    let ms_to_s = |ms: u64| ms.div_ceil(1000).max(1);
    let container = json!({
        "name": "worker",
        "image": cfg.service.image,
        "command": [argv[0]],
        "args": argv[1..],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": WORKER_METRICS_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {"requests": quantities.clone(), "limits": quantities},
        "volumeMounts": [{"name": "data", "mountPath": CONTAINER_DATA_DIR}],
    });
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            // KEDA owns the count; this is the count before KEDA's first decision.
            "replicas": w.instances,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    // SIGTERM: the worker stops reserving and finishes in-flight jobs.
                    "terminationGracePeriodSeconds": ms_to_s(w.stop_grace_ms),
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    });
    let mut scale_up = json!({"stabilizationWindowSeconds": 0});
    if w.max_step_up > 0 {
        scale_up["policies"] = json!([{
            "type": "Pods",
            "value": w.max_step_up,
            "periodSeconds": ms_to_s(w.poll_ms),
        }]);
    }
    let mut annotations = json!({
        "scaleout/queue-backend": backend,
        "scaleout/target-jobs-per-worker": w.target_jobs_per_worker.to_string(),
    });
    if w.max_oldest_age_ms > 0 {
        annotations["scaleout/max-oldest-age-ms"] = json!(format!(
            "{} (the local age rule has no KEDA equivalent; recorded, not applied)",
            w.max_oldest_age_ms
        ));
    }
    if let Some(n) = note {
        annotations["scaleout/note"] = json!(n);
    }
    let scaled_object = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "pollingInterval": ms_to_s(w.poll_ms),
            "cooldownPeriod": ms_to_s(w.cooldown_ms),
            "minReplicaCount": w.min_workers,
            "maxReplicaCount": w.max_workers,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": scale_up,
                        "scaleDown": {
                            "stabilizationWindowSeconds": w.scale_down_window_ms / 1000,
                        },
                    },
                },
            },
            "triggers": [trigger],
        },
    });
    Some(WorkerManifests {
        deployment,
        scaled_object,
    })
}

impl WorkerManifests {
    /// File name and YAML of each manifest (for `-o DIR`).
    pub fn files(&self) -> Result<Vec<(&'static str, String)>, FleetError> {
        Ok(vec![
            ("worker-deployment.yaml", to_yaml(&self.deployment)?),
            ("worker-scaledobject.yaml", to_yaml(&self.scaled_object)?),
        ])
    }
}

fn to_yaml(v: &Value) -> Result<String, FleetError> {
    serde_yaml::to_string(v).map_err(|e| FleetError::Spawn(format!("yaml: {e}")))
}

/// `scaleout k8s`'s worker part: with `[workers] enabled`, appends the worker manifests to
/// stdout (as more `---` documents) or writes them into `dir`; nothing otherwise.
/// Returns the paths written.
pub fn emit(
    cfg: &DeploymentConfig,
    dir: Option<&Path>,
) -> Result<Vec<std::path::PathBuf>, FleetError> {
    let Some(m) = manifests_on(cfg, crate::process::available_cpus()) else {
        return Ok(Vec::new());
    };
    let mut written = Vec::new();
    for (file, yaml) in m.files()? {
        match dir {
            None => print!("---\n{yaml}"),
            Some(d) => {
                let path = d.join(file);
                std::fs::write(&path, yaml).map_err(|e| FleetError::Config {
                    field: "(output)".into(),
                    reason: format!("cannot write {}: {e}", path.display()),
                })?;
                written.push(path);
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::WorkersConfig;

    fn cfg(url: &str) -> DeploymentConfig {
        let c = DeploymentConfig {
            workers: WorkersConfig {
                enabled: true,
                queue_url: url.into(),
                queue: "shop".into(),
                min_workers: 0,
                max_workers: 6,
                target_jobs_per_worker: 50,
                activation_jobs: 2,
                poll_ms: 2_000,
                cooldown_ms: 60_000,
                scale_down_window_ms: 30_000,
                max_step_up: 2,
                ..WorkersConfig::default()
            },
            ..DeploymentConfig::default()
        };
        c.validate().unwrap();
        c
    }

    #[test]
    fn nothing_without_workers() {
        assert!(manifests_on(&DeploymentConfig::default(), 4).is_none());
    }

    #[test]
    fn redis_queue_gets_a_redis_streams_trigger_with_the_local_rules() {
        let m = manifests_on(&cfg("redis://:s3cret@redis.default:6380/2"), 4).unwrap();
        let so = &m.scaled_object;
        assert_eq!(so["kind"], "ScaledObject");
        assert_eq!(so["spec"]["scaleTargetRef"]["name"], "shop-worker");
        assert_eq!(so["spec"]["minReplicaCount"], 0);
        assert_eq!(so["spec"]["maxReplicaCount"], 6);
        assert_eq!(so["spec"]["pollingInterval"], 2);
        assert_eq!(so["spec"]["cooldownPeriod"], 60);
        let behavior = &so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"];
        assert_eq!(behavior["scaleDown"]["stabilizationWindowSeconds"], 30);
        assert_eq!(behavior["scaleUp"]["policies"][0]["value"], 2);
        let t = &so["spec"]["triggers"][0];
        assert_eq!(t["type"], "redis-streams");
        assert_eq!(t["metadata"]["address"], "redis.default:6380");
        assert_eq!(t["metadata"]["databaseIndex"], "2");
        assert_eq!(t["metadata"]["stream"], "jobs:{shop}:stream");
        assert_eq!(t["metadata"]["streamLength"], "50");
        assert_eq!(t["metadata"]["passwordFromEnv"], REDIS_PASSWORD_ENV);
        // The password is nowhere in the manifests; the URL comes from the Secret.
        let text = format!("{}{}", m.deployment, m.scaled_object);
        assert!(!text.contains("s3cret"), "{text}");
        let c = &m.deployment["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> = serde_json::from_value(c["args"].clone()).unwrap();
        let s = args.join(" ");
        assert!(
            s.contains("shop --role worker --metrics-listen 0.0.0.0:9090"),
            "{s}"
        );
        assert!(s.contains(&format!("--jobs-url $({JOBS_URL_ENV})")), "{s}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(m.deployment["spec"]["replicas"], 1);
    }

    #[test]
    fn postgres_queue_counts_the_table() {
        let m = manifests_on(&cfg("postgres://app:pw@db:5432/shop"), 4).unwrap();
        let t = &m.scaled_object["spec"]["triggers"][0];
        assert_eq!(t["type"], "postgresql");
        assert_eq!(t["metadata"]["query"], "SELECT count(*) FROM jobs_shop");
        assert_eq!(t["metadata"]["connectionFromEnv"], JOBS_URL_ENV);
        assert_eq!(t["metadata"]["targetQueryValue"], "50");
        let text = format!("{}{}", m.deployment, m.scaled_object);
        assert!(!text.contains("app:pw"), "{text}");
    }

    #[test]
    fn sqlite_queue_is_flagged() {
        let m = manifests_on(&cfg("sqlite:{data_dir}/jobs.db"), 4).unwrap();
        assert_eq!(m.scaled_object["spec"]["triggers"][0]["type"], "prometheus");
        assert!(
            m.scaled_object["metadata"]["annotations"]["scaleout/note"]
                .as_str()
                .unwrap()
                .contains("SQLite")
        );
    }

    #[test]
    fn yaml_parses_back() {
        let m = manifests_on(&cfg("redis://127.0.0.1:6379"), 4).unwrap();
        for (_, yaml) in m.files().unwrap() {
            let docs = crate::k8s::parse_yaml_documents(&yaml).unwrap();
            assert_eq!(docs.len(), 1);
        }
    }
}

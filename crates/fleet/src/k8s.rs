//! Kubernetes manifests equal to a local deployment, written to be merged by a platform
//! team: Deployment, Service, PodDisruptionBudget, an `autoscaling/v2` HPA with the same
//! min/max, targets and behaviour as the local autoscaler, and the metrics-adapter side
//! that makes the HPA's pod metrics readable (prometheus-adapter rules, or a KEDA
//! `ScaledObject` with Prometheus triggers instead of the HPA).
//!
//! Pure: a [`DeploymentConfig`] in, JSON values (YAML text) out. It never talks to a
//! cluster, never writes a URL or key into a manifest (pods read them from the Secret
//! `[service] secret`), and never invents a setting the local config does not have (what
//! the HPA cannot express is written as an annotation, not silently dropped).
//! [`check`] refuses what would not work on a cluster (the state tier inside the pods,
//! no Secret) with the field and the reason.

use serde_json::{Value, json};

use crate::FleetError;
use crate::deployment::DeploymentConfig;

/// Where `{data_dir}` points inside the container (an `emptyDir` volume).
pub const CONTAINER_DATA_DIR: &str = "/data";

/// Where the image (see the repository's `Dockerfile`) installs the binary.
pub const CONTAINER_EXE: &str = "/usr/local/bin/scaleout";

/// The non-root user and group the image and the pods run as (distroless `nonroot`).
pub const CONTAINER_UID: u32 = 65532;

/// Pod metric: requests in flight in one shop instance (a gauge the shop exports).
pub const METRIC_IN_FLIGHT: &str = "shop_in_flight_requests";
/// Pod metric served by the adapter: `rate(shop_requests_total[1m])` per pod.
pub const METRIC_RPS: &str = "shop_requests_per_second";
/// Pod metric served by the adapter: p99 of `shop_request_duration_seconds` per pod, ms.
pub const METRIC_P99_MS: &str = "shop_request_duration_p99_ms";

/// Secret keys the pods read (see [`crate::ServiceConfig::secret`]).
pub const KEY_DB_URL: &str = "db-url";
/// Secret key of the Redis URL.
pub const KEY_REDIS_URL: &str = "redis-url";
/// Secret key of the JWT signing key.
pub const KEY_JWT: &str = "jwt-secret";

/// Which component turns the pods' Prometheus metrics into what the HPA reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MetricsAdapter {
    /// An `autoscaling/v2` HPA plus the prometheus-adapter rules (a ConfigMap) that serve
    /// its pod metrics on `custom.metrics.k8s.io` (the default: only core kinds, no CRD).
    #[default]
    PrometheusAdapter,
    /// A KEDA `ScaledObject` with Prometheus triggers querying `prometheus_url`; KEDA
    /// creates and owns the HPA.
    Keda {
        /// Prometheus base URL as seen from the KEDA operator.
        prometheus_url: String,
    },
}

/// The manifests, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// `apps/v1` Deployment.
    pub deployment: Value,
    /// `v1` Service.
    pub service: Value,
    /// `policy/v1` PodDisruptionBudget.
    pub pdb: Value,
    /// `autoscaling/v2` HorizontalPodAutoscaler (prometheus-adapter).
    pub hpa: Option<Value>,
    /// `v1` ConfigMap with the prometheus-adapter rules (prometheus-adapter).
    pub adapter_rules: Option<Value>,
    /// `keda.sh/v1alpha1` ScaledObject (KEDA).
    pub scaled_object: Option<Value>,
}

/// A Kubernetes quantity for a non-negative number: whole numbers plainly, otherwise in
/// milli-units (`2.5` -> `2500m`).
pub fn quantity(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as u64)
    } else {
        format!("{}m", (v * 1000.0).round() as u64)
    }
}

fn bad(field: &str, reason: impl Into<String>) -> FleetError {
    FleetError::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

/// What a cluster needs beyond [`DeploymentConfig::validate`]: the state tier outside the
/// pods and a Secret for what must not be in a manifest. The error names the field and
/// says why (`scaleout k8s` exits 2 with it).
pub fn check(cfg: &DeploymentConfig) -> Result<(), FleetError> {
    cfg.validate()?;
    let svc = &cfg.service;
    if !cfg.fleet.command.is_empty() {
        // Any service: the template is translated as it is (placeholders only).
        return Ok(());
    }
    let max = cfg.autoscale.max_instances;
    if svc.sessions == "memory" && max > 1 {
        return Err(bad(
            "service.sessions",
            format!(
                "`memory` sessions live in one pod: with autoscale.max_instances = {max} a user logged in on one replica is unknown to the others. Use jwt, redis or sql"
            ),
        ));
    }
    if svc.secret.is_empty() {
        if svc.db.starts_with("sqlite:") {
            return Err(bad(
                "service.db",
                format!(
                    "SQLite is a file inside one pod: with autoscale.max_instances = {max} every replica would get its own empty database (and a restarted pod would lose its own). In Kubernetes the state tier is external: name a Secret whose db-url is a PostgreSQL URL with service.secret (service.db stays the local database of `scaleout up`)"
                ),
            ));
        }
        return Err(bad(
            "service.secret",
            "name the Kubernetes Secret the pods read their database URL (key db-url) and JWT key (key jwt-secret) from: URLs and keys are never written into a manifest",
        ));
    }
    Ok(())
}

fn rules(r: &autoscale::ScalingRules) -> Value {
    let select = match r.select_policy {
        autoscale::SelectPolicy::Max => "Max",
        autoscale::SelectPolicy::Min => "Min",
        autoscale::SelectPolicy::Disabled => "Disabled",
    };
    let policies: Vec<Value> = r
        .policies
        .iter()
        .map(|p| {
            json!({
                "type": match p.kind {
                    autoscale::RatePolicyKind::Pods => "Pods",
                    autoscale::RatePolicyKind::Percent => "Percent",
                },
                "value": p.value,
                "periodSeconds": p.period_s,
            })
        })
        .collect();
    let mut v = json!({
        "stabilizationWindowSeconds": r.stabilization_window_s,
        "selectPolicy": select,
    });
    if !policies.is_empty() {
        v["policies"] = Value::Array(policies);
    }
    v
}

/// The pod metric an HPA (through prometheus-adapter) reads for a target metric, and the
/// PromQL over the pods of `name` that KEDA would query for the same thing.
fn pod_metric(metric: autoscale::MetricKind, name: &str) -> Option<(&'static str, String)> {
    let pods = format!("pod=~\"{name}-.*\"");
    match metric {
        autoscale::MetricKind::Cpu => None,
        autoscale::MetricKind::InFlight => Some((
            METRIC_IN_FLIGHT,
            format!("sum({METRIC_IN_FLIGHT}{{{pods}}})"),
        )),
        autoscale::MetricKind::Rps => Some((
            METRIC_RPS,
            format!("sum(rate(shop_requests_total{{{pods}}}[1m]))"),
        )),
        // Per pod, like the others: the HPA averages the pods' p99s.
        autoscale::MetricKind::P99Ms => Some((
            METRIC_P99_MS,
            format!(
                "1000 * histogram_quantile(0.99, sum(rate(shop_request_duration_seconds_bucket{{{pods}}}[1m])) by (le))"
            ),
        )),
    }
}

/// The HPA metric entries for the configured targets (all pod-exported or CPU).
fn hpa_metrics(cfg: &DeploymentConfig) -> Vec<Value> {
    cfg.autoscale
        .targets()
        .into_iter()
        .map(|(m, t)| match pod_metric(m, &cfg.service.name) {
            None => json!({
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": t.round() as u64},
                },
            }),
            Some((metric, _)) => json!({
                "type": "Pods",
                "pods": {
                    "metric": {"name": metric},
                    "target": {"type": "AverageValue", "averageValue": quantity(t)},
                },
            }),
        })
        .collect()
}

/// The prometheus-adapter rules serving [`METRIC_IN_FLIGHT`], [`METRIC_RPS`] and
/// [`METRIC_P99_MS`] per pod on `custom.metrics.k8s.io`, from the series Prometheus
/// scrapes off the pods (labels `namespace` and `pod`, as the usual pod scrape job sets).
pub fn adapter_rules_yaml() -> String {
    let resources = "  resources:\n    overrides:\n      namespace: {resource: namespace}\n      pod: {resource: pod}\n";
    let mut out = String::from("rules:\n");
    for (series, as_name, query) in [
        (
            METRIC_IN_FLIGHT,
            METRIC_IN_FLIGHT,
            "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
        ),
        (
            "shop_requests_total",
            METRIC_RPS,
            "sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)",
        ),
        (
            "shop_request_duration_seconds_bucket",
            METRIC_P99_MS,
            "1000 * histogram_quantile(0.99, sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (le, <<.GroupBy>>))",
        ),
    ] {
        out.push_str(&format!(
            "- seriesQuery: '{series}{{namespace!=\"\",pod!=\"\"}}'\n{resources}  name:\n    matches: \"^{series}$\"\n    as: \"{as_name}\"\n  metricsQuery: '{query}'\n"
        ));
    }
    out
}

/// The shop's command line in a pod: URLs as `$(VAR)` references to env vars filled from
/// the Secret, the metrics listener on its own port, and the connection-math guard sized
/// for the largest fleet the autoscaler may reach.
fn shop_argv(cfg: &DeploymentConfig) -> Vec<String> {
    let svc = &cfg.service;
    let port = svc.container_port;
    let mut argv: Vec<String> = [
        CONTAINER_EXE,
        "shop",
        "--listen",
        &format!("0.0.0.0:{port}"),
        "--instance-id",
        "$(POD_NAME)",
        "--db",
        "$(SHOP_DB_URL)",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !svc.redis.is_empty() {
        argv.extend(["--redis".into(), "$(SHOP_REDIS_URL)".into()]);
    }
    for i in 1..=svc.replicas.len() {
        argv.extend(["--replica".into(), format!("$(SHOP_REPLICA_URL_{i})")]);
    }
    argv.extend([
        "--metrics-listen".into(),
        format!("0.0.0.0:{}", svc.metrics_port),
        "--expected-instances".into(),
        cfg.autoscale.max_instances.to_string(),
    ]);
    argv.extend(svc.shop_options());
    argv
}

/// Replaces the local placeholders with their in-cluster values (custom commands).
fn in_cluster(word: &str, port: u16) -> String {
    word.replace("{exe}", CONTAINER_EXE)
        .replace("{addr}", &format!("0.0.0.0:{port}"))
        .replace("{host}", "0.0.0.0")
        .replace("{port}", &port.to_string())
        .replace("{id}", "$(POD_NAME)")
        .replace("{data_dir}", CONTAINER_DATA_DIR)
}

fn secret_env(var: &str, secret: &str, key: &str) -> Value {
    json!({"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

/// Builds the manifests for `cfg` on this host with the default adapter. `cfg` must pass
/// [`check`].
pub fn manifests(cfg: &DeploymentConfig) -> Manifests {
    manifests_on(
        cfg,
        crate::process::available_cpus(),
        &MetricsAdapter::default(),
    )
}

/// Builds the manifests for `cfg` as if on a host with `host_cores` cores (pure). The
/// container's `resources.requests` and `resources.limits` are both the instance
/// envelope (`[fleet.resources]`): Guaranteed QoS, the same CPU quota and memory limit
/// the local fleet enforces with cgroups.
pub fn manifests_on(
    cfg: &DeploymentConfig,
    host_cores: usize,
    adapter: &MetricsAdapter,
) -> Manifests {
    let svc = &cfg.service;
    let fleet = cfg.resolved_fleet();
    let envelope = fleet.resources.envelope(host_cores);
    let quantities = json!({"cpu": envelope.k8s_cpu(), "memory": envelope.k8s_memory()});
    let a = &cfg.autoscale;
    let name = svc.name.as_str();
    let labels = json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/managed-by": "scaleout",
    });
    let selector = json!({ "app.kubernetes.io/name": name });
    let port = svc.container_port;
    let is_shop = cfg.fleet.command.is_empty();

    let argv: Vec<String> = if is_shop {
        shop_argv(cfg)
    } else {
        fleet.command.iter().map(|w| in_cluster(w, port)).collect()
    };
    let mut env = vec![json!({
        "name": "POD_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    })];
    if is_shop {
        let secret = svc.secret.as_str();
        env.push(secret_env("SHOP_DB_URL", secret, KEY_DB_URL));
        if !svc.redis.is_empty() {
            env.push(secret_env("SHOP_REDIS_URL", secret, KEY_REDIS_URL));
        }
        for i in 1..=svc.replicas.len() {
            env.push(secret_env(
                &format!("SHOP_REPLICA_URL_{i}"),
                secret,
                &format!("replica-url-{i}"),
            ));
        }
        if svc.uses_jwt() {
            // Every pod verifies every other pod's tokens: one key, from the Secret.
            env.push(secret_env("SCALEOUT_SHOP_JWT_SECRET", secret, KEY_JWT));
        }
    }
    for (k, v) in &fleet.env {
        env.push(json!({"name": k, "value": in_cluster(v, port)}));
    }
    let ms_to_s = |ms: u64| ms.div_ceil(1000).max(1);
    let mut ports = vec![json!({"name": "http", "containerPort": port, "protocol": "TCP"})];
    if is_shop {
        ports
            .push(json!({"name": "metrics", "containerPort": svc.metrics_port, "protocol": "TCP"}));
    }
    let probe = |path: &str, period: u64, failures: u64| {
        json!({
            "httpGet": {"path": path, "port": "http"},
            "periodSeconds": period,
            "timeoutSeconds": 1,
            "failureThreshold": failures,
        })
    };
    let container = json!({
        "name": name,
        "image": svc.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [argv[0]],
        "args": argv[1..],
        "env": env,
        "ports": ports,
        // The local fleet kills an instance not ready within ready_timeout_ms.
        "startupProbe": probe(&fleet.readiness_path, 1, ms_to_s(fleet.ready_timeout_ms)),
        "readinessProbe": probe(&fleet.readiness_path, 1, 3),
        "livenessProbe": probe(&svc.liveness_path, 5, 3),
        "resources": {"requests": quantities.clone(), "limits": quantities},
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": CONTAINER_UID,
            "runAsGroup": CONTAINER_UID,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        // The only writable paths: scratch space, never the state of record.
        "volumeMounts": [
            {"name": "data", "mountPath": CONTAINER_DATA_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    });
    let replicas = fleet.instances.clamp(a.min_instances, a.max_instances);
    let spread = |key: &str| {
        json!({
            "maxSkew": 1,
            "topologyKey": key,
            // Spread when possible; never leave a pod pending because a zone is full.
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        })
    };
    let mut pod_annotations = json!({});
    if is_shop {
        pod_annotations = json!({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": svc.metrics_port.to_string(),
            "prometheus.io/path": "/metrics",
        });
    }
    let mut dep_annotations = json!({});
    if is_shop {
        let mut keys = vec![KEY_DB_URL.to_string()];
        if !svc.redis.is_empty() {
            keys.push(KEY_REDIS_URL.into());
        }
        keys.extend((1..=svc.replicas.len()).map(|i| format!("replica-url-{i}")));
        if svc.uses_jwt() {
            keys.push(KEY_JWT.into());
        }
        dep_annotations = json!({
            "scaleout/secret": svc.secret,
            "scaleout/secret-keys": keys.join(","),
        });
    }
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "annotations": dep_annotations},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            // The local rolling restart: one at a time, surge of one, none unavailable.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels, "annotations": pod_annotations},
                "spec": {
                    // Drain, then SIGTERM, then SIGKILL: the local graces, summed.
                    "terminationGracePeriodSeconds":
                        ms_to_s(fleet.drain_grace_ms + fleet.stop_grace_ms),
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": CONTAINER_UID,
                        "runAsGroup": CONTAINER_UID,
                        "fsGroup": CONTAINER_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        spread("topology.kubernetes.io/zone"),
                        spread("kubernetes.io/hostname"),
                    ],
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "emptyDir": {"sizeLimit": "64Mi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            // The metrics port is not in the Service: /metrics is never public.
            "ports": [{"name": "http", "port": svc.service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    });
    // Voluntary disruptions (node drains) take one pod at a time, like a local rolling
    // restart; maxUnavailable (not minAvailable) so a one-replica fleet can still drain.
    let pdb = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": labels},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    });
    let (up, down, note) = match a.policy {
        autoscale::PolicyKind::Hpa => (&a.hpa.scale_up, &a.hpa.scale_down, None),
        autoscale::PolicyKind::Default => (
            &a.tuned.scale_up,
            &a.tuned.scale_down,
            Some(
                "panic mode and scale-down cooldown have no HPA equivalent; behavior carries the stabilisation windows and rate policies",
            ),
        ),
        autoscale::PolicyKind::Kpa | autoscale::PolicyKind::Step => (
            &a.hpa.scale_up,
            &a.hpa.scale_down,
            Some("this policy has no HPA equivalent; behavior is the [autoscale.hpa] section"),
        ),
    };
    let mut annotations = json!({
        "scaleout/policy": a.policy.as_str(),
        // Controller-wide flags in Kubernetes, not per-HPA fields: recorded, not applied.
        "scaleout/tolerance": a.hpa.tolerance.to_string(),
        "scaleout/sync-period-seconds": a.hpa.sync_period_s.to_string(),
    });
    if let Some(n) = note {
        annotations["scaleout/note"] = json!(n);
    }
    if !is_shop {
        annotations["scaleout/metrics"] =
            json!("pod metrics are the shop's (shop_*): a custom command must export them");
    }
    let behavior = json!({"scaleUp": rules(up), "scaleDown": rules(down)});
    let (hpa, adapter_rules, scaled_object) = match adapter {
        MetricsAdapter::PrometheusAdapter => {
            let hpa = json!({
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicas": a.min_instances,
                    "maxReplicas": a.max_instances,
                    "metrics": hpa_metrics(cfg),
                    "behavior": behavior,
                },
            });
            let rules = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": format!("{name}-prometheus-adapter-rules"),
                    "labels": labels,
                    "annotations": {
                        "scaleout/usage": "the rules for prometheus-adapter's config.yaml (helm: rules.custom); they serve the HPA's pod metrics on custom.metrics.k8s.io",
                    },
                },
                "data": {"config.yaml": adapter_rules_yaml()},
            });
            (Some(hpa), Some(rules), None)
        }
        MetricsAdapter::Keda { prometheus_url } => {
            let triggers: Vec<Value> = a
                .targets()
                .into_iter()
                .map(|(m, t)| match pod_metric(m, name) {
                    None => json!({
                        "type": "cpu",
                        "metricType": "Utilization",
                        "metadata": {"value": (t.round() as u64).to_string()},
                    }),
                    Some((metric, query)) => json!({
                        "type": "prometheus",
                        "name": metric.replace('_', "-"),
                        // The query sums over the pods; AverageValue divides by replicas.
                        "metricType": "AverageValue",
                        "metadata": {
                            "serverAddress": prometheus_url,
                            "query": query,
                            "threshold": t.to_string(),
                        },
                    }),
                })
                .collect();
            let so = json!({
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    "minReplicaCount": a.min_instances,
                    "maxReplicaCount": a.max_instances,
                    "pollingInterval": 15,
                    "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
                    "triggers": triggers,
                },
            });
            (None, None, Some(so))
        }
    };
    Manifests {
        deployment,
        service,
        pdb,
        hpa,
        adapter_rules,
        scaled_object,
    }
}

impl Manifests {
    /// File name and document of each manifest, in apply order.
    fn documents(&self) -> Vec<(&'static str, &Value)> {
        let mut docs = vec![
            ("deployment.yaml", &self.deployment),
            ("service.yaml", &self.service),
            ("pdb.yaml", &self.pdb),
        ];
        if let Some(v) = &self.adapter_rules {
            docs.push(("prometheus-adapter-rules.yaml", v));
        }
        if let Some(v) = &self.hpa {
            docs.push(("hpa.yaml", v));
        }
        if let Some(v) = &self.scaled_object {
            docs.push(("scaledobject.yaml", v));
        }
        docs
    }

    /// Every document as one multi-document YAML stream.
    pub fn to_yaml(&self) -> Result<String, FleetError> {
        let mut out = String::new();
        for (_, doc) in self.documents() {
            out.push_str("---\n");
            out.push_str(&to_yaml(doc)?);
        }
        Ok(out)
    }

    /// File name and YAML of each manifest (for `-o DIR`).
    pub fn files(&self) -> Result<Vec<(&'static str, String)>, FleetError> {
        self.documents()
            .into_iter()
            .map(|(f, d)| Ok((f, to_yaml(d)?)))
            .collect()
    }
}

fn to_yaml(v: &Value) -> Result<String, FleetError> {
    serde_yaml::to_string(v).map_err(|e| FleetError::Spawn(format!("yaml: {e}")))
}

/// Parses a (multi-document) YAML stream back into JSON values, e.g. to check output.
pub fn parse_yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(text) {
        let v = Value::deserialize(de).map_err(|e| e.to_string())?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: &str = "[service]\nsecret = \"shop-state\"\ndb = \"postgres://u:p@db:5432/shop\"\n";

    fn container(m: &Manifests) -> &Value {
        &m.deployment["spec"]["template"]["spec"]["containers"][0]
    }

    #[test]
    fn unset_envelope_defaults_from_the_host_cores() {
        let cfg = DeploymentConfig::parse(PG).unwrap();
        for (cores, cpu) in [(2, "250m"), (8, "1"), (64, "4")] {
            let m = manifests_on(&cfg, cores, &MetricsAdapter::default());
            let r = &container(&m)["resources"];
            assert_eq!(r["limits"]["cpu"], cpu);
            assert_eq!(r["requests"]["cpu"], cpu);
            assert_eq!(r["limits"]["memory"], "256Mi");
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity(10.0), "10");
        assert_eq!(quantity(2.5), "2500m");
    }

    #[test]
    fn sqlite_and_a_missing_secret_are_refused_with_the_reason() {
        let err = check(&DeploymentConfig::default()).unwrap_err().to_string();
        assert!(err.contains("service.db"), "{err}");
        assert!(err.contains("own empty database"), "{err}");
        let err =
            check(&DeploymentConfig::parse("[service]\ndb = \"postgres://u:p@db/shop\"").unwrap())
                .unwrap_err()
                .to_string();
        assert!(err.contains("service.secret"), "{err}");
        check(&DeploymentConfig::parse(PG).unwrap()).unwrap();
        let err = check(&DeploymentConfig::parse(&format!("{PG}sessions = \"memory\"\n")).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("service.sessions"), "{err}");
        // The local SQLite file of `up` is fine once the pods read a Secret's db-url.
        check(&DeploymentConfig::parse("[service]\nsecret = \"s\"").unwrap()).unwrap();
    }

    #[test]
    fn no_url_or_key_is_written_into_a_manifest() {
        let cfg = DeploymentConfig::parse(&format!(
            "{PG}redis = \"redis://:hunter2@cache:6379\"\nreplicas = [\"postgres://u:p@r1/shop\"]\n"
        ))
        .unwrap();
        let m = manifests(&cfg);
        let yaml = m.to_yaml().unwrap();
        for secret in ["u:p@", "hunter2", "postgres://", "redis://"] {
            assert!(!yaml.contains(secret), "{secret} in\n{yaml}");
        }
        let c = container(&m);
        let args: Vec<&str> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for pair in [
            ["--db", "$(SHOP_DB_URL)"],
            ["--redis", "$(SHOP_REDIS_URL)"],
            ["--replica", "$(SHOP_REPLICA_URL_1)"],
            ["--metrics-listen", "0.0.0.0:9090"],
            ["--expected-instances", "4"],
        ] {
            assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
        }
        let env = c["env"].as_array().unwrap();
        for (var, key) in [
            ("SHOP_DB_URL", KEY_DB_URL),
            ("SHOP_REDIS_URL", KEY_REDIS_URL),
            ("SHOP_REPLICA_URL_1", "replica-url-1"),
            ("SCALEOUT_SHOP_JWT_SECRET", KEY_JWT),
        ] {
            let e = env.iter().find(|e| e["name"] == var).expect(var);
            assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "shop-state");
            assert_eq!(e["valueFrom"]["secretKeyRef"]["key"], key);
        }
    }

    #[test]
    fn round_trip_matches_the_config() {
        let cfg = DeploymentConfig::parse(&format!(
            r#"
[fleet]
instances = 3
[fleet.resources]
cpu = 0.25
memory_mib = 192
[autoscale]
policy = "hpa"
min_instances = 2
max_instances = 7
target_cpu_pct = 60.0
target_in_flight = 2.5
[autoscale.hpa.scale_down]
stabilization_window_s = 120
select_policy = "min"
policies = [{{ kind = "pods", value = 1, period_s = 30 }}]
{PG}name = "web"
"#
        ))
        .unwrap();
        let yaml = manifests(&cfg).to_yaml().unwrap();
        let docs = parse_yaml_documents(&yaml).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "ConfigMap",
                "HorizontalPodAutoscaler"
            ]
        );
        let (dep, svc, hpa) = (&docs[0], &docs[1], &docs[4]);
        assert_eq!(dep["spec"]["replicas"], 3);
        assert_eq!(
            svc["spec"]["selector"],
            dep["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(hpa["apiVersion"], "autoscaling/v2");
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 7);
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "web");
        let m = hpa["spec"]["metrics"].as_array().unwrap();
        assert_eq!(m[0]["pods"]["metric"]["name"], METRIC_IN_FLIGHT);
        assert_eq!(m[0]["pods"]["target"]["averageValue"], "2500m");
        assert_eq!(m[1]["resource"]["target"]["averageUtilization"], 60);
        let down = &hpa["spec"]["behavior"]["scaleDown"];
        assert_eq!(down["stabilizationWindowSeconds"], 120);
        assert_eq!(down["selectPolicy"], "Min");
        assert_eq!(down["policies"][0]["type"], "Pods");
        assert_eq!(down["policies"][0]["periodSeconds"], 30);
        let up = &hpa["spec"]["behavior"]["scaleUp"];
        assert_eq!(up["stabilizationWindowSeconds"], 0);
        assert_eq!(up["policies"].as_array().unwrap().len(), 2);
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        for kind in ["requests", "limits"] {
            assert_eq!(c["resources"][kind]["cpu"], "250m", "{kind}");
            assert_eq!(c["resources"][kind]["memory"], "192Mi", "{kind}");
        }
        assert_eq!(c["command"][0], CONTAINER_EXE);
        assert_eq!(c["args"][0], "shop");
    }

    #[test]
    fn every_pod_metric_the_hpa_reads_has_an_adapter_rule() {
        let cfg = DeploymentConfig::parse(&format!(
            "[autoscale]\ntarget_in_flight = 8.0\ntarget_rps = 300.0\ntarget_p99_ms = 250.0\n{PG}"
        ))
        .unwrap();
        let m = manifests(&cfg);
        let rules: serde_json::Value = serde_yaml::from_str(
            m.adapter_rules.as_ref().unwrap()["data"]["config.yaml"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let served: Vec<&str> = rules["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"]["as"].as_str().unwrap())
            .collect();
        let hpa = m.hpa.as_ref().unwrap();
        let pods: Vec<&str> = hpa["spec"]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["type"] == "Pods")
            .map(|x| x["pods"]["metric"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(pods.len(), 3);
        for p in pods {
            assert!(served.contains(&p), "{p} not served by {served:?}");
        }
    }

    #[test]
    fn keda_replaces_the_hpa_with_a_scaled_object() {
        let cfg = DeploymentConfig::parse(&format!(
            "[autoscale]\ntarget_in_flight = 8.0\ntarget_cpu_pct = 70.0\n{PG}"
        ))
        .unwrap();
        let m = manifests_on(
            &cfg,
            2,
            &MetricsAdapter::Keda {
                prometheus_url: "http://prometheus.monitoring:9090".into(),
            },
        );
        assert!(m.hpa.is_none() && m.adapter_rules.is_none());
        let so = m.scaled_object.as_ref().unwrap();
        assert_eq!(so["kind"], "ScaledObject");
        assert_eq!(so["spec"]["maxReplicaCount"], cfg.autoscale.max_instances);
        let t = so["spec"]["triggers"].as_array().unwrap();
        assert_eq!(t[0]["type"], "prometheus");
        assert_eq!(t[0]["metadata"]["threshold"], "8");
        assert!(
            t[0]["metadata"]["query"]
                .as_str()
                .unwrap()
                .contains(METRIC_IN_FLIGHT)
        );
        assert_eq!(t[1]["type"], "cpu");
        assert!(
            so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
                .is_object()
        );
    }
}

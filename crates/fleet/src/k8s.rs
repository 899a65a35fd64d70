//! Kubernetes manifests equal to a local deployment: Deployment, Service and an
//! `autoscaling/v2` HorizontalPodAutoscaler with the same min/max, target metrics and
//! behaviour (stabilisation windows, rate policies, selectPolicy).
//!
//! Pure: a [`DeploymentConfig`] in, YAML text out. It never talks to a cluster, and it
//! never invents a setting the local config does not have (what the HPA cannot express
//! is written as an annotation, not silently dropped).

use serde_json::{Value, json};

use crate::FleetError;
use crate::deployment::DeploymentConfig;

/// Where `{data_dir}` points inside the container (an `emptyDir` volume).
pub const CONTAINER_DATA_DIR: &str = "/data";

/// The three manifests, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// `apps/v1` Deployment.
    pub deployment: Value,
    /// `v1` Service.
    pub service: Value,
    /// `autoscaling/v2` HorizontalPodAutoscaler.
    pub hpa: Value,
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

/// The HPA metric entries for the configured targets.
fn metrics(cfg: &DeploymentConfig) -> Vec<Value> {
    let name = &cfg.service.name;
    cfg.autoscale
        .targets()
        .into_iter()
        .map(|(m, t)| match m {
            autoscale::MetricKind::Cpu => json!({
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": t.round() as u64},
                },
            }),
            autoscale::MetricKind::InFlight => json!({
                "type": "Pods",
                "pods": {
                    "metric": {"name": "scaleout_in_flight_requests"},
                    "target": {"type": "AverageValue", "averageValue": quantity(t)},
                },
            }),
            autoscale::MetricKind::Rps => json!({
                "type": "Pods",
                "pods": {
                    "metric": {"name": "scaleout_requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": quantity(t)},
                },
            }),
            autoscale::MetricKind::P99Ms => json!({
                "type": "Object",
                "object": {
                    "describedObject": {"apiVersion": "v1", "kind": "Service", "name": name},
                    "metric": {"name": "scaleout_p99_latency_ms"},
                    "target": {"type": "Value", "value": quantity(t)},
                },
            }),
        })
        .collect()
}

/// Replaces the local placeholders with their in-cluster values.
fn in_cluster(word: &str, port: u16) -> String {
    word.replace("{exe}", "scaleout")
        .replace("{addr}", &format!("0.0.0.0:{port}"))
        .replace("{host}", "0.0.0.0")
        .replace("{port}", &port.to_string())
        .replace("{id}", "$(POD_NAME)")
        .replace("{data_dir}", CONTAINER_DATA_DIR)
}

/// Builds the manifests for `cfg` (which must be valid) on this host: the envelope's
/// unset fields default from this host's cores, as `scaleout up` would run them.
pub fn manifests(cfg: &DeploymentConfig) -> Manifests {
    manifests_on(cfg, crate::process::available_cpus())
}

/// Builds the manifests for `cfg` as if on a host with `host_cores` cores (pure). The
/// container's `resources.requests` and `resources.limits` are both the instance
/// envelope (`[fleet.resources]`): Guaranteed QoS, the same CPU quota and memory limit
/// the local fleet enforces with cgroups.
pub fn manifests_on(cfg: &DeploymentConfig, host_cores: usize) -> Manifests {
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

    let mut argv: Vec<String> = fleet.command.iter().map(|w| in_cluster(w, port)).collect();
    let mut env = vec![json!({
        "name": "POD_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    })];
    if cfg.fleet.command.is_empty() && svc.uses_jwt() {
        // Pods do not share a data dir: the shop's JWT key comes from a Secret the
        // operator creates (`kubectl create secret generic NAME-jwt
        // --from-literal=jwt-secret=$(openssl rand -hex 32)`), never from a manifest.
        if let Some(i) = argv.iter().position(|a| a == "--jwt-secret-file") {
            argv.drain(i..(i + 2).min(argv.len()));
        }
        env.push(json!({
            "name": "SCALEOUT_SHOP_JWT_SECRET",
            "valueFrom": {"secretKeyRef": {"name": format!("{name}-jwt"), "key": "jwt-secret"}},
        }));
    }
    for (k, v) in &fleet.env {
        env.push(json!({"name": k, "value": in_cluster(v, port)}));
    }
    let ms_to_s = |ms: u64| ms.div_ceil(1000).max(1);
    let container = json!({
        "name": name,
        "image": svc.image,
        "command": [argv[0]],
        "args": argv[1..],
        "env": env,
        "ports": [{"name": "http", "containerPort": port}],
        // The local fleet kills an instance not ready within ready_timeout_ms.
        "startupProbe": {
            "httpGet": {"path": fleet.readiness_path, "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": ms_to_s(fleet.ready_timeout_ms),
        },
        "readinessProbe": {
            "httpGet": {"path": fleet.readiness_path, "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": svc.liveness_path, "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {"requests": quantities.clone(), "limits": quantities},
        "volumeMounts": [{"name": "data", "mountPath": CONTAINER_DATA_DIR}],
    });
    let replicas = fleet.instances.clamp(a.min_instances, a.max_instances);
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            // The local rolling restart: one at a time, surge of one, none unavailable.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    // Drain, then SIGTERM, then SIGKILL: the local graces, summed.
                    "terminationGracePeriodSeconds":
                        ms_to_s(fleet.drain_grace_ms + fleet.stop_grace_ms),
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": svc.service_port, "targetPort": "http"}],
        },
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
    let hpa = json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": a.min_instances,
            "maxReplicas": a.max_instances,
            "metrics": metrics(cfg),
            "behavior": {"scaleUp": rules(up), "scaleDown": rules(down)},
        },
    });
    Manifests {
        deployment,
        service,
        hpa,
    }
}

impl Manifests {
    /// The three documents as one multi-document YAML stream.
    pub fn to_yaml(&self) -> Result<String, FleetError> {
        let mut out = String::new();
        for doc in [&self.deployment, &self.service, &self.hpa] {
            out.push_str("---\n");
            out.push_str(&to_yaml(doc)?);
        }
        Ok(out)
    }

    /// File name and YAML of each manifest (for `-o DIR`).
    pub fn files(&self) -> Result<Vec<(&'static str, String)>, FleetError> {
        Ok(vec![
            ("deployment.yaml", to_yaml(&self.deployment)?),
            ("service.yaml", to_yaml(&self.service)?),
            ("hpa.yaml", to_yaml(&self.hpa)?),
        ])
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

    #[test]
    fn unset_envelope_defaults_from_the_host_cores() {
        let cfg = DeploymentConfig::default();
        for (cores, cpu) in [(2, "250m"), (8, "1"), (64, "4")] {
            let m = manifests_on(&cfg, cores);
            let r = &m.deployment["spec"]["template"]["spec"]["containers"][0]["resources"];
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
    fn round_trip_matches_the_config() {
        let cfg = DeploymentConfig::parse(
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
policies = [{ kind = "pods", value = 1, period_s = 30 }]
[service]
name = "web"
"#,
        )
        .unwrap();
        let yaml = manifests(&cfg).to_yaml().unwrap();
        let docs = parse_yaml_documents(&yaml).unwrap();
        assert_eq!(docs.len(), 3);
        let (dep, svc, hpa) = (&docs[0], &docs[1], &docs[2]);
        assert_eq!(dep["kind"], "Deployment");
        assert_eq!(dep["spec"]["replicas"], 3);
        assert_eq!(svc["kind"], "Service");
        assert_eq!(
            svc["spec"]["selector"],
            dep["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(hpa["apiVersion"], "autoscaling/v2");
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 7);
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "web");
        let m = hpa["spec"]["metrics"].as_array().unwrap();
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
        assert_eq!(c["command"][0], "scaleout");
        assert_eq!(c["args"][0], "shop");
        assert!(
            c["args"]
                .as_array()
                .unwrap()
                .contains(&json!("$(POD_NAME)"))
        );
        assert!(
            c["args"]
                .as_array()
                .unwrap()
                .contains(&json!("sqlite:/data/shop.db"))
        );
        // The JWT key comes from a Secret, not from a per-pod file.
        assert!(
            !c["args"]
                .as_array()
                .unwrap()
                .contains(&json!("--jwt-secret-file"))
        );
        let jwt = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "SCALEOUT_SHOP_JWT_SECRET")
            .expect("JWT key env");
        assert_eq!(jwt["valueFrom"]["secretKeyRef"]["key"], "jwt-secret");
    }
}

//! End to end: `scaleout k8s` writes manifests a platform team would merge.
//!
//! - The YAML is parsed back and compared field by field with the config as `scaleout up`
//!   reads it.
//! - The manifests for the example config and for a PostgreSQL + Redis config are
//!   validated against the Kubernetes schemas of two versions by `kubernetes-validate
//!   --strict` (PyPI; `scripts/services kube-validate` installs it). Missing, the test
//!   fails and says how to install it.
//! - Checks in the spirit of kube-score / kube-linter, written as tests: probes, PDB,
//!   resources, non-root and read-only root, dropped capabilities, seccomp, spread, no
//!   `latest` tag, secrets never inline.
//! - The metrics the HPA scales on are ones a real shop exports (scraped from one).
//! - What would crash-loop on a cluster is refused with the field and exit 2.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testkit::{ChildGuard, free_addr, http_get, temp_dir, wait_http_ok};

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_scaleout")
}

/// The repository root (for the example config and the Dockerfile).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example_config() -> PathBuf {
    repo().join("crates/fleet/scaleout.example.toml")
}

/// The Kubernetes versions whose schemas the manifests must pass.
const KUBE_VERSIONS: [&str; 2] = ["1.34.0", "1.37.0"];

const CONFIG: &str = r#"
[fleet]
instances = 3
cpus_per_instance = 1
ready_timeout_ms = 20000
drain_grace_ms = 8000
stop_grace_ms = 4000
readiness_path = "/readyz"

[fleet.resources]
cpu = 0.75
memory_mib = 384

[autoscale]
policy = "default"
min_instances = 2
max_instances = 9
target_in_flight = 12.0
target_cpu_pct = 70.0

[autoscale.default.scale_up]
stabilization_window_s = 15
select_policy = "max"
policies = [{ kind = "pods", value = 3, period_s = 20 }, { kind = "percent", value = 150, period_s = 20 }]

[autoscale.default.scale_down]
stabilization_window_s = 240
select_policy = "min"
policies = [{ kind = "percent", value = 25, period_s = 60 }]

[service]
name = "shop-eu"
image = "registry.example/scaleout:1.2"
sessions = "jwt"
container_port = 9000
secret = "shop-eu-state"
"#;

/// A PostgreSQL primary + replica, Redis sessions and cache, every target metric.
const PG_REDIS: &str = r#"
[autoscale]
min_instances = 2
max_instances = 12
target_in_flight = 8.0
target_rps = 400.0
target_p99_ms = 250.0
target_cpu_pct = 65.0

[fleet.resources]
cpu = 0.5
memory_mib = 256

[service]
name = "shop"
db = "postgres://shop:s3cret-pw@10.0.0.5:5432/shop"
replicas = ["postgres://shop:s3cret-pw@10.0.0.6:5432/shop"]
redis = "redis://:r3dis-pw@10.0.0.7:6379"
sessions = "redis"
image = "registry.example/scaleout:0.1.0"
secret = "shop-state"
"#;

fn run_k8s(args: &[&str]) -> std::process::Output {
    Command::new(exe()).arg("k8s").args(args).output().unwrap()
}

/// `scaleout k8s` on `config` text (written to a temp file) with `extra` args: the YAML.
fn k8s_yaml(tag: &str, config: &str, extra: &[&str]) -> String {
    let dir = temp_dir(tag);
    let path = dir.join("scaleout.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["-c", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run_k8s(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn docs_of(yaml: &str) -> Vec<Value> {
    fleet::k8s::parse_yaml_documents(yaml).expect("valid YAML")
}

fn kind<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == k)
        .unwrap_or_else(|| panic!("no {k}"))
}

/// The validator's path: `SCALEOUT_TEST_KUBE_VALIDATE`, else where `scripts/services`
/// installs it.
fn kubernetes_validate() -> PathBuf {
    let path = std::env::var_os("SCALEOUT_TEST_KUBE_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME");
            Path::new(&home)
                .join(".cache/scaleout/kubernetes-validate-1.37.0/bin/kubernetes-validate")
        });
    assert!(
        path.is_file(),
        "kubernetes-validate not found at {}: run `scripts/services kube-validate` (or set SCALEOUT_TEST_KUBE_VALIDATE)",
        path.display()
    );
    path
}

/// Runs `kubernetes-validate --strict` on `yaml` for every version in [`KUBE_VERSIONS`];
/// every core document must pass (kinds without a schema, CRDs, are listed in `crds`).
fn validate_schemas(tag: &str, yaml: &str, crds: &[&str]) {
    let tool = kubernetes_validate();
    let dir = temp_dir(tag);
    let file = dir.join("manifests.yaml");
    std::fs::write(&file, yaml).unwrap();
    let docs = docs_of(yaml);
    for version in KUBE_VERSIONS {
        let out = Command::new(&tool)
            .args(["--strict", "-k", version])
            .arg(&file)
            .output()
            .expect("run kubernetes-validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{version}: {text}");
        let passed = text.matches(" passed for resource ").count();
        let core = docs
            .iter()
            .filter(|d| !crds.contains(&d["kind"].as_str().unwrap()))
            .count();
        assert_eq!(
            passed, core,
            "{version}: every core document passes: {text}"
        );
        assert!(!text.contains("ERROR"), "{version}: {text}");
    }
}

/// kube-score / kube-linter-style checks on one stream of manifests.
fn best_practices(docs: &[Value]) {
    let dep = kind(docs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    let pod_labels = &dep["spec"]["template"]["metadata"]["labels"];
    let matches_pods = |selector: &Value| {
        let m = selector["matchLabels"].as_object().expect("matchLabels");
        !m.is_empty() && m.iter().all(|(k, v)| &pod_labels[k] == v)
    };
    assert!(matches_pods(&dep["spec"]["selector"]));

    // Rollout: surge, never below the current count.
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );

    // Pod security: non-root, seccomp, no service account token, no host namespaces.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64().unwrap() >= 10_000);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(pod[host].is_null() || pod[host] == false, "{host}");
    }

    // Spread over zones and nodes, selecting this Deployment's pods.
    let spread = pod["topologySpreadConstraints"].as_array().expect("spread");
    let keys: Vec<&str> = spread
        .iter()
        .map(|s| s["topologyKey"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"kubernetes.io/hostname"), "{keys:?}");
    assert!(keys.contains(&"topology.kubernetes.io/zone"), "{keys:?}");
    assert!(spread.iter().all(|s| matches_pods(&s["labelSelector"])));

    let containers = pod["containers"].as_array().unwrap();
    assert!(!containers.is_empty());
    for c in containers {
        let name = c["name"].as_str().unwrap();
        // Image pinned (kube-score container-image-tag).
        let image = c["image"].as_str().unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(!tag.is_empty() && tag != "latest", "{name}: image {image}");
        // Probes: all three, on a named container port; liveness differs from readiness.
        let ports: Vec<&str> = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let port = c[probe]["httpGet"]["port"].as_str();
            assert!(port.is_some_and(|p| ports.contains(&p)), "{name}: {probe}");
            assert!(c[probe]["timeoutSeconds"].as_u64().is_some(), "{probe}");
        }
        assert_ne!(
            c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"],
            "{name}: a liveness probe equal to readiness restarts pods that are only busy"
        );
        // Resources: requests and limits for CPU and memory.
        for k in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(c["resources"][k][r].is_string(), "{name}: {k}.{r}");
            }
        }
        // Container security.
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["privileged"], false, "{name}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{name}"
        );
        assert!(sc["capabilities"]["add"].is_null(), "{name}");
        // Secrets never inline: a URL or key only ever arrives through secretKeyRef.
        for a in c["args"].as_array().unwrap() {
            let a = a.as_str().unwrap();
            assert!(!a.contains("://"), "{name}: URL in args: {a}");
        }
        for e in c["env"].as_array().unwrap() {
            let var = e["name"].as_str().unwrap();
            let sensitive = ["URL", "SECRET", "TOKEN", "PASSWORD", "KEY"]
                .iter()
                .any(|w| var.contains(w));
            if sensitive {
                assert!(
                    e["value"].is_null() && e["valueFrom"]["secretKeyRef"]["key"].is_string(),
                    "{name}: {var} must come from a Secret: {e}"
                );
            }
        }
    }

    // PodDisruptionBudget over the same pods that still lets a node drain.
    let pdb = kind(docs, "PodDisruptionBudget");
    assert!(matches_pods(&pdb["spec"]["selector"]));
    let max_unavailable = pdb["spec"]["maxUnavailable"].as_u64();
    assert!(max_unavailable.is_some_and(|m| m >= 1), "{pdb}");

    // Service selects the pods, on a named port the container has.
    let svc = kind(docs, "Service");
    let selector = serde_json::json!({ "matchLabels": svc["spec"]["selector"] });
    assert!(matches_pods(&selector));
    for p in svc["spec"]["ports"].as_array().unwrap() {
        assert_eq!(p["targetPort"], "http");
    }

    // The autoscaler targets this Deployment; every pod metric it reads has an adapter rule.
    if let Some(hpa) = docs.iter().find(|d| d["kind"] == "HorizontalPodAutoscaler") {
        assert_eq!(
            hpa["spec"]["scaleTargetRef"]["name"],
            dep["metadata"]["name"]
        );
        let rules = kind(docs, "ConfigMap")["data"]["config.yaml"]
            .as_str()
            .expect("adapter rules");
        for m in hpa["spec"]["metrics"].as_array().unwrap() {
            if m["type"] == "Pods" {
                let name = m["pods"]["metric"]["name"].as_str().unwrap();
                assert!(
                    rules.contains(&format!("as: \"{name}\"")),
                    "{name} has no prometheus-adapter rule"
                );
            } else {
                assert_eq!(m["type"], "Resource", "only pod metrics and CPU: {m}");
            }
        }
    }
}

#[test]
fn example_config_manifests_pass_the_schemas_and_the_best_practice_checks() {
    let text = std::fs::read_to_string(example_config()).unwrap();
    let yaml = k8s_yaml("k8s-example", &text, &[]);
    let docs = docs_of(&yaml);
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
    validate_schemas("k8s-example-v", &yaml, &[]);
    best_practices(&docs);
    // The local SQLite file is the local database only: the pods read the Secret's.
    let c = &kind(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert!(!yaml.contains("sqlite:"), "{yaml}");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.windows(2).any(|w| w == ["--db", "$(SHOP_DB_URL)"]));
}

#[test]
fn postgres_and_redis_manifests_pass_the_schemas_and_keep_every_secret_out() {
    let yaml = k8s_yaml("k8s-pg", PG_REDIS, &[]);
    validate_schemas("k8s-pg-v", &yaml, &[]);
    let docs = docs_of(&yaml);
    best_practices(&docs);
    for leaked in [
        "s3cret-pw",
        "r3dis-pw",
        "10.0.0.",
        "postgres://",
        "redis://",
    ] {
        assert!(
            !yaml.contains(leaked),
            "{leaked} written into the manifests"
        );
    }
    let dep = kind(&docs, "Deployment");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let env = c["env"].as_array().unwrap();
    let from_secret = |var: &str| {
        let e = env
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("{var}"));
        assert_eq!(
            e["valueFrom"]["secretKeyRef"]["name"], "shop-state",
            "{var}"
        );
        e["valueFrom"]["secretKeyRef"]["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(from_secret("SHOP_DB_URL"), "db-url");
    assert_eq!(from_secret("SHOP_REDIS_URL"), "redis-url");
    assert_eq!(from_secret("SHOP_REPLICA_URL_1"), "replica-url-1");
    // Redis sessions: no JWT key needed, none asked for.
    assert!(env.iter().all(|e| e["name"] != "SCALEOUT_SHOP_JWT_SECRET"));
    // The connection math of the largest fleet: 12 pods share the database.
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--expected-instances", "12"]),
        "{args:?}"
    );
    let hpa = kind(&docs, "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["metrics"].as_array().unwrap().len(), 4);
}

#[test]
fn keda_option_writes_a_scaled_object_instead_of_the_hpa() {
    let yaml = k8s_yaml(
        "k8s-keda",
        PG_REDIS,
        &[
            "--autoscaler",
            "keda",
            "--prometheus-url",
            "http://prom.mon:9090",
        ],
    );
    let docs = docs_of(&yaml);
    assert!(docs.iter().all(|d| d["kind"] != "HorizontalPodAutoscaler"));
    let so = kind(&docs, "ScaledObject");
    assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
    let triggers = so["spec"]["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 4);
    for t in triggers.iter().filter(|t| t["type"] == "prometheus") {
        assert_eq!(t["metadata"]["serverAddress"], "http://prom.mon:9090");
        assert!(t["metadata"]["query"].as_str().unwrap().contains("shop_"));
    }
    // The core kinds still pass; the ScaledObject is a CRD (no schema in the package).
    validate_schemas("k8s-keda-v", &yaml, &["ScaledObject"]);
}

#[test]
fn the_metrics_the_hpa_reads_are_exported_by_a_real_shop() {
    let yaml = k8s_yaml("k8s-metrics", PG_REDIS, &[]);
    let docs = docs_of(&yaml);
    let rules: Value = {
        let text = kind(&docs, "ConfigMap")["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .to_string();
        let d = fleet::k8s::parse_yaml_documents(&text).unwrap();
        d[0].clone()
    };
    // The series each adapter rule reads, e.g. `shop_in_flight_requests`.
    let series: Vec<String> = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let q = r["seriesQuery"].as_str().unwrap();
            q.split('{').next().unwrap().to_string()
        })
        .collect();
    assert_eq!(series.len(), 3);

    // A real shop instance with its metrics listener, as in the pod (SQLite here).
    let dir = temp_dir("k8s-shop");
    let (listen, metrics) = (free_addr(), free_addr());
    let mut cmd = Command::new(exe());
    cmd.args([
        "shop",
        "--listen",
        &listen.to_string(),
        "--metrics-listen",
        &metrics.to_string(),
        "--db",
        &format!("sqlite:{}", dir.join("shop.db").display()),
        "--seed-products",
        "20",
    ])
    .current_dir(&dir);
    let _shop = ChildGuard::spawn("shop", &mut cmd);
    wait_http_ok(listen, "/readyz", Duration::from_secs(60));
    let (status, _) = http_get(listen, "/catalog").unwrap();
    assert_eq!(status, 200);
    let (status, page) = http_get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    for s in &series {
        assert!(
            page.lines().any(|l| l.starts_with(&format!("{s}{{"))),
            "the shop does not export {s}:\n{page}"
        );
    }
}

#[test]
fn manifests_round_trip_to_the_config() {
    let dir = temp_dir("k8s");
    let path = dir.join("scaleout.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let cfg = fleet::DeploymentConfig::load(&path).expect("config is valid");
    let yaml = k8s_yaml("k8s-rt", CONFIG, &[]);
    let docs = docs_of(&yaml);
    let (dep, svc, hpa) = (
        kind(&docs, "Deployment"),
        kind(&docs, "Service"),
        kind(&docs, "HorizontalPodAutoscaler"),
    );

    // Deployment: replicas, image, probes, graces, surge-of-one rollout, CPU limit.
    assert_eq!(dep["apiVersion"], "apps/v1");
    assert_eq!(dep["metadata"]["name"], cfg.service.name.as_str());
    assert_eq!(dep["spec"]["replicas"], cfg.fleet.instances);
    let ru = &dep["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        (ru["maxSurge"].clone(), ru["maxUnavailable"].clone()),
        (Value::from(1), Value::from(0))
    );
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(
        pod["terminationGracePeriodSeconds"],
        (cfg.fleet.drain_grace_ms + cfg.fleet.stop_grace_ms) / 1000
    );
    let c = &pod["containers"][0];
    assert_eq!(c["image"], cfg.service.image.as_str());
    assert_eq!(c["ports"][0]["containerPort"], cfg.service.container_port);
    assert_eq!(c["ports"][1]["name"], "metrics");
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"],
        cfg.fleet.readiness_path.as_str()
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"],
        cfg.service.liveness_path.as_str()
    );
    assert_eq!(
        c["startupProbe"]["failureThreshold"],
        cfg.fleet.ready_timeout_ms / 1000
    );
    // The envelope the local fleet enforces, as requests and limits (Guaranteed QoS).
    for kind in ["requests", "limits"] {
        assert_eq!(c["resources"][kind]["cpu"], "750m", "{kind}");
        assert_eq!(c["resources"][kind]["memory"], "384Mi", "{kind}");
    }
    assert_eq!(c["command"][0], fleet::k8s::CONTAINER_EXE);
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[..3], ["shop", "--listen", "0.0.0.0:9000"]);
    assert!(
        args.windows(2).any(|w| w == ["--sessions", "jwt"]),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--instance-id", "$(POD_NAME)"]),
        "{args:?}"
    );
    // Prometheus finds the metrics port from the pod annotations.
    let ann = &dep["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/port"], "9090");

    // Service selects the Deployment's pods.
    assert_eq!(
        svc["spec"]["selector"],
        dep["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");

    // HPA: same bounds, targets and behaviour as the local autoscaler.
    let a = &cfg.autoscale;
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        dep["metadata"]["name"]
    );
    assert_eq!(hpa["spec"]["minReplicas"], a.min_instances);
    assert_eq!(hpa["spec"]["maxReplicas"], a.max_instances);
    let metrics = hpa["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), a.targets().len());
    let pods = metrics.iter().find(|m| m["type"] == "Pods").unwrap();
    assert_eq!(pods["pods"]["metric"]["name"], "shop_in_flight_requests");
    assert_eq!(pods["pods"]["target"]["averageValue"], "12");
    let cpu = metrics.iter().find(|m| m["type"] == "Resource").unwrap();
    assert_eq!(cpu["resource"]["target"]["averageUtilization"], 70);
    for (dir_key, rules) in [
        ("scaleUp", &a.tuned.scale_up),
        ("scaleDown", &a.tuned.scale_down),
    ] {
        let b = &hpa["spec"]["behavior"][dir_key];
        assert_eq!(
            b["stabilizationWindowSeconds"], rules.stabilization_window_s,
            "{dir_key}"
        );
        let select = format!("{:?}", rules.select_policy);
        assert_eq!(b["selectPolicy"], select.as_str(), "{dir_key}");
        let ps = b["policies"].as_array().unwrap();
        assert_eq!(ps.len(), rules.policies.len());
        for (p, want) in ps.iter().zip(&rules.policies) {
            assert_eq!(p["value"], want.value);
            assert_eq!(p["periodSeconds"], want.period_s);
            assert_eq!(p["type"], format!("{:?}", want.kind).as_str());
        }
    }
    assert_eq!(hpa["metadata"]["annotations"]["scaleout/policy"], "default");
}

#[test]
fn output_dir_gets_one_file_per_manifest() {
    let dir = temp_dir("k8s-out");
    let out_dir = dir.join("manifests");
    let example = example_config();
    let out = run_k8s(&[
        "-c",
        example.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (file, kind) in [
        ("deployment.yaml", "Deployment"),
        ("service.yaml", "Service"),
        ("pdb.yaml", "PodDisruptionBudget"),
        ("prometheus-adapter-rules.yaml", "ConfigMap"),
        ("hpa.yaml", "HorizontalPodAutoscaler"),
    ] {
        let text = std::fs::read_to_string(out_dir.join(file)).expect(file);
        let docs = fleet::k8s::parse_yaml_documents(&text).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["kind"], kind);
    }
    // The same bounds `scaleout up` uses.
    let hpa = fleet::k8s::parse_yaml_documents(
        &std::fs::read_to_string(out_dir.join("hpa.yaml")).unwrap(),
    )
    .unwrap();
    let d = fleet::DeploymentConfig::load(&example).unwrap();
    assert_eq!(hpa[0]["spec"]["minReplicas"], d.autoscale.min_instances);
    assert_eq!(hpa[0]["spec"]["maxReplicas"], d.autoscale.max_instances);
    // How to create the Secret the pods read is said on stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kubectl create secret generic shop-state"),
        "{err}"
    );
}

/// Runs `scaleout k8s` on `config` and expects exit 2 naming `field` (and `why`), with no
/// partial manifests on stdout.
fn refused(tag: &str, config: Option<&str>, field: &str, why: &str) {
    let dir = temp_dir(tag);
    let out = match config {
        Some(text) => {
            let path = dir.join("bad.toml");
            std::fs::write(&path, text).unwrap();
            run_k8s(&["-c", path.to_str().unwrap()])
        }
        None => run_k8s(&[]),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{tag}: {err}");
    assert!(err.contains(field), "{tag}: {field} not named in: {err}");
    assert!(err.contains(why), "{tag}: {why:?} not in: {err}");
    assert!(out.stdout.is_empty(), "{tag}: no partial manifests");
}

#[test]
fn what_would_not_run_on_a_cluster_is_refused_with_the_reason() {
    refused(
        "k8s-bad-name",
        Some("[service]\nname = \"Not_DNS\"\n"),
        "service.name",
        "lowercase",
    );
    // No file: the shop on SQLite, up to 4 replicas: each would have its own database.
    refused("k8s-sqlite", None, "service.db", "own empty database");
    // Redis sessions and no Redis: the pods would crash-loop.
    refused(
        "k8s-redis",
        Some("[service]\nsessions = \"redis\"\nsecret = \"s\"\n"),
        "service.sessions",
        "service.redis",
    );
    // PostgreSQL without a Secret: the URL would have to be written into the manifest.
    refused(
        "k8s-no-secret",
        Some("[service]\ndb = \"postgres://u:p@db/shop\"\n"),
        "service.secret",
        "never written into a manifest",
    );
    // An argument the shop itself refuses: its own check runs first.
    refused(
        "k8s-shop-check",
        Some("[service]\nsecret = \"s\"\nargs = [\"--pool-size\", \"0\"]\n"),
        "pool_size",
        "would exit at once",
    );
}

#[test]
fn dockerfile_builds_the_image_the_manifests_run() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS build"), "{froms:?}");
    assert!(
        froms[1].contains("distroless") || froms[1].contains("slim"),
        "small runtime base: {froms:?}"
    );
    assert!(text.contains("cargo build --release --locked -p scaleout"));
    assert!(
        text.contains(&format!(
            "COPY --from=build /scaleout {}",
            fleet::k8s::CONTAINER_EXE
        )),
        "the binary where the manifests run it"
    );
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert_eq!(
        user.trim(),
        format!("{0}:{0}", fleet::k8s::CONTAINER_UID),
        "non-root, the uid the securityContext names"
    );
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

//! End to end: `scaleout k8s` writes a Deployment, Service and autoscaling/v2 HPA equal
//! to the local deployment file; the YAML is parsed back and compared field by field with
//! the config as `scaleout up` reads it.

use std::process::Command;

use serde_json::Value;
use testkit::temp_dir;

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_scaleout")
}

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
"#;

fn run_k8s(args: &[&str]) -> std::process::Output {
    Command::new(exe()).arg("k8s").args(args).output().unwrap()
}

#[test]
fn manifests_round_trip_to_the_config() {
    let dir = temp_dir("k8s");
    let path = dir.join("scaleout.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let cfg = fleet::DeploymentConfig::load(&path).expect("config is valid");
    let out = run_k8s(&["-c", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let docs = fleet::k8s::parse_yaml_documents(&yaml).expect("valid YAML");
    assert_eq!(docs.len(), 3, "{yaml}");
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let (dep, svc, hpa) = (
        kind("Deployment"),
        kind("Service"),
        kind("HorizontalPodAutoscaler"),
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
    let out = run_k8s(&["-o", out_dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (file, kind) in [
        ("deployment.yaml", "Deployment"),
        ("service.yaml", "Service"),
        ("hpa.yaml", "HorizontalPodAutoscaler"),
    ] {
        let text = std::fs::read_to_string(out_dir.join(file)).expect(file);
        let docs = fleet::k8s::parse_yaml_documents(&text).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["kind"], kind);
    }
    // Defaults with no file: the same bounds `scaleout up` uses.
    let hpa = fleet::k8s::parse_yaml_documents(
        &std::fs::read_to_string(out_dir.join("hpa.yaml")).unwrap(),
    )
    .unwrap();
    let d = fleet::DeploymentConfig::default();
    assert_eq!(hpa[0]["spec"]["minReplicas"], d.autoscale.min_instances);
    assert_eq!(hpa[0]["spec"]["maxReplicas"], d.autoscale.max_instances);
}

#[test]
fn invalid_config_is_refused_with_the_field_named() {
    let dir = temp_dir("k8s-bad");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[service]\nname = \"Not_DNS\"\n").unwrap();
    let out = run_k8s(&["-c", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("service.name"));
    assert!(out.stdout.is_empty(), "no partial manifests");
}

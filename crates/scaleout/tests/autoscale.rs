//! End to end: `scaleout autoscale simulate` on the shipped traces is repeatable (same
//! seed, same JSON), and bad trace or policy files are refused with the line or field
//! named and a non-zero exit.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scaleout"))
}

fn traces() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../autoscale/traces")
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scaleout-autoscale-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn simulate_json(policy: &str, seed: u64) -> serde_json::Value {
    let out = bin()
        .args(["autoscale", "simulate", "--trace"])
        .arg(traces().join("step.csv"))
        .args([
            "--policy",
            policy,
            "--seed",
            &seed.to_string(),
            "--json",
            "-",
        ])
        .output()
        .expect("run scaleout");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

#[test]
fn simulate_is_repeatable_and_reports_plain_names() {
    let a = simulate_json("default", 3);
    let b = simulate_json("default", 3);
    assert_eq!(a, b);
    for key in [
        "slo_violation_s",
        "instance_seconds",
        "instability_pct",
        "accuracy_under_pct",
        "accuracy_over_pct",
        "timeshare_under_pct",
        "timeshare_over_pct",
        "jitter_per_min",
    ] {
        assert!(
            a.get(key).is_some_and(|v| v.is_number()),
            "missing {key}: {a}"
        );
    }
    let hpa = simulate_json("hpa", 3);
    assert_eq!(hpa["policy"], "hpa");
    assert_ne!(a["instance_seconds"], hpa["instance_seconds"]);
}

#[test]
fn bad_trace_names_the_line() {
    let p = tmp("bad.csv");
    std::fs::write(&p, "rps\n10\n11\n-5\n").unwrap();
    let out = bin()
        .args(["autoscale", "simulate", "--trace"])
        .arg(&p)
        .args(["--policy", "hpa"])
        .output()
        .expect("run scaleout");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4"), "{err}");
}

#[test]
fn bad_policy_file_names_the_field() {
    let p = tmp("policy.toml");
    std::fs::write(
        &p,
        "policy = \"hpa\"\n[hpa.scale_up]\nstabilization_window_s = 99999\n",
    )
    .unwrap();
    let out = bin()
        .args(["autoscale", "simulate", "--trace"])
        .arg(traces().join("sine.csv"))
        .arg("--policy")
        .arg(&p)
        .output()
        .expect("run scaleout");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hpa.scale_up.stabilization_window_s"), "{err}");
}

fn evaluate_json(threads: &str) -> serde_json::Value {
    let out = bin()
        .args([
            "autoscale",
            "evaluate",
            "--families",
            "step",
            "--set",
            "held-out",
            "--threads",
            threads,
            "--json",
            "-",
        ])
        .output()
        .expect("run scaleout");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON evaluation")
}

#[test]
fn evaluate_reports_distributions_independent_of_threads() {
    let one = evaluate_json("1");
    let two = evaluate_json("2");
    assert_eq!(one["traces"], two["traces"]);
    assert_eq!(one["traces"].as_array().unwrap().len(), 16);
    let groups = one["groups"].as_array().unwrap();
    let step = groups
        .iter()
        .find(|g| g["set"] == "held-out" && g["family"] == "step")
        .expect("a held-out step group");
    let names: Vec<&str> = step["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap())
        .collect();
    for want in [
        "default",
        "hpa",
        "hpa-stab60",
        "hpa-stab0",
        "kpa",
        "step",
        "predictive",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    // The HPA clone is the baseline: its ratio to itself is 1.
    let hpa = step["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "hpa")
        .unwrap();
    assert_eq!(hpa["slo_ratio_to_hpa"]["median"], 1.0);
}

#[test]
fn evaluate_refuses_bad_flags_naming_them() {
    for (args, needle) in [
        (vec!["--families", "tsunami"], "--families"),
        (vec!["--set", "everything"], "--set"),
        (vec!["--threads", "0"], "--threads"),
        (vec!["--target-in-flight=-1"], "--target-in-flight"),
    ] {
        let out = bin()
            .args(["autoscale", "evaluate"])
            .args(&args)
            .output()
            .expect("run scaleout");
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

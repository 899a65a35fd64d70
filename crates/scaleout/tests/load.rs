//! End-to-end tests of `scaleout load` as a process: exit codes (0 pass, 1 threshold
//! failed, 2 bad input), the JSON report's fields, the chart, the closed-loop label, and
//! clear messages for bad URLs, unreachable or remote targets, bad thresholds and bad
//! scenario files. Targets are `scaleout backend` processes on loopback.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use testkit::{ChildGuard, free_addr, temp_dir, wait_tcp};

const BIN: &str = env!("CARGO_BIN_EXE_scaleout");

fn backend() -> (ChildGuard, SocketAddr) {
    let addr = free_addr();
    let g = ChildGuard::spawn(
        "backend",
        Command::new(BIN).args(["backend", "--listen", &addr.to_string()]),
    );
    wait_tcp(addr, Duration::from_secs(20));
    (g, addr)
}

fn load(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("load")
        .args(args)
        .args(["--progress", "off"])
        .output()
        .expect("run scaleout load")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

#[test]
fn open_loop_run_writes_a_json_report_with_every_field_and_a_chart() {
    let (_b, addr) = backend();
    let dir = temp_dir("load-json");
    let json = dir.join("r.json");
    let svg = dir.join("r.svg");
    let url = format!("http://{addr}/");
    let o = load(&[
        &url,
        "--rate",
        "200",
        "--duration",
        "2s",
        "--json",
        json.to_str().unwrap(),
        "--chart",
        svg.to_str().unwrap(),
        "--threshold",
        "errors<1%",
        "--threshold",
        "p999<10s",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("open-loop") && out.contains("intended"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for f in [
        "achieved_rps",
        "target_rps",
        "scheduled",
        "sent",
        "completed",
        "late_sends",
        "dropped",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "errors",
        "per_kind",
        "slices",
        "thresholds",
        "passed",
        "latency_measured",
        "mode",
    ] {
        assert!(v.get(f).is_some(), "missing {f} in {v}");
    }
    for f in [
        "connect",
        "timeout",
        "status_4xx",
        "status_5xx",
        "other",
        "total",
    ] {
        assert!(v["errors"].get(f).is_some(), "missing errors.{f}");
    }
    assert_eq!(v["mode"], "open-loop");
    assert_eq!(v["target_rps"], 200.0);
    assert_eq!(v["scheduled"], 400);
    assert_eq!(v["completed"], 400);
    assert_eq!(v["passed"], true);
    assert!(v["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(v["p50_ms"].as_f64().unwrap() <= v["p99_ms"].as_f64().unwrap());
    assert!(v["slices"].as_array().unwrap().len() >= 2);
    assert_eq!(
        v["thresholds"].as_array().unwrap().len(),
        3,
        "built-in rate check + 2"
    );
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.contains("<svg") && chart.contains("latency"));
}

#[test]
fn closed_loop_is_labelled_and_a_failed_threshold_exits_1_naming_it() {
    let (_b, addr) = backend();
    let dir = temp_dir("load-closed");
    let json = dir.join("c.json");
    let url = format!("http://{addr}/");
    let o = load(&[
        &url,
        "--closed-loop",
        "--connections",
        "4",
        "--duration",
        "1s",
        "--json",
        json.to_str().unwrap(),
        "--threshold",
        "errors>=1",
        "--threshold",
        "errors<1%",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("thresholds failed: errors>=1"), "{err}");
    assert!(
        !err.contains("errors<1%,"),
        "only the failing one is named: {err}"
    );
    assert!(
        out.contains("closed-loop") && out.contains("coordinated omission"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["mode"], "closed-loop");
    assert!(
        v["latency_measured"]
            .as_str()
            .unwrap()
            .contains("closed loop")
    );
    assert!(v["completed"].as_u64().unwrap() > 0);
    assert_eq!(v["passed"], false);
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let dead = free_addr();
    let dir = temp_dir("load-bad");
    let bad_toml = dir.join("bad.toml");
    std::fs::write(
        &bad_toml,
        "[profile]\nkind = \"constant\"\nrate = 10\nduration = \"1s\"\nburst = 5\n",
    )
    .unwrap();
    let bad_kind = dir.join("kind.toml");
    std::fs::write(&bad_kind, "[profile]\nkind = \"tsunami\"\n").unwrap();
    let missing = dir.join("nope.toml");
    let live = format!("http://{dead}/");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["not-a-url".into(), "--rate".into(), "10".into()],
            "bad URL",
        ),
        (
            vec!["https://127.0.0.1:1/".into(), "--rate".into(), "10".into()],
            "https is not supported",
        ),
        (
            vec![
                live.clone(),
                "--rate".into(),
                "10".into(),
                "--duration".into(),
                "1s".into(),
            ],
            "unreachable",
        ),
        (
            vec!["http://192.0.2.1:80/".into(), "--rate".into(), "10".into()],
            "not on loopback",
        ),
        (
            vec![
                live.clone(),
                "--rate".into(),
                "10".into(),
                "--threshold".into(),
                "p99<<3".into(),
            ],
            "bad threshold",
        ),
        (
            vec![
                live.clone(),
                "--rate".into(),
                "10".into(),
                "--threshold".into(),
                "p98<1s".into(),
            ],
            "unknown metric",
        ),
        (
            vec![
                live.clone(),
                "--scenario".into(),
                bad_toml.display().to_string(),
            ],
            "burst",
        ),
        (
            vec![
                live.clone(),
                "--scenario".into(),
                bad_kind.display().to_string(),
            ],
            "tsunami",
        ),
        (
            vec![
                live.clone(),
                "--scenario".into(),
                missing.display().to_string(),
            ],
            "nope.toml",
        ),
        (
            vec![
                live.clone(),
                "--rate".into(),
                "10".into(),
                "--duration".into(),
                "soon".into(),
            ],
            "--duration",
        ),
        (vec![live.clone()], "--rate"),
        (
            vec![
                live.clone(),
                "--rate".into(),
                "10".into(),
                "--threads".into(),
                "0".into(),
            ],
            "threads",
        ),
    ];
    for (args, needle) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = load(&refs);
        let (out, err) = text(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{args:?}\nstdout:{out}\nstderr:{err}"
        );
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // The scenario error names the line of the unknown field.
    let o = load(&[&live, "--scenario", bad_toml.to_str().unwrap()]);
    assert!(text(&o).1.contains("line 5"), "{}", text(&o).1);
}

#[test]
fn a_scenario_file_drives_a_profile_and_mix() {
    let (_b, addr) = backend();
    let dir = temp_dir("load-scn");
    let scn = dir.join("s.toml");
    std::fs::write(
        &scn,
        r#"
thresholds = ["errors<1%"]
[profile]
kind = "spike"
base = 50
peak = 300
before = "1s"
hold = "1s"
after = "1s"

[[request]]
name = "root"
weight = 3
path = "/"

[[request]]
name = "item"
path = "/items/{product_id}"
"#,
    )
    .unwrap();
    let json = dir.join("s.json");
    let url = format!("http://{addr}/");
    let o = load(&[
        &url,
        "--scenario",
        scn.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(
        o.status.code().is_some_and(|c| c <= 1),
        "stdout:{out}\nstderr:{err}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["profile"], "spike");
    let scheduled = v["scheduled"].as_u64().unwrap();
    assert!(
        scheduled.abs_diff(400) <= 2,
        "50 + 300 + 50 = 400, got {scheduled}"
    );
    let kinds = v["per_kind"].as_array().unwrap();
    let names: Vec<&str> = kinds.iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["root", "item"]);
    let root = kinds[0]["sent"].as_u64().unwrap();
    let item = kinds[1]["sent"].as_u64().unwrap();
    assert!(root > item, "weights 3:1 ({root} vs {item})");
    let slices = v["slices"].as_array().unwrap();
    let peak = slices
        .iter()
        .map(|s| s["scheduled"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(peak >= 250, "the spike slice schedules about 300: {peak}");
}

#[test]
fn find_max_reports_its_steps_and_stays_bounded() {
    let (_b, addr) = backend();
    let dir = temp_dir("load-find");
    let json = dir.join("f.json");
    let url = format!("http://{addr}/");
    let began = std::time::Instant::now();
    let o = load(&[
        &url,
        "--find-max",
        "--max-p99",
        "2s",
        "--max-errors",
        "1%",
        "--start-rate",
        "50",
        "--step-factor",
        "2",
        "--step-duration",
        "1s",
        "--max-steps",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("max sustainable rate"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "bounded by --max-steps: {v}");
    let rates: Vec<f64> = steps
        .iter()
        .map(|s| s["target_rps"].as_f64().unwrap())
        .collect();
    assert_eq!(rates, [50.0, 100.0, 200.0]);
    assert_eq!(v["max_sustainable_rps"], 200.0);
    assert!(began.elapsed() < Duration::from_secs(60));
}

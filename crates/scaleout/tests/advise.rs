//! `scaleout advise` end to end: a saved sweep in, the fit and the decision out.

use std::process::Command;

fn scaleout() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scaleout"))
}

/// The published SPEC SDM91 sweep: the CLI reproduces the published coefficients and
/// writes them into its JSON.
#[test]
fn advise_report_fits_the_published_sweep_and_prices_options() {
    let dir = testkit::temp_dir("advise");
    let sweep = dir.join("sweep.json");
    std::fs::write(
        &sweep,
        r#"{"kind":"instances","points":[
            {"n":1,"throughput_rps":64.9},{"n":18,"throughput_rps":995.9},
            {"n":36,"throughput_rps":1652.4},{"n":72,"throughput_rps":1853.2},
            {"n":108,"throughput_rps":1828.9},{"n":144,"throughput_rps":1775.0},
            {"n":216,"throughput_rps":1702.2}]}"#,
    )
    .unwrap();
    let json = dir.join("out.json");
    let out = scaleout()
        .args(["advise", "--report"])
        .arg(&sweep)
        .args(["--growth", "2", "--pool-size", "10", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sigma 0.0277"), "{text}");
    assert!(text.contains("decision:"), "{text}");
    assert!(text.contains("connections:"), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let sigma = v["analysis"]["usl"]["Ok"]["sigma"].as_f64().unwrap();
    assert!((sigma - 0.0277285).abs() < 1e-5, "{sigma}");
    assert!(v["decision"]["options"].as_array().unwrap().len() >= 2);
}

#[test]
fn advise_refuses_bad_input_with_exit_code_2() {
    let dir = testkit::temp_dir("advise-bad");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"points":[{"n":1,"throughput":3}]}"#).unwrap();
    let out = scaleout()
        .args(["advise", "--report"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("throughput"));
    let out = scaleout().args(["advise"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `--target` measures a real sweep with the load generator against a real backend.
#[test]
fn advise_target_measures_a_sweep() {
    let addr = testkit::free_addr();
    let _backend = testkit::ChildGuard::spawn(
        "backend",
        scaleout().args(["backend", "--listen", &addr.to_string()]),
    );
    testkit::wait_tcp(addr, std::time::Duration::from_secs(10));
    let out = scaleout()
        .args([
            "advise",
            "--target",
            &format!("http://{addr}/"),
            "--levels",
            "1,2,4",
            "--seconds-per-level",
            "1",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("USL fit over 3 points"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("concurrency    4"));
}

/// `--audit PATH` feeds the audit's verdict into the decision: a codebase with an
/// in-memory session store may not simply scale out.
#[test]
fn advise_takes_the_audit_verdict() {
    let dir = testkit::temp_dir("advise-audit");
    std::fs::write(
        dir.join("app.js"),
        "const session = require('express-session');\nconst app = require('express')();\napp.use(session({ secret: 'x' }));\n",
    )
    .unwrap();
    let sweep = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../advisor/examples/specsdm91-sweep.json"
    );
    let out = scaleout()
        .args(["advise", "--report", sweep, "--audit"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(": stateful (sessions"), "{text}");
    let clean = testkit::temp_dir("advise-audit-clean");
    std::fs::write(clean.join("main.py"), "def add(a, b):\n    return a + b\n").unwrap();
    let out = scaleout()
        .args(["advise", "--report", sweep, "--audit"])
        .arg(&clean)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(": stateless\n"));
}

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

/// Runs `scaleout advise` with `args` after `--report FILE`; returns (status, stdout, stderr).
fn advise_file(name: &str, content: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = testkit::temp_dir("advise-edges");
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    let out = scaleout()
        .args(["advise", "--report"])
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn no_nan_or_inf(text: &str) {
    assert!(!advisor::finite::text_has_non_finite(text), "{text}");
}

/// Issue 11's act 3: 1, 2, 3, 4, 6, 8 instances on a 2-core machine gave
/// 13447 → 6743 req/s. The advice says scaling out adds nothing, flags the fit at its
/// bound in text and JSON, takes today's load at today's 1 instance, and prints no NaN.
#[test]
fn advise_retrograde_sweep_says_scaling_out_adds_nothing() {
    let csv = "instances,throughput\n1,13447\n2,10180\n3,9905\n4,9164\n6,7460\n8,6743\n";
    let dir = testkit::temp_dir("advise-retro");
    let json = dir.join("out.json");
    let (code, text, err) = advise_file(
        "act3.csv",
        csv,
        &["--stateless", "true", "--json", json.to_str().unwrap()],
    );
    assert_eq!(code, Some(0), "{text}\n{err}");
    no_nan_or_inf(&text);
    assert!(
        text.contains("scaling: scaling out this way does not add capacity: the measurement cannot tell which resource is the bottleneck"),
        "{text}"
    );
    assert!(
        text.contains(
            "throughput falls from 13447 req/s at 1 instance to 6743 req/s at 8 instances (-50%)"
        ),
        "{text}"
    );
    assert!(text.contains("[at bound: sigma = 1"), "{text}");
    assert!(!text.contains("peaks at 0"), "{text}");
    assert!(
        text.contains(
            "today: 13447 req/s, measured by the sweep at 1 instance; no --current-rps given"
        ),
        "{text}"
    );
    assert!(!text.contains("decision: ScaleOut"), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let fit = &v["analysis"]["usl"]["Ok"];
    assert_eq!(fit["at_bound"][0]["parameter"], "sigma", "{fit}");
    assert_eq!(fit["at_bound"][0]["side"], "upper", "{fit}");
    assert_eq!(fit["peak"]["case"], "no_rise", "{fit}");
    assert_eq!(fit["n_star"].as_f64(), Some(1.0), "{fit}");
    assert!(fit["x_max"].as_f64().unwrap() > 0.0, "{fit}");
    assert_eq!(v["analysis"]["scaling"]["shape"], "falling");
    assert_eq!(v["analysis"]["scaling"]["adds_capacity"], false);
    assert_eq!(
        v["plan"]["current_load"]["Ok"]["source"]["from"],
        "measured"
    );
    assert_eq!(
        v["plan"]["current_load"]["Ok"]["rps"].as_f64(),
        Some(13447.0)
    );
    let out = v["decision"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "scale out")
        .unwrap();
    assert_eq!(out["feasible"], false);
    assert!(
        out["detail"]
            .as_str()
            .unwrap()
            .starts_with("scaling out this way does not add capacity"),
        "{out}"
    );
}

/// `--current-rps` defaults to the sweep at today's instance count, and says where it
/// came from: measured, interpolated, predicted, or given.
#[test]
fn advise_current_rps_provenance() {
    let sweep = r#"{"kind":"instances","points":[
        {"n":1,"throughput_rps":1000},{"n":2,"throughput_rps":1900},{"n":4,"throughput_rps":3400},
        {"n":6,"throughput_rps":4500},{"n":8,"throughput_rps":5200},{"n":12,"throughput_rps":5600}]}"#;
    let run = |args: &[&str]| {
        let (code, text, err) = advise_file("sweep.json", sweep, args);
        assert_eq!(code, Some(0), "{text}\n{err}");
        no_nan_or_inf(&text);
        text
    };
    let t = run(&["--current-instances", "4"]);
    assert!(
        t.contains(
            "today: 3400 req/s, measured by the sweep at 4 instances; no --current-rps given"
        ),
        "{t}"
    );
    assert!(t.contains("for 3400 → 10200 req/s"), "{t}");
    assert!(t.contains("today's capacity 3400)"), "{t}");
    let t = run(&["--instances", "3"]);
    assert!(t.contains("today: 2650 req/s, interpolated between the sweep's 2 instances (1900 req/s) and 4 instances (3400 req/s)"), "{t}");
    let t = run(&["--instances", "16"]);
    assert!(t.contains("predicted by the USL fit at 16 instances (outside the measured range 1..12: low confidence)"), "{t}");
    let t = run(&["--current-rps", "2500", "--instances", "4"]);
    assert!(
        t.contains("today: 2500 req/s, given (--current-rps)"),
        "{t}"
    );
    assert!(
        t.contains("today's capacity: 3400 req/s, measured by the sweep at 4 instances"),
        "{t}"
    );
    let t = run(&["--current-rps", "9000", "--instances", "2"]);
    assert!(
        t.contains("note: today's load 9000 req/s is above the 1900 req/s capacity"),
        "{t}"
    );
    // Never the largest instance count's figure.
    assert!(!run(&[]).contains("today: 5600"));
}

/// CSV with each accepted header set, end to end; the R usl package's `write.csv` output
/// (quoted names, a row-name column) included.
#[test]
fn advise_reads_csv_with_each_accepted_header_set() {
    for (header, rows, unit) in [
        (
            "n,throughput,p99_ms",
            ["1,100,2", "2,190,3", "4,350,5", "8,600,20"],
            "concurrency",
        ),
        (
            "\"\",\"load\",\"throughput\"",
            ["\"1\",1,100", "\"2\",2,190", "\"3\",4,350", "\"4\",8,600"],
            "concurrency",
        ),
        (
            "concurrency,throughput",
            ["1,100", "2,190", "4,350", "8,600"],
            "concurrency",
        ),
        (
            "processors,tput",
            ["1,100", "2,190", "4,350", "8,600"],
            "workers",
        ),
        ("N;X", ["1;100", "2;190", "4;350", "8;600"], "concurrency"),
        (
            "instances,throughput_rps,p99_ms,errors_pct",
            ["1,100,2,0", "2,190,3,0", "4,350,5,0.1", "8,600,20,1"],
            "instances",
        ),
    ] {
        let csv = format!("{header}\n{}\n", rows.join("\n"));
        let (code, text, err) = advise_file("sweep.csv", &csv, &[]);
        assert_eq!(code, Some(0), "{header}: {text}\n{err}");
        assert!(
            text.contains("read 4 CSV rows: level column"),
            "{header}: {text}"
        );
        assert!(
            text.contains(&format!("USL fit over 4 points ({unit})")),
            "{header}: {text}"
        );
        no_nan_or_inf(&text);
    }
    // --kind overrides the column name's kind.
    let (_, text, _) = advise_file(
        "k.csv",
        "n,throughput\n1,100\n2,190\n4,350\n",
        &["--kind", "instances"],
    );
    assert!(text.contains("USL fit over 3 points (instances)"), "{text}");
    // Unknown columns are named, not silently dropped.
    let (_, text, _) = advise_file(
        "u.csv",
        "n,throughput,p99ms_typo\n1,100,1\n2,190,1\n4,350,1\n",
        &[],
    );
    assert!(text.contains("ignored columns: p99ms_typo"), "{text}");
}

/// Bad CSV rows are refused with exit 2, the line and the column named.
#[test]
fn advise_refuses_bad_csv_rows_naming_line_and_column() {
    for (csv, want) in [
        (
            "n,throughput\n1,100\n2,fast\n",
            "line 3, column 2 (throughput): `fast` is not a number",
        ),
        (
            "n,throughput\n1,100\n2,-5\n",
            "line 3, column 2 (throughput): must be >= 0",
        ),
        (
            "load,throughput\n0,100\n",
            "line 2, column 1 (load): must be > 0",
        ),
        (
            "n,throughput\n1,100\n2\n",
            "line 3: 1 field(s), but the header has 2",
        ),
        ("1,100\n2,200\n", "line 1: the first line must be a header"),
        ("n,latency\n1,5\n", "needs a load-level column"),
    ] {
        let (code, text, err) = advise_file("bad.csv", csv, &[]);
        assert_eq!(code, Some(2), "{csv}: {text}");
        assert!(err.contains(want), "{csv}: {err}");
        assert!(
            text.is_empty(),
            "{csv}: printed advice for a bad file: {text}"
        );
    }
    let (code, _, err) = advise_file("s.csv", "n,throughput\n1,1\n2,2\n3,3\n", &["--growth", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--growth must be > 0"), "{err}");
}

/// Flat, single-point and two-point sweeps: words, not NaN.
#[test]
fn advise_flat_and_short_sweeps() {
    let (code, text, err) = advise_file(
        "flat.csv",
        "instances,throughput\n1,1000\n2,1010\n3,995\n4,1003\n6,998\n8,1001\n",
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    no_nan_or_inf(&text);
    assert!(
        text.contains("scaling out this way does not add capacity"),
        "{text}"
    );
    assert!(
        text.contains("throughput stays within 5% of 1000 req/s"),
        "{text}"
    );
    let (code, text, err) = advise_file("one.csv", "instances,throughput\n1,1000\n", &[]);
    assert_eq!(code, Some(0), "{err}");
    no_nan_or_inf(&text);
    assert!(text.contains("one level measured"), "{text}");
    assert!(text.contains("USL fit: not possible"), "{text}");
    let (code, text, err) = advise_file("two.csv", "instances,throughput\n1,1000\n2,700\n", &[]);
    assert_eq!(code, Some(0), "{err}");
    no_nan_or_inf(&text);
    assert!(text.contains("does not add capacity"), "{text}");
    // No fit, but the decision follows the measured fall: scaling out is not offered.
    assert!(!text.contains("decision: ScaleOut"), "{text}");
    assert!(
        text.contains("option scale out") && text.contains("[not enough]"),
        "{text}"
    );
    let (code, text, err) = advise_file("zero.csv", "instances,throughput\n1,0\n2,0\n3,0\n", &[]);
    assert_eq!(code, Some(0), "{err}");
    no_nan_or_inf(&text);
    assert!(text.contains("decision: none"), "{text}");
}

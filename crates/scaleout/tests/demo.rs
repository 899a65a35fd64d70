//! `scaleout demo --quick` end to end: every act's figures land in report.json, the
//! stateless proof and the failure act show what they must, and the charts are written.

use std::process::Command;

#[test]
fn quick_demo_reports_every_act() {
    let dir = testkit::temp_dir("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_scaleout"))
        .args(["demo", "--quick", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    for act in ["act1", "act2", "act3", "act4", "act5", "act6", "act7"] {
        assert!(!r[act].is_null(), "{act} missing from report.json");
    }
    // Act 1: a sweep with throughput at every level and an analysis.
    let pts = r["act1"]["points"].as_array().unwrap();
    assert!(pts.len() >= 5);
    assert!(
        pts.iter()
            .all(|p| p["throughput_rps"].as_f64().unwrap() > 0.0)
    );
    // Every act records the envelope, the host's cores, the generator's and the
    // balancer's CPU, and what limited it.
    let cores = r["cores"].as_u64().unwrap();
    assert!(cores >= 1);
    let unit = r["envelope"]["cpu"]
        .as_f64()
        .expect("envelopes are on by default");
    assert_eq!(r["act1"]["envelope"]["cpu"].as_f64(), Some(unit));
    let runs = |act: &str| r[act]["runs"].as_array().unwrap().clone();
    for run in runs("act2").iter().chain(runs("act3").iter()) {
        assert!(run["envelope"]["cpu"].as_f64().unwrap() > 0.0, "{run}");
        assert_eq!(run["cpu"]["host_cores"].as_u64(), Some(cores), "{run}");
        assert!(run["cpu"]["generator"].as_f64().unwrap() > 0.0, "{run}");
        assert!(!run["limit_text"].as_str().unwrap().is_empty(), "{run}");
    }
    for run in runs("act3") {
        assert!(run["cpu"]["balancer"].as_f64().unwrap() > 0.0, "{run}");
    }
    for act in ["act5", "act6", "act7"] {
        let text = r[act]["limit_text"]
            .as_str()
            .or_else(|| r[act]["rows"][0]["limit_text"].as_str())
            .unwrap_or_default();
        assert!(text.contains("cores"), "{act} does not say what limited it");
    }
    // Act 2: three envelope sizes, each twice the previous.
    let up = runs("act2");
    let sizes: Vec<f64> = up
        .iter()
        .map(|x| x["envelope"]["cpu"].as_f64().unwrap())
        .collect();
    assert_eq!(sizes, vec![unit, 2.0 * unit, 4.0 * unit]);
    // Act 3: scaling out from one instance to two adds throughput.
    let out = runs("act3");
    assert!(out.len() >= 3);
    assert_eq!(
        (out[0]["n"].as_u64(), out[1]["n"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(
        out[1]["throughput_rps"].as_f64().unwrap() > out[0]["throughput_rps"].as_f64().unwrap(),
        "act 3 did not rise from 1 to 2 instances: {out:?}"
    );
    // Act 4: in-memory sessions lose users behind round robin; JWT loses none.
    let rows = r["act4"]["rows"].as_array().unwrap();
    let memory = rows
        .iter()
        .find(|x| x["sessions"].as_str().unwrap().starts_with("memory"))
        .unwrap();
    let jwt = rows
        .iter()
        .find(|x| x["sessions"].as_str().unwrap().starts_with("jwt"))
        .unwrap();
    assert!(memory["lost_login"].as_u64().unwrap() > 0, "{memory}");
    assert_eq!(jwt["lost_login"].as_u64(), Some(0), "{jwt}");
    assert_eq!(jwt["lost_cart"].as_u64(), Some(0), "{jwt}");
    // Act 5: the cache serves hits and saves database queries.
    let c = &r["act5"]["rows"];
    assert!(c[1]["hit_rate"].as_f64().unwrap() > 0.5, "{c}");
    assert!(
        c[1]["db_queries_per_request"].as_f64().unwrap()
            < c[0]["db_queries_per_request"].as_f64().unwrap()
    );
    // Act 6: the killed instance is ejected within a few health-check periods and
    // re-admitted after its restart (deadlines derived from the configured interval).
    let a6 = &r["act6"];
    let interval = a6["health_interval_ms"].as_f64().unwrap();
    assert!(
        a6["ejected_after_ms"].as_f64().unwrap() < 5.0 * interval,
        "{a6}"
    );
    assert!(a6["readmitted_after_ms"].as_f64().is_some(), "{a6}");
    // Act 7: the step is sized from act 1's capacity and the largest fleet act 3 found
    // room for: it overloads one instance (at least 1.5x its capacity) and the
    // autoscaler may grow to that fleet; p99 goes over the SLO after the step, and the
    // autoscaler says why.
    let a7 = &r["act7"];
    let capacity = r["act1"]["capacity_rps"].as_f64().unwrap();
    assert_eq!(a7["capacity_rps"].as_f64(), Some(capacity), "{a7}");
    assert!(
        a7["spike_rps"].as_f64().unwrap() >= (1.5 * capacity).round(),
        "{a7}"
    );
    assert!(a7["max_instances"].as_u64().unwrap() >= 2, "{a7}");
    assert!(a7["ceiling_rps"].as_f64().unwrap() > 0.0, "{a7}");
    let step = a7["step_at_s"].as_f64().unwrap();
    let crossed = a7["p99_crossed_slo_at_s"].as_f64();
    assert!(
        crossed.is_some_and(|t| t >= step),
        "p99 never crossed the SLO: {a7}"
    );
    // Recovery under the SLO is not asserted: it was not measured in the debug test
    // environment after the spike was resized to the host (issue 11, act 7; see
    // BENCHMARKS.md), and on a 2-core host running the debug build alongside the rest of
    // the suite the host's spare CPU decides it. What is reported must be consistent.
    if let Some(t) = a7["p99_recovered_at_s"].as_f64() {
        assert!(t > crossed.unwrap(), "recovered before crossing: {a7}");
        assert!(a7["recovery_s"].as_f64().unwrap() > 0.0, "{a7}");
    }
    let timeline = a7["timeline"].as_array().unwrap();
    let counts: Vec<f64> = timeline
        .iter()
        .filter_map(|row| row["instances"].as_f64())
        .collect();
    assert!(
        counts.iter().all(|&c| c >= 1.0),
        "instances plotted as 0: {a7}"
    );
    assert!(
        counts.iter().fold(0.0, |m: f64, &c| m.max(c)) > 1.0,
        "the autoscaler never added an instance: {a7}"
    );
    assert!(!a7["decisions"].as_array().unwrap().is_empty(), "{a7}");
    // The advice reads act 3's sweep through the advisor's planner and says where
    // today's load came from.
    let adv = &r["advice"];
    assert!(
        adv["plan"]["current_load"]["Ok"]["text"].as_str().is_some(),
        "{adv}"
    );
    assert!(!r["advice"].is_null());
    for chart in [
        "act1-knee.svg",
        "act3-scale-out.svg",
        "act6-failure.svg",
        "act7-spike.svg",
    ] {
        let svg = std::fs::read_to_string(dir.join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("polyline"),
            "{chart}"
        );
    }
    assert!(
        std::fs::read_to_string(dir.join("report.md"))
            .unwrap()
            .contains("## 6. SIGKILL")
    );
}

/// Act 8 against the real primary and its streaming replicas (started by scripts/services):
/// reads move to the replicas and no user misses their own write.
#[test]
fn demo_replica_act_against_real_postgres() {
    let primary = std::env::var("SCALEOUT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let replica = std::env::var("SCALEOUT_TEST_PG_REPLICA")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/postgres".into());
    let db = format!("scaleout_demo_test_{}", std::process::id());
    // The same server URLs with the test's own database in place of theirs.
    let with_db = |url: &str| format!("{}/{db}", url.rsplit_once('/').unwrap().0);
    // psql takes the URL itself; -w: fail rather than prompt when trust auth is missing.
    let psql = |url: &str, sql: &str| {
        Command::new("psql")
            .args(["-w", "-q", "-t", "-c", sql, url])
            // The replica poll fails until the database arrives: expected, not news.
            .stderr(std::process::Stdio::null())
            .status()
            .expect(
                "psql must be installed: run scripts/test, which starts PostgreSQL and its replica",
            )
            .success()
    };
    assert!(
        psql(&primary, &format!("CREATE DATABASE {db}")),
        "could not create {db} on {primary}: is PostgreSQL running? (scripts/services up)"
    );
    // The new database reaches the replica through WAL; wait (bounded) until it accepts
    // connections there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !psql(&with_db(&replica), "select 1") {
        assert!(
            std::time::Instant::now() < deadline,
            "{db} never appeared on the replica {replica}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let dir = testkit::temp_dir("demo-pg");
    let out = Command::new(env!("CARGO_BIN_EXE_scaleout"))
        .args([
            "demo",
            "--quick",
            "--acts",
            "8",
            "--db",
            &with_db(&primary),
            "--replica",
            &with_db(&replica),
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    psql(
        &primary,
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let a8 = &r["act8"];
    assert_eq!(
        a8["rows"][0]["replica_query_share"].as_f64(),
        Some(0.0),
        "{a8}"
    );
    assert!(
        a8["rows"][1]["replica_query_share"].as_f64().unwrap() > 0.5,
        "{a8}"
    );
    assert_eq!(a8["ryw_stale"].as_u64(), Some(0), "{a8}");
}

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
    // Act 3: one run per instance count, each with throughput.
    assert!(r["act3"]["runs"].as_array().unwrap().len() >= 3);
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
    // Act 7: the autoscaler reaches the capacity the spike needs within the run, and says why.
    let a7 = &r["act7"];
    assert!(a7["time_to_capacity_s"].as_f64().is_some(), "{a7}");
    let max_ready = a7["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[1].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        max_ready >= a7["needed_instances"].as_f64().unwrap(),
        "{a7}"
    );
    assert!(!a7["decisions"].as_array().unwrap().is_empty(), "{a7}");
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

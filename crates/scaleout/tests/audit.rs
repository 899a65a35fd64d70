//! End-to-end: `scaleout audit` as a process: exit codes (0 clean, 1 findings at or above
//! --min-severity, 2 on error), the verdict line, and parseable JSON and SARIF.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_scaleout")
}

fn fixtures(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../audit/fixtures")
        .join(rel)
}

fn audit(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("audit")
        .args(args)
        .output()
        .expect("run scaleout audit")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn findings_exit_1_with_a_stateful_verdict_and_grouped_text() {
    let dir = fixtures("JS-SESSION-MEMORY/pos");
    let o = audit(&[dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("server.js\n"), "{text}");
    assert!(text.contains("4:9 JS-SESSION-MEMORY [high, "), "{text}");
    assert!(text.contains("fix: "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("verdict: stateful (sessions: 3)")),
        "{text}"
    );
}

#[test]
fn clean_code_exits_0_with_a_stateless_verdict() {
    let dir = fixtures("JS-SESSION-MEMORY/neg");
    let o = audit(&[dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).lines().any(|l| l == "verdict: stateless"));
}

#[test]
fn min_severity_sets_what_fails() {
    // Only medium findings here (module-level map written in functions).
    let dir = fixtures("GO-TICKER-JOB/pos");
    let o = audit(&[dir.to_str().unwrap(), "--min-severity", "medium"]);
    assert_eq!(o.status.code(), Some(1));
    let o = audit(&[dir.to_str().unwrap(), "--min-severity", "high"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn json_and_sarif_parse() {
    let dir = fixtures("PY-SESSION-LOCAL/pos");
    let o = audit(&[dir.to_str().unwrap(), "--format", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["verdict"], "stateful");
    assert_eq!(v["counts"]["sessions"], 2);
    let o = audit(&[dir.to_str().unwrap(), "--format", "sarif"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sarif");
    assert_eq!(v["version"], "2.1.0");
    let results = v["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r["ruleId"] == "PY-SESSION-LOCAL"));
}

#[test]
fn errors_exit_2() {
    let o = audit(&["/nonexistent/scaleout-audit-path"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nonexistent"));
    let o = audit(&[".", "--format", "xml"]);
    assert_eq!(o.status.code(), Some(2), "clap rejects an unknown format");
}

/// Dog-food: the reference shop's `--sessions memory` store (a `Mutex<HashMap>` inside an
/// enum variant the app state holds, in a module that does not import axum) is found and
/// suppressed inline with its reason, and the summary counts the files it scanned.
#[test]
fn the_shops_memory_session_store_is_found_and_suppressed_with_its_reason() {
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shop");
    let o = audit(&[shop.to_str().unwrap(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let suppressed = v["suppressed"].as_array().unwrap();
    let s = suppressed
        .iter()
        .find(|s| s["rule_id"] == "RS-SESSION-MEMORY")
        .unwrap_or_else(|| panic!("no suppressed session store: {suppressed:?}"));
    assert_eq!(s["path"], "src/sessions.rs");
    assert!(
        s["reason"].as_str().unwrap().contains("anti-pattern"),
        "{s:?}"
    );
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["rule_id"] != "RS-SESSION-MEMORY"),
        "the session store is reported once, suppressed"
    );
    let files = v["files_scanned"].as_u64().unwrap();
    assert!(files >= 10, "{files} files scanned");
    let o = audit(&[shop.to_str().unwrap()]);
    let text = stdout(&o);
    let summary = text
        .lines()
        .find(|l| l.contains("files scanned"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        summary.contains(&format!("of {files} files scanned")) && summary.contains("1 suppressed"),
        "{summary}"
    );
}

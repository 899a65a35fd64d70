//! Library API behaviour: verdict and counts, inline suppressions, ignored folders and
//! .gitignore, test-file skipping, severity filtering, JSON shape.

use std::path::{Path, PathBuf};

use audit::{Confidence, Options, Severity, audit_path, render_json};

/// A fresh directory under the system temp dir, removed on drop.
struct TempTree(PathBuf);

impl TempTree {
    fn new(tag: &str) -> TempTree {
        let p = std::env::temp_dir().join(format!(
            "scaleout-audit-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempTree(p)
    }
    fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SESSION_JS: &str =
    "const session = require('express-session');\napp.use(session({ secret: 'x' }));\n";
const GLOBAL_PY: &str = "store = {}\n\ndef put(k, v):\n    store[k] = v\n";

#[test]
fn clean_code_is_stateless_and_state_is_counted_by_category() {
    let t = TempTree::new("verdict");
    t.write(
        "app.py",
        "CODES = {'a': 1}\n\ndef get(k):\n    return CODES[k]\n",
    );
    let r = audit_path(t.path(), &Options::default()).unwrap();
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(!r.verdict().stateful);
    assert_eq!(r.verdict().to_string(), "stateless");
    assert_eq!(r.files_scanned, 1);

    t.write("server.js", SESSION_JS)
        .write("store.py", GLOBAL_PY);
    let r = audit_path(t.path(), &Options::default()).unwrap();
    let v = r.verdict();
    assert!(v.stateful);
    assert_eq!(v.counts.get("sessions"), Some(&1));
    assert_eq!(v.counts.get("global-state"), Some(&1));
    assert_eq!(v.to_string(), "stateful (global-state: 1, sessions: 1)");
    let f = r
        .findings
        .iter()
        .find(|f| f.rule_id == "JS-SESSION-MEMORY")
        .unwrap();
    assert_eq!((f.path.as_str(), f.line), ("server.js", 2));
    assert!(
        f.condition.is_some(),
        "a missing `store` is a conditional finding"
    );
    assert!(!f.fix.is_empty() && !f.why.is_empty());
}

#[test]
fn low_confidence_findings_do_not_make_the_verdict_stateful() {
    // A commented-out default in an example file: reported with low confidence.
    let t = TempTree::new("low");
    t.write(
        "custom/conf/app.example.ini",
        "[session]\n; Either \"memory\", \"file\", or \"redis\".\n;PROVIDER = memory\n",
    );
    let r = audit_path(t.path(), &Options::default()).unwrap();
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(r.findings[0].rule_id, "CFG-SESSION-LOCAL");
    assert_eq!(r.findings[0].severity, Severity::High);
    assert_eq!(r.findings[0].confidence, Confidence::Low);
    assert!(r.findings[0].condition.is_some());
    assert!(!r.verdict().stateful);
}

#[test]
fn min_severity_filters_findings() {
    let t = TempTree::new("minsev");
    t.write("store.py", GLOBAL_PY); // medium
    let all = audit_path(t.path(), &Options::default()).unwrap();
    assert_eq!(all.findings.len(), 1);
    assert_eq!(all.findings[0].severity, Severity::Medium);
    let high = audit_path(
        t.path(),
        &Options {
            min_severity: Severity::High,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(high.findings.is_empty());
    assert!(!high.has_findings_at(Severity::High));
}

#[test]
fn inline_suppression_needs_a_reason() {
    let t = TempTree::new("suppress");
    t.write(
        "a.py",
        "# scaleout-audit: ignore[PY-GLOBAL-MUTABLE] process-local metrics, scraped per instance\nstore = {}\n\ndef put(k, v):\n    store[k] = v\n",
    );
    t.write(
        "b.py",
        "other = {}  # scaleout-audit: ignore[PY-GLOBAL-MUTABLE]\n\ndef put(k, v):\n    other[k] = v\n",
    );
    let r = audit_path(t.path(), &Options::default()).unwrap();
    assert_eq!(r.suppressed.len(), 1);
    assert_eq!(r.suppressed[0].path, "a.py");
    assert_eq!(
        r.suppressed[0].reason,
        "process-local metrics, scraped per instance"
    );
    assert_eq!(
        r.findings.len(),
        1,
        "a suppression without a reason suppresses nothing"
    );
    assert_eq!(r.findings[0].path, "b.py");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("b.py:1") && w.contains("no reason")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn dependency_folders_gitignored_paths_and_tests_are_skipped() {
    let t = TempTree::new("ignore");
    for dir in [
        "node_modules/x",
        "vendor/y",
        "target/z",
        ".venv/lib",
        "venv/lib",
        "dist",
        "build",
    ] {
        t.write(&format!("{dir}/server.js"), SESSION_JS);
    }
    t.write(".gitignore", "generated/\n");
    t.write("generated/server.js", SESSION_JS);
    t.write("tests/test_store.py", GLOBAL_PY);
    t.write(
        "src/store_test.go",
        "package x\nvar m = map[string]int{}\nfunc Put() { m[\"a\"] = 1 }\n",
    );
    let r = audit_path(t.path(), &Options::default()).unwrap();
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    let with_tests = audit_path(
        t.path(),
        &Options {
            include_tests: true,
            ..Options::default()
        },
    )
    .unwrap();
    let paths: Vec<&str> = with_tests
        .findings
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(paths, vec!["src/store_test.go", "tests/test_store.py"]);
}

#[test]
fn a_single_file_can_be_audited_and_a_missing_path_is_an_error() {
    let t = TempTree::new("single");
    t.write("server.js", SESSION_JS);
    let r = audit_path(&t.path().join("server.js"), &Options::default()).unwrap();
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].path, "server.js");
    assert!(audit_path(&t.path().join("missing"), &Options::default()).is_err());
}

#[test]
fn json_carries_verdict_counts_and_findings() {
    let t = TempTree::new("json");
    t.write("server.js", SESSION_JS);
    let r = audit_path(t.path(), &Options::default()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&render_json(&r)).unwrap();
    assert_eq!(v["verdict"], "stateful");
    assert_eq!(v["counts"]["sessions"], 1);
    assert_eq!(v["findings"][0]["rule_id"], "JS-SESSION-MEMORY");
    assert_eq!(v["findings"][0]["line"], 2);
    assert_eq!(v["findings"][0]["severity"], "high");
    assert_eq!(v["findings"][0]["category"], "sessions");
}

#[test]
fn parallel_and_serial_scans_agree() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let one = audit_path(
        &fixtures,
        &Options {
            threads: 1,
            ..Options::default()
        },
    )
    .unwrap();
    let four = audit_path(
        &fixtures,
        &Options {
            threads: 4,
            ..Options::default()
        },
    )
    .unwrap();
    let key = |r: &audit::Report| {
        r.findings
            .iter()
            .map(|f| (f.path.clone(), f.line, f.rule_id))
            .collect::<Vec<_>>()
    };
    assert!(!one.findings.is_empty());
    assert_eq!(key(&one), key(&four));
}

#[test]
fn the_same_store_gets_the_same_severity_in_every_file() {
    // One user store spelled three ways: a typed field in a file that imports axum, a
    // field in a module that relies on the crate's dependency, a type alias. Same scale.
    let t = TempTree::new("severity");
    t.write(
        "Cargo.toml",
        "[package]\nname = \"app\"\n[dependencies]\naxum = \"0.8\"\n",
    );
    t.write(
        "src/main.rs",
        "use axum::Router;\nuse std::collections::HashMap;\nuse std::sync::Mutex;\nstruct AppState {\n    users: Mutex<HashMap<u64, User>>,\n}\n",
    );
    t.write(
        "src/store.rs",
        "use std::collections::HashMap;\nuse tokio::sync::RwLock;\npub struct Repo {\n    accounts: RwLock<HashMap<u64, User>>,\n}\n",
    );
    t.write(
        "src/alias.rs",
        "use std::collections::HashMap;\nuse std::sync::{Arc, Mutex};\npub type Users = Arc<Mutex<HashMap<u64, User>>>;\n",
    );
    let r = audit_path(t.path(), &Options::default()).unwrap();
    assert_eq!(r.findings.len(), 3, "{:#?}", r.findings);
    for f in &r.findings {
        assert_eq!(f.rule_id, "RS-STATE-MAP", "{f:?}");
        assert_eq!(f.severity, Severity::High, "{}: {}", f.path, f.message);
    }
}

#[test]
fn conditions_are_stated_when_the_code_has_them() {
    let t = TempTree::new("condition");
    t.write(
        "config.py",
        "import os\n\nclass ServerConfig:\n    REDIS_URL = os.getenv(\"REDIS_URL\")\n    if REDIS_URL:\n        CACHE_TYPE = \"redis\"\n    else:\n        CACHE_TYPE = \"filesystem\"\n",
    );
    let r = audit_path(t.path(), &Options::default()).unwrap();
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    let f = &r.findings[0];
    assert_eq!((f.rule_id, f.line), ("PY-CACHE-LOCAL", 8));
    assert_eq!(f.condition.as_deref(), Some("unless `REDIS_URL`"));
    assert_eq!(f.confidence, Confidence::Medium);
}

#[test]
fn the_summary_counts_files_with_findings_and_files_scanned() {
    let t = TempTree::new("summary");
    t.write("server.js", SESSION_JS)
        .write("clean.py", "X = 1\n");
    let r = audit_path(t.path(), &Options::default()).unwrap();
    assert_eq!(r.files_scanned, 2);
    assert_eq!(r.files_with_findings(), 1);
    let text = audit::render_text(&r);
    assert!(
        text.contains("1 findings in 1 of 2 files scanned (3 lines;"),
        "{text}"
    );
}

//! Every rule has a positive and a negative fixture under `fixtures/<RULE-ID>/{pos,neg}/`.
//! Positive fixtures mark each line that must be reported with `expect: RULE-ID` in a
//! comment; the rule must fire on exactly those lines. Negative fixtures hold the look-alike
//! code that must not fire (constant tables, start-up-only writes, shared stores).
//!
//! Every class of miss and noise named in issue 13 (frontend bundles, tests and tooling,
//! dev-only branches, test configs, write-once state, Flask-Caching backends, housekeeping
//! timers, duplicate findings; commented and code defaults, config adapters, drivers on
//! SQLite, embedded databases, maintenance flags, uploads through a storage class, tokio
//! broadcast, SSE queue managers, schedulers, lock tables, lru_cache wrappers, global
//! locks, search indexers) has `fixtures/classes/<class>/{pos,neg}/`: the positive must
//! produce exactly its `expect:` lines (any rule), the negative no finding at all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use audit::{Options, RULES, audit_path};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `(relative path, line)` of every `expect: RULE` marker under `dir`.
fn expected(dir: &Path, rule: &str) -> BTreeSet<(String, usize)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            let rel = p
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            for (i, line) in text.lines().enumerate() {
                if line.contains(&format!("expect: {rule}")) {
                    out.insert((rel.clone(), i + 1));
                }
            }
        }
    }
    out
}

#[test]
fn every_rule_has_positive_and_negative_fixtures_that_behave() {
    let mut failures = Vec::new();
    for rule in RULES {
        let pos = fixtures().join(rule.id).join("pos");
        let neg = fixtures().join(rule.id).join("neg");
        if !pos.is_dir() || !neg.is_dir() {
            failures.push(format!("{}: missing pos/ or neg/ fixture", rule.id));
            continue;
        }
        let want = expected(&pos, rule.id);
        if want.is_empty() {
            failures.push(format!(
                "{}: positive fixture marks no `expect:` line",
                rule.id
            ));
        }
        let report = audit_path(&pos, &Options::default()).unwrap();
        let got: BTreeSet<(String, usize)> = report
            .findings
            .iter()
            .filter(|f| f.rule_id == rule.id)
            .map(|f| (f.path.clone(), f.line))
            .collect();
        if got != want {
            failures.push(format!(
                "{}: positive fired at {got:?}, expected {want:?}",
                rule.id
            ));
        }
        let report = audit_path(&neg, &Options::default()).unwrap();
        let fired: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.rule_id == rule.id)
            .map(|f| format!("{}:{} {}", f.path, f.line, f.message))
            .collect();
        if !fired.is_empty() {
            failures.push(format!("{}: negative fixture fired: {fired:?}", rule.id));
        }
        let files = std::fs::read_dir(&neg).unwrap().count();
        if files == 0 {
            failures.push(format!("{}: negative fixture is empty", rule.id));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// `(relative path, line, rule)` of every `expect: RULE` marker under `dir`.
fn expected_any(dir: &Path) -> BTreeSet<(String, usize, String)> {
    let mut out = BTreeSet::new();
    for rule in RULES {
        for (p, l) in expected(dir, rule.id) {
            out.insert((p, l, rule.id.to_string()));
        }
    }
    out
}

#[test]
fn every_issue_class_has_a_positive_and_a_negative_that_behave() {
    let root = fixtures().join("classes");
    let mut failures = Vec::new();
    let mut classes = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        let class = dir.file_name().unwrap().to_string_lossy().into_owned();
        classes += 1;
        let (pos, neg) = (dir.join("pos"), dir.join("neg"));
        if !pos.is_dir() || !neg.is_dir() {
            failures.push(format!("{class}: missing pos/ or neg/"));
            continue;
        }
        let want = expected_any(&pos);
        if want.is_empty() {
            failures.push(format!("{class}: positive marks no `expect:` line"));
        }
        let got: BTreeSet<(String, usize, String)> = audit_path(&pos, &Options::default())
            .unwrap()
            .findings
            .iter()
            .map(|f| (f.path.clone(), f.line, f.rule_id.to_string()))
            .collect();
        if got != want {
            failures.push(format!("{class}: positive gave {got:?}, expected {want:?}"));
        }
        let fired: Vec<String> = audit_path(&neg, &Options::default())
            .unwrap()
            .findings
            .iter()
            .map(|f| format!("{}:{} {} {}", f.path, f.line, f.rule_id, f.message))
            .collect();
        if !fired.is_empty() {
            failures.push(format!("{class}: negative fired: {fired:?}"));
        }
    }
    assert!(classes >= 25, "only {classes} class fixtures");
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn no_fixture_directory_names_an_unknown_rule() {
    for e in std::fs::read_dir(fixtures()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name == "classes" {
            continue;
        }
        assert!(
            audit::rule(&name).is_some(),
            "fixtures/{name} names no rule"
        );
    }
}

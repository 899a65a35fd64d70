//! The SARIF output checked against the SARIF 2.1.0 schema's required properties and the
//! parts GitHub code scanning reads (rules with ids, shortDescription, help and
//! defaultConfiguration.level; results with ruleId, level, message, and a relative
//! artifactLocation.uri with region.startLine). The checks are written here rather than
//! pulling in a JSON-schema validator.

use std::collections::HashSet;
use std::path::Path;

use audit::{Options, RULES, audit_path, render_sarif};
use serde_json::Value;

const LEVELS: &[&str] = &["none", "note", "warning", "error"];

fn str_at<'a>(v: &'a Value, path: &str) -> Result<&'a str, String> {
    let mut cur = v;
    for k in path.split('.') {
        cur = cur.get(k).ok_or_else(|| format!("missing `{path}`"))?;
    }
    cur.as_str()
        .ok_or_else(|| format!("`{path}` is not a string"))
}

/// Returns every violation found (empty = valid).
fn validate(doc: &Value, root: &Path) -> Vec<String> {
    let mut errs: Vec<String> = Vec::new();
    macro_rules! check {
        ($r:expr $(,)?) => {
            if let Err(e) = $r {
                errs.push(e);
            }
        };
    }
    check!(
        (doc["version"] == "2.1.0")
            .then_some(())
            .ok_or("version must be \"2.1.0\"".into())
    );
    let Some(runs) = doc["runs"].as_array() else {
        return vec!["`runs` must be an array".into()];
    };
    for run in runs {
        check!(str_at(run, "tool.driver.name").map(|_| ()));
        let rules = run["tool"]["driver"]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut ids = Vec::new();
        for r in &rules {
            let id = str_at(r, "id");
            check!(id.clone().map(|_| ()));
            ids.push(id.unwrap_or("").to_string());
            check!(str_at(r, "shortDescription.text").map(|_| ()));
            check!(str_at(r, "help.text").map(|_| ()));
            check!(str_at(r, "defaultConfiguration.level").and_then(|l| {
                LEVELS
                    .contains(&l)
                    .then_some(())
                    .ok_or(format!("bad level {l}"))
            }),);
        }
        let unique: HashSet<_> = ids.iter().collect();
        check!(
            (unique.len() == ids.len())
                .then_some(())
                .ok_or("duplicate rule ids".into())
        );
        let Some(results) = run["results"].as_array() else {
            errs.push("`results` must be an array".into());
            continue;
        };
        for res in results {
            let rule_id = str_at(res, "ruleId").unwrap_or("");
            check!(
                ids.iter()
                    .any(|i| i == rule_id)
                    .then_some(())
                    .ok_or(format!("ruleId {rule_id} not in rules"))
            );
            if let Some(idx) = res["ruleIndex"].as_u64() {
                check!(
                    (ids.get(idx as usize).map(|s| s.as_str()) == Some(rule_id))
                        .then_some(())
                        .ok_or("ruleIndex does not match ruleId".into())
                );
            }
            check!(str_at(res, "level").and_then(|l| {
                LEVELS
                    .contains(&l)
                    .then_some(())
                    .ok_or(format!("bad level {l}"))
            }));
            check!(
                str_at(res, "message.text")
                    .and_then(|t| (!t.is_empty()).then_some(()).ok_or("empty message".into()))
            );
            let locs = res["locations"].as_array().cloned().unwrap_or_default();
            check!(
                (!locs.is_empty())
                    .then_some(())
                    .ok_or("no locations".into())
            );
            for l in &locs {
                let uri = str_at(l, "physicalLocation.artifactLocation.uri").unwrap_or("");
                check!(
                    (!uri.is_empty()
                        && !uri.starts_with('/')
                        && !uri.contains("://")
                        && !uri.contains('\\'))
                    .then_some(())
                    .ok_or(format!("uri {uri:?} must be relative"))
                );
                check!(
                    root.join(uri)
                        .is_file()
                        .then_some(())
                        .ok_or(format!("uri {uri} does not name a file under the root"))
                );
                let line = l["physicalLocation"]["region"]["startLine"]
                    .as_u64()
                    .unwrap_or(0);
                check!(
                    (line >= 1)
                        .then_some(())
                        .ok_or("startLine must be >= 1".into())
                );
            }
        }
    }
    errs
}

#[test]
fn sarif_output_has_the_required_structure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let report = audit_path(&root, &Options::default()).unwrap();
    assert!(
        report.findings.len() > 40,
        "fixtures should produce many findings"
    );
    let doc: Value = serde_json::from_str(&render_sarif(&report)).unwrap();
    let errs = validate(&doc, &root);
    assert!(errs.is_empty(), "{errs:#?}");
    let rules = doc["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    assert_eq!(rules.len(), RULES.len());
    assert_eq!(
        doc["runs"][0]["results"].as_array().unwrap().len(),
        report.findings.len()
    );
}

#[test]
fn the_validator_rejects_broken_documents() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let report = audit_path(&root.join("JS-SESSION-MEMORY/pos"), &Options::default()).unwrap();
    let good: Value = serde_json::from_str(&render_sarif(&report)).unwrap();
    assert!(validate(&good, &root.join("JS-SESSION-MEMORY/pos")).is_empty());
    let mut bad = good.clone();
    bad["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] =
        "/abs/server.js".into();
    assert!(!validate(&bad, &root).is_empty());
    let mut bad = good.clone();
    bad["runs"][0]["results"][0]["ruleId"] = "NOPE".into();
    assert!(!validate(&bad, &root).is_empty());
    let mut bad = good;
    bad["version"] = "2.0.0".into();
    assert!(!validate(&bad, &root).is_empty());
}

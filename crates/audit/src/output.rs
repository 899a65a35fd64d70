//! Renders a `Report` as text (grouped by file), JSON, or SARIF 2.1.0 for GitHub code
//! scanning. Pure formatting: never filters, re-scans or touches the file system.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::{RULES, Report};

/// Text: findings grouped by file with line, rule, severity, message, reason and fix;
/// then suppressions, warnings, a summary and the verdict line.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for f in &report.findings {
        if current != Some(f.path.as_str()) {
            if current.is_some() {
                out.push('\n');
            }
            let _ = writeln!(out, "{}", f.path);
            current = Some(&f.path);
        }
        let _ = writeln!(
            out,
            "  {}:{} {} [{}, {} confidence] {}",
            f.line,
            f.column,
            f.rule_id,
            f.severity.as_str(),
            f.confidence.as_str(),
            f.message
        );
        if let Some(c) = &f.condition {
            let _ = writeln!(out, "      conditional: {c}");
        }
        if !f.related.is_empty() {
            let _ = writeln!(out, "      same construct: {}", f.related.join(", "));
        }
        let _ = writeln!(out, "      why: {}", f.why);
        let _ = writeln!(out, "      fix: {}", f.fix);
    }
    if !report.findings.is_empty() {
        out.push('\n');
    }
    for s in &report.suppressed {
        let _ = writeln!(
            out,
            "suppressed: {}:{} {} ({})",
            s.path, s.line, s.rule_id, s.reason
        );
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(
        out,
        "{} findings in {} of {} files scanned ({} lines; {} suppressed, {} skipped for size)",
        report.findings.len(),
        report.files_with_findings(),
        report.files_scanned,
        report.lines_scanned,
        report.suppressed.len(),
        report.files_skipped
    );
    let _ = writeln!(out, "verdict: {}", report.verdict());
    out
}

/// JSON: `{"verdict": "stateful"|"stateless", "counts": {...}, "findings": [...], ...}`.
pub fn render_json(report: &Report) -> String {
    let v = report.verdict();
    let doc = json!({
        "verdict": if v.stateful { "stateful" } else { "stateless" },
        "counts": v.counts,
        "summary": v.to_string(),
        "root": report.root.to_string_lossy(),
        "files_scanned": report.files_scanned,
        "lines_scanned": report.lines_scanned,
        "files_skipped": report.files_skipped,
        "findings": report.findings,
        "suppressed": report.suppressed,
        "warnings": report.warnings,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
}

/// SARIF 2.1.0: one run, every rule in `tool.driver.rules`, results with a level,
/// message and a relative `artifactLocation.uri` plus `region.startLine`.
pub fn render_sarif(report: &Report) -> String {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.id.to_ascii_lowercase().replace('-', "_"),
                "shortDescription": { "text": r.title },
                "fullDescription": { "text": r.why },
                "help": {
                    "text": format!("{}\nFix: {}", r.why, r.fix),
                    "markdown": format!("**Why it breaks scale-out:** {}\n\n**Stateless fix:** {}", r.why, r.fix),
                },
                "defaultConfiguration": { "level": r.severity.sarif_level() },
                "properties": {
                    "category": r.category.as_str(),
                    "language": r.language,
                    "tags": ["scalability", r.category.as_str()],
                },
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let index = RULES.iter().position(|r| r.id == f.rule_id).unwrap_or(0);
            let mut text = f.message.clone();
            if let Some(c) = &f.condition {
                text.push_str(&format!(" (conditional: {c})"));
            }
            text.push_str(&format!(". Fix: {}", f.fix));
            json!({
                "ruleId": f.rule_id,
                "ruleIndex": index,
                "level": f.severity.sarif_level(),
                "message": { "text": text },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": f.path, "uriBaseId": "%SRCROOT%" },
                        "region": { "startLine": f.line, "startColumn": f.column },
                    }
                }],
                "properties": {
                    "severity": f.severity.as_str(),
                    "confidence": f.confidence.as_str(),
                    "category": f.category.as_str(),
                    "related": f.related,
                },
            })
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "scaleout-audit",
                    "informationUri": "https://github.com/scaleout/scaleout",
                    "version": env!("CARGO_PKG_VERSION"),
                    "rules": rules,
                }
            },
            "results": results,
            "properties": { "verdict": report.verdict().to_string() },
        }]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
}

//! Statefulness audit: finds hidden per-instance state in a codebase (in-memory sessions,
//! module-level caches and stores, local file writes, in-process jobs and queues,
//! in-memory rate limiters and WebSocket rooms) and reports it as text, JSON or SARIF.
//!
//! Code is parsed with tree-sitter (JavaScript, TypeScript, Python, Go, Java, Rust, PHP,
//! Ruby); config files (`.env`, `.ini`, `php.ini`, `.properties`, YAML) are matched key by
//! key. The audit only reads files: it must never execute, import or write anything under
//! the audited path.

mod lang;
mod output;
mod rules;
mod scan;
mod walk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use lang::{Lang, parse};
pub use output::{render_json, render_sarif, render_text};
pub use rules::{Category, Confidence, RULES, Rule, Severity, rule};

/// Errors the audit can return. Unreadable single files are warnings, not errors.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The path to audit does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Path {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Walking the directory tree failed.
    #[error("walking {path}: {message}")]
    Walk {
        /// The root being walked.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// What to audit and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Findings below this severity are left out of the report.
    pub min_severity: Severity,
    /// Worker threads for parsing (0 = available parallelism).
    pub threads: usize,
    /// Files larger than this are skipped (generated or minified code), in bytes.
    pub max_file_bytes: u64,
    /// Also audit test files (`*_test.go`, `tests/`, `*.spec.ts`, ...). Off by default:
    /// tests are not deployed.
    pub include_tests: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_severity: Severity::Low,
            threads: 0,
            max_file_bytes: 1024 * 1024,
            include_tests: false,
        }
    }
}

/// One piece of per-instance state found in the code.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// Rule id, e.g. `JS-SESSION-MEMORY`.
    pub rule_id: &'static str,
    /// Severity: the rule's, raised to high for stores of per-user data (see `rules`).
    pub severity: Severity,
    /// How sure the audit is that this state exists as deployed: `high` when the code or
    /// config says so explicitly, `medium` when it follows from a default (no store
    /// option given), `low` for a commented default in an example file.
    pub confidence: Confidence,
    /// Kind of state.
    pub category: Category,
    /// Path relative to the audited root, with `/` separators.
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What was found here, specifically.
    pub message: String,
    /// Set when the finding only holds while a setting is absent: says which.
    pub condition: Option<String>,
    /// Why it breaks scale-out.
    pub why: &'static str,
    /// The stateless fix.
    pub fix: &'static str,
    /// Other places that point at the same construct (`path:line`), merged into this
    /// finding so one piece of state is reported once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
}

/// A finding silenced by an inline `scaleout-audit: ignore[RULE-ID] reason` comment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Suppressed {
    /// The rule silenced.
    pub rule_id: &'static str,
    /// Where.
    pub path: String,
    /// 1-based line of the finding.
    pub line: usize,
    /// The reason given in the comment.
    pub reason: String,
}

/// The result of an audit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The audited path as given.
    pub root: PathBuf,
    /// Findings at or above the chosen severity, sorted by path and line.
    pub findings: Vec<Finding>,
    /// Findings silenced inline, with their reasons.
    pub suppressed: Vec<Suppressed>,
    /// Problems that did not stop the audit (unreadable files, suppressions without reason).
    pub warnings: Vec<String>,
    /// Source and config files read.
    pub files_scanned: usize,
    /// Lines in those files.
    pub lines_scanned: usize,
    /// Files skipped for size.
    pub files_skipped: usize,
}

/// The statefulness verdict the advisor reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// True when any finding of medium or high severity and at least medium confidence
    /// remains.
    pub stateful: bool,
    /// Those findings per category.
    pub counts: BTreeMap<&'static str, usize>,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.stateful {
            return f.write_str("stateless");
        }
        f.write_str("stateful (")?;
        for (i, (k, v)) in self.counts.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}: {v}")?;
        }
        f.write_str(")")
    }
}

impl Report {
    /// Stateless when no medium or high finding of medium or high confidence remains:
    /// low-severity findings (state whose duplication is harmless) and low-confidence ones
    /// (a commented default in an example file) are reported but do not stop a scale-out.
    pub fn verdict(&self) -> Verdict {
        let mut counts = BTreeMap::new();
        for f in &self.findings {
            if f.severity >= Severity::Medium && f.confidence >= Confidence::Medium {
                *counts.entry(f.category.as_str()).or_insert(0) += 1;
            }
        }
        Verdict {
            stateful: !counts.is_empty(),
            counts,
        }
    }

    /// True when some finding is at or above `min`.
    pub fn has_findings_at(&self, min: Severity) -> bool {
        self.findings.iter().any(|f| f.severity >= min)
    }

    /// Distinct files holding at least one finding.
    pub fn files_with_findings(&self) -> usize {
        self.findings
            .iter()
            .map(|f| f.path.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }
}

/// Audits every supported file under `path` (a directory or a single file).
pub fn audit_path(path: &Path, options: &Options) -> Result<Report, AuditError> {
    let meta = std::fs::metadata(path).map_err(|source| AuditError::Path {
        path: path.to_path_buf(),
        source,
    })?;
    let files = if meta.is_file() {
        vec![walk::SourceFile {
            abs: path.to_path_buf(),
            rel: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size: meta.len(),
        }]
    } else {
        walk::collect(path, options)?
    };
    let mut report = scan::scan_files(&files, options);
    report.root = path.to_path_buf();
    report
        .findings
        .retain(|f| f.severity >= options.min_severity);
    report
        .findings
        .sort_by(|a, b| (&a.path, a.line, a.rule_id).cmp(&(&b.path, b.line, b.rule_id)));
    report
        .suppressed
        .sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    report.warnings.sort();
    Ok(report)
}

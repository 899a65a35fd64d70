//! Runs the per-language detectors over files in parallel and turns their raw hits into
//! findings: applies inline suppressions, rule metadata and project facts.
//!
//! Detectors only look at syntax trees (and config keys); this module must never run or
//! import the audited code, and never write under the audited path.

mod config;
mod go;
mod java;
mod js;
mod php;
mod python;
mod ruby;
mod rust;
pub(crate) mod tree;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::walk::{SourceFile, is_manifest};
use crate::{Finding, Lang, Options, Report, Severity, Suppressed, rules};

/// Facts about the whole project, read from build manifests before any file is scanned
/// (e.g. whether spring-session or a socket.io Redis adapter is a dependency).
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// `(directory prefix, lower-cased manifest contents)` for every manifest: a file sees
    /// the manifests of its own directory and its ancestors (so one example app in a
    /// monorepo does not lend its Redis adapter to another).
    manifests: Vec<(String, String)>,
}

impl Facts {
    /// True when a manifest governing `rel` names `dep` (a package name, lower case).
    pub(crate) fn has_dep(&self, rel: &str, dep: &str) -> bool {
        self.manifests.iter().any(|(dir, text)| {
            (dir.is_empty() || rel.starts_with(dir.as_str())) && text.contains(dep)
        })
    }
}

/// A raw hit from a detector, before rule metadata and suppressions are applied.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub rule: &'static str,
    /// 0-based row.
    pub row: usize,
    /// 0-based column.
    pub col: usize,
    pub message: String,
    /// Overrides the rule's default severity.
    pub severity: Option<Severity>,
    pub condition: Option<String>,
}

impl Hit {
    pub(crate) fn at(
        rule: &'static str,
        node: tree_sitter::Node,
        message: impl Into<String>,
    ) -> Hit {
        let p = node.start_position();
        Hit {
            rule,
            row: p.row,
            col: p.column,
            message: message.into(),
            severity: None,
            condition: None,
        }
    }

    pub(crate) fn severity(mut self, s: Severity) -> Hit {
        self.severity = Some(s);
        self
    }

    pub(crate) fn condition(mut self, c: impl Into<String>) -> Hit {
        self.condition = Some(c.into());
        self
    }
}

/// What a detector sees of one file.
pub(crate) struct FileCtx<'a> {
    pub src: &'a str,
    /// Path relative to the root, `/`-separated.
    pub rel: &'a str,
    pub facts: &'a Facts,
}

impl FileCtx<'_> {
    /// True when a build manifest governing this file names `dep`.
    pub(crate) fn has_dep(&self, dep: &str) -> bool {
        self.facts.has_dep(self.rel, dep)
    }
}

/// Scans `files` with `options.threads` workers.
pub(crate) fn scan_files(files: &[SourceFile], options: &Options) -> Report {
    let mut facts = Facts::default();
    for f in files {
        let name = f.rel.rsplit('/').next().unwrap_or(&f.rel);
        if (is_manifest(name) || f.rel.ends_with("config/application.rb"))
            && let Ok(text) = std::fs::read_to_string(&f.abs)
        {
            let dir = if f.rel.ends_with("config/application.rb") {
                // Governs the whole Rails app, not just config/.
                f.rel.trim_end_matches("config/application.rb").to_string()
            } else {
                match f.rel.rfind('/') {
                    Some(i) => f.rel[..=i].to_string(),
                    None => String::new(),
                }
            };
            facts.manifests.push((dir, text.to_ascii_lowercase()));
        }
    }
    let sources: Vec<&SourceFile> = files
        .iter()
        .filter(|f| Lang::from_path(&f.abs).is_some())
        .collect();
    let threads = if options.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        options.threads
    }
    .clamp(1, 64);
    let next = AtomicUsize::new(0);
    let merged = Mutex::new(Report {
        root: Default::default(),
        findings: Vec::new(),
        suppressed: Vec::new(),
        warnings: Vec::new(),
        files_scanned: 0,
        lines_scanned: 0,
        files_skipped: 0,
    });
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut local = FileOutcome::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = sources.get(i) else { break };
                    scan_one(f, options, &facts, &mut local);
                }
                let mut m = merged.lock().unwrap_or_else(|e| e.into_inner());
                m.findings.append(&mut local.findings);
                m.suppressed.append(&mut local.suppressed);
                m.warnings.append(&mut local.warnings);
                m.files_scanned += local.files;
                m.lines_scanned += local.lines;
                m.files_skipped += local.skipped;
            });
        }
    });
    merged.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct FileOutcome {
    findings: Vec<Finding>,
    suppressed: Vec<Suppressed>,
    warnings: Vec<String>,
    files: usize,
    lines: usize,
    skipped: usize,
}

fn scan_one(f: &SourceFile, options: &Options, facts: &Facts, out: &mut FileOutcome) {
    let Some(lang) = Lang::from_path(&f.abs) else {
        return;
    };
    if f.size > options.max_file_bytes {
        out.skipped += 1;
        return;
    }
    let src = match std::fs::read(&f.abs) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            out.warnings.push(format!("{}: unreadable: {e}", f.rel));
            return;
        }
    };
    out.files += 1;
    out.lines += src.lines().count();
    let ctx = FileCtx {
        src: &src,
        rel: &f.rel,
        facts,
    };
    let hits = scan_source(lang, &ctx);
    if hits.is_empty() {
        return;
    }
    let lines: Vec<&str> = src.lines().collect();
    let mut seen = std::collections::HashSet::new();
    for h in hits {
        if !seen.insert((h.rule, h.row)) {
            continue;
        }
        let Some(rule) = rules::rule(h.rule) else {
            out.warnings.push(format!(
                "internal: detector emitted unknown rule {}",
                h.rule
            ));
            continue;
        };
        match suppression(&lines, h.row, rule.id) {
            Some(Ok(reason)) => {
                out.suppressed.push(Suppressed {
                    rule_id: rule.id,
                    path: f.rel.clone(),
                    line: h.row + 1,
                    reason,
                });
                continue;
            }
            Some(Err(())) => out.warnings.push(format!(
                "{}:{}: suppression of {} has no reason and is ignored",
                f.rel,
                h.row + 1,
                rule.id
            )),
            None => {}
        }
        out.findings.push(Finding {
            rule_id: rule.id,
            severity: h.severity.unwrap_or(rule.severity),
            category: rule.category,
            path: f.rel.clone(),
            line: h.row + 1,
            column: h.col + 1,
            message: h.message,
            condition: h.condition,
            why: rule.why,
            fix: rule.fix,
        });
    }
}

/// Runs the detectors for `lang` over one file's source.
pub(crate) fn scan_source(lang: Lang, ctx: &FileCtx) -> Vec<Hit> {
    let mut hits = Vec::new();
    if lang == Lang::Config {
        config::scan(ctx, &mut hits);
        return hits;
    }
    let Some(tree) = crate::lang::parse(lang, ctx.src) else {
        return hits;
    };
    let root = tree.root_node();
    match lang {
        Lang::JavaScript | Lang::TypeScript | Lang::Tsx => js::scan(root, ctx, &mut hits),
        Lang::Python => python::scan(root, ctx, &mut hits),
        Lang::Go => go::scan(root, ctx, &mut hits),
        Lang::Java => java::scan(root, ctx, &mut hits),
        Lang::Rust => rust::scan(root, ctx, &mut hits),
        Lang::Php => php::scan(root, ctx, &mut hits),
        Lang::Ruby => ruby::scan(root, ctx, &mut hits),
        Lang::Config => {}
    }
    hits
}

/// The marker of an inline suppression comment.
pub(crate) const SUPPRESS_MARKER: &str = "scaleout-audit: ignore[";

/// Looks for `scaleout-audit: ignore[RULE] reason` on the finding's line or the line
/// above. `Some(Ok(reason))` suppresses; `Some(Err(()))` means a marker without a reason
/// (which does not suppress); `None` means no marker for this rule.
fn suppression(lines: &[&str], row: usize, rule_id: &str) -> Option<Result<String, ()>> {
    let candidates = [Some(row), row.checked_sub(1)];
    for r in candidates.into_iter().flatten() {
        let Some(line) = lines.get(r) else { continue };
        let mut rest = *line;
        while let Some(pos) = rest.find(SUPPRESS_MARKER) {
            let after = &rest[pos + SUPPRESS_MARKER.len()..];
            let Some(close) = after.find(']') else { break };
            let ids = &after[..close];
            if ids.split(',').any(|id| id.trim() == rule_id) {
                let reason = after[close + 1..]
                    .trim()
                    .trim_end_matches("*/")
                    .trim_end_matches("-->")
                    .trim_end_matches("%>")
                    .trim_end_matches("?>")
                    .trim()
                    .trim_start_matches([':', '-'])
                    .trim();
                return Some(if reason.is_empty() {
                    Err(())
                } else {
                    Ok(reason.to_string())
                });
            }
            rest = &after[close..];
        }
    }
    None
}

/// True when `name` suggests data held per user or per connection (sessions, carts,
/// tokens, uploads): such stores are high severity.
pub(crate) fn per_user_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "session",
        "sess",
        "user",
        "cart",
        "basket",
        "login",
        "token",
        "account",
        "customer",
        "visitor",
        "client",
        "upload",
        "order",
        "profile",
        "member",
        "player",
        "socket",
        "room",
        "subscriber",
        "conn",
        "auth",
        "otp",
        "email",
    ]
    .iter()
    .any(|k| n.contains(k))
}

/// True for functions that, by name, run once at start-up (registration, setup, loading):
/// a collection written only there is read-only afterwards and is not per-instance state.
pub(crate) fn startup_function(name: &str) -> bool {
    let n = name.trim_start_matches('_').to_ascii_lowercase();
    n == "init"
        || n == "main"
        || n == "__init__"
        || [
            "init",
            "setup",
            "set_up",
            "register",
            "load",
            "configure",
            "bootstrap",
            "must",
            "install",
            "populate",
            "seed",
            "add_route",
            "build",
        ]
        .iter()
        .any(|p| n.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppression_needs_the_rule_and_a_reason() {
        let lines = vec![
            "// scaleout-audit: ignore[JS-GLOBAL-MUTABLE] read-only after boot",
            "const m = new Map();",
            "const n = new Map(); // scaleout-audit: ignore[JS-GLOBAL-MUTABLE]",
        ];
        assert_eq!(
            suppression(&lines, 1, "JS-GLOBAL-MUTABLE"),
            Some(Ok("read-only after boot".to_string()))
        );
        assert_eq!(suppression(&lines, 1, "JS-TIMER-JOB"), None);
        assert_eq!(suppression(&lines, 2, "JS-GLOBAL-MUTABLE"), Some(Err(())));
    }

    #[test]
    fn per_user_and_startup_names() {
        assert!(per_user_name("sessionsById"));
        assert!(per_user_name("CARTS"));
        assert!(!per_user_name("countryCodes"));
        assert!(startup_function("registerHandler"));
        assert!(startup_function("init"));
        assert!(!startup_function("handleLogin"));
    }
}

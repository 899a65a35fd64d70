//! Runs the per-language detectors over files in parallel and turns their raw hits into
//! findings: applies inline suppressions, rule metadata and project facts.
//!
//! Detectors only look at syntax trees (and config keys); this module must never run or
//! import the audited code, and never write under the audited path.

mod config;
mod facts;
mod go;
mod java;
mod js;
mod link;
mod php;
mod python;
mod ruby;
mod rust;
pub(crate) mod tree;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use facts::Facts;

pub(crate) use config::strip_example;

/// True for JSON files read as application settings.
pub(crate) fn is_json_config(path: &str) -> bool {
    config::is_config_file(path)
}

use crate::walk::SourceFile;
use crate::{
    Category, Confidence, Finding, Lang, Options, Report, Rule, Severity, Suppressed, rules,
};

/// A raw hit from a detector, before rule metadata and suppressions are applied.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub rule: &'static str,
    /// 0-based row.
    pub row: usize,
    /// 0-based column.
    pub col: usize,
    pub message: String,
    /// The store holds per-user data (by its name): global state is raised to high.
    pub per_user: bool,
    pub confidence: Confidence,
    pub condition: Option<String>,
    /// Merge key: hits with the same key are one construct and reported once (the key
    /// is scoped to the file unless it starts with `project:`).
    pub construct: Option<String>,
}

impl Hit {
    pub(crate) fn at(
        rule: &'static str,
        node: tree_sitter::Node,
        message: impl Into<String>,
    ) -> Hit {
        let p = node.start_position();
        Hit::at_row(rule, p.row, p.column, message)
    }

    pub(crate) fn at_row(
        rule: &'static str,
        row: usize,
        col: usize,
        message: impl Into<String>,
    ) -> Hit {
        Hit {
            rule,
            row,
            col,
            message: message.into(),
            per_user: false,
            confidence: Confidence::High,
            condition: None,
            construct: None,
        }
    }

    /// Marks the store as holding per-user data when `name` says so.
    pub(crate) fn per_user_if(mut self, name: &str) -> Hit {
        self.per_user |= per_user_name(name);
        self
    }

    pub(crate) fn confidence(mut self, c: Confidence) -> Hit {
        self.confidence = c;
        self
    }

    /// A finding that only holds while a setting is absent: states which, and follows
    /// from a default (medium confidence) unless a lower confidence was set.
    pub(crate) fn condition(mut self, c: impl Into<String>) -> Hit {
        self.condition = Some(c.into());
        self.confidence = self.confidence.min(Confidence::Medium);
        self
    }

    pub(crate) fn construct(mut self, key: impl Into<String>) -> Hit {
        self.construct = Some(key.into());
        self
    }
}

/// A local-disk write inside a function that is not itself a request handler: reported
/// only when a handler reaches the function through calls (see `link`).
#[derive(Debug, Clone)]
pub(crate) struct LocalWrite {
    pub rule: &'static str,
    pub row: usize,
    pub col: usize,
    /// What writes, e.g. `open(path, "wb")`.
    pub what: String,
}

/// One function or method as the cross-file pass sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct FuncInfo {
    /// Simple name.
    pub name: String,
    /// Class, impl type or receiver type, when there is one.
    pub owner: Option<String>,
    /// A request handler (route function, controller action, view).
    pub handler: bool,
    /// 0-based row of the definition.
    pub row: usize,
    /// Simple names of the functions and methods it calls.
    pub calls: Vec<String>,
    /// Receiver texts of those calls, lower case (`storage_service`, `get_uploader()`).
    pub receivers: Vec<String>,
    /// Local-disk writes not already reported as handler writes.
    pub writes: Vec<LocalWrite>,
}

/// A hit that needs a project-wide fact, emitted only when some file of the project
/// reported the tag `needs` (e.g. `memo:timed_lru_cache` when a function of that name
/// wraps `lru_cache`, `uses:rails-cache` when some file calls `Rails.cache`).
#[derive(Debug, Clone)]
pub(crate) struct Deferred {
    /// Tag that must be present (empty: none needed).
    pub needs: String,
    /// Tag that must be absent.
    pub unless: Option<String>,
    pub hit: Hit,
}

/// What a detector produces for one file: its hits, and what the cross-file pass needs.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub hits: Vec<Hit>,
    pub funcs: Vec<FuncInfo>,
    /// Project facts this file establishes (`memo:NAME`, `uses:rails-cache`), for
    /// `Deferred` hits.
    pub tags: Vec<String>,
    pub deferred: Vec<Deferred>,
}

impl Sink {
    pub(crate) fn push(&mut self, h: Hit) {
        self.hits.push(h);
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
    let facts = Facts::read(files, options);
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
    let outcomes: Mutex<Vec<FileOutcome>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut local = FileOutcome::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(f) = sources.get(i) else { break };
                    scan_one(f, options, &facts, &mut local);
                }
                outcomes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(local);
            });
        }
    });
    let mut all = FileOutcome::default();
    for mut o in outcomes.into_inner().unwrap_or_else(|e| e.into_inner()) {
        all.findings.append(&mut o.findings);
        all.suppressed.append(&mut o.suppressed);
        all.warnings.append(&mut o.warnings);
        all.funcs.append(&mut o.funcs);
        all.tags.append(&mut o.tags);
        all.deferred.append(&mut o.deferred);
        all.files += o.files;
        all.lines += o.lines;
        all.skipped += o.skipped;
    }
    // Project-level passes: configuration read as a whole, calls followed across files,
    // hits that waited for a project fact.
    let mut project: Vec<(String, Hit)> = config::scan_project(&facts);
    project.extend(link::local_writes(&mut all.funcs));
    let tags: std::collections::HashSet<&str> = all.tags.iter().map(|s| s.as_str()).collect();
    for (rel, d) in std::mem::take(&mut all.deferred) {
        if (d.needs.is_empty() || tags.contains(d.needs.as_str()))
            && d.unless.as_deref().is_none_or(|u| !tags.contains(u))
        {
            project.push((rel, d.hit));
        }
    }
    project.sort_by(|a, b| (&a.0, a.1.row).cmp(&(&b.0, b.1.row)));
    let mut by_file: std::collections::BTreeMap<String, Vec<Hit>> = Default::default();
    for (rel, h) in project {
        by_file.entry(rel).or_default().push(h);
    }
    for (rel, hits) in by_file {
        let text = files
            .iter()
            .find(|f| f.rel == rel)
            .and_then(|f| std::fs::read(&f.abs).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        emit(&rel, &lines, hits, &mut all);
    }
    let findings = merge(std::mem::take(&mut all.findings));
    Report {
        root: Default::default(),
        findings,
        suppressed: all.suppressed,
        warnings: all.warnings,
        files_scanned: all.files,
        lines_scanned: all.lines,
        files_skipped: all.skipped,
    }
}

#[derive(Default)]
struct FileOutcome {
    findings: Vec<Finding>,
    suppressed: Vec<Suppressed>,
    warnings: Vec<String>,
    funcs: Vec<(String, FuncInfo)>,
    tags: Vec<String>,
    deferred: Vec<(String, Deferred)>,
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
    if matches!(lang, Lang::JavaScript | Lang::TypeScript | Lang::Tsx)
        && crate::walk::generated_or_bundled(&src)
    {
        return;
    }
    let ctx = FileCtx {
        src: &src,
        rel: &f.rel,
        facts,
    };
    let sink = scan_source(lang, &ctx);
    out.funcs
        .extend(sink.funcs.into_iter().map(|x| (f.rel.clone(), x)));
    out.tags.extend(sink.tags);
    out.deferred
        .extend(sink.deferred.into_iter().map(|d| (f.rel.clone(), d)));
    if sink.hits.is_empty() {
        return;
    }
    let lines: Vec<&str> = src.lines().collect();
    emit(&f.rel, &lines, sink.hits, out);
}

/// Turns hits into findings (or suppressions) for one file.
fn emit(rel: &str, lines: &[&str], hits: Vec<Hit>, out: &mut FileOutcome) {
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
        match suppression(lines, h.row, rule.id) {
            Some(Ok(reason)) => {
                out.suppressed.push(Suppressed {
                    rule_id: rule.id,
                    path: rel.to_string(),
                    line: h.row + 1,
                    reason,
                });
                continue;
            }
            Some(Err(())) => out.warnings.push(format!(
                "{}:{}: suppression of {} has no reason and is ignored",
                rel,
                h.row + 1,
                rule.id
            )),
            None => {}
        }
        out.findings.push(Finding {
            rule_id: rule.id,
            severity: severity(rule, &h),
            confidence: h.confidence,
            category: rule.category,
            path: rel.to_string(),
            line: h.row + 1,
            column: h.col + 1,
            message: h.message,
            condition: h.condition,
            why: rule.why,
            fix: rule.fix,
            related: h
                .construct
                .into_iter()
                .map(|c| format!("\u{0}{c}"))
                .collect(),
        });
    }
}

/// The one severity scale (see `rules`): the category's, raised to high for global
/// state holding per-user data.
fn severity(rule: &Rule, h: &Hit) -> Severity {
    if h.per_user && rule.category == Category::GlobalState {
        Severity::High
    } else {
        rule.category.severity()
    }
}

/// Merges findings that point at one construct: the same merge key (carried in
/// `related` as a NUL-prefixed entry until here), or the same line with a more specific
/// rule. The kept finding is the most confident (then the first); the others' places go
/// to its `related` list.
fn merge(mut findings: Vec<Finding>) -> Vec<Finding> {
    let key_of = |f: &Finding| -> Option<String> {
        let k = f.related.first()?.strip_prefix('\u{0}')?;
        Some(if k.starts_with("project:") {
            k.to_string()
        } else {
            format!("{}\u{0}{k}", f.path)
        })
    };
    findings.sort_by(|a, b| {
        (b.confidence, &a.path, a.line, a.rule_id).cmp(&(a.confidence, &b.path, b.line, b.rule_id))
    });
    let mut out: Vec<Finding> = Vec::new();
    let mut by_key: std::collections::HashMap<String, usize> = Default::default();
    let mut by_line: std::collections::HashMap<(String, usize), usize> = Default::default();
    for mut f in findings {
        let key = key_of(&f);
        f.related.retain(|r| !r.starts_with('\u{0}'));
        let place = format!("{}:{}", f.path, f.line);
        if let Some(k) = &key
            && let Some(&i) = by_key.get(k)
        {
            if !out[i].related.contains(&place)
                && format!("{}:{}", out[i].path, out[i].line) != place
            {
                out[i].related.push(place);
            }
            continue;
        }
        if let Some(&i) = by_line.get(&(f.path.clone(), f.line)) {
            // Two rules on one line: keep the specific one (a store named by what it is
            // beats the generic global-state rule).
            if generic(out[i].rule_id) && !generic(f.rule_id) {
                let old = std::mem::replace(&mut out[i], f);
                out[i].related.extend(old.related);
            }
            continue;
        }
        if let Some(k) = key {
            by_key.insert(k, out.len());
        }
        by_line.insert((f.path.clone(), f.line), out.len());
        out.push(f);
    }
    out
}

/// Rules that report any mutable store; a more specific rule on the same line wins.
fn generic(rule: &str) -> bool {
    rule.ends_with("GLOBAL-MUTABLE")
        || rule.ends_with("GLOBAL-MAP")
        || rule.ends_with("STATIC-MAP")
        || rule.ends_with("STATE-MAP")
        || rule.ends_with("STATIC-ARRAY")
}

/// Runs the detectors for `lang` over one file's source.
pub(crate) fn scan_source(lang: Lang, ctx: &FileCtx) -> Sink {
    let mut sink = Sink::default();
    if lang == Lang::Config {
        // Config files are read as a whole project in `config::scan_project`.
        return sink;
    }
    let Some(tree) = crate::lang::parse(lang, ctx.src) else {
        return sink;
    };
    let root = tree.root_node();
    let hits = &mut sink;
    match lang {
        Lang::JavaScript | Lang::TypeScript | Lang::Tsx => js::scan(root, ctx, hits),
        Lang::Python => python::scan(root, ctx, hits),
        Lang::Go => go::scan(root, ctx, hits),
        Lang::Java => java::scan(root, ctx, hits),
        Lang::Rust => rust::scan(root, ctx, hits),
        Lang::Php => php::scan(root, ctx, hits),
        Lang::Ruby => ruby::scan(root, ctx, hits),
        Lang::Config => {}
    }
    sink
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

/// True when a collection's name says it memoises a deterministic computation (compiled
/// regexes, parsed templates, time zones, schemas) or registers code (routes, handlers,
/// plugins, hooks, finders): every instance fills it identically, so it is not
/// per-instance state.
pub(crate) fn memo_or_registry_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "regex",
        "regexp",
        "pattern",
        "compiled",
        "template",
        "tzcache",
        "timezone",
        "location",
        "validator",
        "schema",
        "bundle",
        "filehash",
        "hashcache",
        "mime",
        "parser",
        "registry",
        "route",
        "handler",
        "plugin",
        "hook",
        "component",
        "finder",
        "mapping",
        "converter",
        "factory",
        "formatter",
        "operator",
        "reflect",
        "metadata",
        // Registries of code or assets loaded at start-up (held-out round 2: themes,
        // stylesheets, input types).
        "theme",
        "stylesheet",
        "inputs",
        "command",
        "provider",
        "strategy",
        "middleware",
        "extension",
        "serializer",
        "codec",
        "translation",
        "i18n",
        "icon",
        // GraphQL schema pieces collected at start-up.
        "typedef",
        "resolver",
        // In-flight request coalescing: a promise per key while one fetch runs.
        "promises",
        "inflight",
        "in_flight",
        // Warn-once sets: duplicating them across instances only repeats a log line.
        "warned",
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
            "reload",
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

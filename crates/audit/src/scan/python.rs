//! Detectors for Python: Flask-Session / Django session and cache backends (settings
//! values), module-level dicts/lists/sets written from functions, `lru_cache` keyed by
//! per-user data, file writes in request handlers, background threads and schedulers,
//! Flask-Limiter memory storage and Channels' in-memory layer.
//!
//! Must never flag a module collection filled only at import time or by registration
//! decorators, nor a memoised pure function of configuration.

use std::collections::{BTreeMap, HashSet};

use tree_sitter::Node;

use super::tree::{ancestor, field, named_children, string_value, text, walk};
use super::{FileCtx, Hit, Sink, per_user_name, startup_function};
use crate::Confidence;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Dict,
    List,
    Set,
    Counter,
    Cache,
}

struct Coll<'t> {
    node: Node<'t>,
    kind: Kind,
    writes: Vec<String>,
}

const WRITE_METHODS: &[&str] = &[
    "append",
    "appendleft",
    "add",
    "update",
    "setdefault",
    "pop",
    "popleft",
    "popitem",
    "clear",
    "remove",
    "extend",
    "insert",
    "discard",
    "__setitem__",
    "set",
];

pub(crate) fn scan(root: Node, ctx: &FileCtx, hits: &mut Sink) {
    let src = ctx.src;
    let mut imports: HashSet<String> = HashSet::new();
    let mut decorator_names: HashSet<String> = HashSet::new();
    walk(root, |n| match n.kind() {
        "import_statement" | "import_from_statement" => {
            if let Some(m) = field(n, "module_name") {
                imports.insert(text(m, src).to_string());
            }
            for c in named_children(n) {
                if c.kind() == "dotted_name" {
                    imports.insert(text(c, src).to_string());
                }
            }
        }
        "decorator" => {
            let t = text(n, src).trim_start_matches('@');
            let head = t.split('(').next().unwrap_or(t).trim();
            decorator_names.insert(head.rsplit('.').next().unwrap_or(head).to_string());
        }
        _ => {}
    });

    // Module-level collections and counters.
    let mut colls: BTreeMap<String, Coll> = BTreeMap::new();
    for stmt in named_children(root) {
        if stmt.kind() != "expression_statement" {
            continue;
        }
        let Some(a) = stmt.named_child(0) else {
            continue;
        };
        if a.kind() != "assignment" {
            continue;
        }
        let (Some(left), Some(right)) = (field(a, "left"), field(a, "right")) else {
            continue;
        };
        if left.kind() != "identifier" {
            continue;
        }
        let name = text(left, src);
        if name.starts_with("__") {
            continue;
        }
        if let Some(kind) = collection_kind(right, src) {
            colls.insert(
                name.to_string(),
                Coll {
                    node: a,
                    kind,
                    writes: Vec::new(),
                },
            );
        }
    }

    // Settings-style key/value pairs, wherever they appear.
    let mut has_caches_setting = false;
    let mut installed_apps: Option<Node> = None;
    let mut has_ratelimit_setting = false;
    let mut settings_pairs: Vec<(String, String, Node)> = Vec::new();
    walk(root, |n| match n.kind() {
        "assignment" => {
            let (Some(l), Some(r)) = (field(n, "left"), field(n, "right")) else {
                return;
            };
            let key = match l.kind() {
                "identifier" => Some(text(l, src).to_string()),
                "subscript" => field(l, "subscript").and_then(|s| string_value(s, src)),
                "attribute" => field(l, "attribute").map(|a| text(a, src).to_string()),
                _ => None,
            };
            if let Some(k) = key {
                if k == "CACHES" {
                    has_caches_setting = true;
                }
                if k == "INSTALLED_APPS" && n.parent().and_then(|p| p.parent()) == Some(root) {
                    installed_apps = Some(n);
                }
                if k.starts_with("RATELIMIT_STORAGE") {
                    has_ratelimit_setting = true;
                }
                if let Some(v) = string_value(r, src) {
                    settings_pairs.push((k, v, n));
                }
            }
        }
        "keyword_argument" => {
            if let (Some(k), Some(v)) = (field(n, "name"), field(n, "value"))
                && let Some(v) = string_value(v, src)
            {
                settings_pairs.push((text(k, src).to_string(), v, n));
            }
        }
        "pair" => {
            if let (Some(k), Some(v)) = (field(n, "key"), field(n, "value"))
                && let (Some(k), Some(v)) = (string_value(k, src), string_value(v, src))
            {
                settings_pairs.push((k, v, n));
            }
        }
        _ => {}
    });
    let file_mentions_locmem = settings_pairs
        .iter()
        .any(|(_, v, _)| v.ends_with("LocMemCache"));
    for (k, v, n) in &settings_pairs {
        match k.as_str() {
            "SESSION_TYPE" if v == "filesystem" => hits.push(Hit::at(
                "PY-SESSION-LOCAL",
                *n,
                "Flask-Session SESSION_TYPE = \"filesystem\" keeps sessions on this instance's disk",
            )),
            "SESSION_ENGINE" if v.ends_with(".backends.file") => hits.push(Hit::at(
                "PY-SESSION-LOCAL",
                *n,
                "Django SESSION_ENGINE file backend keeps sessions on this instance's disk",
            )),
            "SESSION_ENGINE" if v.ends_with(".backends.cache") && (file_mentions_locmem || !has_caches_setting) => {
                hits.push(
                    Hit::at("PY-SESSION-LOCAL", *n, "Django cache-only sessions on a local-memory cache")
                        .condition("CACHES is LocMemCache or not configured (Django's default is LocMemCache)"),
                )
            }
            "CACHE_TYPE"
                if matches!(
                    v.rsplit('.').next().unwrap_or(v),
                    "simple" | "SimpleCache" | "filesystem" | "FileSystemCache"
                ) =>
            {
                hits.push(Hit::at(
                    "PY-CACHE-LOCAL",
                    *n,
                    format!("Flask-Caching CACHE_TYPE = \"{v}\" is a per-instance cache"),
                ))
            }
            _ => {}
        }
        if v == "django.core.cache.backends.locmem.LocMemCache"
            || v == "django.core.cache.backends.filebased.FileBasedCache"
        {
            hits.push(Hit::at(
                "PY-CACHE-LOCAL",
                *n,
                format!(
                    "Django cache backend {} is per instance",
                    v.rsplit('.').next().unwrap_or(v)
                ),
            ));
        }
        if v == "channels.layers.InMemoryChannelLayer" {
            hits.push(Hit::at(
                "PY-WS-MEMORY",
                *n,
                "Channels InMemoryChannelLayer keeps groups in this process",
            ));
        }
    }
    let name = ctx.rel.rsplit('/').next().unwrap_or(ctx.rel);
    // Only a single-module `settings.py`: split settings packages define CACHES per
    // environment in sibling modules this file cannot see.
    let settings_file = name == "settings.py";
    if settings_file
        && !has_caches_setting
        && let Some(n) = installed_apps
    {
        hits.push(
            Hit::at(
                "PY-CACHE-LOCAL",
                n,
                "Django settings without CACHES: the default cache is LocMemCache (per process)",
            )
            .condition(
                "CACHES is not set in this settings module; only matters if the cache is used",
            )
            .confidence(Confidence::Low),
        );
    }

    let limiter_imported = imports
        .iter()
        .any(|m| m.starts_with("flask_limiter") || m.starts_with("slowapi"));

    walk(root, |n| match n.kind() {
        "call" => {
            let Some(func) = field(n, "function") else {
                return;
            };
            let ft = text(func, src);
            let last = ft.rsplit('.').next().unwrap_or(ft);
            let args = field(n, "arguments");
            // Writes to module collections.
            if func.kind() == "attribute"
                && let Some(obj) = field(func, "object")
                && obj.kind() == "identifier"
                && WRITE_METHODS.contains(&last)
                && let Some(c) = colls.get_mut(text(obj, src))
                && c.kind != Kind::Counter
                && in_runtime_function(n, src, &decorator_names)
            {
                c.writes.push(last.to_string());
            }
            // open(..., "w") and FileStorage.save in request handlers.
            if ft == "open"
                && let Some(args) = args
                && open_writes(args, src)
                && (in_request_handler(n, src)
                    || (in_runtime_function(n, src, &decorator_names)
                        && args.named_child(0).is_some_and(|a| {
                            let t = text(a, src).to_ascii_lowercase();
                            t.contains("/tmp/") || t.contains("upload")
                        })))
            {
                hits.push(Hit::at(
                    "PY-LOCAL-WRITE",
                    n,
                    "open(..., write mode) in a request handler writes to this instance's disk",
                ));
            }
            if last == "save"
                && func.kind() == "attribute"
                && let Some(obj) = field(func, "object")
                && upload_object(obj, n, src)
            {
                hits.push(Hit::at(
                    "PY-LOCAL-WRITE",
                    n,
                    "uploaded file saved to this instance's disk",
                ));
            }
            // Background jobs.
            let job = match last {
                "Thread" if keyword_is(args, "daemon", "True", src) => Some("daemon thread"),
                "Timer" if ft.contains("threading") || imports.contains("threading") => {
                    Some("threading.Timer")
                }
                "scheduler" if ft == "sched.scheduler" => Some("sched.scheduler"),
                "BackgroundScheduler"
                | "AsyncIOScheduler"
                | "GeventScheduler"
                | "TornadoScheduler" => Some("APScheduler scheduler"),
                "every" if ft.starts_with("schedule.") => Some("schedule job"),
                _ => None,
            };
            if let Some(what) = job {
                hits.push(Hit::at(
                    "PY-INPROC-JOB",
                    n,
                    format!("{what} runs in every instance of the web process"),
                ));
            }
            // Flask-Limiter / slowapi.
            if last == "Limiter" && limiter_imported {
                match keyword_value(args, "storage_uri", src) {
                    Some(v) if v.starts_with("memory://") => hits.push(Hit::at(
                        "PY-RATELIMIT-MEMORY",
                        n,
                        "Limiter with storage_uri=\"memory://\" counts per instance",
                    )),
                    Some(_) => {}
                    None if !has_ratelimit_setting => hits.push(
                        Hit::at(
                            "PY-RATELIMIT-MEMORY",
                            n,
                            "Limiter without storage_uri counts in process memory",
                        )
                        .condition(
                            "no storage_uri / RATELIMIT_STORAGE_URI is set, so memory:// is used",
                        ),
                    ),
                    None => {}
                }
            }
        }
        "assignment" | "augmented_assignment" => {
            let Some(l) = field(n, "left") else { return };
            if l.kind() == "subscript"
                && let Some(v) = field(l, "value")
                && v.kind() == "identifier"
                && let Some(c) = colls.get_mut(text(v, src))
                && c.kind != Kind::Counter
                && in_runtime_function(n, src, &decorator_names)
            {
                c.writes.push("[]=".into());
            }
            if n.kind() == "augmented_assignment"
                && l.kind() == "identifier"
                && let Some(c) = colls.get_mut(text(l, src))
                && c.kind == Kind::Counter
                && in_runtime_function(n, src, &decorator_names)
            {
                c.writes.push("+=".into());
            }
        }
        "delete_statement" => {
            walk(n, |s| {
                if s.kind() == "subscript"
                    && let Some(v) = field(s, "value")
                    && let Some(c) = colls.get_mut(text(v, src))
                    && in_runtime_function(n, src, &decorator_names)
                {
                    c.writes.push("del".into());
                }
            });
        }
        "decorated_definition" => {
            let Some(def) = field(n, "definition") else {
                return;
            };
            if def.kind() != "function_definition" {
                return;
            }
            let cached = named_children(n)
                .into_iter()
                .filter(|d| d.kind() == "decorator")
                .any(|d| {
                    let t = text(d, src).trim_start_matches('@');
                    let head = t.split('(').next().unwrap_or(t).trim();
                    matches!(
                        head.rsplit('.').next().unwrap_or(head),
                        "lru_cache" | "cache" | "cached" | "memoize"
                    )
                });
            if !cached {
                return;
            }
            let mut per_user = Vec::new();
            if let Some(params) = field(def, "parameters") {
                walk(params, |p| {
                    if p.kind() == "identifier" {
                        let name = text(p, src);
                        if p.parent().is_some_and(|pp| {
                            pp.kind() != "default_parameter" || field(pp, "name") == Some(p)
                        }) && (per_user_name(name) || matches!(name, "request" | "req" | "uid"))
                        {
                            per_user.push(name.to_string());
                        }
                    }
                });
            }
            if !per_user.is_empty() {
                let fname = field(def, "name").map(|x| text(x, src)).unwrap_or("?");
                hits.push(Hit::at(
                    "PY-LRU-REQUEST",
                    n,
                    format!(
                        "`{fname}` is memoised in process keyed by per-user data ({})",
                        per_user.join(", ")
                    ),
                ));
            }
        }
        _ => {}
    });

    for (name, c) in colls {
        if c.writes.is_empty() {
            continue;
        }
        let queue = matches!(c.kind, Kind::List)
            && c.writes.iter().any(|w| w == "append" || w == "appendleft")
            && c.writes.iter().any(|w| w == "pop" || w == "popleft");
        let what = match c.kind {
            Kind::Dict => "dict",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::Counter => "counter",
            Kind::Cache => "cache",
        };
        let mut ws: Vec<&str> = c.writes.iter().map(|s| s.as_str()).collect();
        ws.sort();
        ws.dedup();
        let mut hit = Hit::at(
            if queue {
                "PY-QUEUE-MEMORY"
            } else {
                "PY-GLOBAL-MUTABLE"
            },
            c.node,
            if queue {
                format!(
                    "module-level {what} `{name}` is used as an in-process queue ({})",
                    ws.join(", ")
                )
            } else {
                format!(
                    "module-level {what} `{name}` is written from functions ({})",
                    ws.join(", ")
                )
            },
        );
        hit = hit.per_user_if(&name);
        hits.push(hit);
    }
}

fn collection_kind(right: Node, src: &str) -> Option<Kind> {
    match right.kind() {
        "dictionary" => Some(Kind::Dict),
        "list" => Some(Kind::List),
        "set" => Some(Kind::Set),
        "integer" => Some(Kind::Counter),
        "call" => {
            let f = text(field(right, "function")?, src);
            match f.rsplit('.').next().unwrap_or(f) {
                "dict" | "defaultdict" | "OrderedDict" | "Counter" => Some(Kind::Dict),
                "list" | "deque" => Some(Kind::List),
                "set" => Some(Kind::Set),
                "TTLCache" | "LRUCache" | "LFUCache" | "TLRUCache" => Some(Kind::Cache),
                _ => None,
            }
        }
        _ => None,
    }
}

/// True when `n` runs inside a function that is not start-up code: not named like
/// init/setup/register, and not a decorator used in this file (registration decorators
/// run at import time).
fn in_runtime_function(n: Node, src: &str, decorators: &HashSet<String>) -> bool {
    let mut cur = n;
    let mut any = false;
    while let Some(f) = ancestor(cur, &["function_definition"]) {
        let name = field(f, "name").map(|x| text(x, src)).unwrap_or("");
        if startup_function(name) || decorators.contains(name) {
            return false;
        }
        any = true;
        cur = f;
    }
    any
}

fn keyword_value(args: Option<Node>, key: &str, src: &str) -> Option<String> {
    for a in named_children(args?) {
        if a.kind() == "keyword_argument" && field(a, "name").is_some_and(|k| text(k, src) == key) {
            let v = field(a, "value")?;
            return Some(string_value(v, src).unwrap_or_else(|| text(v, src).to_string()));
        }
    }
    None
}

fn keyword_is(args: Option<Node>, key: &str, value: &str, src: &str) -> bool {
    keyword_value(args, key, src).is_some_and(|v| v == value)
}

/// `open(path, "w"/"a"/"x"/"+"...)` or `open(path, mode="w")`.
fn open_writes(args: Node, src: &str) -> bool {
    let positional: Vec<Node> = named_children(args)
        .into_iter()
        .filter(|a| a.kind() != "keyword_argument" && a.kind() != "comment")
        .collect();
    let mode = positional
        .get(1)
        .and_then(|m| string_value(*m, src))
        .or_else(|| keyword_value(Some(args), "mode", src));
    mode.is_some_and(|m| m.contains(['w', 'a', 'x', '+']))
}

/// True inside a route handler: a decorated route function, a view taking `request`,
/// or a function that reads uploaded files.
fn in_request_handler(n: Node, src: &str) -> bool {
    let mut cur = n;
    while let Some(f) = ancestor(cur, &["function_definition"]) {
        if let Some(params) = field(f, "parameters") {
            let mut found = false;
            walk(params, |p| {
                let t = text(p, src);
                if (p.kind() == "identifier" && t == "request")
                    || (p.kind() == "type" && t.contains("UploadFile"))
                {
                    found = true;
                }
            });
            if found {
                return true;
            }
        }
        if let Some(d) = f.parent()
            && d.kind() == "decorated_definition"
        {
            for dec in named_children(d) {
                let t = text(dec, src);
                if dec.kind() == "decorator"
                    && [
                        ".route(",
                        ".get(",
                        ".post(",
                        ".put(",
                        ".patch(",
                        ".delete(",
                        "api_view",
                        "require_http_methods",
                        "require_POST",
                    ]
                    .iter()
                    .any(|k| t.contains(k))
                {
                    return true;
                }
            }
        }
        if let Some(body) = field(f, "body") {
            let t = text(body, src);
            if t.contains("request.files") || t.contains("request.FILES") {
                return true;
            }
        }
        cur = f;
    }
    false
}

/// True when `obj` (the receiver of `.save(...)`) is an uploaded file: `request.files[..]`,
/// `request.FILES[..]`, or a name assigned from one in the same function.
fn upload_object(obj: Node, call: Node, src: &str) -> bool {
    let t = text(obj, src);
    if t.starts_with("request.files") || t.starts_with("request.FILES") {
        return true;
    }
    if obj.kind() != "identifier" {
        return false;
    }
    let Some(f) = ancestor(call, &["function_definition"]) else {
        return false;
    };
    let mut found = false;
    walk(f, |a| {
        if a.kind() == "assignment"
            && let (Some(l), Some(r)) = (field(a, "left"), field(a, "right"))
            && text(l, src) == t
        {
            // Direct access only: a form built *from* request.FILES saves through the
            // storage backend, not to a path chosen here.
            let rt = text(r, src);
            if rt.starts_with("request.files") || rt.starts_with("request.FILES") {
                found = true;
            }
        }
        if a.kind() == "for_statement"
            && field(a, "left").is_some_and(|l| text(l, src) == t)
            && field(a, "right").is_some_and(|r| {
                let rt = text(r, src);
                rt.starts_with("request.files") || rt.starts_with("request.FILES")
            })
        {
            found = true;
        }
    });
    found
}

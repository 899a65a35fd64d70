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

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Dict,
    List,
    Set,
    Counter,
    Cache,
    /// A `queue.Queue` (or similar) object itself.
    Queue,
}

struct Coll<'t> {
    node: Node<'t>,
    kind: Kind,
    writes: Vec<String>,
    /// Values are locks (`defaultdict(threading.Lock)`, `locks[k] = Lock()`).
    locks: bool,
    /// Values are per-subscriber queues (`listeners.append(queue.Queue())`).
    queues: bool,
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
    "put",
    "put_nowait",
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

    // fastapi-utils' `@repeat_every(seconds=...)`: a periodic task started in every
    // instance's event loop.
    if decorator_names.contains("repeat_every") {
        walk(root, |n| {
            if n.kind() == "decorator" {
                let t = text(n, src).trim_start_matches('@');
                let head = t.split('(').next().unwrap_or(t).trim();
                if head.rsplit('.').next() == Some("repeat_every") && !dev_or_test_context(n, src) {
                    hits.push(
                        Hit::at(
                            "PY-INPROC-JOB",
                            n,
                            "@repeat_every periodic task runs in every instance of the web process",
                        )
                        // One scheduler however many periodic functions it starts.
                        .construct("py-repeat-every"),
                    );
                }
            }
        });
    }

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
            let rt = text(right, src);
            colls.insert(
                name.to_string(),
                Coll {
                    node: a,
                    kind,
                    writes: Vec::new(),
                    locks: rt.contains("Lock") || rt.contains("Semaphore"),
                    queues: rt.contains("Queue"),
                },
            );
        }
    }

    // Settings-style key/value pairs, wherever they appear.
    let mut has_caches_setting = false;
    let mut installed_apps: Option<Node> = None;
    let mut has_ratelimit_setting = false;
    let mut settings_pairs: Vec<(String, String, Node)> = Vec::new();
    // (key, fallback value, env var or None, node): `os.environ.get("X") or "sqlite:..."`.
    let mut fallbacks: Vec<(String, String, Option<String>, Node)> = Vec::new();
    let mut search_dirs: Vec<(String, Node)> = Vec::new();
    walk(root, |n| match n.kind() {
        "assignment"
            if !(dev_or_test_context(n, src)
                || field(n, "left").is_some_and(|l| l.kind() == "identifier")
                    && ancestor(n, &["function_definition"]).is_some()) =>
        {
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
                let ku = k.to_ascii_uppercase();
                if ku.starts_with("WHOOSH")
                    && (ku.ends_with("_DIR") || ku.ends_with("_BASE") || ku.ends_with("_PATH"))
                {
                    search_dirs.push((k.clone(), n));
                }
                if let Some(v) = string_value(r, src) {
                    settings_pairs.push((k, v, n));
                } else if let Some((v, env)) = env_fallback(r, src) {
                    fallbacks.push((k, v, env, n));
                } else if let Some(v) = literal_text(r, src) {
                    // `"sqlite:///" + basedir + "/app.db"`: the literal head names the store.
                    settings_pairs.push((k, v, n));
                }
            }
        }
        "keyword_argument" if !dev_or_test_context(n, src) => {
            if let (Some(k), Some(v)) = (field(n, "name"), field(n, "value"))
                && let Some(v) = string_value(v, src)
            {
                settings_pairs.push((text(k, src).to_string(), v, n));
            }
        }
        "pair" if !dev_or_test_context(n, src) => {
            if let (Some(k), Some(v)) = (field(n, "key"), field(n, "value"))
                && let (Some(k), Some(v)) = (string_value(k, src), string_value(v, src))
            {
                settings_pairs.push((k, v, n));
            }
        }
        _ => {}
    });
    for (k, n) in &search_dirs {
        hits.push(Hit::at(
            "PY-SEARCH-LOCAL",
            *n,
            format!("{k}: the Whoosh search index is a directory on this instance's disk"),
        ));
    }
    for (k, v, env, n) in &fallbacks {
        if db_key(k) && v.starts_with("sqlite") {
            let mut h = Hit::at(
                "PY-EMBEDDED-DB",
                *n,
                format!(
                    "{k} falls back to SQLite ({}): the database is a file on this instance",
                    shorten(v)
                ),
            )
            .construct("py-sqlite");
            h = match env {
                Some(e) => h.condition(format!("unless {e} is set")),
                None => h.condition("when the configured value is empty"),
            };
            hits.push(with_branch(h, *n, src));
        }
    }
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
                hits.push(with_branch(
                    Hit::at(
                        "PY-CACHE-LOCAL",
                        *n,
                        format!("Flask-Caching CACHE_TYPE = \"{v}\" is a per-instance cache"),
                    ),
                    *n,
                    src,
                ))
            }
            _ => {}
        }
        // A settings class's engine default (`DB_ENGINE: str = "sqlite"` in a pydantic
        // BaseSettings): SQLite unless the environment names another engine.
        if db_engine_key(k) && matches!(v.to_ascii_lowercase().as_str(), "sqlite" | "sqlite3") {
            hits.push(with_branch(
                Hit::at(
                    "PY-EMBEDDED-DB",
                    *n,
                    format!(
                        "{k} defaults to \"{v}\": the database is a SQLite file on this instance"
                    ),
                )
                .construct("py-sqlite")
                .condition(format!("the code's default, used unless {k} is set")),
                *n,
                src,
            ));
        }
        if (db_key(k) && v.starts_with("sqlite:")) || v == "django.db.backends.sqlite3" {
            hits.push(with_branch(
                Hit::at(
                    "PY-EMBEDDED-DB",
                    *n,
                    format!(
                        "{k} = \"{}\": the database is a SQLite file on this instance",
                        shorten(v)
                    ),
                )
                .construct("py-sqlite"),
                *n,
                src,
            ));
        }
        if v.ends_with("WhooshEngine") || v.ends_with("simple_backend.SimpleEngine") {
            hits.push(Hit::at(
                "PY-SEARCH-LOCAL",
                *n,
                format!(
                    "Haystack {}: the search index is on this instance",
                    v.rsplit('.').next().unwrap_or(v)
                ),
            ));
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
        hits.deferred.push(super::Deferred {
            needs: "uses:django-cache".into(),
            unless: None,
            hit: Hit::at(
                "PY-CACHE-LOCAL",
                n,
                "Django settings without CACHES: the default cache is LocMemCache (per process)",
            )
            .condition(
                "CACHES is not set in this settings module, and the project uses Django's cache",
            ),
        });
    }
    // Uses of Django's cache framework (for the settings default above).
    // (`never_cache` only sets response headers.)
    if imports.iter().any(|m| m.starts_with("django.core.cache")) || ctx.src.contains("cache_page(")
    {
        hits.tags.push("uses:django-cache".into());
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
                let at = args.map(|a| text(a, src)).unwrap_or("");
                c.locks |= at.contains("Lock(") || at.contains("Semaphore(");
                c.queues |= at.contains("Queue(") || queue_var(args, n, src);
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
            if imports.iter().any(|m| m.starts_with("whoosh"))
                && matches!(last, "create_in" | "open_dir")
                || ft == "tantivy.Index"
            {
                hits.push(
                    Hit::at(
                        "PY-SEARCH-LOCAL",
                        n,
                        format!("{ft}(): the search index is on this instance's disk"),
                    )
                    .construct("py-search"),
                );
            }
            if (ft == "sqlite3.connect"
                || (last == "create_engine"
                    && args
                        .and_then(|a| a.named_child(0))
                        .and_then(|a| string_value(a, src))
                        .is_some_and(|v| v.starts_with("sqlite"))))
                && !dev_or_test_context(n, src)
            {
                hits.push(with_branch(
                    Hit::at(
                        "PY-EMBEDDED-DB",
                        n,
                        format!("{ft}(): the database is a SQLite file on this instance"),
                    )
                    .construct("py-sqlite"),
                    n,
                    src,
                ));
            }
            if last == "Broadcast"
                && args
                    .and_then(|a| a.named_child(0))
                    .and_then(|a| string_value(a, src))
                    .is_some_and(|v| v.starts_with("memory://"))
            {
                hits.push(Hit::at(
                    "PY-PUBSUB-MEMORY",
                    n,
                    "Broadcast(\"memory://\") fans out only to this process's subscribers",
                ));
            }
            let job = match last {
                _ if dev_or_test_context(n, src) => None,
                "APScheduler" if imports.iter().any(|m| m.starts_with("flask_apscheduler")) => {
                    Some("Flask-APScheduler scheduler")
                }
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
                let rt = field(n, "right").map(|r| text(r, src)).unwrap_or("");
                c.locks |= rt.contains("Lock(") || rt.contains("Semaphore(");
                c.queues |= rt.contains("Queue(");
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
            // In-process memoisers: functools.lru_cache/cache and cachetools' cached
            // (a bare name, as imported). Flask-Caching's `@cache.memoize` / `@cache.cached`
            // go to whatever backend CACHE_TYPE configures, which is reported there.
            let mut memo: Option<&str> = None;
            let mut wrapper: Option<String> = None;
            for d in named_children(n)
                .into_iter()
                .filter(|d| d.kind() == "decorator")
            {
                let t = text(d, src).trim_start_matches('@');
                let head = t.split('(').next().unwrap_or(t).trim();
                let last = head.rsplit('.').next().unwrap_or(head);
                let module = head.rsplit_once('.').map(|(m, _)| m).unwrap_or("");
                match last {
                    "lru_cache" | "cache" | "ttl_cache" | "lfu_cache" | "fifo_cache"
                    | "rr_cache"
                        if module.is_empty()
                            || module == "functools"
                            || module.ends_with("cachetools.func")
                            || module == "cachetools" =>
                    {
                        memo = Some(last)
                    }
                    "cached"
                        if module.is_empty()
                            && imports.iter().any(|m| m.starts_with("cachetools")) =>
                    {
                        memo = Some(last)
                    }
                    _ if !module.contains('.')
                        && module.is_empty()
                        && !BUILTIN_DECORATORS.contains(&last) =>
                    {
                        wrapper = Some(last.to_string())
                    }
                    _ => {}
                }
            }
            if memo.is_none() && wrapper.is_none() {
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
                match (memo, wrapper) {
                    (Some(m), _) => hits.push(Hit::at(
                        "PY-LRU-REQUEST",
                        n,
                        format!(
                            "`{fname}` is memoised in process by {m} keyed by per-user data ({})",
                            per_user.join(", ")
                        ),
                    )),
                    (None, Some(w)) => hits.deferred.push(super::Deferred {
                        hit: Hit::at(
                            "PY-LRU-REQUEST",
                            n,
                            format!(
                                "`{fname}` is memoised in process by `{w}` (a wrapper around lru_cache) keyed by per-user data ({})",
                                per_user.join(", ")
                            ),
                        ),
                        needs: format!("memo:{w}"),
                        unless: None,
                    }),
                    (None, None) => {}
                }
            }
        }
        _ => {}
    });

    for (name, c) in colls {
        if super::memo_or_registry_name(&name)
            || name.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_')
                && c.writes.iter().all(|w| w == "[]=")
                && !c.locks
        {
            // Memoised computations, registries, and CONSTANT tables filled on first use.
            continue;
        }
        if c.locks && (!c.writes.is_empty() || text(c.node, src).contains("defaultdict")) {
            hits.push(Hit::at(
                "PY-LOCK-MEMORY",
                c.node,
                format!(
                    "module-level lock table `{name}`: its locks exclude only within this process"
                ),
            ));
            continue;
        }
        if c.writes.is_empty() {
            continue;
        }
        if c.queues && c.kind != Kind::Queue {
            hits.push(Hit::at(
                "PY-PUBSUB-MEMORY",
                c.node,
                format!("module-level `{name}` holds a queue per subscriber: events fan out only within this process"),
            ));
            continue;
        }
        let queue = (matches!(c.kind, Kind::List)
            && c.writes.iter().any(|w| w == "append" || w == "appendleft")
            && c.writes.iter().any(|w| w == "pop" || w == "popleft"))
            || (c.kind == Kind::Queue && c.writes.iter().any(|w| w == "put" || w == "put_nowait"));
        let what = match c.kind {
            Kind::Dict => "dict",
            Kind::List => "list",
            Kind::Set => "set",
            Kind::Counter => "counter",
            Kind::Cache => "cache",
            Kind::Queue => "queue",
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

    class_pubsub(root, src, hits);
    exports(root, src, &decorator_names, hits);
}

/// Decorators that are not memoisers and never wrap one.
const BUILTIN_DECORATORS: &[&str] = &[
    "property",
    "staticmethod",
    "classmethod",
    "abstractmethod",
    "wraps",
    "dataclass",
    "contextmanager",
    "asynccontextmanager",
    "overload",
    "override",
    "login_required",
    "route",
];

/// Keys that name a database connection.
/// A key naming the database engine or driver (`DB_ENGINE`, `DATABASE_TYPE`, `db_driver`).
fn db_engine_key(k: &str) -> bool {
    let k = k.to_ascii_uppercase();
    (k.starts_with("DB_") || k.starts_with("DATABASE_"))
        && [
            "_ENGINE", "_TYPE", "_DRIVER", "_DIALECT", "_BACKEND", "_KIND",
        ]
        .iter()
        .any(|s| k.ends_with(s))
}

fn db_key(k: &str) -> bool {
    let k = k.to_ascii_uppercase();
    k.contains("DATABASE")
        || k.contains("SQLALCHEMY")
        || k.ends_with("_DB_URL")
        || k == "DB_URL"
        || k == "DB_URI"
}

fn shorten(v: &str) -> String {
    if v.chars().count() > 60 {
        format!("{}...", v.chars().take(57).collect::<String>())
    } else {
        v.to_string()
    }
}

/// `os.environ.get("X") or "v"`, `os.environ.get("X", "v")`, `os.getenv("X", "v")`,
/// `config("X", default="v")`: the fallback value and the variable that overrides it.
fn env_fallback(r: Node, src: &str) -> Option<(String, Option<String>)> {
    match r.kind() {
        "boolean_operator" => {
            let right = field(r, "right")?;
            let v = literal_text(right, src)?;
            let left = field(r, "left")?;
            Some((v, env_name(left, src)))
        }
        "call" => {
            let f = text(field(r, "function")?, src);
            if !(f.ends_with("environ.get")
                || f.ends_with("getenv")
                || f == "config"
                || f.ends_with("env.str"))
            {
                return None;
            }
            let args = field(r, "arguments")?;
            let pos: Vec<Node> = named_children(args)
                .into_iter()
                .filter(|a| a.kind() != "keyword_argument")
                .collect();
            let v = pos
                .get(1)
                .and_then(|a| literal_text(*a, src))
                .or_else(|| keyword_value(Some(args), "default", src))?;
            Some((v, pos.first().and_then(|a| string_value(*a, src))))
        }
        _ => None,
    }
}

/// The text of a string-ish expression: a literal, an f-string, or a concatenation that
/// starts with a literal (`"sqlite:///" + path`).
fn literal_text(n: Node, src: &str) -> Option<String> {
    match n.kind() {
        "string" => string_value(n, src),
        "binary_operator" => literal_text(field(n, "left")?, src),
        "concatenated_string" => literal_text(n.named_child(0)?, src),
        _ => None,
    }
}

/// The variable read by `os.environ.get("X")` / `os.getenv("X")` / `environ["X"]`.
fn env_name(n: Node, src: &str) -> Option<String> {
    let mut out = None;
    walk(n, |c| {
        if out.is_none() && c.kind() == "string" {
            out = string_value(c, src);
        }
    });
    out
}

/// True inside a test or development configuration class (`class TestingConfig`), or
/// the taken branch of a debug/testing/development check (`if app.debug:`).
fn dev_or_test_context(n: Node, src: &str) -> bool {
    let mut cur = n;
    while let Some(p) = cur.parent() {
        match p.kind() {
            "class_definition" => {
                let name = field(p, "name")
                    .map(|x| text(x, src))
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if ["test", "dev", "debug", "local"]
                    .iter()
                    .any(|k| name.contains(k))
                    && (name.contains("config")
                        || name.contains("settings")
                        || name.starts_with("test"))
                {
                    return true;
                }
            }
            "if_statement" => {
                let cond = field(p, "condition").map(|c| text(c, src)).unwrap_or("");
                let in_body = field(p, "consequence")
                    .is_some_and(|b| b.byte_range().contains(&n.start_byte()));
                let lc = cond.to_ascii_lowercase();
                if in_body
                    && !lc.starts_with("not ")
                    && (lc.contains("debug")
                        || lc.contains("testing")
                        || lc.contains("development")
                        || lc.contains("is_dev"))
                {
                    return true;
                }
            }
            _ => {}
        }
        cur = p;
    }
    false
}

/// A condition about configuration: it reads a setting, an environment variable or a
/// CONSTANT_NAME (not per-request logic such as `"db" not in g`).
fn config_condition(c: &str) -> bool {
    let l = c.to_ascii_lowercase();
    l.contains("config")
        || l.contains("environ")
        || l.contains("getenv")
        || l.contains("settings")
        || c.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .any(|w| {
                w.len() >= 3
                    && w.chars()
                        .all(|ch| ch.is_ascii_uppercase() || ch == '_' || ch.is_ascii_digit())
                    && w.chars().any(|ch| ch.is_ascii_uppercase())
            })
}

/// Adds the condition of the nearest enclosing `if`/`else` to a hit ("unless
/// `CACHE_REDIS_URL`" for the else branch), when the code states one about
/// configuration.
fn with_branch(h: Hit, n: Node, src: &str) -> Hit {
    let mut cur = n;
    while let Some(p) = cur.parent() {
        match p.kind() {
            "function_definition" | "class_definition" | "module" => return h,
            "else_clause" | "elif_clause" => {
                if let Some(i) = p.parent().filter(|i| i.kind() == "if_statement")
                    && let Some(c) = field(i, "condition")
                {
                    let c = text(c, src);
                    if !config_condition(c) {
                        return h;
                    }
                    if c.len() <= 80 && p.kind() == "else_clause" {
                        return h.condition(format!("unless `{c}`"));
                    }
                    if let Some(ec) = field(p, "condition")
                        .map(|x| text(x, src))
                        .filter(|x| x.len() <= 80)
                    {
                        return h.condition(format!("when `{ec}` (and not `{c}`)"));
                    }
                }
                return h;
            }
            "if_statement" => {
                if let Some(c) = field(p, "condition").map(|x| text(x, src))
                    && c.len() <= 80
                    && config_condition(c)
                    && field(p, "consequence")
                        .is_some_and(|b| b.byte_range().contains(&n.start_byte()))
                {
                    return h.condition(format!("when `{c}`"));
                }
                return h;
            }
            _ => {}
        }
        cur = p;
    }
    h
}

/// `lst.append(q)` where `q` was assigned a `Queue(...)` in the same function.
fn queue_var(args: Option<Node>, call: Node, src: &str) -> bool {
    let Some(arg) = args.and_then(|a| a.named_child(0)) else {
        return false;
    };
    if arg.kind() != "identifier" {
        return false;
    }
    let name = text(arg, src);
    let Some(f) = ancestor(call, &["function_definition"]) else {
        return false;
    };
    let mut found = false;
    walk(f, |a| {
        if a.kind() == "assignment"
            && field(a, "left").is_some_and(|l| text(l, src) == name)
            && field(a, "right").is_some_and(|r| text(r, src).contains("Queue("))
        {
            found = true;
        }
    });
    found
}

/// Classes that keep a queue per subscriber in an attribute and publish by putting into
/// each (the SSE "announcer" pattern): in-process fan-out.
fn class_pubsub(root: Node, src: &str, hits: &mut Sink) {
    walk(root, |c| {
        if c.kind() != "class_definition" || dev_or_test_context(c, src) {
            return;
        }
        // A class that publishes through a shared broker and fans out locally from it
        // is the stateless pattern.
        let whole = text(c, src).to_ascii_lowercase();
        if whole.contains("redis") || whole.contains(".pubsub(") || whole.contains("broker") {
            return;
        }
        // self.X attributes that receive queues, and those iterated with .put().
        let mut receives: HashSet<String> = HashSet::new();
        let mut published: HashSet<String> = HashSet::new();
        let mut init: std::collections::HashMap<String, Node> = Default::default();
        let mut queue_locals: HashSet<String> = HashSet::new();
        walk(c, |n| {
            if n.kind() == "assignment"
                && let (Some(l), Some(r)) = (field(n, "left"), field(n, "right"))
            {
                let rt = text(r, src);
                if l.kind() == "identifier" && rt.contains("Queue") {
                    queue_locals.insert(text(l, src).to_string());
                }
                let lt = text(l, src);
                if let Some(attr) = lt.strip_prefix("self.")
                    && !attr.contains(['.', '['])
                    && ancestor(n, &["function_definition"])
                        .and_then(|f| field(f, "name"))
                        .is_some_and(|x| text(x, src) == "__init__")
                {
                    init.insert(attr.to_string(), n);
                }
                if l.kind() == "subscript"
                    && let Some(v) = field(l, "value")
                    && let Some(attr) = text(v, src).strip_prefix("self.")
                    && (rt.contains("Queue(") || queue_locals.contains(rt))
                {
                    receives.insert(attr.to_string());
                }
            }
            if n.kind() == "call"
                && let Some(f) = field(n, "function")
                && f.kind() == "attribute"
                && let Some(obj) = field(f, "object")
                && let Some(attr) = text(obj, src).strip_prefix("self.")
                && matches!(
                    field(f, "attribute").map(|a| text(a, src)),
                    Some("append" | "add")
                )
                && field(n, "arguments").is_some_and(|a| {
                    let t = text(a, src).trim_matches(['(', ')']).to_string();
                    t.contains("Queue(") || queue_locals.contains(&t)
                })
            {
                receives.insert(attr.to_string());
            }
            if n.kind() == "for_statement"
                && let Some(r) = field(n, "right")
                && let Some(body) = field(n, "body")
            {
                let rt = text(r, src);
                let bt = text(body, src);
                if (bt.contains(".put(") || bt.contains(".put_nowait("))
                    && let Some(i) = rt.find("self.")
                {
                    let attr: String = rt[i + 5..]
                        .chars()
                        .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                        .collect();
                    published.insert(attr);
                }
            }
        });
        for attr in receives.intersection(&published) {
            let at = init.get(attr).copied().unwrap_or(c);
            let cname = field(c, "name").map(|x| text(x, src)).unwrap_or("?");
            hits.push(Hit::at(
                "PY-PUBSUB-MEMORY",
                at,
                format!("`{cname}.{attr}` keeps a queue per subscriber and publishes to each: events reach only clients of this process"),
            ));
        }
    });
}

/// Per-function facts for the cross-file pass: calls, local-disk writes not already
/// reported, whether it is a request handler; and memoiser wrappers defined here.
fn exports(root: Node, src: &str, decorators: &HashSet<String>, sink: &mut Sink) {
    walk(root, |d| {
        if d.kind() != "function_definition" {
            return;
        }
        let name = field(d, "name")
            .map(|x| text(x, src))
            .unwrap_or("")
            .to_string();
        let body = field(d, "body");
        let body_text = body.map(|b| text(b, src)).unwrap_or("");
        if body_text.contains("lru_cache") || body_text.contains("functools.cache") {
            sink.tags.push(format!("memo:{name}"));
        }
        if dev_or_test_context(d, src) {
            return;
        }
        let owner = ancestor(d, &["class_definition"])
            .and_then(|c| field(c, "name"))
            .map(|x| text(x, src).to_string());
        let mut info = super::FuncInfo {
            name,
            owner,
            handler: is_handler_def(d, src),
            row: d.start_position().row,
            ..Default::default()
        };
        let Some(body) = body else { return };
        walk(body, |n| {
            if n.kind() != "call" {
                return;
            }
            // Calls in nested functions belong to those.
            if ancestor(n, &["function_definition"]) != Some(d) {
                return;
            }
            let Some(f) = field(n, "function") else {
                return;
            };
            let ft = text(f, src);
            let (last, recv) = super::link::callee_and_receiver(f, "attribute", "object", src);
            let last = last.as_str();
            info.calls.push(last.to_string());
            info.receivers.push(recv);
            if info.handler || !in_runtime_function(n, src, decorators) {
                return;
            }
            let args = field(n, "arguments");
            let write = (ft == "open" && args.is_some_and(|a| open_writes(a, src)))
                || matches!(
                    ft,
                    "shutil.copyfileobj"
                        | "shutil.copy"
                        | "shutil.copy2"
                        | "shutil.copyfile"
                        | "shutil.move"
                        | "os.rename"
                        | "os.replace"
                )
                || matches!(last, "write_bytes" | "write_text");
            if write {
                info.writes.push(super::LocalWrite {
                    rule: "PY-LOCAL-WRITE",
                    row: n.start_position().row,
                    col: n.start_position().column,
                    what: format!("{}(...)", ft),
                });
            }
        });
        // One write site per function is enough to name it.
        info.writes.truncate(1);
        sink.funcs.push(info);
    });
}

/// A request handler definition: a route-decorated function, a view taking `request`,
/// an HTTP-verb method of a class-based view/resource, or a function reading the
/// request's files or form.
fn is_handler_def(d: Node, src: &str) -> bool {
    let name = field(d, "name").map(|x| text(x, src)).unwrap_or("");
    if let Some(c) = ancestor(d, &["class_definition"])
        && matches!(name, "get" | "post" | "put" | "patch" | "delete")
        && field(c, "superclasses").is_some_and(|s| {
            let t = text(s, src);
            [
                "Resource",
                "View",
                "MethodView",
                "APIView",
                "ViewSet",
                "Handler",
                "Endpoint",
            ]
            .iter()
            .any(|k| t.contains(k))
        })
    {
        return true;
    }
    if let Some(body) = field(d, "body") {
        let t = text(body, src);
        if t.contains("request.files") || t.contains("request.FILES") || t.contains("request.form")
        {
            return true;
        }
    }
    if let Some(b) = field(d, "body").and_then(|b| b.named_child(0)) {
        return in_request_handler(b, src) && ancestor(b, &["function_definition"]) == Some(d);
    }
    false
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
                "Queue" | "SimpleQueue" | "LifoQueue" | "PriorityQueue" | "JoinableQueue" => {
                    Some(Kind::Queue)
                }
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
        if startup_function(name) || decorators.contains(name) || returns_first_param(f, src) {
            return false;
        }
        any = true;
        cur = f;
    }
    any
}

/// A function that returns its first parameter (`def JSEnum(cls): REGISTRY[...] = cls;
/// return cls`): a registration decorator, run at import time.
fn returns_first_param(f: Node, src: &str) -> bool {
    let Some(first) = field(f, "parameters").and_then(|p| p.named_child(0)) else {
        return false;
    };
    if first.kind() != "identifier" {
        return false;
    }
    let p = text(first, src);
    let Some(body) = field(f, "body") else {
        return false;
    };
    named_children(body).iter().any(|st| {
        st.kind() == "return_statement" && st.named_child(0).is_some_and(|v| text(v, src) == p)
    })
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

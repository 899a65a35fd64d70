//! Detectors for Rust: `static`/`lazy_static!`/`OnceLock`/`LazyLock` collections behind a
//! lock, `Arc<Mutex<HashMap>>` (or DashMap) in web application state (named by what it
//! holds: sessions, rate-limit counters, caches, or generic state), in-memory session
//! stores, tokio broadcast channels in state, interval loops and in-process schedulers
//! (clokwerk, tokio-cron-scheduler), moka/cached/lru caches, SQLite databases, uploads
//! written to disk, governor limiters.
//!
//! A file counts as web code when it imports a web framework or its crate depends on one
//! (`Cargo.toml`), so a store defined in a module without `use axum` is still seen.
//! Must never flag an immutable `static`/`Lazy`/`OnceLock` table (no lock, nothing to
//! write), nor code in `#[cfg(test)]` modules; one store is reported once however many
//! times its type is spelled in the file.

use std::collections::HashSet;

use tree_sitter::Node;

use super::tree::{ancestor, field, named_children, text, walk};
use super::{FileCtx, Hit, Sink, per_user_name};
use crate::Confidence;

const LOCKS: &[&str] = &[
    "Mutex", "RwLock", "RefCell", "DashMap", "DashSet", "ArcSwap", "SkipMap",
];
const COLLECTIONS: &[&str] = &[
    "HashMap", "BTreeMap", "Vec", "HashSet", "BTreeSet", "VecDeque", "DashMap", "DashSet",
    "LruCache", "IndexMap", "SkipMap",
];
/// Web framework dependencies (as named in Cargo.toml).
const WEB_DEPS: &[&str] = &[
    "axum",
    "actix-web",
    "warp",
    "rocket",
    "poem",
    "salvo",
    "tide",
    "loco-rs",
];
const WEB_CRATES: &[&str] = &[
    "axum",
    "actix_web",
    "warp",
    "rocket",
    "poem",
    "salvo",
    "tide",
    "loco_rs",
];

/// Type and path identifiers under `n`.
fn idents<'a>(n: Node, src: &'a str) -> HashSet<&'a str> {
    let mut s = HashSet::new();
    walk(n, |c| {
        if matches!(c.kind(), "type_identifier" | "identifier") {
            s.insert(text(c, src));
        }
    });
    s
}

fn locked_collection(ids: &HashSet<&str>, extra: &HashSet<String>) -> bool {
    let has_lock = ids.iter().any(|i| LOCKS.contains(i));
    let has_coll = ids
        .iter()
        .any(|i| COLLECTIONS.contains(i) || extra.contains(*i));
    (has_lock && has_coll) || ids.contains("DashMap") || ids.contains("DashSet")
}

/// Byte ranges of test code: `mod tests` and `#[test]`/`#[cfg(test)]` items. Computed
/// once per file (checking ancestors and siblings per node was quadratic on large files).
fn test_ranges(root: Node, src: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    walk(root, |n| {
        if n.kind() == "mod_item"
            && field(n, "name").is_some_and(|x| matches!(text(x, src), "tests" | "test"))
        {
            out.push(n.byte_range());
        }
        if n.kind() == "attribute_item" && text(n, src).contains("test") {
            // The item after this attribute and any attributes that follow it.
            let mut next = n.next_named_sibling();
            while let Some(x) = next
                && (x.kind() == "attribute_item" || x.kind() == "line_comment")
            {
                next = x.next_named_sibling();
            }
            if let Some(x) = next {
                out.push(x.byte_range());
            }
        }
    });
    // Merge nested and overlapping ranges so lookups can binary-search.
    out.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<usize>> = Vec::new();
    for r in out {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// True when byte `at` lies in one of the merged, sorted `ranges`.
fn in_ranges(ranges: &[std::ops::Range<usize>], at: usize) -> bool {
    let i = ranges.partition_point(|r| r.end <= at);
    ranges.get(i).is_some_and(|r| r.start <= at)
}

pub(crate) fn scan(root: Node, ctx: &FileCtx, hits: &mut Sink) {
    let src = ctx.src;
    let mut uses: Vec<&str> = Vec::new();
    walk(root, |n| {
        if n.kind() == "use_declaration"
            && let Some(a) = field(n, "argument")
        {
            uses.push(text(a, src));
        }
    });
    let web = uses
        .iter()
        .any(|u| WEB_CRATES.iter().any(|w| u.starts_with(w)))
        || text(root, src).contains("#[actix_web::main]")
        || WEB_DEPS.iter().any(|d| ctx.has_dep(d));
    let sessions = uses.iter().any(|u| u.contains("session"));
    let governor = uses.iter().any(|u| u.contains("governor"));
    let moka = uses.iter().any(|u| {
        u.starts_with("moka")
            || u.starts_with("mini_moka")
            || u.starts_with("quick_cache")
            || u.starts_with("lru")
            || u.starts_with("cached")
    }) || ["moka", "quick_cache", "\nlru ", "\ncached "]
        .iter()
        .any(|d| ctx.has_dep(d));
    let broadcast = uses.iter().any(|u| u.contains("broadcast"));
    let scheduler = uses.iter().any(|u| {
        u.starts_with("clokwerk")
            || u.starts_with("tokio_cron_scheduler")
            || u.starts_with("job_scheduler")
    });
    let sqlite = uses
        .iter()
        .any(|u| u.contains("sqlite") || u.contains("Sqlite") || u.starts_with("rusqlite"));

    // Structs that hold collections: a lock around one of them guards a collection.
    let mut coll_structs: HashSet<String> = HashSet::new();
    walk(root, |n| {
        if n.kind() == "struct_item"
            && let (Some(name), Some(body)) = (field(n, "name"), field(n, "body"))
            && idents(body, src).iter().any(|i| COLLECTIONS.contains(i))
        {
            coll_structs.insert(text(name, src).to_string());
        }
    });

    // Type-level state (fields, aliases) already names the store; constructor calls are
    // only reported when the file has none, so one store is not reported twice.
    let mut typed_state = false;
    walk(root, |n| {
        if n.kind() == "generic_type"
            && web
            && ancestor(n, &["field_declaration", "type_item"]).is_some()
            && locked_collection(&idents(n, src), &coll_structs)
        {
            typed_state = true;
        }
    });
    // A module that takes multipart uploads: its file writes store uploads.
    let upload_module = text(root, src).contains("Multipart");
    let tests = test_ranges(root, src);
    rs_exports(root, src, &tests, hits);
    walk(root, |n| {
        if in_ranges(&tests, n.start_byte()) {
            return;
        }
        match n.kind() {
            "static_item" => {
                let name = field(n, "name").map(|x| text(x, src)).unwrap_or("?");
                if super::memo_or_registry_name(name) || name.to_ascii_lowercase().contains("css") {
                    return;
                }
                let Some(ty) = field(n, "type") else { return };
                let ids = idents(ty, src);
                let is_mut = named_children(n)
                    .iter()
                    .any(|c| c.kind() == "mutable_specifier");
                if moka && ids.iter().any(|i| i.contains("Cache")) {
                    hits.push(Hit::at(
                        "RS-CACHE-LOCAL",
                        n,
                        format!(
                            "static `{name}` is an in-process cache ({})",
                            squash(text(ty, src))
                        ),
                    ));
                    return;
                }
                if locked_collection(&ids, &coll_structs)
                    || (is_mut && ids.iter().any(|i| COLLECTIONS.contains(i)))
                {
                    let mut h = Hit::at(
                        "RS-STATIC-MAP",
                        n,
                        format!(
                            "static `{name}` holds a mutable collection ({})",
                            text(ty, src)
                        ),
                    );
                    h = h.per_user_if(name);
                    hits.push(h);
                }
            }
            "macro_invocation" => {
                let m = field(n, "macro").map(|x| text(x, src)).unwrap_or("");
                // thread_local! scratch state is per thread by design.
                if m != "lazy_static" {
                    return;
                }
                let ids = idents(n, src);
                if locked_collection(&ids, &coll_structs) {
                    let name = named_children(n)
                        .into_iter()
                        .find(|t| t.kind() == "token_tree")
                        .and_then(|t| {
                            let v = named_children(t);
                            let i = v.iter().position(|x| {
                                text(*x, src) == "ref" || text(*x, src) == "static"
                            })?;
                            v.get(i + 1).map(|x| text(*x, src))
                        })
                        .unwrap_or("?");
                    let mut h = Hit::at(
                        "RS-STATIC-MAP",
                        n,
                        format!("{m}! `{name}` holds a mutable collection"),
                    );
                    h = h.per_user_if(name);
                    hits.push(h);
                }
            }
            "generic_type" if web => {
                let head = field(n, "type").map(|t| text(t, src)).unwrap_or("");
                let head = head.rsplit("::").next().unwrap_or(head);
                if !matches!(head, "Mutex" | "RwLock" | "DashMap" | "DashSet") {
                    return;
                }
                if ancestor(n, &["static_item", "macro_invocation"]).is_some() {
                    return;
                }
                // Report the outermost lock only.
                if ancestor(n, &["generic_type"]).is_some_and(|p| {
                    let h = field(p, "type").map(|t| text(t, src)).unwrap_or("");
                    matches!(
                        h.rsplit("::").next().unwrap_or(h),
                        "Mutex" | "RwLock" | "DashMap"
                    )
                }) {
                    return;
                }
                // Only types that name state: struct/enum fields and type aliases (a
                // local `let` is not application state).
                if ancestor(
                    n,
                    &[
                        "field_declaration",
                        "type_item",
                        "function_item",
                        "let_declaration",
                    ],
                )
                .is_none_or(|h| !matches!(h.kind(), "field_declaration" | "type_item"))
                {
                    return;
                }
                let ids = idents(n, src);
                if locked_collection(&ids, &coll_structs) {
                    let names = holder_names(n, src);
                    if names.iter().any(|x| metrics_name(x)) {
                        return;
                    }
                    let name = names.first().cloned().unwrap_or_default();
                    let rule = store_rule(&names, &ids, ctx.rel);
                    let what = match rule {
                        "RS-SESSION-MEMORY" => "session store in process memory",
                        "RS-PUBSUB-MEMORY" => {
                            "subscribers kept in this process: messages reach only its clients"
                        }
                        "RS-RATELIMIT-MEMORY" => "rate-limit counters in process memory",
                        "RS-CACHE-LOCAL" => "in-process cache",
                        _ => "per-instance store in web application state",
                    };
                    let mut h = Hit::at(
                        rule,
                        n,
                        format!(
                            "{} : {what}{}",
                            squash(text(n, src)),
                            if name.is_empty() {
                                String::new()
                            } else {
                                format!(" `{}`", names.join("` in `"))
                            }
                        ),
                    )
                    .construct(format!("rs-store:{}", squash(text(n, src))));
                    h.per_user = names.iter().any(|x| per_user_name(x))
                        || ids.iter().any(|i| per_user_name(i));
                    hits.push(h);
                }
            }
            "field_declaration" | "let_declaration" => {
                let Some(ty) = field(n, "type") else { return };
                let tt = text(ty, src);
                let name = field(n, "name")
                    .or_else(|| field(n, "pattern"))
                    .map(|x| text(x, src))
                    .unwrap_or("");
                if moka
                    && n.kind() == "field_declaration"
                    && (tt.starts_with("Cache<")
                        || tt.contains("::Cache<")
                        || tt.starts_with("LruCache<"))
                {
                    hits.push(
                        Hit::at(
                            "RS-CACHE-LOCAL",
                            n,
                            format!("`{name}: {}` is an in-process cache", squash(tt)),
                        )
                        .construct(format!("rs-cache:{name}")),
                    );
                }
                if (broadcast || tt.contains("broadcast::"))
                    && (tt.contains("broadcast::Sender")
                        || (broadcast && tt.starts_with("Sender<")))
                    && n.kind() == "field_declaration"
                {
                    hits.push(
                        Hit::at(
                            "RS-PUBSUB-MEMORY",
                            n,
                            format!(
                                "`{name}: {}` fans messages out to subscribers of this process only",
                                squash(tt)
                            ),
                        )
                        .construct("rs-broadcast"),
                    );
                }
            }
            "call_expression" => {
                let Some(func) = field(n, "function") else {
                    return;
                };
                let ft_full = text(func, src);
                // `broadcast::channel::<String>` → `broadcast::channel`.
                let ft = ft_full.split("::<").next().unwrap_or(ft_full);
                let last = ft.rsplit("::").next().unwrap_or(ft);
                let last = last.rsplit('.').next().unwrap_or(last);
                if web
                    && !typed_state
                    && (ft.ends_with("Mutex::new") || ft.ends_with("RwLock::new"))
                    && ancestor(n, &["static_item", "macro_invocation"]).is_none()
                    && ancestor(n, &["call_expression"]).is_none_or(|p| {
                        let pt = field(p, "function").map(|f| text(f, src)).unwrap_or("");
                        !(pt.ends_with("Mutex::new") || pt.ends_with("RwLock::new"))
                    })
                    && let Some(arg) = field(n, "arguments").and_then(|a| a.named_child(0))
                {
                    let at = text(arg, src);
                    if [
                        "HashMap::",
                        "BTreeMap::",
                        "HashSet::",
                        "Vec::new",
                        "VecDeque::",
                        "vec!",
                    ]
                    .iter()
                    .any(|p| at.starts_with(p))
                    {
                        hits.push(Hit::at(
                            "RS-STATE-MAP",
                            n,
                            format!("{ft}({at}) shared as application state: per-instance store"),
                        ));
                    }
                }
                if sessions
                    && (ft.ends_with("MemoryStore::default") || ft.ends_with("MemoryStore::new"))
                {
                    hits.push(Hit::at(
                        "RS-SESSION-MEMORY",
                        n,
                        "session MemoryStore keeps sessions in this process",
                    ));
                }
                if scheduler
                    && matches!(
                        ft,
                        "AsyncScheduler::new"
                            | "AsyncScheduler::with_tz"
                            | "Scheduler::new"
                            | "Scheduler::with_tz"
                            | "JobScheduler::new"
                            | "clokwerk::AsyncScheduler::new"
                            | "clokwerk::Scheduler::new"
                    )
                {
                    hits.push(Hit::at(
                        "RS-INTERVAL-JOB",
                        n,
                        format!("{ft}: an in-process scheduler runs its jobs in every instance"),
                    ));
                }
                if (broadcast || ft.contains("broadcast::"))
                    && (ft.ends_with("broadcast::channel") || (broadcast && ft == "channel"))
                {
                    hits.push(
                        Hit::at(
                            "RS-PUBSUB-MEMORY",
                            n,
                            format!("{ft}(): an in-process broadcast; subscribers on other instances never see its messages"),
                        )
                        .construct("rs-broadcast")
                        .confidence(Confidence::Medium),
                    );
                }
                if sqlite
                    && matches!(
                        last,
                        "connect" | "connect_with" | "connect_lazy" | "open" | "establish" | "new"
                    )
                    && (ft.contains("Sqlite")
                        || ft.starts_with("Connection::open")
                        || ft.starts_with("rusqlite::"))
                {
                    let mut h = Hit::at(
                        "RS-EMBEDDED-DB",
                        n,
                        format!(
                            "{}: the application's data is a SQLite file on this instance",
                            short_call(ft)
                        ),
                    )
                    .construct("rs-sqlite");
                    let whole = text(root, src);
                    if whole.contains("Postgres")
                        || whole.contains("postgres")
                        || whole.contains("MySql")
                    {
                        h = h.condition("SQLite is one of the supported databases: local only when the configured database URL is sqlite:");
                    }
                    hits.push(h);
                }
                if (last == "interval" || last == "interval_at") && in_spawn(n, src) {
                    hits.push(Hit::at(
                        "RS-INTERVAL-JOB",
                        n,
                        "interval loop in a spawned task runs in every instance",
                    ));
                }
                if matches!(
                    ft,
                    "File::create"
                        | "fs::write"
                        | "std::fs::write"
                        | "tokio::fs::write"
                        | "fs::File::create"
                        | "tokio::fs::File::create"
                        | "std::fs::File::create"
                        | "fs::copy"
                        | "tokio::fs::copy"
                        | "fs::rename"
                        | "tokio::fs::rename"
                ) && (in_upload_fn(n, src) || upload_module && !in_main(n, src))
                {
                    hits.push(Hit::at(
                        "RS-LOCAL-WRITE",
                        n,
                        format!("{ft} in an upload handler writes to this instance's disk"),
                    ));
                }
                if governor
                    && matches!(
                        ft,
                        "RateLimiter::keyed"
                            | "RateLimiter::direct"
                            | "RateLimiter::hashmap"
                            | "RateLimiter::dashmap"
                    )
                {
                    // A limiter built in a static's initialiser is reported at the static.
                    let at = ancestor(n, &["static_item"]).unwrap_or(n);
                    hits.push(Hit::at(
                        "RS-RATELIMIT-MEMORY",
                        at,
                        format!("governor {ft}: counts kept in this process"),
                    ));
                }
            }
            "struct_expression" | "scoped_identifier" | "identifier" | "type_identifier"
                if governor
                    && text(n, src) == "GovernorConfigBuilder"
                    && ancestor(n, &["use_declaration"]).is_none() =>
            {
                hits.push(Hit::at(
                    "RS-RATELIMIT-MEMORY",
                    n,
                    "tower_governor / actix-governor: counts kept in this process",
                ));
            }
            _ => {}
        }
    });
}

/// The names that say what a store is: its field or binding, then the enclosing enum
/// variant, enum/struct, and type alias.
fn holder_names(n: Node, src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = n.parent();
    while let Some(p) = cur {
        match p.kind() {
            "field_declaration" | "let_declaration" | "parameter" | "type_item" => {
                if let Some(x) = field(p, "name").or_else(|| field(p, "pattern")) {
                    out.push(text(x, src).to_string());
                }
            }
            "enum_variant" | "struct_item" | "enum_item" => {
                if let Some(x) = field(p, "name") {
                    out.push(text(x, src).to_string());
                }
            }
            "function_item" | "impl_item" | "source_file" => break,
            _ => {}
        }
        cur = p.parent();
    }
    out
}

/// Names of per-instance telemetry (metrics, counters, stats): scraped from each instance
/// by design, not state that breaks a scale-out.
fn metrics_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "metric",
        "stats",
        "telemetry",
        "histogram",
        "counter",
        "prometheus",
    ]
    .iter()
    .any(|k| n.contains(k))
}

/// Which rule a locked collection belongs to, from what its names say it holds.
fn store_rule(names: &[String], ids: &HashSet<&str>, rel: &str) -> &'static str {
    let all = names
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .chain(ids.iter().map(|s| s.to_ascii_lowercase()))
        .collect::<Vec<_>>();
    let lrel = rel.to_ascii_lowercase();
    if all.iter().any(|s| s.contains("session")) {
        "RS-SESSION-MEMORY"
    } else if all.iter().any(|s| {
        [
            "sender",
            "subscriber",
            "listener",
            "socket",
            "websocket",
            "channel",
        ]
        .iter()
        .any(|k| s.contains(k))
    }) {
        "RS-PUBSUB-MEMORY"
    } else if all.iter().any(|s| {
        s.contains("ratelimit")
            || s.contains("rate_limit")
            || s.contains("limiter")
            || s.contains("throttl")
    }) || lrel.contains("rate_limit")
        || lrel.contains("ratelimit")
    {
        "RS-RATELIMIT-MEMORY"
    } else if names.iter().any(|s| {
        let s = s.to_ascii_lowercase();
        s.contains("cache") && !s.contains("cache_hit") && !s.contains("cache_miss")
    }) {
        "RS-CACHE-LOCAL"
    } else {
        "RS-STATE-MAP"
    }
}

/// A callee for messages: a method chain is shortened to its head and last call
/// (`SqlitePoolOptions::new()...connect_with`).
fn short_call(ft: &str) -> String {
    let head = ft.split(['(', '\n']).next().unwrap_or(ft).trim();
    let last = ft.rsplit('.').next().unwrap_or(ft).trim();
    if head == ft.trim() || last == head {
        head.to_string()
    } else {
        format!("{head}(...).{last}")
    }
}

/// A type or expression text with whitespace removed and turbofish `::<` folded to `<`,
/// so two spellings of one type compare equal.
fn squash(t: &str) -> String {
    t.split_whitespace().collect::<String>().replace("::<", "<")
}

/// Functions for the cross-file pass: handlers (they take web extractors) and the
/// storage code they call.
fn rs_exports(root: Node, src: &str, tests: &[std::ops::Range<usize>], sink: &mut Sink) {
    let shape = super::link::FuncShape {
        funcs: &["function_item"],
        calls: &["call_expression"],
        name: &|f| {
            (!in_ranges(tests, f.start_byte()))
                .then(|| field(f, "name").map(|n| text(n, src).to_string()))?
        },
        owner: &|f| {
            ancestor(f, &["impl_item"])
                .and_then(|i| field(i, "type"))
                .map(|t| text(t, src).to_string())
        },
        handler: &|f| {
            field(f, "parameters").is_some_and(|p| {
                let t = text(p, src);
                [
                    "Multipart",
                    "State(",
                    "Json(",
                    "Path(",
                    "Query(",
                    "Form(",
                    "HttpRequest",
                    "web::",
                    "Json<",
                    "Form<",
                    "Data<",
                ]
                .iter()
                .any(|k| t.contains(k))
            }) || route_attribute(f, src)
        },
        callee: &|n| {
            let f = field(n, "function")?;
            let t = text(f, src);
            let (recv, last) = match f.kind() {
                "field_expression" => (
                    field(f, "value").map(|v| text(v, src)).unwrap_or(""),
                    field(f, "field").map(|x| text(x, src)).unwrap_or(""),
                ),
                _ => ("", t.rsplit("::").next().unwrap_or(t)),
            };
            Some((last.to_string(), recv.to_string()))
        },
        write: &|n| {
            let t = field(n, "function").map(|f| text(f, src))?;
            // An object-store operator (opendal) writing to its default local backend.
            if let Some(f) = field(n, "function")
                && f.kind() == "field_expression"
                && field(f, "value").is_some_and(|v| text(v, src).contains("operator"))
                && field(f, "field")
                    .is_some_and(|x| matches!(text(x, src), "write" | "writer" | "writer_with"))
            {
                return Some(format!(
                    "{t}(...) through the storage operator (local disk unless an object store is configured)"
                ));
            }
            matches!(
                t,
                "File::create"
                    | "fs::write"
                    | "std::fs::write"
                    | "tokio::fs::write"
                    | "fs::File::create"
                    | "tokio::fs::File::create"
                    | "std::fs::File::create"
                    | "fs::copy"
                    | "tokio::fs::copy"
                    | "fs::rename"
                    | "tokio::fs::rename"
            )
            .then(|| format!("{t}(...)"))
        },
        rule: "RS-LOCAL-WRITE",
    };
    super::link::collect(root, &shape, sink);
}

/// A Rocket/actix route attribute (`#[post("/...")]`) on the function.
fn route_attribute(f: Node, src: &str) -> bool {
    let mut prev = f.prev_named_sibling();
    while let Some(p) = prev {
        if p.kind() != "attribute_item" {
            break;
        }
        let t = text(p, src);
        if [
            "#[get(",
            "#[post(",
            "#[put(",
            "#[delete(",
            "#[patch(",
            "#[head(",
        ]
        .iter()
        .any(|k| t.starts_with(k))
        {
            return true;
        }
        prev = p.prev_named_sibling();
    }
    false
}

/// Inside a closure or async block passed to `spawn`.
fn in_spawn(n: Node, src: &str) -> bool {
    let mut cur = n.parent();
    while let Some(p) = cur {
        if p.kind() == "call_expression"
            && field(p, "function").is_some_and(|f| {
                let t = text(f, src);
                t.ends_with("spawn") || t.ends_with("spawn_local")
            })
        {
            return true;
        }
        cur = p.parent();
    }
    false
}

/// Inside `fn main` (start-up code).
fn in_main(n: Node, src: &str) -> bool {
    ancestor(n, &["function_item"])
        .and_then(|f| field(f, "name"))
        .is_some_and(|x| text(x, src) == "main")
}

/// Inside a function taking a multipart upload.
fn in_upload_fn(n: Node, src: &str) -> bool {
    let Some(f) = ancestor(n, &["function_item"]) else {
        return false;
    };
    field(f, "parameters").is_some_and(|p| {
        let t = text(p, src);
        t.contains("Multipart") || t.contains("TempFile")
    })
}

//! Detectors for Rust: `static`/`lazy_static!`/`OnceLock`/`LazyLock` collections behind a
//! lock, `Arc<Mutex<HashMap>>` (or DashMap) in web application state, in-memory session
//! stores, `tokio::spawn` interval loops, uploads written to disk, governor limiters.
//!
//! Must never flag an immutable `static`/`Lazy` table (no lock, nothing to write), nor
//! code in `#[cfg(test)]` modules.

use std::collections::HashSet;

use tree_sitter::Node;

use super::tree::{ancestor, field, named_children, text, walk};
use super::{FileCtx, Hit, per_user_name};
use crate::Severity;

const LOCKS: &[&str] = &[
    "Mutex", "RwLock", "RefCell", "DashMap", "DashSet", "ArcSwap", "SkipMap",
];
const COLLECTIONS: &[&str] = &[
    "HashMap", "BTreeMap", "Vec", "HashSet", "BTreeSet", "VecDeque", "DashMap", "DashSet",
    "LruCache", "IndexMap", "SkipMap",
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
        if n.kind() == "mod_item" && field(n, "name").is_some_and(|x| text(x, src) == "tests") {
            out.push(n.byte_range());
        }
        if n.kind() == "attribute_item"
            && text(n, src).contains("test")
            && let Some(next) = n.next_named_sibling()
        {
            out.push(next.byte_range());
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

pub(crate) fn scan(root: Node, ctx: &FileCtx, hits: &mut Vec<Hit>) {
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
        || text(root, src).contains("#[actix_web::main]");
    let sessions = uses.iter().any(|u| u.contains("session"));
    let governor = uses.iter().any(|u| u.contains("governor"));

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
    walk(root, |n| {
        if in_ranges(&tests, n.start_byte()) {
            return;
        }
        match n.kind() {
            "static_item" => {
                let name = field(n, "name").map(|x| text(x, src)).unwrap_or("?");
                let Some(ty) = field(n, "type") else { return };
                let ids = idents(ty, src);
                let is_mut = named_children(n)
                    .iter()
                    .any(|c| c.kind() == "mutable_specifier");
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
                    if per_user_name(name) {
                        h = h.severity(Severity::High);
                    }
                    hits.push(h);
                }
            }
            "macro_invocation" => {
                let m = field(n, "macro").map(|x| text(x, src)).unwrap_or("");
                if !matches!(m, "lazy_static" | "thread_local") {
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
                    if per_user_name(name) {
                        h = h.severity(Severity::High);
                    }
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
                let ids = idents(n, src);
                if locked_collection(&ids, &coll_structs) {
                    let holder = ancestor(
                        n,
                        &[
                            "field_declaration",
                            "type_item",
                            "let_declaration",
                            "parameter",
                        ],
                    );
                    let name = holder
                        .and_then(|h| field(h, "name").or_else(|| field(h, "pattern")))
                        .map(|x| text(x, src))
                        .unwrap_or("");
                    let mut h = Hit::at(
                        "RS-STATE-MAP",
                        n,
                        format!(
                            "{} in web application state: per-instance store{}",
                            text(n, src),
                            if name.is_empty() {
                                String::new()
                            } else {
                                format!(" `{name}`")
                            }
                        ),
                    );
                    if per_user_name(name) || ids.iter().any(|i| per_user_name(i)) {
                        h = h.severity(Severity::High);
                    }
                    hits.push(h);
                }
            }
            "call_expression" => {
                let Some(func) = field(n, "function") else {
                    return;
                };
                let ft = text(func, src);
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
                    hits.push(Hit::at(
                        "RS-RATELIMIT-MEMORY",
                        n,
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

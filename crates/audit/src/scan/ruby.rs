//! Detectors for Ruby / Rails: class variables, globals and constant collections mutated
//! at run time, `cache_store :memory_store/:file_store`, ActiveJob `:async`, Thread loops
//! and rufus-scheduler, Active Storage `:local` and files written in controllers,
//! rack-attack with a MemoryStore.
//!
//! Must never flag frozen constants, collections only read, or settings in the
//! development/test environment files.

use std::collections::BTreeMap;

use tree_sitter::Node;

use super::tree::{ancestor, field, named_children, string_value, text, walk};
use super::{FileCtx, Hit, Sink, startup_function};

const WRITE_METHODS: &[&str] = &[
    "push",
    "<<",
    "store",
    "merge!",
    "delete",
    "clear",
    "update",
    "add",
    "unshift",
    "shift",
    "pop",
    "concat",
    "replace",
    "[]=",
    "compute_if_absent",
    "put_if_absent",
    "delete_if",
    "reject!",
    "select!",
    "keep_if",
    "append",
    "prepend",
];

struct Var<'t> {
    node: Node<'t>,
    writes: Vec<String>,
}

pub(crate) fn scan(root: Node, ctx: &FileCtx, hits: &mut Sink) {
    let src = ctx.src;
    if ctx.rel.contains("config/environments/")
        && !(ctx.rel.ends_with("production.rb") || ctx.rel.ends_with("staging.rb"))
    {
        return;
    }
    let controller = ctx.rel.contains("controllers/");
    if ctx.src.contains("Rails.cache")
        || ctx.src.contains("caches_action")
        || ctx.src.contains("cache(") && ctx.rel.ends_with(".erb")
    {
        hits.tags.push("uses:rails-cache".into());
    }
    let production = ctx.rel.ends_with("config/environments/production.rb");
    let mut saw_cache_store = false;
    let mut vars: BTreeMap<String, Var> = BTreeMap::new();
    walk(root, |n| {
        if n.kind() != "assignment" {
            return;
        }
        let (Some(l), Some(r)) = (field(n, "left"), field(n, "right")) else {
            return;
        };
        if !matches!(l.kind(), "class_variable" | "constant" | "global_variable") {
            return;
        }
        if ancestor(n, &["method", "singleton_method"]).is_some() {
            return;
        }
        if mutable_collection(r, src) {
            vars.insert(
                text(l, src).to_string(),
                Var {
                    node: n,
                    writes: Vec::new(),
                },
            );
        }
    });

    let record = |name: &str, op: &str, at: Node, vars: &mut BTreeMap<String, Var>| {
        if let Some(v) = vars.get_mut(name)
            && in_runtime_method(at, src)
        {
            v.writes.push(op.to_string());
        }
    };

    walk(root, |n| match n.kind() {
        "assignment" | "operator_assignment" => {
            let (Some(l), Some(r)) = (field(n, "left"), field(n, "right")) else {
                return;
            };
            let lt = text(l, src);
            if l.kind() == "element_reference"
                && let Some(obj) = field(l, "object")
            {
                record(text(obj, src), "[]=", n, &mut vars);
            }
            if n.kind() == "operator_assignment"
                && matches!(l.kind(), "class_variable" | "global_variable")
            {
                if !vars.contains_key(lt) && in_runtime_method(n, src) {
                    // `@@x ||= {}` / `$hits += 1` inside a method: declared and written there.
                    vars.insert(
                        lt.to_string(),
                        Var {
                            node: n,
                            writes: vec!["op=".into()],
                        },
                    );
                } else {
                    record(lt, "op=", n, &mut vars);
                }
            }
            if n.kind() == "assignment" && l.kind() == "class_variable" && in_runtime_method(n, src)
            {
                record(lt, "=", n, &mut vars);
            }
            let rt = text(r, src);
            if l.kind() == "call" {
                let method = field(l, "method").map(|m| text(m, src)).unwrap_or("");
                let first_symbol = first_symbol(r, src);
                if method == "cache_store" {
                    saw_cache_store = true;
                }
                if method == "cache_store" && production {
                    hits.tags.push("rails:production-cache-store".into());
                }
                match (method, first_symbol.as_deref()) {
                    ("cache_store", Some(s @ (":memory_store" | ":file_store"))) => {
                        let h = Hit::at(
                            "RB-CACHE-LOCAL",
                            n,
                            format!("cache_store {s}: Rails.cache is per instance"),
                        );
                        if ctx.rel.ends_with("config/application.rb") {
                            // production.rb may choose another store.
                            hits.deferred.push(super::Deferred {
                                needs: String::new(),
                                unless: Some("rails:production-cache-store".into()),
                                hit: h,
                            });
                        } else {
                            hits.push(h);
                        }
                    }
                    ("queue_adapter", Some(":async")) => hits.push(Hit::at(
                        "RB-QUEUE-MEMORY",
                        n,
                        "ActiveJob :async adapter runs jobs in this process; queued jobs die with it",
                    )),
                    ("service", Some(":local")) if lt.contains("active_storage") => hits.push(Hit::at(
                        "RB-LOCAL-STORAGE",
                        n,
                        "Active Storage :local service keeps uploads on this instance's disk",
                    )),
                    ("store", _) if lt.contains("Rack::Attack") && rt.contains("MemoryStore") => hits.push(Hit::at(
                        "RB-RATELIMIT-MEMORY",
                        n,
                        "rack-attack counters in a MemoryStore are per instance",
                    )),
                    _ => {}
                }
            }
        }
        "binary" => {
            if text(n, src).contains("<<")
                && let Some(l) = field(n, "left")
            {
                let base = if l.kind() == "element_reference" {
                    field(l, "object").unwrap_or(l)
                } else {
                    l
                };
                record(text(base, src), "<<", n, &mut vars);
            }
        }
        "call" => {
            let method = field(n, "method").map(|m| text(m, src)).unwrap_or("");
            let recv = field(n, "receiver");
            let recv_text = recv.map(|r| text(r, src)).unwrap_or("");
            if let Some(r) = recv
                && WRITE_METHODS.contains(&method)
            {
                let base = if r.kind() == "element_reference" {
                    field(r, "object").unwrap_or(r)
                } else {
                    r
                };
                record(text(base, src), method, n, &mut vars);
            }
            match (recv_text, method) {
                ("Thread", "new") if loops_forever(n, src) => hits.push(Hit::at(
                    "RB-INPROC-JOB",
                    n,
                    "Thread with an endless loop runs background work in every instance",
                )),
                ("Rufus::Scheduler", "new" | "singleton" | "s")
                | ("Concurrent::TimerTask", "new") => hits.push(Hit::at(
                    "RB-INPROC-JOB",
                    n,
                    format!("{recv_text}.{method} schedules work in every instance"),
                )),
                (
                    "ActiveSupport::Cache::MemoryStore" | "ActiveSupport::Cache::FileStore",
                    "new",
                ) if !ancestor(n, &["assignment"])
                    .is_some_and(|a| text(a, src).contains("Rack::Attack")) =>
                {
                    hits.push(Hit::at(
                        "RB-CACHE-LOCAL",
                        n,
                        format!("{recv_text} is a per-instance cache"),
                    ))
                }
                ("File", "write" | "binwrite")
                | ("IO", "binwrite")
                | ("FileUtils", "cp" | "mv" | "copy" | "move")
                    if controller && in_action_with_params(n, src) =>
                {
                    hits.push(Hit::at(
                        "RB-LOCAL-STORAGE",
                        n,
                        format!(
                            "{recv_text}.{method} in a controller writes to this instance's disk"
                        ),
                    ))
                }
                ("File", "open")
                    if controller
                        && in_action_with_params(n, src)
                        && field(n, "arguments").is_some_and(|a| {
                            named_children(a).iter().skip(1).any(|m| {
                                string_value(*m, src).is_some_and(|s| s.contains(['w', 'a']))
                            })
                        }) =>
                {
                    hits.push(Hit::at(
                        "RB-LOCAL-STORAGE",
                        n,
                        "File.open for writing in a controller writes to this instance's disk",
                    ))
                }
                _ => {}
            }
        }
        _ => {}
    });

    // `config/application.rb` is read as a project fact: a cache store set there applies.
    if production && !saw_cache_store && !ctx.has_dep("config.cache_store") {
        hits.deferred.push(super::Deferred {
            needs: "uses:rails-cache".into(),
            unless: None,
            hit: Hit::at_row(
                "RB-CACHE-LOCAL",
                0,
                0,
                "production.rb sets no config.cache_store: Rails falls back to a per-instance :file_store",
            )
            .condition("config.cache_store is not set for production, and the app uses Rails.cache"),
        });
    }

    let shape = super::link::FuncShape {
        funcs: &["method", "singleton_method"],
        calls: &["call"],
        name: &|f| field(f, "name").map(|n| text(n, src).to_string()),
        owner: &|f| {
            ancestor(f, &["class", "module"])
                .and_then(|c| field(c, "name"))
                .map(|n| text(n, src).to_string())
        },
        handler: &|_| controller,
        callee: &|n| {
            let m = field(n, "method").map(|m| text(m, src))?;
            let recv = field(n, "receiver").map(|r| text(r, src)).unwrap_or("");
            Some((m.to_string(), recv.to_string()))
        },
        write: &|n| {
            let m = field(n, "method").map(|m| text(m, src))?;
            let recv = field(n, "receiver").map(|r| text(r, src)).unwrap_or("");
            let w = matches!(
                (recv, m),
                ("File", "write" | "binwrite")
                    | ("IO", "copy_stream" | "binwrite")
                    | ("FileUtils", "cp" | "mv" | "copy" | "move")
            ) || (recv == "File"
                && m == "open"
                && field(n, "arguments").is_some_and(|a| {
                    named_children(a)
                        .iter()
                        .skip(1)
                        .any(|x| string_value(*x, src).is_some_and(|s| s.contains(['w', 'a'])))
                }));
            w.then(|| format!("{recv}.{m}"))
        },
        rule: "RB-LOCAL-STORAGE",
    };
    super::link::collect(root, &shape, hits);

    for (name, v) in vars {
        if v.writes.is_empty() {
            continue;
        }
        let mut w = v.writes.clone();
        w.sort();
        w.dedup();
        let kind = if name.starts_with("@@") {
            "class variable"
        } else if name.starts_with('$') {
            "global"
        } else {
            "constant"
        };
        let mut h = Hit::at(
            "RB-GLOBAL-MUTABLE",
            v.node,
            format!("{kind} `{name}` is mutated at run time ({})", w.join(", ")),
        );
        h = h.per_user_if(&name);
        hits.push(h);
    }
}

fn mutable_collection(r: Node, src: &str) -> bool {
    let t = text(r, src);
    if t.ends_with(".freeze") {
        return false;
    }
    matches!(r.kind(), "hash" | "array")
        || [
            "Hash.new",
            "Set.new",
            "Array.new",
            "Concurrent::Map.new",
            "Concurrent::Hash.new",
            "Concurrent::Array.new",
            "{}.compare_by_identity",
        ]
        .iter()
        .any(|p| t.starts_with(p))
}

fn first_symbol(r: Node, src: &str) -> Option<String> {
    match r.kind() {
        "simple_symbol" => Some(text(r, src).to_string()),
        "right_assignment_list" | "array" | "argument_list" => named_children(r)
            .into_iter()
            .next()
            .and_then(|c| first_symbol(c, src)),
        _ => None,
    }
}

fn in_runtime_method(n: Node, src: &str) -> bool {
    let Some(m) = ancestor(n, &["method", "singleton_method"]) else {
        return false;
    };
    // Class macros (`class_methods do`, `class_eval`, `included do`) run at load time.
    let mut cur = n.parent();
    while let Some(p) = cur {
        if p.kind() == "call"
            && field(p, "method").is_some_and(|x| {
                matches!(
                    text(x, src),
                    "class_eval"
                        | "module_eval"
                        | "instance_eval"
                        | "included"
                        | "class_methods"
                        | "extended"
                )
            })
        {
            return false;
        }
        cur = p.parent();
    }
    let name = field(m, "name").map(|x| text(x, src)).unwrap_or("");
    !startup_function(name)
}

fn loops_forever(n: Node, src: &str) -> bool {
    let mut found = false;
    walk(n, |c| {
        if (c.kind() == "call"
            && field(c, "method").is_some_and(|m| text(m, src) == "loop")
            && field(c, "receiver").is_none())
            || (c.kind() == "while"
                && field(c, "condition").is_some_and(|k| text(k, src) == "true"))
        {
            found = true;
        }
    });
    found
}

fn in_action_with_params(n: Node, src: &str) -> bool {
    ancestor(n, &["method"]).is_some_and(|m| {
        let mut uses = false;
        walk(m, |c| {
            if c.kind() == "identifier" && text(c, src) == "params" {
                uses = true;
            }
        });
        uses
    })
}

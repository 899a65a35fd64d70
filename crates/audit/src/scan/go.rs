//! Detectors for Go: package-level maps and sync.Maps written from functions, gorilla
//! FilesystemStore and in-memory session stores, ticker/cron loops in goroutines, files
//! created in HTTP handlers, per-client rate limiters kept in memory.
//!
//! Must never flag a package map filled only in `init()` (or start-up functions) and
//! read afterwards, nor file writes outside HTTP handlers (CLI tools, build steps).

use std::collections::{BTreeMap, HashSet};

use tree_sitter::Node;

use super::tree::{ancestor, field, named_children, query, string_value, text, walk};
use super::{FileCtx, Hit, Sink, startup_function};
use crate::Confidence;

const FUNCS: &[&str] = &["function_declaration", "method_declaration", "func_literal"];

const HANDLER_TYPES: &[&str] = &[
    "http.ResponseWriter",
    "*http.Request",
    "*gin.Context",
    "echo.Context",
    "*fiber.Ctx",
    "fiber.Ctx",
    "*fasthttp.RequestCtx",
    "iris.Context",
    "*chi.Context",
    "buffalo.Context",
];

struct Var<'t> {
    node: Node<'t>,
    sync_map: bool,
    writes: Vec<&'static str>,
}

pub(crate) fn scan(root: Node, ctx: &FileCtx, hits: &mut Sink) {
    let src = ctx.src;
    let mut imports: HashSet<String> = HashSet::new();
    let mut go_called: HashSet<String> = HashSet::new();
    let mut vars: BTreeMap<String, Var> = BTreeMap::new();
    let grammar: tree_sitter::Language = tree_sitter_go::LANGUAGE.into();
    query(
        &grammar,
        "(import_spec path: (_) @path)",
        root,
        src,
        |caps| {
            if let Some(p) = caps.get("path").and_then(|p| string_value(*p, src)) {
                imports.insert(p);
            }
        },
    );
    walk(root, |n| {
        if n.kind() == "go_statement"
            && let Some(call) = n.named_child(0)
            && let Some(f) = field(call, "function")
            && f.kind() != "func_literal"
        {
            let t = text(f, src);
            go_called.insert(t.rsplit('.').next().unwrap_or(t).to_string());
        }
    });
    for decl in named_children(root) {
        if decl.kind() != "var_declaration" {
            continue;
        }
        let mut specs = Vec::new();
        walk(decl, |s| {
            if s.kind() == "var_spec" {
                specs.push(s);
            }
        });
        for s in specs {
            let ty = field(s, "type").map(|t| text(t, src)).unwrap_or("");
            let value = field(s, "value").map(|v| text(v, src)).unwrap_or("");
            let sync_map = ty == "sync.Map"
                || value.starts_with("sync.Map{")
                || value.starts_with("&sync.Map{");
            let is_map = ty.starts_with("map[")
                || value.starts_with("map[")
                || value.starts_with("make(map[")
                || ty.starts_with("struct") && ty.contains("map[");
            if !(is_map || sync_map) {
                continue;
            }
            for c in named_children(s) {
                if c.kind() == "identifier" && field(s, "name").is_some() {
                    vars.insert(
                        text(c, src).to_string(),
                        Var {
                            node: s,
                            sync_map,
                            writes: Vec::new(),
                        },
                    );
                }
            }
        }
    }

    let scs = imports.iter().any(|i| i.contains("alexedwards/scs"));
    let mut scs_store_set = false;
    let mut scs_calls = Vec::new();

    walk(root, |n| match n.kind() {
        "assignment_statement" | "inc_statement" | "dec_statement" => {
            let targets: Vec<Node> = match field(n, "left") {
                Some(l) => named_children(l),
                None => named_children(n),
            };
            for t in targets {
                if t.kind() == "index_expression"
                    && let Some(name) = root_ident(t, src)
                    && let Some(v) = vars.get_mut(name)
                    && in_runtime_function(n, src)
                {
                    v.writes.push("[]=");
                }
                if text(t, src).ends_with(".Store") && scs {
                    scs_store_set = true;
                }
            }
        }
        "call_expression" => {
            let Some(func) = field(n, "function") else {
                return;
            };
            let ft = text(func, src);
            let last = ft.rsplit('.').next().unwrap_or(ft);
            let args = field(n, "arguments");
            if ft == "delete"
                && let Some(a) = args.and_then(|a| a.named_child(0))
                && let Some(name) = root_ident(a, src)
                && let Some(v) = vars.get_mut(name)
                && in_runtime_function(n, src)
            {
                v.writes.push("delete");
            }
            if func.kind() == "selector_expression"
                && let Some(op) = field(func, "operand")
                && let Some(name) = root_ident(op, src)
                && let Some(v) = vars.get_mut(name)
                && v.sync_map
                && matches!(
                    last,
                    "Store"
                        | "LoadOrStore"
                        | "Delete"
                        | "LoadAndDelete"
                        | "Swap"
                        | "CompareAndSwap"
                )
                && in_runtime_function(n, src)
            {
                v.writes.push("Store");
            }
            match ft {
                "sessions.NewFilesystemStore" => hits.push(Hit::at(
                    "GO-SESSION-LOCAL",
                    n,
                    "gorilla/sessions FilesystemStore keeps sessions on this instance's disk",
                )),
                "memstore.NewStore" | "memstore.NewMemStore" | "memstore.New" => {
                    hits.push(Hit::at(
                        "GO-SESSION-LOCAL",
                        n,
                        "in-memory session store keeps sessions in this process",
                    ))
                }
                "scs.New" if scs => scs_calls.push(n),
                "time.NewTicker" | "time.Tick" => {
                    let in_go = ancestor(n, &["go_statement"]).is_some()
                        || enclosing_name(n, src).is_some_and(|f| go_called.contains(&f));
                    if in_go && !keepalive(n, src) {
                        hits.push(Hit::at(
                            "GO-TICKER-JOB",
                            n,
                            format!("{ft} loop in a goroutine runs in every instance"),
                        ));
                    }
                }
                "cron.New" | "gocron.NewScheduler" | "gocron.NewScheduler(time.UTC)" => {
                    hits.push(Hit::at(
                        "GO-TICKER-JOB",
                        n,
                        format!("{ft} scheduler runs in every instance"),
                    ))
                }
                "os.Create" | "os.WriteFile" | "ioutil.WriteFile" | "os.OpenFile" => {
                    let writes = ft != "os.OpenFile"
                        || args.is_some_and(|a| {
                            let t = text(a, src);
                            t.contains("O_CREATE")
                                || t.contains("O_WRONLY")
                                || t.contains("O_APPEND")
                                || t.contains("O_RDWR")
                        });
                    if writes && in_handler(n, src) {
                        hits.push(Hit::at(
                            "GO-LOCAL-WRITE",
                            n,
                            format!("{ft} in an HTTP handler writes to this instance's disk"),
                        ));
                    }
                }
                "tollbooth.NewLimiter" => hits.push(Hit::at(
                    "GO-RATELIMIT-MEMORY",
                    n,
                    "tollbooth limiter keeps its counters in process memory",
                )),
                "memory.NewStore" | "memory.NewStoreWithOptions"
                    if imports.iter().any(|i| i.contains("ulule/limiter")) =>
                {
                    hits.push(Hit::at(
                        "GO-RATELIMIT-MEMORY",
                        n,
                        "ulule/limiter memory store counts per instance",
                    ))
                }
                "rate.NewLimiter" if stored_in_map(n, src) => {
                    hits.push(Hit::at(
                        "GO-RATELIMIT-MEMORY",
                        n,
                        "per-client rate.Limiter kept in a map in this process",
                    ));
                }
                _ => {}
            }
            if matches!(last, "SaveUploadedFile" | "SaveFile")
                && func.kind() == "selector_expression"
                && in_handler(n, src)
            {
                hits.push(Hit::at(
                    "GO-LOCAL-WRITE",
                    n,
                    format!("{ft} stores the upload on this instance's disk"),
                ));
            }
        }
        _ => {}
    });

    if !scs_store_set {
        for n in scs_calls {
            hits.push(
                Hit::at(
                    "GO-SESSION-LOCAL",
                    n,
                    "scs session manager with its default in-memory store",
                )
                .condition("no `.Store` is assigned, so scs uses memstore"),
            );
        }
    }

    for (name, v) in vars {
        if v.writes.is_empty() {
            continue;
        }
        let mut w = v.writes.clone();
        w.sort();
        w.dedup();
        let mut hit = Hit::at(
            "GO-GLOBAL-MAP",
            v.node,
            format!(
                "package-level {} `{name}` is written from functions ({})",
                if v.sync_map { "sync.Map" } else { "map" },
                w.join(", ")
            ),
        );
        hit = hit.per_user_if(&name);
        hits.push(hit);
    }
}

/// A ticker in a function that writes to one connection (pings, per-connection pushes):
/// per-connection keepalive, not shared work.
fn keepalive(n: Node, src: &str) -> bool {
    let Some(f) = ancestor(n, &["function_declaration", "method_declaration"]) else {
        return false;
    };
    let t = text(f, src);
    t.contains("PingMessage")
        || t.contains("SetWriteDeadline")
        || t.contains("websocket.Conn")
        || t.contains(".WriteMessage(")
}

/// The identifier at the root of `a.b[c].d` chains.
fn root_ident<'a>(n: Node, src: &'a str) -> Option<&'a str> {
    let mut cur = n;
    loop {
        match cur.kind() {
            "identifier" => return Some(text(cur, src)),
            "index_expression" | "selector_expression" => cur = field(cur, "operand")?,
            "parenthesized_expression" | "unary_expression" => cur = cur.named_child(0)?,
            _ => return None,
        }
    }
}

fn enclosing_name(n: Node, src: &str) -> Option<String> {
    let f = ancestor(n, &["function_declaration", "method_declaration"])?;
    Some(text(field(f, "name")?, src).to_string())
}

/// Inside a function that is not `init` or named like start-up code.
fn in_runtime_function(n: Node, src: &str) -> bool {
    let Some(f) = ancestor(n, FUNCS) else {
        return false;
    };
    // A closure passed as an argument (a route handler registered in `setupRouter`) runs
    // per request whatever its enclosing function is called; only `init` stays start-up.
    if f.kind() == "func_literal" && f.parent().is_some_and(|p| p.kind() == "argument_list") {
        return enclosing_name(n, src).is_none_or(|name| name != "init");
    }
    match enclosing_name(n, src) {
        Some(name) => !startup_function(&name),
        None => true,
    }
}

/// Inside a function (or closure within one) taking an HTTP request or context.
fn in_handler(n: Node, src: &str) -> bool {
    let mut cur = n;
    while let Some(f) = ancestor(cur, FUNCS) {
        if let Some(params) = field(f, "parameters") {
            for p in named_children(params) {
                if let Some(t) = field(p, "type")
                    && HANDLER_TYPES.contains(&text(t, src))
                {
                    return true;
                }
            }
        }
        cur = f;
    }
    false
}

/// `m[k] = rate.NewLimiter(...)`, `&visitor{limiter: rate.NewLimiter(...)}` stored into a
/// map, or created in a function that writes a map.
fn stored_in_map(n: Node, src: &str) -> bool {
    let Some(f) = ancestor(n, FUNCS) else {
        return false;
    };
    let mut found = false;
    walk(f, |a| {
        if a.kind() == "assignment_statement"
            && let Some(l) = field(a, "left")
            && named_children(l)
                .iter()
                .any(|t| t.kind() == "index_expression")
        {
            found = true;
        }
    });
    let _ = src;
    found
}

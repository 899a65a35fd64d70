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
    // Package-level channels and queues: (declaration, buffered, sent to from a function).
    let mut chans: BTreeMap<String, (Node, bool, bool)> = BTreeMap::new();
    for decl in named_children(root) {
        if decl.kind() != "var_declaration" {
            continue;
        }
        walk(decl, |s| {
            if s.kind() != "var_spec" {
                return;
            }
            let ty = field(s, "type").map(|t| text(t, src)).unwrap_or("");
            let value = field(s, "value").map(|v| text(v, src)).unwrap_or("");
            let is_chan = ty.starts_with("chan ") || value.starts_with("make(chan ");
            let is_queue = value.contains("Queue(") && !value.contains("Broadcast");
            if !(is_chan || is_queue) {
                return;
            }
            let buffered =
                is_queue || (value.starts_with("make(chan ") && value.matches(',').count() >= 1);
            for c in named_children(s) {
                if c.kind() == "identifier" {
                    chans.insert(text(c, src).to_string(), (s, buffered, is_queue));
                }
            }
        });
    }
    walk(root, |n| match n.kind() {
        "assignment_statement" => {
            if let (Some(l), Some(r)) = (field(n, "left"), field(n, "right"))
                && let Some((_, buffered, _)) = chans.get_mut(text(l, src))
            {
                let rt = text(r, src);
                if rt.starts_with("make(chan ") && rt.contains(',') {
                    *buffered = true;
                }
            }
        }
        "send_statement" => {
            if let Some(ch) = field(n, "channel")
                && let Some((_, _, sent)) = chans.get_mut(text(ch, src))
                && in_runtime_function(n, src)
            {
                *sent = true;
            }
        }
        "call_expression" => {
            if let Some(f) = field(n, "function")
                && f.kind() == "selector_expression"
                && let Some(op) = field(f, "operand")
                && let Some((_, _, sent)) = chans.get_mut(text(op, src))
                && matches!(
                    field(f, "field").map(|x| text(x, src)),
                    Some("Add" | "Push" | "Enqueue" | "AddFunc")
                )
                && in_runtime_function(n, src)
            {
                *sent = true;
            }
        }
        _ => {}
    });
    for (name, (node, buffered, sent)) in &chans {
        if *buffered && *sent {
            hits.push(Hit::at(
                "GO-QUEUE-MEMORY",
                *node,
                format!("package-level queue `{name}` holds work in this process until a goroutine drains it"),
            ));
        }
    }
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
                    if in_go && !keepalive(n, src) && !housekeeping(n, src) {
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
                "bleve.New" | "bleve.Open" | "bleve.NewUsing" | "bleve.OpenUsing"
                | "bleve.NewMemOnly" => hits.push(
                    Hit::at(
                        "GO-SEARCH-LOCAL",
                        n,
                        format!("{ft}: the search index is on this instance"),
                    )
                    .construct("go-bleve"),
                ),
                "sql.Open" | "sqlx.Open" | "sqlx.Connect" | "xorm.NewEngine"
                    if args
                        .and_then(|a| a.named_child(0))
                        .and_then(|a| string_value(a, src))
                        .is_some_and(|d| d.starts_with("sqlite")) =>
                {
                    hits.push(with_case(
                        Hit::at(
                            "GO-EMBEDDED-DB",
                            n,
                            format!("{ft}(\"sqlite...\"): the database is a file on this instance"),
                        )
                        .construct(format!("go-db:{}", text(n, src))),
                        n,
                        src,
                    ))
                }
                "gorm.Open"
                    if args
                        .and_then(|a| a.named_child(0))
                        .and_then(|a| string_value(a, src))
                        .is_some_and(|d| d.starts_with("sqlite")) =>
                {
                    hits.push(with_case(
                        Hit::at(
                            "GO-EMBEDDED-DB",
                            n,
                            "gorm.Open(\"sqlite3\", ...): the database is a file on this instance",
                        )
                        .construct(format!("go-db:{}", text(n, src))),
                        n,
                        src,
                    ))
                }
                "sqlite.Open" if imports.iter().any(|i| i.contains("sqlite")) => {
                    hits.push(with_case(
                        Hit::at(
                            "GO-EMBEDDED-DB",
                            n,
                            "gorm sqlite.Open: the database is a file on this instance",
                        )
                        .construct(format!("go-db:{}", text(n, src))),
                        n,
                        src,
                    ))
                }
                "bolt.Open" | "bbolt.Open" | "badger.Open" | "leveldb.OpenFile" | "buntdb.Open"
                | "pebble.Open" => hits.push(with_case(
                    Hit::at(
                        "GO-EMBEDDED-DB",
                        n,
                        format!("{ft}: an embedded key-value store on this instance's disk"),
                    )
                    .construct("go-kv"),
                    n,
                    src,
                )),
                // The project's own in-process cache package (`<module>/store/cache`).
                "cache.New" | "cache.NewCache"
                    if !imports.iter().any(|i| i.contains("patrickmn/go-cache"))
                        && imports.iter().any(|i| {
                            i.ends_with("/cache") && !i.contains("redis") && !i.contains("memcache")
                        }) =>
                {
                    hits.push(
                        Hit::at(
                            "GO-CACHE-LOCAL",
                            n,
                            format!("{ft}: an in-process cache from the project's cache package"),
                        )
                        // The caches one constructor builds are one construct.
                        .construct(format!(
                            "go-cache:{}",
                            enclosing_name(n, src).unwrap_or_default()
                        )),
                    )
                }
                "cache.New" if imports.iter().any(|i| i.contains("patrickmn/go-cache")) => hits
                    .push(Hit::at(
                        "GO-CACHE-LOCAL",
                        n,
                        "go-cache: an in-process cache",
                    )),
                "ristretto.NewCache"
                | "bigcache.New"
                | "bigcache.NewBigCache"
                | "freecache.NewCache"
                | "lru.New"
                | "lru.NewWithEvict"
                | "expirable.NewLRU"
                | "ttlcache.New"
                | "gcache.New" => hits.push(Hit::at(
                    "GO-CACHE-LOCAL",
                    n,
                    format!("{ft}: an in-process cache"),
                )),
                "globallock.NewMemoryLocker" | "NewMemoryLocker" => hits.push(Hit::at(
                    "GO-LOCK-MEMORY",
                    n,
                    format!("{ft}: a global lock that excludes only within this process"),
                )),
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
            if matches!(last, "MustString" | "In")
                && let Some(h) = ini_code_default(n, src, ctx)
            {
                hits.push(h);
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

    // Test helpers in non-test files (`func TestDBInit()`): not the served application.
    hits.hits
        .retain(|h| !(h.rule == "GO-EMBEDDED-DB" && test_helper_at(root, h.row, src)));
    if configured_db_is_server(ctx) {
        hits.hits
            .retain(|h| !(h.rule == "GO-EMBEDDED-DB" && h.condition.is_some()));
    }
    go_exports(root, src, hits);
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

    walk(root, |t| {
        if t.kind() != "type_spec" {
            return;
        }
        let Some(ty) = field(t, "type") else { return };
        if ty.kind() != "struct_type" {
            return;
        }
        let tname = field(t, "name").map(|x| text(x, src)).unwrap_or("?");
        let mut subscribers: Option<Node> = None;
        let mut locks: Option<Node> = None;
        walk(ty, |f| {
            if f.kind() != "field_declaration" {
                return;
            }
            let ft = field(f, "type").map(|x| text(x, src)).unwrap_or("");
            if !ft.starts_with("map[") {
                return;
            }
            if ft.contains("sync.Mutex") || ft.contains("sync.RWMutex") || ft.contains("*semaphore")
            {
                locks.get_or_insert(f);
            } else if subscriber_type(ft) {
                subscribers.get_or_insert(f);
            }
        });
        if let Some(f) = subscribers {
            hits.push(Hit::at(
                "GO-PUBSUB-MEMORY",
                t,
                format!(
                    "`{tname}` keeps subscribers in process (`{}`): messages reach only clients of this instance",
                    squash(text(f, src))
                ),
            ));
        }
        if let Some(f) = locks {
            hits.push(Hit::at(
                "GO-LOCK-MEMORY",
                t,
                format!(
                    "`{tname}` keeps a lock table (`{}`): it excludes only within this process",
                    squash(text(f, src))
                ),
            ));
        }
    });

    for (name, v) in vars {
        if v.writes.is_empty()
            || super::memo_or_registry_name(&name)
            || name.to_ascii_lowercase().ends_with("cache") && v.sync_map
        {
            continue;
        }
        let decl_text = text(v.node, src);
        if decl_text.contains("sync.Mutex") || decl_text.contains("sync.RWMutex") {
            hits.push(Hit::at(
                "GO-LOCK-MEMORY",
                v.node,
                format!("package-level lock table `{name}`: it excludes only within this process"),
            ));
            continue;
        }
        if subscriber_type(decl_text.split_once("map").map(|(_, r)| r).unwrap_or("")) {
            hits.push(Hit::at(
                "GO-PUBSUB-MEMORY",
                v.node,
                format!("package-level `{name}` keeps subscribers in process: messages reach only clients of this instance"),
            ));
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

/// A map type whose keys or values are connections, clients or channels: subscribers.
fn subscriber_type(t: &str) -> bool {
    let t = t.trim_start_matches("map");
    t.contains("chan ")
        || t.contains("Conn")
        || t.contains("Client")
        || t.contains("Subscriber")
        || t.contains("Listener")
        || t.contains("Broadcaster")
        || t.contains("Socket")
        || t.contains("Stream")
}

fn squash(t: &str) -> String {
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Adds the enclosing `case "sqlite3":` (a configured choice) as a condition.
fn with_case(h: Hit, n: Node, src: &str) -> Hit {
    match ancestor(
        n,
        &[
            "expression_case",
            "if_statement",
            "function_declaration",
            "method_declaration",
        ],
    ) {
        Some(c) if c.kind() == "expression_case" => {
            let v = field(c, "value").map(|x| text(x, src)).unwrap_or("");
            h.condition(format!("when the configured value is {v}"))
        }
        _ => h,
    }
}

/// Functions for the cross-file pass: HTTP handlers and the storage code they call.
fn go_exports(root: Node, src: &str, sink: &mut Sink) {
    let shape = super::link::FuncShape {
        funcs: &["function_declaration", "method_declaration"],
        calls: &["call_expression"],
        name: &|f| field(f, "name").map(|n| text(n, src).to_string()),
        owner: &|f| {
            field(f, "receiver").map(|r| {
                text(r, src)
                    .trim_matches(['(', ')'])
                    .rsplit([' ', '*'])
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
        },
        handler: &|f| {
            field(f, "parameters").is_some_and(|p| {
                named_children(p).iter().any(|x| {
                    field(*x, "type").is_some_and(|t| HANDLER_TYPES.contains(&text(t, src)))
                })
            })
        },
        callee: &|n| {
            let f = field(n, "function")?;
            let t = text(f, src);
            let recv = if f.kind() == "selector_expression" {
                field(f, "operand").map(|o| text(o, src)).unwrap_or("")
            } else {
                ""
            };
            Some((
                t.rsplit('.').next().unwrap_or(t).to_string(),
                recv.to_string(),
            ))
        },
        write: &|n| {
            let t = field(n, "function").map(|f| text(f, src))?;
            let writes = matches!(t, "os.Create" | "os.WriteFile" | "ioutil.WriteFile")
                || (t == "os.OpenFile"
                    && field(n, "arguments").is_some_and(|a| {
                        let at = text(a, src);
                        at.contains("O_CREATE") || at.contains("O_WRONLY")
                    }));
            writes.then(|| format!("{t}(...)"))
        },
        rule: "GO-LOCAL-WRITE",
    };
    super::link::collect(root, &shape, sink);
}

/// True when row `row` lies in a function named `Test*`/`test*`/`*ForTest*`.
fn test_helper_at(root: Node, row: usize, src: &str) -> bool {
    let mut found = false;
    walk(root, |f| {
        if matches!(f.kind(), "function_declaration" | "method_declaration")
            && f.start_position().row <= row
            && row <= f.end_position().row
            && field(f, "name").is_some_and(|n| {
                let t = text(n, src);
                t.starts_with("Test") || t.starts_with("test") || t.contains("ForTest")
            })
        {
            found = true;
        }
    });
    found
}

/// True when the project's config names a database type that is not embedded (`[database]
/// TYPE = postgres`): a code path that opens SQLite only for another choice is not taken.
fn configured_db_is_server(ctx: &FileCtx) -> bool {
    ctx.facts.settings.iter().any(|s| {
        let k = s.key.to_ascii_lowercase();
        let v = s.value.trim().to_ascii_lowercase();
        (k.ends_with("database.type") || k.ends_with("database.db_type") || k == "db_type")
            && s.source <= super::facts::Source::Example
            && matches!(
                v.as_str(),
                "postgres" | "postgresql" | "mysql" | "mssql" | "tidb"
            )
    })
}

/// `sec.Key("PROVIDER").MustString("memory")` where `sec` is `cfg.Section("session")`:
/// the code's default for an INI key, reported when no config file sets the key.
fn ini_code_default(n: Node, src: &str, ctx: &FileCtx) -> Option<Hit> {
    let func = field(n, "function")?;
    let value = field(n, "arguments")?
        .named_child(0)
        .and_then(|a| string_value(a, src))?;
    let key_call = field(func, "operand")?;
    if key_call.kind() != "call_expression" {
        return None;
    }
    let kf = field(key_call, "function")?;
    if !text(kf, src).ends_with(".Key") {
        return None;
    }
    let key = field(key_call, "arguments")?
        .named_child(0)
        .and_then(|a| string_value(a, src))?;
    let sec_expr = field(kf, "operand")?;
    let section = section_name(sec_expr, n, src)?;
    let full = format!("{section}.{key}");
    if ctx.facts.setting_anywhere(&full).is_some() {
        return None;
    }
    let setting = super::facts::Setting {
        file: ctx.rel.to_string(),
        key: full.clone(),
        value: value.clone(),
        row: n.start_position().row,
        source: super::facts::Source::CodeDefault,
    };
    let (rule, message) = super::config::classify(&setting, ctx.facts)?;
    let rule = match rule {
        "CFG-LOCK-MEMORY" => "GO-LOCK-MEMORY",
        "CFG-SEARCH-LOCAL" => "GO-SEARCH-LOCAL",
        "CFG-EMBEDDED-DB" => "GO-EMBEDDED-DB",
        other => other,
    };
    Some(
        Hit::at(rule, n, format!("code default {message}"))
            .condition(format!(
                "the code's default, used unless [{section}] {key} is set in the config file"
            ))
            .construct(format!("project:ini:{}", full.to_ascii_lowercase())),
    )
}

/// The section name of `cfg.Section("s")` or of a variable assigned from it in the same
/// function.
fn section_name(e: Node, at: Node, src: &str) -> Option<String> {
    if e.kind() == "call_expression"
        && field(e, "function").is_some_and(|f| text(f, src).ends_with("Section"))
    {
        return field(e, "arguments")?
            .named_child(0)
            .and_then(|a| string_value(a, src));
    }
    if e.kind() != "identifier" {
        return None;
    }
    let name = text(e, src);
    let f = ancestor(
        at,
        &["function_declaration", "method_declaration", "func_literal"],
    )?;
    let mut out = None;
    walk(f, |a| {
        if out.is_none()
            && matches!(a.kind(), "short_var_declaration" | "assignment_statement")
            && field(a, "left").is_some_and(|l| text(l, src) == name)
            && let Some(r) = field(a, "right").and_then(|r| r.named_child(0))
        {
            out = section_name(r, at, src);
        }
    });
    out
}

/// A ticker in a method of an in-process cache type (its janitor evicting expired
/// entries): housekeeping of this process's own structure, not shared work.
fn housekeeping(n: Node, src: &str) -> bool {
    ancestor(n, &["method_declaration"])
        .and_then(|f| field(f, "receiver"))
        .is_some_and(|r| text(r, src).to_ascii_lowercase().contains("cache"))
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
    // `once.Do(func() { ... })`: written once, at first use.
    if f.kind() == "func_literal"
        && let Some(call) = f.parent().and_then(|p| p.parent())
        && call.kind() == "call_expression"
        && field(call, "function").is_some_and(|x| text(x, src).ends_with(".Do"))
    {
        return false;
    }
    // A closure passed as an argument (a route handler registered in `setupRouter`) runs
    // per request whatever its enclosing function is called; only `init` stays start-up.
    if f.kind() == "func_literal" && f.parent().is_some_and(|p| p.kind() == "argument_list") {
        return enclosing_name(n, src).is_none_or(|name| name != "init");
    }
    match enclosing_name(n, src) {
        // `NewContext()`, `NewServer()`: constructors and initialisers run at start-up.
        Some(name) => !(startup_function(&name) || name.starts_with("New")),
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

//! Detectors for JavaScript and TypeScript (one grammar family, same node kinds):
//! express-session stores, module-scope collections written from functions, arrays used
//! as queues, timers and cron jobs, multer disk storage and fs writes in handlers,
//! express-rate-limit and socket.io without shared stores.
//!
//! Must never flag a module-scope collection that is only written at module top level
//! (filled at start-up) or never written at all (a constant lookup table).

use std::collections::{BTreeMap, HashMap};

use tree_sitter::Node;

use super::tree::{ancestor, field, named_children, string_value, text, walk};
use super::{FileCtx, Hit, Sink, startup_function};

const FUNCTIONS: &[&str] = &[
    "function_declaration",
    "function_expression",
    "function",
    "arrow_function",
    "method_definition",
    "generator_function_declaration",
    "generator_function",
];

/// Modules whose presence marks a file as server-side code.
const SERVER_MODULES: &[&str] = &[
    "express",
    "koa",
    "fastify",
    "@hapi/hapi",
    "hapi",
    "http",
    "https",
    "node:http",
    "restify",
    "socket.io",
    "ws",
    "mongoose",
    "sequelize",
    "pg",
    "mysql",
    "mysql2",
    "redis",
    "ioredis",
    "knex",
    "@prisma/client",
    "typeorm",
    "express-session",
    "body-parser",
    "node-cron",
    "cron",
    "node-schedule",
    "multer",
    "next",
    "@nestjs/common",
    "@nestjs/core",
    "@nestjs/schedule",
    "fs",
    "node:fs",
    "fs/promises",
    "node:fs/promises",
    "cluster",
    "mongodb",
    "sqlite3",
    "better-sqlite3",
    "express-rate-limit",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum CollKind {
    Map,
    Set,
    Object,
    Array,
    Cache,
    /// A `let`/`var` number used as a counter.
    Counter,
}

struct Coll<'t> {
    decl: Node<'t>,
    kind: CollKind,
    /// Write operations seen inside functions: method names or `[]=`.
    writes: Vec<String>,
    /// Values added are connections or responses (`clients.push(res)`): subscribers.
    subscribers: bool,
}

pub(crate) fn scan(root: Node, ctx: &FileCtx, hits: &mut Sink) {
    let src = ctx.src;
    // import / require bindings: module -> local names.
    let mut imports: HashMap<String, Vec<String>> = HashMap::new();
    walk(root, |n| match n.kind() {
        "import_statement" => {
            let Some(module) = field(n, "source").and_then(|s| string_value(s, src)) else {
                return;
            };
            let names = imports.entry(module).or_default();
            walk(n, |c| {
                if c.kind() == "identifier" {
                    names.push(text(c, src).to_string());
                }
            });
        }
        "variable_declarator" => {
            let Some(value) = field(n, "value") else {
                return;
            };
            let Some(module) = require_of(value, src) else {
                return;
            };
            let names = imports.entry(module).or_default();
            if let Some(name) = field(n, "name") {
                walk(name, |c| {
                    if matches!(
                        c.kind(),
                        "identifier" | "shorthand_property_identifier_pattern"
                    ) {
                        names.push(text(c, src).to_string());
                    }
                });
            }
        }
        _ => {}
    });
    let server = imports.keys().any(|m| SERVER_MODULES.contains(&m.as_str()))
        || walk_any(root, |n| {
            n.kind() == "call_expression"
                && require_of(n, src).is_some_and(|m| SERVER_MODULES.contains(&m.as_str()))
        });
    let frontend = ctx.rel.split('/').any(|s| {
        matches!(
            s,
            "public"
                | "static"
                | "client"
                | "frontend"
                | "components"
                | "pages"
                | "assets"
                | "www"
                | "browser"
        )
    });
    let local = |module: &str| -> Vec<String> { imports.get(module).cloned().unwrap_or_default() };

    // Module-scope collections.
    let mut colls: BTreeMap<String, Coll> = BTreeMap::new();
    // Module-scope EventEmitters: (declaration, listened to in a handler, emitted to).
    let mut emitters: BTreeMap<String, (Node, bool, bool)> = BTreeMap::new();
    for stmt in named_children(root) {
        let decl = if stmt.kind() == "export_statement" {
            field(stmt, "declaration").unwrap_or(stmt)
        } else {
            stmt
        };
        if !matches!(decl.kind(), "lexical_declaration" | "variable_declaration") {
            continue;
        }
        for d in named_children(decl) {
            if d.kind() != "variable_declarator" {
                continue;
            }
            let (Some(name), Some(value)) = (field(d, "name"), field(d, "value")) else {
                continue;
            };
            if name.kind() != "identifier" {
                continue;
            }
            let is_let = !text(decl, src).starts_with("const");
            if value.kind() == "new_expression"
                && let Some(ctor) = field(value, "constructor")
            {
                let ct = text(ctor, src);
                let last = ct.rsplit('.').next().unwrap_or(ct);
                if matches!(last, "EventEmitter" | "EventEmitter2") {
                    emitters.insert(text(name, src).to_string(), (d, false, false));
                }
                if matches!(last, "Mutex" | "Semaphore" | "AsyncLock" | "Lock")
                    && in_runtime_use(root, text(name, src), src)
                {
                    hits.push(Hit::at(
                        "JS-LOCK-MEMORY",
                        d,
                        format!(
                            "module-scope `{}` ({ct}) excludes only within this process",
                            text(name, src)
                        ),
                    ));
                }
            }
            let kind = if value.kind() == "number" && is_let {
                Some(CollKind::Counter)
            } else {
                collection_kind(value, src)
            };
            if let Some(kind) = kind {
                colls.insert(
                    text(name, src).to_string(),
                    Coll {
                        decl: d,
                        kind,
                        writes: Vec::new(),
                        subscribers: false,
                    },
                );
            }
        }
    }

    let session_names = local("express-session");
    let rate_names = local("express-rate-limit");
    let multer_names = local("multer");
    let socketio = local("socket.io");
    let uses_socketio = imports.contains_key("socket.io")
        || walk_any(root, |n| {
            n.kind() == "call_expression" && require_of(n, src).as_deref() == Some("socket.io")
        });
    let mut socket_servers: Vec<Node> = Vec::new();
    let mut has_adapter = false;

    walk(root, |n| {
        match n.kind() {
            "call_expression" | "new_expression" => {
                let callee = field(n, "function").or_else(|| field(n, "constructor"));
                let Some(callee) = callee else { return };
                let callee_text = text(callee, src);
                let last = callee_text.rsplit('.').next().unwrap_or(callee_text);
                let args = field(n, "arguments");
                let first_obj = args.and_then(|a| named_children(a).into_iter().next());
                // Writes to module-scope collections.
                if callee.kind() == "member_expression"
                    && let Some(obj) = field(callee, "object")
                    && obj.kind() == "identifier"
                    && let Some(c) = colls.get_mut(text(obj, src))
                    && in_runtime_function(n, src)
                    && matches!(
                        last,
                        "set"
                            | "add"
                            | "delete"
                            | "clear"
                            | "push"
                            | "unshift"
                            | "splice"
                            | "shift"
                            | "pop"
                    )
                {
                    c.writes.push(last.to_string());
                    if matches!(last, "push" | "add" | "set" | "unshift")
                        && args.is_some_and(|a| {
                            named_children(a).iter().any(|x| subscriber_value(*x, src))
                        })
                    {
                        c.subscribers = true;
                    }
                }
                if callee.kind() == "member_expression"
                    && let Some(obj) = field(callee, "object")
                    && let Some(e) = emitters.get_mut(text(obj, src))
                {
                    if matches!(last, "on" | "addListener" | "once") && in_request_handler(n, src) {
                        e.1 = true;
                    }
                    if last == "emit" {
                        e.2 = true;
                    }
                }
                // rate-limiter-flexible's in-memory limiter.
                if n.kind() == "new_expression"
                    && matches!(last, "RateLimiterMemory" | "BurstyRateLimiter")
                {
                    hits.push(Hit::at(
                        "JS-RATELIMIT-MEMORY",
                        n,
                        format!("{callee_text}: counts kept in this process"),
                    ));
                }
                // Embedded databases.
                if let Some(what) = embedded_db(n, callee_text, last, first_obj, &imports, src) {
                    let arg = args.map(|a| text(a, src)).unwrap_or("");
                    hits.push(Hit::at("JS-EMBEDDED-DB", n, what).construct(format!("js-db:{arg}")));
                }
                // express-session
                if session_names.iter().any(|s| s == callee_text) {
                    session_call(n, first_obj, src, hits);
                }
                if n.kind() == "new_expression"
                    && (callee_text.ends_with("MemoryStore"))
                    && !session_names.is_empty()
                {
                    hits.push(Hit::at(
                        "JS-SESSION-MEMORY",
                        n,
                        "express-session MemoryStore created explicitly",
                    ));
                }
                // express-rate-limit
                if rate_names.iter().any(|s| s == callee_text || s == last)
                    && !rate_names.is_empty()
                {
                    let has_store =
                        first_obj.is_some_and(|o| object_key(o, "store", src).is_some());
                    if !has_store {
                        hits.push(
                            Hit::at("JS-RATELIMIT-MEMORY", n, "express-rate-limit without a `store`: counts are kept in this process")
                                .condition("no `store` option is set, so the default MemoryStore is used"),
                        );
                    }
                }
                // multer
                if !multer_names.is_empty() {
                    if last == "diskStorage"
                        && multer_names
                            .iter()
                            .any(|m| callee_text.starts_with(m.as_str()))
                    {
                        hits.push(Hit::at(
                            "JS-UPLOAD-DISK",
                            n,
                            "multer.diskStorage writes uploads to this instance's disk",
                        ));
                    } else if multer_names.iter().any(|m| m == callee_text)
                        && first_obj.is_some_and(|o| object_key(o, "dest", src).is_some())
                    {
                        hits.push(Hit::at(
                            "JS-UPLOAD-DISK",
                            n,
                            "multer({ dest }) writes uploads to this instance's disk",
                        ));
                    }
                }
                // Timers and cron jobs in server code.
                let timer = match callee_text {
                    "setInterval" | "global.setInterval" => Some("setInterval job"),
                    _ if last == "schedule" && (imports.contains_key("node-cron")) => {
                        Some("node-cron job")
                    }
                    _ if last == "scheduleJob" && imports.contains_key("node-schedule") => {
                        Some("node-schedule job")
                    }
                    _ if n.kind() == "new_expression" && last == "CronJob" => Some("CronJob"),
                    _ => None,
                };
                if let Some(what) = timer
                    && server
                    && !frontend
                    && !housekeeping(n, &colls, src)
                {
                    hits.push(Hit::at(
                        "JS-TIMER-JOB",
                        n,
                        format!("{what} runs in every instance of the web process"),
                    ));
                }
                // Local writes in request handlers.
                if matches!(
                    last,
                    "writeFile"
                        | "writeFileSync"
                        | "createWriteStream"
                        | "appendFile"
                        | "appendFileSync"
                        | "rename"
                        | "renameSync"
                        | "copyFile"
                        | "copyFileSync"
                ) && (callee_text.starts_with("fs")
                    || callee_text.starts_with("fsp")
                    || callee_text == last)
                    // A rename moves a file; only one into a user-data folder stores it
                    // (temp-to-temp moves inside one request do not).
                    && (!last.starts_with("rename")
                        || args.and_then(|a| a.named_child(1)).is_some_and(|d| user_data_path(text(d, src))))
                    && (in_request_handler(n, src)
                        || (in_runtime_function(n, src)
                            && first_obj.is_some_and(|a| user_data_path(text(a, src)))))
                {
                    hits.push(Hit::at(
                        "JS-LOCAL-WRITE",
                        n,
                        format!(
                            "{callee_text} in a request handler writes to this instance's disk"
                        ),
                    ));
                }
                if last == "mv" && callee_text.starts_with("req.files") {
                    hits.push(Hit::at(
                        "JS-LOCAL-WRITE",
                        n,
                        "express-fileupload .mv() moves the upload onto this instance's disk",
                    ));
                }
                // socket.io servers and adapters.
                if last == "adapter" && callee.kind() == "member_expression" {
                    has_adapter = true;
                }
                if uses_socketio
                    && ((n.kind() == "new_expression"
                        && socketio.iter().any(|s| s == callee_text || s == last)
                        // `Server`, or an alias of it (`import { Server as ioServer }`).
                        && last.ends_with("Server"))
                        || (n.kind() == "call_expression"
                            && socketio.iter().any(|s| s == callee_text))
                        || (n.kind() == "call_expression"
                            && callee.kind() == "call_expression"
                            && require_of(callee, src).as_deref() == Some("socket.io")))
                {
                    // `new Server(http, { adapter: createAdapter() })` sets a shared adapter.
                    let adapter_option = args.is_some_and(|a| {
                        named_children(a)
                            .into_iter()
                            .any(|o| object_key(o, "adapter", src).is_some())
                    });
                    if adapter_option {
                        has_adapter = true;
                    } else {
                        socket_servers.push(n);
                    }
                }
            }
            "decorator" => {
                let t = text(n, src);
                if imports.contains_key("@nestjs/schedule")
                    && (t.starts_with("@Cron(") || t.starts_with("@Interval("))
                {
                    hits.push(Hit::at(
                        "JS-TIMER-JOB",
                        n,
                        format!(
                            "{} (@nestjs/schedule) runs in every instance",
                            t.split('(').next().unwrap_or(t)
                        ),
                    ));
                }
            }
            "update_expression" => {
                if let Some(arg) = field(n, "argument")
                    && arg.kind() == "identifier"
                    && let Some(c) = colls.get_mut(text(arg, src))
                    && c.kind == CollKind::Counter
                    && in_runtime_function(n, src)
                {
                    c.writes.push("++".into());
                }
            }
            "assignment_expression" | "augmented_assignment_expression" => {
                if n.kind() == "augmented_assignment_expression"
                    && let Some(left) = field(n, "left")
                    && left.kind() == "identifier"
                    && let Some(c) = colls.get_mut(text(left, src))
                    && c.kind == CollKind::Counter
                    && in_runtime_function(n, src)
                {
                    c.writes.push("+=".into());
                }
                if let Some(left) = field(n, "left")
                    && left.kind() == "subscript_expression"
                    && let Some(obj) = field(left, "object")
                    && obj.kind() == "identifier"
                    && let Some(c) = colls.get_mut(text(obj, src))
                    && in_runtime_function(n, src)
                {
                    // Keyed by the connection itself (`infos[socket.id] = ...`):
                    // per-connection bookkeeping, which lives where the connection lives.
                    let index = field(left, "index").map(|i| text(i, src)).unwrap_or("");
                    if per_connection_key(index) {
                        c.writes.push("[conn]=".into());
                    } else {
                        c.writes.push("[]=".into());
                    }
                }
            }
            "unary_expression" => {
                if text(n, src).starts_with("delete")
                    && let Some(arg) = field(n, "argument")
                    && arg.kind() == "subscript_expression"
                    && let Some(obj) = field(arg, "object")
                    && let Some(c) = colls.get_mut(text(obj, src))
                    && in_runtime_function(n, src)
                {
                    c.writes.push("delete".into());
                }
            }
            _ => {}
        }
    });

    if !has_adapter && !ctx.has_dep("redis-adapter") && !ctx.has_dep("socket.io-redis") {
        for s in socket_servers {
            hits.push(
                Hit::at(
                    "JS-WS-MEMORY",
                    s,
                    "socket.io server with the default in-memory adapter",
                )
                .condition("no `io.adapter(...)` call and no Redis adapter dependency"),
            );
        }
    }

    exports(root, src, hits);
    class_stores(root, src, hits);
    for (name, (d, listened, emitted)) in &emitters {
        if *listened && *emitted {
            hits.push(Hit::at(
                "JS-PUBSUB-MEMORY",
                *d,
                format!("module-scope EventEmitter `{name}`: request handlers subscribe and events are emitted in this process only"),
            ));
        }
    }
    for (name, c) in colls {
        if c.writes.is_empty()
            || super::memo_or_registry_name(&name)
            || c.writes.iter().any(|w| w == "[conn]=")
                && c.writes.iter().all(|w| w == "[conn]=" || w == "delete")
        {
            continue;
        }
        if c.subscribers && fans_out(root, &name, src) {
            hits.push(Hit::at(
                "JS-PUBSUB-MEMORY",
                c.decl,
                format!("module-scope `{name}` holds connected clients: messages fan out only to clients of this process"),
            ));
            continue;
        }
        if c.subscribers {
            // Connections kept only to close them at shutdown: per-connection bookkeeping.
            continue;
        }
        let lname = name.to_ascii_lowercase();
        if lname.contains("lock") || lname.contains("mutex") || lname.contains("semaphore") {
            hits.push(Hit::at(
                "JS-LOCK-MEMORY",
                c.decl,
                format!(
                    "module-scope lock table `{name}` ({}): excludes only within this process",
                    dedup(&c.writes)
                ),
            ));
            continue;
        }
        // Drained to stay under a bound (`while (a.length > LIMIT) a.shift()`): an
        // eviction list, not a queue of work.
        let bounded = walk_any(root, |w| {
            matches!(w.kind(), "while_statement" | "if_statement")
                && field(w, "condition")
                    .is_some_and(|c| text(c, src).contains(&format!("{name}.length")))
                && field(w, "body")
                    .or_else(|| field(w, "consequence"))
                    .is_some_and(|b| text(b, src).contains(&format!("{name}.shift()")))
        });
        let queue = c.kind == CollKind::Array
            && !bounded
            && c.writes.iter().any(|w| w == "push" || w == "unshift")
            && c.writes
                .iter()
                .any(|w| w == "shift" || w == "pop" || w == "splice");
        if queue {
            hits.push(Hit::at(
                "JS-QUEUE-ARRAY",
                c.decl,
                format!("module-scope array `{name}` is pushed and drained from functions: an in-process queue"),
            ));
            continue;
        }
        let kind = match c.kind {
            CollKind::Map => "Map",
            CollKind::Set => "Set",
            CollKind::Object => "object",
            CollKind::Array => "array",
            CollKind::Cache => "cache",
            CollKind::Counter => "counter",
        };
        let mut hit = Hit::at(
            "JS-GLOBAL-MUTABLE",
            c.decl,
            format!(
                "module-scope {kind} `{name}` is written from functions ({})",
                dedup(&c.writes)
            ),
        );
        hit = hit.per_user_if(&name);
        hits.push(hit);
    }
}

/// Class names (or decorators) of objects an application creates once and shares:
/// repositories, stores, services, managers. A collection field they write in a method is
/// a per-instance store.
fn singleton_class(name: &str, decorators: &str) -> bool {
    [
        "Repository",
        "Store",
        "Service",
        "Manager",
        "Registry",
        "Gateway",
        "Provider",
        "Controller",
    ]
    .iter()
    .any(|k| name.contains(k))
        || decorators.contains("@Injectable")
        || decorators.contains("@Controller")
}

/// Collection fields of singleton-like classes written from methods (not the
/// constructor): `private todos = new Map()` in an `InMemoryTodoRepository`.
fn class_stores(root: Node, src: &str, hits: &mut Sink) {
    walk(root, |n| {
        if n.kind() == "new_expression"
            && let Some(c) = field(n, "constructor")
        {
            let t = text(c, src);
            hits.tags
                .push(format!("new:{}", t.rsplit('.').next().unwrap_or(t)));
        }
    });
    // Classes this file instantiates once at module scope (`const padChannels = new
    // Channels()`): singletons.
    let mut module_instances: std::collections::HashSet<&str> = Default::default();
    for stmt in named_children(root) {
        if matches!(stmt.kind(), "lexical_declaration" | "variable_declaration") {
            for d in named_children(stmt) {
                if let Some(v) = field(d, "value")
                    && v.kind() == "new_expression"
                    && let Some(c) = field(v, "constructor")
                    && c.kind() == "identifier"
                {
                    module_instances.insert(text(c, src));
                }
            }
        }
    }
    walk(root, |c| {
        if !matches!(c.kind(), "class_declaration" | "class") {
            return;
        }
        let anonymous_instance = c.parent().is_some_and(|p| p.kind() == "new_expression");
        // `const padList = new class { ... }`: named and reported by its variable.
        let instance_decl = anonymous_instance
            .then(|| ancestor(c, &["variable_declarator"]))
            .flatten();
        let name = instance_decl
            .and_then(|d| field(d, "name"))
            .or_else(|| field(c, "name"))
            .map(|x| text(x, src))
            .unwrap_or("");
        let decorators: String = named_children(c)
            .iter()
            .filter(|d| d.kind() == "decorator")
            .map(|d| text(*d, src))
            .chain(
                c.parent()
                    .filter(|p| p.kind() == "export_statement")
                    .into_iter()
                    .flat_map(|p| {
                        named_children(p)
                            .into_iter()
                            .filter(|d| d.kind() == "decorator")
                            .map(|d| text(d, src))
                    }),
            )
            .collect();
        let module_instance = module_instances.contains(name);
        if !(anonymous_instance || module_instance || singleton_class(name, &decorators)) {
            return;
        }
        let Some(body) = field(c, "body") else { return };
        // Fields: `x = new Map()` / `x = []` / `this.x = {}` in the constructor.
        let mut fields: BTreeMap<String, Node> = BTreeMap::new();
        for m in named_children(body) {
            if m.kind() == "public_field_definition"
                && let (Some(n), Some(v)) = (field(m, "name"), field(m, "value"))
                && collection_kind(v, src)
                    .is_some_and(|k| k != CollKind::Object || text(v, src) == "{}")
            {
                fields.insert(text(n, src).to_string(), m);
            }
            if m.kind() == "method_definition"
                && field(m, "name").is_some_and(|n| text(n, src) == "constructor")
            {
                walk(m, |a| {
                    if a.kind() == "assignment_expression"
                        && let (Some(l), Some(r)) = (field(a, "left"), field(a, "right"))
                        && l.kind() == "member_expression"
                        && field(l, "object").is_some_and(|o| o.kind() == "this")
                        && collection_kind(r, src).is_some()
                        && let Some(p) = field(l, "property")
                    {
                        fields.insert(text(p, src).to_string(), a);
                    }
                });
            }
        }
        if fields.is_empty() {
            return;
        }
        let mut written: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in named_children(body) {
            if m.kind() != "method_definition"
                || field(m, "name").is_some_and(|n| text(n, src) == "constructor")
            {
                continue;
            }
            walk(m, |n| {
                let target = |e: Node| -> Option<String> {
                    (e.kind() == "member_expression"
                        && field(e, "object").is_some_and(|o| o.kind() == "this"))
                    .then(|| field(e, "property").map(|p| text(p, src).to_string()))?
                };
                match n.kind() {
                    "call_expression" => {
                        if let Some(f) = field(n, "function")
                            && f.kind() == "member_expression"
                            && let Some(obj) = field(f, "object")
                            && let Some(t) = target(obj)
                            && let Some(op) = field(f, "property").map(|p| text(p, src))
                            && matches!(
                                op,
                                "set"
                                    | "add"
                                    | "delete"
                                    | "clear"
                                    | "push"
                                    | "unshift"
                                    | "splice"
                                    | "shift"
                                    | "pop"
                            )
                        {
                            written.entry(t).or_default().push(op.to_string());
                        }
                    }
                    "assignment_expression" => {
                        if let Some(l) = field(n, "left")
                            && l.kind() == "subscript_expression"
                            && let Some(obj) = field(l, "object")
                            && let Some(t) = target(obj)
                        {
                            written.entry(t).or_default().push("[]=".into());
                        }
                    }
                    _ => {}
                }
            });
        }
        let injected = anonymous_instance
            || module_instance
            || decorators.contains("@Injectable")
            || decorators.contains("@Controller");
        for (f, node) in &fields {
            let lf = f.to_ascii_lowercase();
            if [
                "timer",
                "timeout",
                "expiration",
                "interval",
                "listener",
                "handler",
                "socket",
            ]
            .iter()
            .any(|k| lf.contains(k))
                || super::memo_or_registry_name(f)
            {
                continue;
            }
            if let Some(ops) = written.get(f) {
                let hit = Hit::at(
                    "JS-GLOBAL-MUTABLE",
                    instance_decl.unwrap_or(*node),
                    format!(
                        "`{name}.{f}` is a collection the shared `{name}` writes at run time ({})",
                        dedup(ops)
                    ),
                )
                .per_user_if(f);
                if injected {
                    hits.push(hit);
                } else {
                    // Only a class the application instantiates (an in-memory variant
                    // kept next to the Redis one it actually uses is not deployed state).
                    hits.deferred.push(super::Deferred {
                        needs: format!("new:{name}"),
                        unless: None,
                        hit,
                    });
                }
            }
        }
    });
}

/// Per-function facts for the cross-file pass (see `link`): name, class, whether it is a
/// request handler, calls, and fs writes not already reported in a handler.
fn exports(root: Node, src: &str, sink: &mut Sink) {
    walk(root, |f| {
        if !FUNCTIONS.contains(&f.kind()) {
            return;
        }
        let name = field(f, "name")
            .map(|x| text(x, src).to_string())
            .or_else(|| {
                let p = f.parent()?;
                (p.kind() == "variable_declarator"
                    || p.kind() == "pair"
                    || p.kind() == "assignment_expression")
                    .then(|| {
                        field(p, "name")
                            .or_else(|| field(p, "key"))
                            .or_else(|| field(p, "left"))
                            .map(|x| text(x, src).rsplit('.').next().unwrap_or("").to_string())
                    })?
            })
            .unwrap_or_default();
        let Some(body) = field(f, "body") else { return };
        let owner = ancestor(f, &["class_declaration", "class"])
            .and_then(|c| field(c, "name"))
            .map(|x| text(x, src).to_string());
        let handler = in_request_handler(body, src);
        let mut info = super::FuncInfo {
            name,
            owner,
            handler,
            row: f.start_position().row,
            ..Default::default()
        };
        walk(body, |n| {
            if n.kind() != "call_expression" || ancestor(n, FUNCTIONS) != Some(f) {
                return;
            }
            let Some(c) = field(n, "function") else {
                return;
            };
            let ct = text(c, src);
            let (last, recv) =
                super::link::callee_and_receiver(c, "member_expression", "object", src);
            let last = last.as_str();
            info.calls.push(last.to_string());
            info.receivers.push(recv);
            if !handler
                && matches!(
                    last,
                    "writeFile"
                        | "writeFileSync"
                        | "createWriteStream"
                        | "copyFile"
                        | "copyFileSync"
                        | "rename"
                        | "renameSync"
                        | "appendFile"
                )
                && (ct.starts_with("fs")
                    || ct.starts_with("fsp")
                    || ct.starts_with("promises")
                    || ct == last)
                && info.writes.is_empty()
            {
                info.writes.push(super::LocalWrite {
                    rule: "JS-LOCAL-WRITE",
                    row: n.start_position().row,
                    col: n.start_position().column,
                    what: format!("{ct}(...)"),
                });
            }
        });
        if !info.name.is_empty() {
            sink.funcs.push(info);
        }
    });
}

/// True when the collection `name` is iterated to send to its members (`.write(`,
/// `.send(`, `.emit(` in a loop or `forEach` over it): fan-out.
fn fans_out(root: Node, name: &str, src: &str) -> bool {
    walk_any(root, |n| {
        let body = match n.kind() {
            "for_in_statement" => field(n, "right")
                .filter(|r| text(*r, src).starts_with(name))
                .and_then(|_| field(n, "body")),
            "call_expression" => field(n, "function")
                .filter(|f| {
                    let t = text(*f, src);
                    t == format!("{name}.forEach") || t == format!("{name}.values().forEach")
                })
                .and_then(|_| field(n, "arguments")),
            _ => None,
        };
        body.is_some_and(|b| {
            let t = text(b, src);
            t.contains(".write(")
                || t.contains(".send(")
                || t.contains(".emit(")
                || t.contains(".json(")
        })
    })
}

/// An index expression naming a connection (`socket.id`, `client.id`, `ws.id`, `sid`).
fn per_connection_key(index: &str) -> bool {
    let i = index.to_ascii_lowercase();
    [
        "socket.id",
        "client.id",
        "ws.id",
        "conn.id",
        "connection.id",
        "socketid",
    ]
    .iter()
    .any(|k| i.contains(k))
}

/// A value that is a client connection or a response stream (`res`, `ws`, `socket`,
/// `{ id, res }`).
fn subscriber_value(n: Node, src: &str) -> bool {
    let names = [
        "res",
        "response",
        "ws",
        "socket",
        "conn",
        "connection",
        "client",
        "stream",
        "subscriber",
        "sse",
    ];
    match n.kind() {
        "identifier" => names.contains(&text(n, src)),
        "object" => named_children(n).iter().any(|p| match p.kind() {
            "shorthand_property_identifier" => names.contains(&text(*p, src)),
            "pair" => field(*p, "value").is_some_and(|v| subscriber_value(v, src)),
            _ => false,
        }),
        _ => false,
    }
}

/// True when `name` is used inside some function (not only at module top level).
fn in_runtime_use(root: Node, name: &str, src: &str) -> bool {
    walk_any(root, |n| {
        n.kind() == "identifier" && text(n, src) == name && ancestor(n, FUNCTIONS).is_some()
    })
}

/// A timer whose callback only tidies this process's own structures (deletes expired
/// entries, clears a map, pings its own connections): housekeeping of per-instance data,
/// not shared work run N times.
fn housekeeping(call: Node, colls: &BTreeMap<String, Coll>, src: &str) -> bool {
    let Some(cb) = field(call, "arguments").and_then(|a| a.named_child(0)) else {
        return false;
    };
    let body = match cb.kind() {
        "arrow_function" | "function_expression" | "function" => field(cb, "body").unwrap_or(cb),
        _ => return false,
    };
    let t = text(body, src);
    let lower = t.to_ascii_lowercase();
    let tidy_words = [
        "delete", "clear", "prune", "cleanup", "clean", "expire", "evict", "purge", "ping",
        "sweep", "gc",
    ];
    let tidy = tidy_words.iter().any(|w| lower.contains(w));
    // Any call on something that is not a module collection or a local: shared work.
    let mut outside = false;
    walk(body, |n| {
        if n.kind() == "call_expression"
            && let Some(f) = field(n, "function")
        {
            let ft = text(f, src);
            let root_name = ft.split(['.', '[', '(']).next().unwrap_or(ft);
            let last = ft.rsplit('.').next().unwrap_or(ft);
            let benign = colls.contains_key(root_name)
                || matches!(
                    root_name,
                    "Date" | "Math" | "Object" | "console" | "Array" | "JSON"
                )
                || tidy_words
                    .iter()
                    .any(|w| last.to_ascii_lowercase().contains(w))
                || matches!(
                    last,
                    "forEach"
                        | "keys"
                        | "values"
                        | "entries"
                        | "get"
                        | "has"
                        | "now"
                        | "filter"
                        | "terminate"
                        | "isAlive"
                );
            if !benign {
                outside = true;
            }
        }
    });
    tidy && !outside
}

/// A call or `new` that opens an embedded database for the application, with a message.
fn embedded_db(
    n: Node,
    callee: &str,
    last: &str,
    first: Option<Node>,
    imports: &HashMap<String, Vec<String>>,
    src: &str,
) -> Option<String> {
    let from = |m: &str| {
        imports.get(m).is_some_and(|names| {
            names
                .iter()
                .any(|x| callee == x || callee.starts_with(&format!("{x}.")))
        })
    };
    let is_new = n.kind() == "new_expression";
    if is_new && (from("sqlite3") && last == "Database" || from("better-sqlite3")) {
        return Some(format!(
            "new {callee}(...): the database is a SQLite file on this instance"
        ));
    }
    if (from("lowdb") || from("lowdb/node") || from("lowdb/adapters/FileSync"))
        && (last == "Low"
            || last == "FileSync"
            || last == "JSONFile"
            || last == "low"
            || last == "LowSync"
            || last == "JSONFileSync")
    {
        return Some(format!(
            "{callee}: lowdb keeps the data in a JSON file on this instance"
        ));
    }
    if (from("nedb") || from("@seald-io/nedb") || from("nedb-promises"))
        && (is_new || last == "create")
    {
        return Some(format!(
            "{callee}: NeDB keeps the data in a file on this instance"
        ));
    }
    // ORM options: { dialect: 'sqlite' } (Sequelize), { type: 'sqlite' } (TypeORM),
    // { client: 'sqlite3' } (knex).
    let obj = first?;
    if obj.kind() != "object" {
        return None;
    }
    for key in ["dialect", "type", "client"] {
        if let Some(v) = object_key(obj, key, src)
            && let Some(v) = string_value(v, src)
            && matches!(v.as_str(), "sqlite" | "sqlite3" | "better-sqlite3")
        {
            return Some(format!(
                "{callee}({{ {key}: '{v}' }}): the database is a SQLite file on this instance"
            ));
        }
    }
    None
}

fn dedup(v: &[String]) -> String {
    let mut s: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
    s.sort();
    s.dedup();
    s.join(", ")
}

fn walk_any(root: Node, mut f: impl FnMut(Node) -> bool) -> bool {
    let mut found = false;
    walk(root, |n| {
        if !found && f(n) {
            found = true;
        }
    });
    found
}

/// A path literal pointing at /tmp or an uploads directory: user data by convention.
pub(crate) fn user_data_path(arg: &str) -> bool {
    let a = arg.to_ascii_lowercase();
    (a.starts_with(['"', '\'', '`'])
        || a.starts_with("path.join(")
        || a.starts_with("path.resolve("))
        && (a.contains("/tmp/")
            || a.contains("'/tmp'")
            || a.contains("\"/tmp\"")
            || a.contains("upload"))
}

/// `require('m')` → `m` (also `require('m').x`).
fn require_of(n: Node, src: &str) -> Option<String> {
    let n = if n.kind() == "member_expression" {
        field(n, "object")?
    } else {
        n
    };
    if n.kind() != "call_expression" {
        return None;
    }
    if text(field(n, "function")?, src) != "require" {
        return None;
    }
    let arg = named_children(field(n, "arguments")?).into_iter().next()?;
    string_value(arg, src)
}

/// The collection a module-scope initialiser creates, if any.
fn collection_kind(value: Node, src: &str) -> Option<CollKind> {
    match value.kind() {
        "new_expression" => {
            let ctor = text(field(value, "constructor")?, src);
            match ctor {
                "Map" => Some(CollKind::Map),
                "Set" => Some(CollKind::Set),
                "LRUCache" | "LRU" | "NodeCache" | "QuickLRU" => Some(CollKind::Cache),
                _ => None,
            }
        }
        "object" => Some(CollKind::Object),
        "array" => Some(CollKind::Array),
        // TypeScript: `new Map<string, T>()` parses the same; `as` casts wrap it.
        "as_expression" | "satisfies_expression" | "parenthesized_expression" => {
            collection_kind(value.named_child(0)?, src)
        }
        _ => None,
    }
}

/// The value of `key` in an object literal.
fn object_key<'t>(obj: Node<'t>, key: &str, src: &str) -> Option<Node<'t>> {
    if obj.kind() != "object" {
        return None;
    }
    for p in named_children(obj) {
        match p.kind() {
            "pair" => {
                let k = field(p, "key")?;
                let kt = text(k, src).trim_matches(['"', '\'']);
                if kt == key {
                    return field(p, "value").or(Some(p));
                }
            }
            "shorthand_property_identifier" if text(p, src) == key => return Some(p),
            _ => {}
        }
    }
    None
}

fn session_call(n: Node, first: Option<Node>, src: &str, hits: &mut Sink) {
    let Some(obj) = first else {
        hits.push(
            Hit::at(
                "JS-SESSION-MEMORY",
                n,
                "express-session without options uses MemoryStore",
            )
            .condition("no `store` option is set"),
        );
        return;
    };
    if obj.kind() != "object" {
        // Options built elsewhere: cannot tell.
        return;
    }
    match object_key(obj, "store", src) {
        None => hits.push(
            Hit::at(
                "JS-SESSION-MEMORY",
                n,
                "express-session without a `store` keeps sessions in process memory (MemoryStore)",
            )
            .condition("no `store` option is set, so express-session falls back to MemoryStore"),
        ),
        Some(v) if text(v, src).contains("MemoryStore") => {
            hits.push(Hit::at(
                "JS-SESSION-MEMORY",
                n,
                "express-session with MemoryStore",
            ));
        }
        Some(_) => {}
    }
}

/// The function enclosing `n`, with its name when it has one (declaration name, method
/// name, or the variable it is assigned to).
fn enclosing_function<'t>(n: Node<'t>, src: &str) -> Option<(Node<'t>, String)> {
    let f = ancestor(n, FUNCTIONS)?;
    let name = field(f, "name")
        .map(|x| text(x, src).to_string())
        .or_else(|| {
            let p = f.parent()?;
            (p.kind() == "variable_declarator")
                .then(|| field(p, "name").map(|x| text(x, src).to_string()))?
        })
        .unwrap_or_default();
    Some((f, name))
}

/// True when `n` runs inside a function that is not start-up code (by name).
fn in_runtime_function(n: Node, src: &str) -> bool {
    let mut cur = n;
    let mut any = false;
    while let Some((f, name)) = enclosing_function(cur, src) {
        if !name.is_empty() && startup_function(&name) {
            return false;
        }
        any = true;
        cur = f;
    }
    any
}

/// True when `n` is inside a function taking `req`/`request`/`res` (an HTTP handler),
/// or inside a callback passed to `app.get/post/...`/`router.*`.
fn in_request_handler(n: Node, src: &str) -> bool {
    let mut cur = n;
    while let Some(f) = ancestor(cur, FUNCTIONS) {
        if let Some(params) = field(f, "parameters") {
            let mut found = false;
            walk(params, |p| {
                if p.kind() == "identifier"
                    && matches!(text(p, src), "req" | "request" | "res" | "response")
                {
                    found = true;
                }
            });
            if found {
                return true;
            }
        }
        if let Some(p) = f.parent()
            && p.kind() == "arguments"
            && let Some(call) = p.parent()
            && let Some(callee) = field(call, "function")
        {
            let t = text(callee, src);
            let verb = t.rsplit('.').next().unwrap_or("");
            if matches!(
                verb,
                "get" | "post" | "put" | "patch" | "delete" | "all" | "use"
            ) && t.contains('.')
            {
                return true;
            }
            // A socket event handler (`socket.on('saveSettings', ...)`).
            let obj = t
                .rsplit_once('.')
                .map(|(o, _)| o.to_ascii_lowercase())
                .unwrap_or_default();
            if verb == "on" && (obj.contains("socket") || obj == "ws" || obj.ends_with("client")) {
                return true;
            }
        }
        cur = f;
    }
    false
}

//! Detectors for PHP: native sessions with the files handler, static arrays written at
//! run time, APCu writes, uploads moved to local paths.
//!
//! PHP-FPM starts every request with fresh statics, so static arrays are only
//! per-instance state under long-running workers (Octane, Swoole, RoadRunner): they are
//! reported only when such a worker is a dependency. Must never flag
//! a static array only read, nor sessions with a registered shared handler.

use std::collections::BTreeMap;

use tree_sitter::Node;

use super::tree::{ancestor, field, named_children, string_value, text, walk};
use super::{FileCtx, Hit, Sink, startup_function};

const WORKERS: &[&str] = &[
    "laravel/octane",
    "swoole",
    "spiral/roadrunner",
    "react/http",
    "workerman",
    "amphp/http-server",
    "runtime/frankenphp",
];

struct Static<'t> {
    node: Node<'t>,
    /// Enclosing function for `static $x` locals; `None` for class properties.
    scope: Option<Node<'t>>,
    writes: usize,
}

pub(crate) fn scan(root: Node, ctx: &FileCtx, hits: &mut Sink) {
    let src = ctx.src;
    let long_running = WORKERS.iter().any(|w| ctx.has_dep(w));
    let mut locals: Vec<(String, Static)> = Vec::new();
    let mut props: BTreeMap<String, Static> = BTreeMap::new();
    let mut shared_handler = false;
    let mut session_starts = Vec::new();

    walk(root, |n| match n.kind() {
        "static_variable_declaration" => {
            if let (Some(name), Some(v)) = (field(n, "name"), field(n, "value"))
                && v.kind() == "array_creation_expression"
            {
                locals.push((
                    text(name, src).trim_start_matches('$').to_string(),
                    Static {
                        node: n,
                        scope: ancestor(
                            n,
                            &[
                                "function_definition",
                                "method_declaration",
                                "anonymous_function",
                            ],
                        ),
                        writes: 0,
                    },
                ));
            }
        }
        "property_declaration" => {
            if !named_children(n)
                .iter()
                .any(|c| c.kind() == "static_modifier")
            {
                return;
            }
            for el in named_children(n) {
                if el.kind() == "property_element"
                    && let (Some(name), Some(v)) = (field(el, "name"), field(el, "default_value"))
                    && v.kind() == "array_creation_expression"
                {
                    props.insert(
                        text(name, src).trim_start_matches('$').to_string(),
                        Static {
                            node: n,
                            scope: None,
                            writes: 0,
                        },
                    );
                }
            }
        }
        "function_call_expression" => {
            let fname = field(n, "function").map(|f| text(f, src)).unwrap_or("");
            let fname = fname.trim_start_matches('\\');
            let args: Vec<Node> = field(n, "arguments")
                .map(named_children)
                .unwrap_or_default();
            match fname {
                "session_start" => session_starts.push(n),
                "session_set_save_handler" => shared_handler = true,
                "ini_set" => {
                    let k = args
                        .first()
                        .and_then(|a| a.named_child(0))
                        .and_then(|s| string_value(s, src));
                    let v = args
                        .get(1)
                        .and_then(|a| a.named_child(0))
                        .and_then(|s| string_value(s, src));
                    if k.as_deref() == Some("session.save_handler") && v.as_deref() != Some("files")
                    {
                        shared_handler = true;
                    }
                }
                "apcu_store" | "apcu_add" | "apcu_inc" | "apcu_dec" | "apcu_cas" | "apcu_entry"
                | "apc_store" | "apc_add" => hits.push(Hit::at(
                    "PHP-APCU",
                    n,
                    format!("{fname}() writes to this server's shared memory only"),
                )),
                "move_uploaded_file" => hits.push(Hit::at(
                    "PHP-LOCAL-UPLOAD",
                    n,
                    "move_uploaded_file() keeps the upload on this instance's disk",
                )),
                _ => {}
            }
        }
        "object_creation_expression" => {
            let t = text(n, src);
            if t.starts_with("new PDO") || t.starts_with("new \\PDO") {
                let dsn = field(n, "arguments")
                    .or_else(|| {
                        named_children(n)
                            .into_iter()
                            .find(|c| c.kind() == "arguments")
                    })
                    .and_then(|a| a.named_child(0))
                    .and_then(|a| a.named_child(0))
                    .map(|a| text(a, src).trim_matches(['"', '\'']).to_string())
                    .unwrap_or_default();
                if dsn.starts_with("sqlite:") {
                    hits.push(
                        Hit::at(
                            "PHP-EMBEDDED-DB",
                            n,
                            "new PDO(\"sqlite:...\"): the database is a file on this instance",
                        )
                        .construct("php-sqlite"),
                    );
                }
            }
            if t.starts_with("new SQLite3") || t.starts_with("new \\SQLite3") {
                hits.push(
                    Hit::at(
                        "PHP-EMBEDDED-DB",
                        n,
                        "new SQLite3(...): the database is a file on this instance",
                    )
                    .construct("php-sqlite"),
                );
            }
        }
        "member_call_expression" => {
            let name = field(n, "name").map(|x| text(x, src)).unwrap_or("");
            let obj = field(n, "object").map(|x| text(x, src)).unwrap_or("");
            let args = field(n, "arguments").map(|a| text(a, src)).unwrap_or("");
            if matches!(name, "store" | "storeAs")
                && obj.contains("->file(")
                && !args.contains("s3")
            {
                hits.push(
                    Hit::at("PHP-LOCAL-UPLOAD", n, format!("uploaded file ->{name}() on the default disk"))
                        .condition("no disk argument: the default disk (FILESYSTEM_DISK) is `local` unless configured"),
                );
            }
        }
        _ => {}
    });

    walk(root, |n| {
        if n.kind() != "assignment_expression" && n.kind() != "augmented_assignment_expression" {
            return;
        }
        let Some(left) = field(n, "left") else { return };
        if left.kind() != "subscript_expression" {
            return;
        }
        let Some(base) = left.named_child(0) else {
            return;
        };
        match base.kind() {
            "variable_name" => {
                let name = text(base, src).trim_start_matches('$');
                let scope = ancestor(
                    n,
                    &[
                        "function_definition",
                        "method_declaration",
                        "anonymous_function",
                    ],
                );
                for (lname, s) in locals.iter_mut() {
                    if lname == name && s.scope == scope {
                        s.writes += 1;
                    }
                }
            }
            "scoped_property_access_expression" => {
                let name = field(base, "name")
                    .map(|x| text(x, src).trim_start_matches('$'))
                    .unwrap_or("");
                let method = ancestor(n, &["method_declaration"])
                    .and_then(|m| field(m, "name"))
                    .map(|x| text(x, src))
                    .unwrap_or("");
                if let Some(p) = props.get_mut(name)
                    && !method.is_empty()
                    && method != "__construct"
                    && !startup_function(method)
                {
                    p.writes += 1;
                }
            }
            _ => {}
        }
    });

    if !shared_handler {
        // One finding per file: several session_start() calls are the same state.
        for n in session_starts.into_iter().take(1) {
            hits.push(
                Hit::at("PHP-SESSION-FILES", n, "session_start() with the default files handler keeps sessions on this server's disk")
                    .condition("no session_set_save_handler()/ini_set('session.save_handler') here; php.ini defaults to files")
                    // Every session_start() of the application uses the one session store.
                    .construct("project:php-native-session"),
            );
        }
    }
    let statics = locals
        .into_iter()
        .chain(props)
        .filter(|(_, s)| s.writes > 0);
    let controller = ctx.rel.contains("Controller");
    let shape = super::link::FuncShape {
        funcs: &["method_declaration", "function_definition"],
        calls: &["function_call_expression", "scoped_call_expression"],
        name: &|f| field(f, "name").map(|n| text(n, src).to_string()),
        owner: &|f| {
            ancestor(f, &["class_declaration"])
                .and_then(|c| field(c, "name"))
                .map(|n| text(n, src).to_string())
        },
        handler: &|f| controller && f.kind() == "method_declaration",
        callee: &|n| {
            if n.kind() == "scoped_call_expression" {
                let name = field(n, "name").map(|x| text(x, src))?;
                let scope = field(n, "scope").map(|x| text(x, src)).unwrap_or("");
                return Some((name.to_string(), scope.to_string()));
            }
            let t = field(n, "function").map(|f| text(f, src))?;
            Some((t.trim_start_matches('\\').to_string(), String::new()))
        },
        write: &|n| {
            if n.kind() == "scoped_call_expression" {
                let name = field(n, "name").map(|x| text(x, src))?;
                let scope = field(n, "scope").map(|x| text(x, src)).unwrap_or("");
                // Laravel's File facade writes the local filesystem.
                return (scope.trim_start_matches('\\') == "File"
                    && matches!(name, "put" | "move" | "copy" | "append"))
                .then(|| format!("File::{name}()"));
            }
            let t = field(n, "function").map(|f| text(f, src))?;
            matches!(
                t.trim_start_matches('\\'),
                "file_put_contents" | "fwrite" | "copy" | "rename"
            )
            .then(|| format!("{t}()"))
        },
        rule: "PHP-LOCAL-UPLOAD",
    };
    super::link::collect(root, &shape, hits);
    // Method calls (`$this->storage->save()`) link by name too.
    walk(root, |n| {
        if n.kind() == "member_call_expression"
            && let Some(m) = field(n, "name")
            && let Some(f) = ancestor(n, &["method_declaration", "function_definition"])
            && let Some(fname) = field(f, "name").map(|x| text(x, src))
            && let Some(info) = hits
                .funcs
                .iter_mut()
                .rev()
                .find(|i| i.name == fname && i.row == f.start_position().row)
        {
            info.calls.push(text(m, src).to_string());
            info.receivers.push(
                field(n, "object")
                    .map(|o| text(o, src).to_ascii_lowercase())
                    .unwrap_or_default(),
            );
        }
    });
    // Under PHP-FPM statics die with the request: only long-running workers keep them.
    if !long_running {
        return;
    }
    for (name, s) in statics {
        hits.push(Hit::at(
            "PHP-STATIC-ARRAY",
            s.node,
            format!(
                "static array `${name}` is written at run time and lives as long as the worker"
            ),
        ));
    }
}

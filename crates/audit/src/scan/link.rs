//! Follows state beyond the handler: a request handler that calls a storage/uploader
//! method (in any file) which writes to local disk is reported at the write, naming the
//! handler. Functions are linked by simple name across the project, at most `MAX_DEPTH`
//! calls deep.
//!
//! Must never link through names so generic that they would join unrelated code (`get`,
//! `save`, `write`...) unless the receiver names the writer's class, and never report a
//! write that the language detector already reported inside a handler.

use std::collections::{HashMap, HashSet, VecDeque};

use tree_sitter::Node;

use super::{FuncInfo, Hit};

/// Calls followed from a handler: handler → helper → storage class → write.
const MAX_DEPTH: usize = 3;

/// Callee names too common to link on without a matching receiver.
const GENERIC: &[&str] = &[
    "save",
    "write",
    "get",
    "set",
    "put",
    "post",
    "create",
    "update",
    "delete",
    "remove",
    "add",
    "run",
    "call",
    "open",
    "close",
    "read",
    "process",
    "handle",
    "execute",
    "init",
    "new",
    "main",
    "__init__",
    "send",
    "load",
    "store",
    "copy",
    "move",
    "render",
    "build",
    "apply",
    "start",
    "stop",
    "to_s",
    "to_string",
    "from",
    "into",
    "default",
    "clone",
    "append",
    "push",
    "insert",
    "flush",
    "sync",
    "exec",
    "invoke",
    "perform",
    "emit",
    "log",
    "info",
    "debug",
    "warn",
    "error",
    "format",
    "parse",
    "validate",
    "check",
];

/// Names (of a file, class or function) that say it deals with stored files.
const STORAGE_WORDS: &[&str] = &[
    "upload",
    "storage",
    "store",
    "file",
    "media",
    "attachment",
    "avatar",
    "image",
    "picture",
    "photo",
    "asset",
    "document",
    "disk",
    "blob",
    "archive",
    "export",
    "thumbnail",
    "backup",
    "writer",
];

/// The words of an identifier or path (`FilesystemUploader` → filesystem, uploader;
/// `internal/profile/profile.go` → internal, profile, profile, go).
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() || (c.is_ascii_uppercase() && prev_lower) {
            if !cur.is_empty() {
                out.push(cur.to_ascii_lowercase());
            }
            cur.clear();
        }
        if c.is_ascii_alphanumeric() {
            cur.push(c);
        }
        prev_lower = c.is_ascii_lowercase();
    }
    if !cur.is_empty() {
        out.push(cur.to_ascii_lowercase());
    }
    out
}

/// A name (class, function or file) that says it deals with stored files: one of its
/// words starts with a storage word (`uploads`, `FileSystemStorageService`, `avatar`).
fn storage_like(s: &str) -> bool {
    words(s)
        .iter()
        .any(|w| STORAGE_WORDS.iter().any(|k| w.starts_with(k)))
}

/// A function or class that generates or persists key material (RSA keys, secrets).
fn key_material(f: &FuncInfo) -> bool {
    let name = format!("{} {}", f.owner.as_deref().unwrap_or(""), f.name).to_ascii_lowercase();
    [
        "rsa",
        "keypair",
        "key_pair",
        "privatekey",
        "private_key",
        "secret",
        "signing_key",
        "jwt_key",
    ]
    .iter()
    .any(|k| name.contains(k))
        || words(&name).iter().any(|w| w == "key" || w == "keys")
}

/// Derived files regenerated on demand (thumbnails, temporary copies): each
/// instance rebuilding its own is duplicated work, not lost state.
fn derived(s: &str) -> bool {
    words(s).iter().any(|w| {
        w.starts_with("thumbnail")
            || w.starts_with("temp")
            || w.starts_with("tmp")
            || w.starts_with("preview")
    })
}

/// A class named for a remote backend (S3, SFTP, WebDAV, Dropbox, cloud): its local
/// writes are temporary copies, not where the data lives.
fn remote_backend(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    ["sftp", "webdav", "dropbox", "s3", "gcs", "azure", "minio"]
        .iter()
        .any(|k| l.contains(k))
        || words(s).iter().any(|w| {
            matches!(
                w.as_str(),
                "s3" | "sftp"
                    | "ftp"
                    | "webdav"
                    | "dropbox"
                    | "cloud"
                    | "remote"
                    | "gcs"
                    | "azure"
                    | "minio"
            )
        })
}

/// Hits for local writes reached from handlers. `funcs` is `(file, function)` for every
/// function of the project.
pub(crate) fn local_writes(funcs: &mut [(String, FuncInfo)]) -> Vec<(String, Hit)> {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (_, f)) in funcs.iter().enumerate() {
        by_name.entry(f.name.as_str()).or_default().push(i);
    }
    // For each writer, the handlers that reach it (name, file, 1-based line).
    let mut reached: HashMap<usize, Vec<(String, String, usize)>> = HashMap::new();
    for (h, (hfile, hf)) in funcs.iter().enumerate() {
        if !hf.handler {
            continue;
        }
        let mut seen: HashSet<usize> = HashSet::from([h]);
        let mut queue: VecDeque<(usize, usize)> = VecDeque::from([(h, 0)]);
        while let Some((i, depth)) = queue.pop_front() {
            if depth >= MAX_DEPTH {
                continue;
            }
            let f = &funcs[i].1;
            for (k, callee) in f.calls.iter().enumerate() {
                let Some(targets) = by_name.get(callee.as_str()) else {
                    continue;
                };
                let receiver = f.receivers.get(k).map(|s| s.as_str()).unwrap_or("");
                for &t in targets {
                    if seen.contains(&t) {
                        continue;
                    }
                    let tf = &funcs[t].1;
                    if tf.handler {
                        continue;
                    }
                    if GENERIC.contains(&callee.as_str()) {
                        // Only through a receiver that names the class (storage_service →
                        // FileSystemStorageService), or `self` within one class.
                        let Some(owner) = &tf.owner else { continue };
                        let own = matches!(receiver, "self" | "this" | "cls" | "$this" | "s")
                            && f.owner.as_ref() == Some(owner);
                        if !own && (receiver.is_empty() || !shares_word(receiver, owner)) {
                            continue;
                        }
                    }
                    seen.insert(t);
                    if !tf.writes.is_empty() {
                        reached.entry(t).or_default().push((
                            hf.name.clone(),
                            hfile.clone(),
                            hf.row + 1,
                        ));
                    }
                    queue.push_back((t, depth + 1));
                }
            }
        }
    }
    // Key material generated and written on local disk (an RSA key pair, a secret) is
    // per-instance state wherever it is written from: instances sign and decrypt with
    // different keys.
    for (i, (_, f)) in funcs.iter().enumerate() {
        if !f.writes.is_empty() && !reached.contains_key(&i) && key_material(f) {
            reached.insert(i, Vec::new());
        }
    }
    let mut out = Vec::new();
    let mut keys: Vec<usize> = reached.keys().copied().collect();
    keys.sort_unstable();
    for t in keys {
        let (file, f) = &funcs[t];
        let owner_named = f.owner.as_deref().is_some_and(storage_like);
        let keys = key_material(f);
        if !(keys || owner_named || storage_like(&f.name) || storage_like(file))
            || f.owner.as_deref().is_some_and(remote_backend)
            || remote_backend(&f.name)
            || derived(&f.name)
            || f.owner.as_deref().is_some_and(derived)
        {
            continue;
        }
        let mut handlers = reached.remove(&t).unwrap_or_default();
        if handlers.is_empty() {
            for w in &f.writes {
                out.push((
                    file.clone(),
                    Hit::at_row(
                        w.rule,
                        w.row,
                        w.col,
                        format!(
                            "{} in `{}` stores key material on this instance's disk: each instance generates its own",
                            w.what,
                            f.owner.as_deref().map(|o| format!("{o}.{}", f.name)).unwrap_or_else(|| f.name.clone())
                        ),
                    ),
                ));
            }
            continue;
        }
        handlers.sort();
        handlers.dedup();
        let shown: Vec<String> = handlers
            .iter()
            .take(3)
            .map(|(n, hf, l)| format!("`{n}` ({hf}:{l})"))
            .collect();
        let more = handlers.len().saturating_sub(3);
        let qual = match &f.owner {
            Some(o) => format!("{o}.{}", f.name),
            None => f.name.clone(),
        };
        for w in &f.writes {
            // Writers of one directory (a storage class and the image writer it calls)
            // are one construct.
            let dir = file.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            let construct = format!("project:link:{dir}");
            out.push((
                file.clone(),
                Hit::at_row(
                    w.rule,
                    w.row,
                    w.col,
                    format!(
                        "{} in `{qual}` writes to this instance's disk; reached from handler {}{}",
                        w.what,
                        shown.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    ),
                )
                .construct(construct),
            ));
        }
    }
    out
}

/// True when the receiver text and the class name share a word of 4+ letters
/// (`storage_service` / `FileSystemStorageService`, `get_uploader()` / `FilesystemUploader`).
fn shares_word(receiver: &str, owner: &str) -> bool {
    let long = |s: &str| -> Vec<String> { words(s).into_iter().filter(|w| w.len() >= 4).collect() };
    let r = long(receiver);
    let o = long(owner);
    r.iter().any(|w| {
        o.iter()
            .any(|x| x == w || x.starts_with(w.as_str()) || w.starts_with(x.as_str()))
    })
}

/// The simple callee name and the lower-cased receiver text of a call's function node
/// (`storage.save` → ("save", "storage")); `member` is the grammar's member-access kind.
pub(crate) fn callee_and_receiver(
    f: Node,
    member: &str,
    object: &str,
    src: &str,
) -> (String, String) {
    let t = super::tree::text(f, src);
    let last = t.rsplit('.').next().unwrap_or(t).to_string();
    let recv = if f.kind() == member {
        super::tree::field(f, object)
            .map(|o| super::tree::text(o, src).to_ascii_lowercase())
            .unwrap_or_default()
    } else {
        String::new()
    };
    (last, recv)
}

/// How one language's functions look to `collect`: the function node kinds, the call node
/// kind, and closures for the parts that differ.
pub(crate) struct FuncShape<'a> {
    /// Node kinds of functions and methods.
    pub funcs: &'a [&'a str],
    /// Node kinds of calls.
    pub calls: &'a [&'a str],
    /// The function's simple name.
    pub name: &'a dyn Fn(Node) -> Option<String>,
    /// Its class / receiver type.
    pub owner: &'a dyn Fn(Node) -> Option<String>,
    /// True for a request handler.
    pub handler: &'a dyn Fn(Node) -> bool,
    /// `(callee simple name, receiver text)` of a call.
    pub callee: &'a dyn Fn(Node) -> Option<(String, String)>,
    /// A description of the local-disk write this call makes, if it makes one.
    pub write: &'a dyn Fn(Node) -> Option<String>,
    /// The rule a write reached from a handler is reported under.
    pub rule: &'static str,
}

/// Per-function facts of one file for `local_writes`: every function's calls, and its
/// first local-disk write when it is not itself a handler (handlers' own writes are
/// reported by the language detectors).
pub(crate) fn collect(root: Node, shape: &FuncShape, sink: &mut super::Sink) {
    super::tree::walk(root, |f| {
        if !shape.funcs.contains(&f.kind()) {
            return;
        }
        let Some(name) = (shape.name)(f) else { return };
        let handler = (shape.handler)(f);
        let mut info = FuncInfo {
            name,
            owner: (shape.owner)(f),
            handler,
            row: f.start_position().row,
            ..Default::default()
        };
        super::tree::walk(f, |n| {
            if !shape.calls.contains(&n.kind()) || super::tree::ancestor(n, shape.funcs) != Some(f)
            {
                return;
            }
            if let Some((callee, recv)) = (shape.callee)(n) {
                info.calls.push(callee);
                info.receivers.push(recv.to_ascii_lowercase());
            }
            if !handler
                && info.writes.is_empty()
                && let Some(what) = (shape.write)(n)
            {
                info.writes.push(super::LocalWrite {
                    rule: shape.rule,
                    row: n.start_position().row,
                    col: n.start_position().column,
                    what,
                });
            }
        });
        sink.funcs.push(info);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::LocalWrite;

    fn write(row: usize, what: &str) -> LocalWrite {
        LocalWrite {
            rule: "PY-LOCAL-WRITE",
            row,
            col: 0,
            what: what.into(),
        }
    }

    fn func(name: &str, owner: Option<&str>, handler: bool, calls: &[(&str, &str)]) -> FuncInfo {
        FuncInfo {
            name: name.into(),
            owner: owner.map(Into::into),
            handler,
            row: 0,
            calls: calls.iter().map(|c| c.0.to_string()).collect(),
            receivers: calls.iter().map(|c| c.1.to_string()).collect(),
            writes: Vec::new(),
        }
    }

    #[test]
    fn a_handler_reaching_a_storage_write_two_calls_away_is_reported_at_the_write() {
        let mut w = func("upload", Some("FilesystemUploader"), false, &[]);
        w.writes.push(write(9, "open(path, \"wb\")"));
        let mut funcs = vec![
            (
                "api/files.py".into(),
                func("post", Some("FilesList"), true, &[("upload_file", "")]),
            ),
            (
                "utils/uploads/__init__.py".into(),
                func("upload_file", None, false, &[("upload", "get_uploader()")]),
            ),
            ("utils/uploads/uploaders.py".into(), w),
        ];
        let hits = local_writes(&mut funcs);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].0, "utils/uploads/uploaders.py");
        assert_eq!(hits[0].1.row, 9);
        assert!(
            hits[0].1.message.contains("`post` (api/files.py:1)"),
            "{}",
            hits[0].1.message
        );
    }

    #[test]
    fn generic_names_link_only_through_a_matching_receiver_and_unreached_writers_stay_silent() {
        let mut w = func("save", Some("ReportWriter"), false, &[]);
        w.writes.push(write(1, "open"));
        let mut funcs = vec![
            (
                "views.py".into(),
                func("edit", None, true, &[("save", "form")]),
            ),
            ("report.py".into(), w.clone()),
        ];
        assert!(
            local_writes(&mut funcs).is_empty(),
            "form.save() is not ReportWriter.save()"
        );
        let mut funcs = vec![
            (
                "views.py".into(),
                func("edit", None, true, &[("save", "report_writer")]),
            ),
            ("report.py".into(), w.clone()),
        ];
        assert_eq!(local_writes(&mut funcs).len(), 1);
        let mut funcs = vec![("report.py".into(), w)];
        assert!(local_writes(&mut funcs).is_empty(), "no handler reaches it");
    }
}

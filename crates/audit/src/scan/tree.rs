//! Small helpers over tree-sitter nodes shared by the detectors: text, preorder walks,
//! ancestors, string literal values, cached queries. Pure functions of the tree; they
//! never allocate per node beyond what a caller keeps.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tree_sitter::{Node, Query, QueryCursor, StreamingIterator};

/// The source text of `n`.
pub(crate) fn text<'a>(n: Node, src: &'a str) -> &'a str {
    src.get(n.byte_range()).unwrap_or("")
}

/// Calls `f` on every named node under `root` (including it), in preorder.
pub(crate) fn walk<'t>(root: Node<'t>, mut f: impl FnMut(Node<'t>)) {
    let mut cursor = root.walk();
    loop {
        let n = cursor.node();
        if n.is_named() {
            f(n);
        }
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.node() == root {
                return;
            }
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return;
            }
        }
    }
}

/// The nearest ancestor of `n` (excluding `n`) whose kind is in `kinds`.
pub(crate) fn ancestor<'t>(n: Node<'t>, kinds: &[&str]) -> Option<Node<'t>> {
    let mut cur = n.parent();
    while let Some(p) = cur {
        if kinds.contains(&p.kind()) {
            return Some(p);
        }
        cur = p.parent();
    }
    None
}

/// The unquoted value of a string literal node (any of the grammars' string kinds);
/// `None` when `n` is not a plain string literal.
pub(crate) fn string_value(n: Node, src: &str) -> Option<String> {
    let kinds = [
        "string",
        "string_literal",
        "interpreted_string_literal",
        "raw_string_literal",
        "template_string",
        "encapsed_string",
        "string_value",
    ];
    if !kinds.contains(&n.kind()) {
        return None;
    }
    let t = text(n, src).trim();
    // Python prefixes (r"", b"", f"") and Rust raw strings: drop to the first quote.
    let start = t.find(['"', '\'', '`'])?;
    let body = &t[start..];
    let q = body.chars().next()?;
    let inner = body.trim_start_matches(q).trim_end_matches(q);
    Some(inner.to_string())
}

/// First child of `n` with field name `field`.
pub(crate) fn field<'t>(n: Node<'t>, name: &str) -> Option<Node<'t>> {
    n.child_by_field_name(name)
}

/// Named children of `n`.
pub(crate) fn named_children<'t>(n: Node<'t>) -> Vec<Node<'t>> {
    let mut c = n.walk();
    n.named_children(&mut c).collect()
}

/// Runs a tree-sitter query (compiled once per grammar and pattern, then cached) over
/// `root` and calls `f` with the captures of each match, by capture name.
pub(crate) fn query<'t>(
    lang: &tree_sitter::Language,
    pattern: &'static str,
    root: Node<'t>,
    src: &str,
    mut f: impl FnMut(&HashMap<&str, Node<'t>>),
) {
    // scaleout-audit: ignore[RS-STATIC-MAP] compiled-query cache, identical in every process
    static CACHE: OnceLock<Mutex<HashMap<(String, &'static str), &'static Query>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (lang.name().unwrap_or("?").to_string(), pattern);
    let q: &'static Query = {
        let mut m = cache.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(&key) {
            Some(q) => q,
            None => {
                // A pattern that does not compile is a bug in this crate: caught by the
                // fixture tests, which run every detector.
                let q = Query::new(lang, pattern)
                    .unwrap_or_else(|e| panic!("bad query {pattern:?}: {e}"));
                let q: &'static Query = Box::leak(Box::new(q));
                m.insert(key, q);
                q
            }
        }
    };
    let names = q.capture_names();
    let mut cursor = QueryCursor::new();
    let mut matches = cursor.matches(q, root, src.as_bytes());
    while let Some(m) = matches.next() {
        let mut caps = HashMap::new();
        for c in m.captures() {
            caps.insert(names[c.index as usize], c.node);
        }
        f(&caps);
    }
}

//! Key/value matching for config files where defaults live: `.env`, `.ini`/`php.ini`,
//! `.properties`, YAML (`cable.yml`, `application.yml`). Each file is flattened into
//! `(dotted.key, value, line)` entries and matched against known settings.
//!
//! Must never interpret values (no env expansion, no includes) and never flag keys in
//! development or test sections/files.

use super::{FileCtx, Hit};

/// One setting: dotted key (sections/nesting joined by `.`), value, 0-based row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub value: String,
    pub row: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Env,
    Ini,
    Properties,
    Yaml,
}

fn format_of(rel: &str) -> Option<Format> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if name == ".env" || name.starts_with(".env.") || name.ends_with(".env") {
        return Some(Format::Env);
    }
    let ext = name.rsplit_once('.')?.1;
    Some(match ext {
        "ini" | "cfg" | "conf" => Format::Ini,
        "properties" => Format::Properties,
        "yml" | "yaml" => Format::Yaml,
        _ => return None,
    })
}

fn strip_comment<'a>(v: &'a str, markers: &[&str]) -> &'a str {
    let v = v.trim();
    if v.starts_with('"') || v.starts_with('\'') {
        let q = &v[..1];
        if let Some(end) = v[1..].find(q) {
            return &v[1..1 + end];
        }
    }
    let mut cut = v.len();
    for m in markers {
        if let Some(i) = v.find(m) {
            cut = cut.min(i);
        }
    }
    v[..cut].trim().trim_matches(['"', '\''])
}

/// Flattens a config file into entries.
pub(crate) fn entries(rel: &str, src: &str) -> Vec<Entry> {
    let Some(format) = format_of(rel) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut section = String::new();
    // YAML: stack of (indent, key).
    let mut stack: Vec<(usize, String)> = Vec::new();
    for (row, raw) in src.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || line.starts_with("//")
        {
            continue;
        }
        match format {
            Format::Env => {
                let line = line.strip_prefix("export ").unwrap_or(line);
                if let Some((k, v)) = line.split_once('=') {
                    out.push(Entry {
                        key: k.trim().to_string(),
                        value: strip_comment(v, &[" #"]).to_string(),
                        row,
                    });
                }
            }
            Format::Ini | Format::Properties => {
                if format == Format::Ini && line.starts_with('[') && line.ends_with(']') {
                    section = line[1..line.len() - 1].trim().to_ascii_lowercase();
                    continue;
                }
                let split = line.split_once('=').or_else(|| line.split_once(':'));
                if let Some((k, v)) = split {
                    let k = k.trim();
                    // php.ini repeats the section in the key (`[Session]` / `session.save_handler`).
                    let key = if section.is_empty()
                        || k.to_ascii_lowercase().starts_with(&format!("{section}."))
                    {
                        k.to_string()
                    } else {
                        format!("{section}.{k}")
                    };
                    out.push(Entry {
                        key,
                        value: strip_comment(v, &[" ;", " #"]).to_string(),
                        row,
                    });
                }
            }
            Format::Yaml => {
                if line.starts_with('-') {
                    continue;
                }
                let indent = raw.len() - raw.trim_start().len();
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                while stack.last().is_some_and(|(i, _)| *i >= indent) {
                    stack.pop();
                }
                let k = k.trim().trim_matches(['"', '\'']).to_string();
                let v = strip_comment(v, &[" #"]);
                let mut key: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
                key.push(&k);
                let key = key.join(".");
                if v.is_empty() {
                    stack.push((indent, k));
                } else {
                    out.push(Entry {
                        key,
                        value: v.to_string(),
                        row,
                    });
                }
            }
        }
    }
    out
}

fn hit(rule: &'static str, row: usize, message: String) -> Hit {
    Hit {
        rule,
        row,
        col: 0,
        message,
        severity: None,
        condition: None,
    }
}

pub(crate) fn scan(ctx: &FileCtx, hits: &mut Vec<Hit>) {
    let name = ctx.rel.rsplit('/').next().unwrap_or(ctx.rel);
    let lower_name = name.to_ascii_lowercase();
    if lower_name.contains("test")
        || lower_name.contains("development")
        || lower_name.contains(".local") && !lower_name.ends_with(".env.local")
    {
        return;
    }
    for e in entries(ctx.rel, ctx.src) {
        let key = e.key.as_str();
        let lkey = key.to_ascii_lowercase();
        let v = e.value.as_str();
        let lv = v.to_ascii_lowercase();
        if lkey.starts_with("development.") || lkey.starts_with("test.") || lkey.contains(".test.")
        {
            continue;
        }
        let m = format!("{key} = {v}");
        match (lkey.as_str(), lv.as_str()) {
            ("session.save_handler", "files") => hits.push(hit(
                "CFG-SESSION-LOCAL",
                e.row,
                format!("{m}: PHP sessions on this server's disk"),
            )),
            ("session_driver", "file") => hits.push(hit(
                "CFG-SESSION-LOCAL",
                e.row,
                format!("{m}: Laravel sessions in storage/framework/sessions on this instance"),
            )),
            ("session_type", "filesystem") => hits.push(hit(
                "CFG-SESSION-LOCAL",
                e.row,
                format!("{m}: Flask-Session on this instance's disk"),
            )),
            ("session.provider", "memory" | "file") => hits.push(hit(
                "CFG-SESSION-LOCAL",
                e.row,
                format!("[session] {m}: sessions kept per instance"),
            )),
            ("spring.session.store-type", "none") => hits.push(hit(
                "CFG-SESSION-LOCAL",
                e.row,
                format!("{m}: servlet sessions stay in container memory"),
            )),
            ("cache_driver" | "cache_store", "file" | "apc") => hits.push(hit(
                "CFG-CACHE-LOCAL",
                e.row,
                format!("{m}: cache kept on this instance"),
            )),
            ("cache_type", "simple" | "simplecache" | "filesystem" | "filesystemcache") => hits
                .push(hit(
                    "CFG-CACHE-LOCAL",
                    e.row,
                    format!("{m}: Flask-Caching cache per instance"),
                )),
            ("spring.cache.type", "simple" | "caffeine") => hits.push(hit(
                "CFG-CACHE-LOCAL",
                e.row,
                format!("{m}: Spring caches per instance"),
            )),
            (
                "filesystem_disk" | "filesystem_driver" | "filesystem_default",
                "local" | "public",
            ) => hits.push(hit(
                "CFG-LOCAL-DISK",
                e.row,
                format!("{m}: uploads stored on this instance's disk"),
            )),
            _ => {}
        }
        if lower_name == "cable.yml"
            && lkey.ends_with("adapter")
            && lv == "async"
            && !lkey.starts_with("development")
        {
            hits.push(hit(
                "CFG-WS-MEMORY",
                e.row,
                format!("{m}: Action Cable broadcasts stay in this process"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_each_format() {
        let env = entries(".env", "export SESSION_DRIVER=\"file\" # c\nAPP=x\n");
        assert_eq!(env[0].key, "SESSION_DRIVER");
        assert_eq!(env[0].value, "file");
        let ini = entries("php.ini", "[Session]\nsession.save_handler = files ; c\n");
        assert_eq!(ini[0].key, "session.save_handler");
        assert_eq!(ini[0].value, "files");
        let yml = entries(
            "config/cable.yml",
            "development:\n  adapter: async\nproduction:\n  adapter: redis\n  url: x\n",
        );
        assert_eq!(yml[0].key, "development.adapter");
        assert_eq!(yml[1].key, "production.adapter");
        assert_eq!(yml[1].value, "redis");
        assert_eq!(yml[1].row, 3);
    }
}

//! Configuration read as configuration: `.env`, `.ini`/`php.ini`, `.properties`, YAML,
//! TOML, and the `env('KEY', 'default')` defaults of PHP config arrays are flattened into
//! settings (`facts::Setting`), then the whole project's settings are classified at once
//! so a driver's backing store can be resolved from another key (a `database` session
//! driver on `DB_CONNECTION=sqlite` is local). Example files count at medium confidence
//! and their commented-out defaults (`;PROVIDER = memory`) at low confidence.
//!
//! Must never interpret values beyond naming them (no env expansion, no includes) and
//! never flag keys in development or test sections, profiles or files.

use super::facts::{Facts, Setting, Source, project_dir};
use super::{Hit, tree};
use crate::{Confidence, Lang};

/// One setting: dotted key (sections/nesting joined by `.`), value, 0-based row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub value: String,
    pub row: usize,
    /// From a commented-out line (`;KEY = value`, `# KEY=value`).
    pub commented: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Env,
    Ini,
    Properties,
    Yaml,
    Toml,
    /// Application settings in JSON (settings.json, config/*.json, appsettings.json),
    /// read line by line (comments tolerated, as in Etherpad's template).
    Json,
}

/// The file name with an example suffix (`.example`, `.sample`, `.dist`, `.default`,
/// `.template`) removed, and whether there was one.
pub(crate) fn strip_example(name: &str) -> (&str, bool) {
    for suf in [
        ".example",
        ".sample",
        ".dist",
        ".default",
        ".template",
        ".tmpl",
    ] {
        if let Some(base) = name.strip_suffix(suf)
            && !base.is_empty()
        {
            return (base, true);
        }
    }
    (name, false)
}

/// True for files whose values are examples or defaults to copy, not the deployed ones.
pub(crate) fn is_example(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel).to_ascii_lowercase();
    strip_example(&name).1
        || ["example", "sample", "template", ".dist"]
            .iter()
            .any(|k| name.contains(k))
}

fn format_of(rel: &str) -> Option<Format> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let (name, _) = strip_example(name);
    if name == ".env" || name.starts_with(".env.") || name.ends_with(".env") {
        return Some(Format::Env);
    }
    if crate::walk::is_manifest(name) {
        return None;
    }
    let ext = name.rsplit_once('.')?.1;
    if ext == "json" {
        let lower = rel.to_ascii_lowercase();
        let settings_name = name.starts_with("settings")
            || name.starts_with("appsettings")
            || name.starts_with("config.")
            || matches!(name, "default.json" | "production.json");
        return (settings_name
            || lower.contains("config/")
                && !name.starts_with("tsconfig")
                && !name.ends_with("lock.json"))
        .then_some(Format::Json);
    }
    Some(match ext {
        "ini" | "cfg" | "conf" => Format::Ini,
        "properties" => Format::Properties,
        "yml" | "yaml" => Format::Yaml,
        "toml" => Format::Toml,
        _ => return None,
    })
}

/// True for files read as configuration.
pub(crate) fn is_config_file(rel: &str) -> bool {
    format_of(rel).is_some()
}

/// True for file names that only configure development or tests.
fn dev_or_test_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel).to_ascii_lowercase();
    let name = strip_example(&name).0;
    // Spring profiles other than production (`application-doc.yaml`,
    // `application-mysql.properties`) are not the default configuration.
    if let Some(profile) = name
        .strip_prefix("application-")
        .or_else(|| name.strip_prefix("bootstrap-"))
        .and_then(|r| r.rsplit_once('.').map(|(p, _)| p))
        && !matches!(profile, "prod" | "production" | "default")
    {
        return true;
    }
    let stem_parts: Vec<&str> = name.split(['.', '-', '_']).collect();
    stem_parts.iter().any(|p| {
        matches!(
            *p,
            "test" | "tests" | "testing" | "dev" | "development" | "local" | "ci" | "e2e"
        )
    }) && !name.ends_with(".env.local")
        || rel.split('/').any(|seg| {
            matches!(
                seg.to_ascii_lowercase().as_str(),
                "test"
                    | "tests"
                    | "testing"
                    | "development"
                    | "dev"
                    | "e2e"
                    | "ci"
                    | ".github"
                    | ".gitlab"
                    | ".circleci"
                    | ".buildkite"
                    | ".woodpecker"
                    | "locale"
                    | "locales"
                    | "i18n"
                    | "translations"
                    | "lang"
            )
        })
        || matches!(
            name,
            ".travis.yml"
                | ".gitlab-ci.yml"
                | "azure-pipelines.yml"
                | "bitbucket-pipelines.yml"
                | "codecov.yml"
                | ".pre-commit-config.yaml"
                | "dependabot.yml"
                | "mkdocs.yml"
        )
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

/// A commented-out `KEY = value` line (`;KEY = value`, `# KEY=value`): the key must look
/// like a setting name (no spaces), so prose comments are not read as settings.
fn commented_setting(line: &str) -> Option<&str> {
    let body = line
        .strip_prefix(';')
        .or_else(|| line.strip_prefix('#'))?
        .trim_start_matches([';', '#'])
        .trim();
    let (k, v) = body.split_once('=').or_else(|| body.split_once(':'))?;
    let k = k.trim();
    let v = v.trim();
    let key_like = !k.is_empty()
        && k.len() <= 64
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let value_like = !v.is_empty() && v.len() <= 200 && !v.ends_with('.');
    (key_like && value_like).then_some(body)
}

/// Flattens a config file into entries (commented defaults included, flagged).
pub(crate) fn entries(rel: &str, src: &str) -> Vec<Entry> {
    let Some(format) = format_of(rel) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut section = String::new();
    // YAML: stack of (indent, key); entries of a document that belongs to a dev/test
    // profile are dropped at the document's end.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut doc_start = 0;
    let mut doc_is_dev = false;
    for (row, raw) in src.lines().enumerate() {
        let mut line = raw.trim();
        let mut commented = false;
        if line.is_empty() {
            continue;
        }
        if format == Format::Json && (line.starts_with("/*") || line.starts_with('*')) {
            continue;
        }
        if line.starts_with('#') || line.starts_with(';') || line.starts_with("//") {
            match (format, commented_setting(line)) {
                (Format::Env | Format::Ini | Format::Properties | Format::Toml, Some(body)) => {
                    line = body;
                    commented = true;
                }
                _ => continue,
            }
        }
        match format {
            Format::Env => {
                let line = line.strip_prefix("export ").unwrap_or(line);
                if let Some((k, v)) = line.split_once('=') {
                    out.push(Entry {
                        key: k.trim().to_string(),
                        value: strip_comment(v, &[" #"]).to_string(),
                        row,
                        commented,
                    });
                }
            }
            Format::Ini | Format::Properties | Format::Toml => {
                if format != Format::Properties && line.starts_with('[') && line.ends_with(']') {
                    if !commented {
                        section = line
                            .trim_matches(['[', ']'])
                            .trim()
                            .trim_matches('"')
                            .to_string();
                    }
                    continue;
                }
                let split = if format == Format::Properties {
                    line.split_once('=').or_else(|| line.split_once(':'))
                } else {
                    line.split_once('=')
                };
                if let Some((k, v)) = split {
                    let k = k.trim().trim_matches('"');
                    // php.ini repeats the section in the key (`[Session]` / `session.save_handler`).
                    let key = if section.is_empty()
                        || k.to_ascii_lowercase()
                            .starts_with(&format!("{}.", section.to_ascii_lowercase()))
                    {
                        k.to_string()
                    } else {
                        format!("{section}.{k}")
                    };
                    out.push(Entry {
                        key,
                        value: strip_comment(v, &[" ;", " #"]).to_string(),
                        row,
                        commented,
                    });
                }
            }
            Format::Json => {
                // `"key": value` lines; `{` opens a level named by its key, `}` closes.
                let opens = line.ends_with('{');
                let closes = line.starts_with('}');
                if closes {
                    stack.pop();
                }
                if let Some(rest) = line.strip_prefix('"')
                    && let Some((k, v)) = rest.split_once("\":")
                {
                    let v = v
                        .split(" //")
                        .next()
                        .unwrap_or(v)
                        .trim()
                        .trim_end_matches(',')
                        .trim();
                    if opens || v == "{" {
                        stack.push((0, k.to_string()));
                    } else if !v.starts_with('[') {
                        let mut key: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
                        key.push(k);
                        out.push(Entry {
                            key: key.join("."),
                            value: v.trim_matches('"').to_string(),
                            row,
                            commented,
                        });
                    }
                } else if opens && !closes && !stack.is_empty() {
                    stack.push((0, String::new()));
                }
            }
            Format::Yaml => {
                if line == "---" {
                    if doc_is_dev {
                        out.truncate(doc_start);
                    }
                    doc_start = out.len();
                    doc_is_dev = false;
                    stack.clear();
                    continue;
                }
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
                    let lk = key.to_ascii_lowercase();
                    if (lk.ends_with("on-profile") || lk == "spring.profiles")
                        && v.split([',', ' ', '&', '|', '!'])
                            .any(|p| matches!(p, "dev" | "test" | "local" | "development"))
                    {
                        doc_is_dev = true;
                    }
                    out.push(Entry {
                        key,
                        value: v.to_string(),
                        row,
                        commented,
                    });
                }
            }
        }
    }
    if doc_is_dev {
        out.truncate(doc_start);
    }
    out
}

/// The settings of one config file. Commented defaults are kept only in example files
/// and only for keys the file does not also set.
pub(crate) fn settings(rel: &str, src: &str) -> Vec<Setting> {
    if dev_or_test_file(rel) {
        return Vec::new();
    }
    let example = is_example(rel);
    let all = entries(rel, src);
    let set: std::collections::HashSet<String> = all
        .iter()
        .filter(|e| !e.commented)
        .map(|e| e.key.to_ascii_lowercase())
        .collect();
    all.into_iter()
        .filter(|e| !e.commented || (example && !set.contains(&e.key.to_ascii_lowercase())))
        .filter(|e| !dev_key(&e.key))
        .map(|e| Setting {
            file: rel.to_string(),
            source: if e.commented {
                Source::Commented
            } else if example {
                Source::Example
            } else {
                Source::Config
            },
            key: e.key,
            value: e.value,
            row: e.row,
        })
        .collect()
}

/// Keys in development or test sections (`development.adapter`, `[test] ...`), or named
/// for tests (`TESTING_DATABASE_URL`).
fn dev_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    if k.split(['.', '_', '-'])
        .any(|w| matches!(w, "test" | "testing" | "tests" | "ci"))
    {
        return true;
    }
    let first = k.split('.').next().unwrap_or("");
    matches!(first, "development" | "test" | "testing" | "dev" | "local")
        || k.contains(".test.")
        || k.contains(".development.")
        || k.starts_with("%dev.")
        || k.starts_with("%test.")
}

/// `env('KEY', 'default')` calls in a PHP config array: the default applies when the
/// environment does not set KEY.
pub(crate) fn php_env_defaults(rel: &str, src: &str) -> Vec<Setting> {
    let mut out = Vec::new();
    let Some(t) = crate::lang::parse(Lang::Php, src) else {
        return out;
    };
    // Literal values of the returned array, keyed by their path (`app.maintenance.driver`
    // in config/app.php): the configuration itself, not a default.
    let stem = rel
        .rsplit('/')
        .next()
        .unwrap_or(rel)
        .trim_end_matches(".php")
        .to_string();
    tree::walk(t.root_node(), |n| {
        if n.kind() != "array_element_initializer" {
            return;
        }
        let kids = tree::named_children(n);
        let (Some(k), Some(v)) = (kids.first(), kids.get(1)) else {
            return;
        };
        let (Some(k), Some(v)) = (tree::string_value(*k, src), tree::string_value(*v, src)) else {
            return;
        };
        let mut path = vec![k];
        let mut cur = n.parent();
        while let Some(p) = cur {
            if p.kind() == "array_element_initializer"
                && let Some(pk) = p.named_child(0).and_then(|x| tree::string_value(x, src))
            {
                path.push(pk);
            }
            cur = p.parent();
        }
        path.push(stem.clone());
        path.reverse();
        out.push(Setting {
            file: rel.to_string(),
            key: path.join("."),
            value: v,
            row: n.start_position().row,
            source: Source::Config,
        });
    });
    tree::walk(t.root_node(), |n| {
        if n.kind() != "function_call_expression" {
            return;
        }
        let name = tree::field(n, "function").map(|f| tree::text(f, src));
        if name != Some("env") {
            return;
        }
        let args: Vec<_> = tree::field(n, "arguments")
            .map(tree::named_children)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.named_child(0))
            .collect();
        if let (Some(k), Some(v)) = (
            args.first().and_then(|a| tree::string_value(*a, src)),
            args.get(1).and_then(|a| tree::string_value(*a, src)),
        ) {
            out.push(Setting {
                file: rel.to_string(),
                key: k,
                value: v,
                row: n.start_position().row,
                source: Source::CodeDefault,
            });
        }
    });
    out
}

/// What a setting means, when it keeps state in one instance: (rule, message).
pub(crate) fn classify(s: &Setting, facts: &Facts) -> Option<(&'static str, String)> {
    let key = s.key.to_ascii_lowercase();
    let last = key.rsplit('.').next().unwrap_or(&key);
    let section = key.rsplit_once('.').map(|(a, _)| a).unwrap_or("");
    let v = s.value.trim().to_ascii_lowercase();
    let m = format!("{} = {}", s.key, s.value.trim());
    if v.is_empty() {
        return None;
    }
    // A Laravel driver backed by the default database connection: local when that
    // connection is SQLite.
    let db_local = || -> Option<String> {
        let db = facts.setting(&s.file, "DB_CONNECTION")?;
        (db.value.trim().eq_ignore_ascii_case("sqlite"))
            .then(|| format!("DB_CONNECTION = sqlite ({}:{})", db.file, db.row + 1))
    };
    Some(match (key.as_str(), v.as_str()) {
        // ---- sessions ----
        ("session.save_handler", "files") => (
            "CFG-SESSION-LOCAL",
            format!("{m}: PHP sessions on this server's disk"),
        ),
        ("session_driver", "file") => (
            "CFG-SESSION-LOCAL",
            format!("{m}: Laravel sessions in storage/framework/sessions on this instance"),
        ),
        ("session_driver", "database") => (
            "CFG-SESSION-LOCAL",
            format!(
                "{m} on {}: sessions in a SQLite file on this instance",
                db_local()?
            ),
        ),
        ("session_type", "filesystem" | "cachelib") => (
            "CFG-SESSION-LOCAL",
            format!("{m}: Flask-Session on this instance's disk"),
        ),
        ("spring.session.store-type", "none") => (
            "CFG-SESSION-LOCAL",
            format!("{m}: servlet sessions stay in container memory"),
        ),
        _ if last == "provider"
            && section.ends_with("session")
            && matches!(v.as_str(), "memory" | "file") =>
        {
            (
                "CFG-SESSION-LOCAL",
                format!("[{section}] {m}: sessions kept per instance"),
            )
        }
        // ---- caches ----
        ("cache_driver" | "cache_store", "file" | "apc" | "apcu") => (
            "CFG-CACHE-LOCAL",
            format!("{m}: cache kept on this instance"),
        ),
        ("cache_driver" | "cache_store", "database") => (
            "CFG-CACHE-LOCAL",
            format!(
                "{m} on {}: cache in a SQLite file on this instance",
                db_local()?
            ),
        ),
        ("cache_type", "simple" | "simplecache" | "filesystem" | "filesystemcache") => (
            "CFG-CACHE-LOCAL",
            format!("{m}: Flask-Caching cache per instance"),
        ),
        ("spring.cache.type", "simple" | "caffeine") => (
            "CFG-CACHE-LOCAL",
            format!("{m}: Spring caches per instance"),
        ),
        _ if last == "adapter"
            && section.ends_with("cache")
            && matches!(v.as_str(), "memory" | "file") =>
        {
            (
                "CFG-CACHE-LOCAL",
                format!("[{section}] {m}: cache kept per instance"),
            )
        }
        // ---- files ----
        ("filesystem_disk" | "filesystem_driver" | "filesystem_default", "local" | "public") => (
            "CFG-LOCAL-DISK",
            format!("{m}: uploads stored on this instance's disk"),
        ),
        _ if key.starts_with("storage_") && key.ends_with("_type")
            || key == "storage_type" && section.is_empty() =>
        {
            if !(v == "local" || v.starts_with("local_")) {
                return None;
            }
            (
                "CFG-LOCAL-DISK",
                format!("{m}: uploads stored on this instance's disk"),
            )
        }
        // Where uploads, attachments, avatars and LFS objects are written: a local path.
        _ if matches!(
            last,
            "path"
                | "root"
                | "root_path"
                | "dir"
                | "folder"
                | "upload_path"
                | "avatar_upload_path"
                | "objects_path"
                | "upload_folder"
                | "media_root"
        ) && (section.contains("attachment")
            || section.contains("picture")
            || section.contains("lfs")
            || section.contains("upload")
            || last.contains("upload")
            || last == "media_root")
            && !v.contains("://")
            && !last.contains("temp")
            && !key.contains("temp") =>
        {
            (
                "CFG-LOCAL-DISK",
                format!("{m}: files written under a local path on this instance"),
            )
        }
        ("storage_driver" | "media_storage" | "file_storage", "local" | "filesystem") => (
            "CFG-LOCAL-DISK",
            format!("{m}: uploaded files stored on this instance's disk"),
        ),
        ("upload_provider", "filesystem" | "local") => (
            "CFG-LOCAL-DISK",
            format!("{m}: uploads stored on this instance's disk"),
        ),
        _ if matches!(last, "storage" | "storage_type") && v == "local" && !section.is_empty() => (
            "CFG-LOCAL-DISK",
            format!("[{section}] {m}: files stored on this instance's disk"),
        ),
        // ---- embedded databases ----
        ("db_connection", "sqlite") => (
            "CFG-EMBEDDED-DB",
            format!("{m}: the application database is a SQLite file on this instance"),
        ),
        _ if matches!(
            last,
            "type" | "db_type" | "adapter" | "driver" | "engine" | "dialect"
        ) && (section.ends_with("database")
            || section.ends_with("db")
            || section.contains("datasource")
            || section.starts_with("production")
            || section.starts_with("default"))
            && matches!(v.as_str(), "sqlite" | "sqlite3" | "h2" | "hsqldb" | "derby") =>
        {
            if section.starts_with("default") && !section.contains("database") {
                return None;
            }
            (
                "CFG-EMBEDDED-DB",
                format!("{m}: the database is embedded in this instance"),
            )
        }
        _ if (last.contains("url")
            || last.contains("uri")
            || last == "dsn"
            || last == "database")
            && (v.starts_with("sqlite:")
                || v.starts_with("jdbc:sqlite:")
                || v.starts_with("jdbc:h2:")
                || v.starts_with("jdbc:hsqldb:")
                || v.starts_with("jdbc:derby:")
                || v.starts_with("r2dbc:h2:")
                || (last == "database"
                    && section.starts_with("production")
                    && (v.ends_with(".sqlite3")
                        || v.ends_with(".sqlite")
                        || v.ends_with(".db")))) =>
        {
            (
                "CFG-EMBEDDED-DB",
                format!("{m}: the database is embedded in this instance"),
            )
        }
        _ if last == "driver-class-name"
            && matches!(
                v.as_str(),
                "org.h2.driver" | "org.sqlite.jdbc" | "org.hsqldb.jdbcdriver"
            ) =>
        {
            (
                "CFG-EMBEDDED-DB",
                format!("{m}: the database is embedded in this instance"),
            )
        }
        _ if last == "dbtype"
            && matches!(
                v.as_str(),
                "dirty" | "rustydb" | "sqlite" | "leveldb" | "rocksdb"
            ) =>
        {
            (
                "CFG-EMBEDDED-DB",
                format!("{m}: the database is an embedded file on this instance"),
            )
        }
        // ---- queues ----
        ("queue_connection" | "queue_driver", "database") => (
            "CFG-QUEUE-LOCAL",
            format!(
                "{m} on {}: queued jobs in a SQLite file on this instance",
                db_local()?
            ),
        ),
        _ if last == "type"
            && section.starts_with("queue")
            && matches!(
                v.as_str(),
                "level" | "channel" | "persistable-channel" | "unique-level" | "memory"
            ) =>
        {
            (
                "CFG-QUEUE-LOCAL",
                format!("[{section}] {m}: queued work kept in this instance"),
            )
        }
        _ if (last.contains("broker_url") || last == "broker")
            && (v.starts_with("memory://")
                || v.starts_with("filesystem://")
                || v.starts_with("sqla+sqlite")) =>
        {
            (
                "CFG-QUEUE-LOCAL",
                format!("{m}: the job broker is in this process or on its disk"),
            )
        }
        // ---- maintenance flag ----
        ("app_maintenance_driver", "file") | ("app.maintenance.driver", "file") => (
            "CFG-MAINTENANCE-FILE",
            format!("{m}: `artisan down` writes storage/framework/down on this instance only"),
        ),
        // ---- search ----
        _ if last.ends_with("indexer_type") && matches!(v.as_str(), "bleve" | "db") => {
            if v == "db" {
                return None;
            }
            (
                "CFG-SEARCH-LOCAL",
                format!("[{section}] {m}: the search index is on this instance's disk"),
            )
        }
        ("scout_driver", "tntsearch" | "collection") => (
            "CFG-SEARCH-LOCAL",
            format!("{m}: the search index is on this instance"),
        ),
        _ if key.contains("hibernate.search")
            && (v == "local-filesystem"
                || v == "local-heap"
                || v == "filesystem"
                || v == "ram") =>
        {
            (
                "CFG-SEARCH-LOCAL",
                format!("{m}: the Lucene index is on this instance"),
            )
        }
        // ---- locks ----
        _ if last == "service_type" && section.ends_with("global_lock") && v == "memory" => (
            "CFG-LOCK-MEMORY",
            format!("[{section}] {m}: locks exclude only within this instance"),
        ),
        _ => return None,
    })
}

/// Classifies the effective settings of the whole project: for each key, only the most
/// authoritative setting counts (a deployed value beats an example, which beats the
/// code's default, which beats a commented default).
pub(crate) fn scan_project(facts: &Facts) -> Vec<(String, Hit)> {
    let mut out = Vec::new();
    for s in &facts.settings {
        let Some(eff) = facts.setting(&s.file, &s.key) else {
            continue;
        };
        // Only the effective setting reports; the others point at the same construct.
        if !std::ptr::eq(eff, s) {
            continue;
        }
        // A CFG hit on a Laravel cable.yml-like file: Action Cable's async adapter.
        let Some((rule, message)) = classify(s, facts) else {
            continue;
        };
        // The database is one construct however many keys describe it (URL, driver);
        // so is the upload storage (`STORAGE_TYPE`, `STORAGE_IMAGE_TYPE`).
        let section = s.key.rsplit_once('.').map(|(a, _)| a).unwrap_or("");
        let construct = if rule == "CFG-EMBEDDED-DB" {
            // One database however many keys describe it (URL and driver of one
            // datasource); several databases (primary, cache, queue) stay apart.
            format!(
                "project:{}:{rule}:{}",
                project_dir(&s.file),
                section.to_ascii_lowercase()
            )
        } else if rule == "CFG-LOCAL-DISK" {
            format!("project:{}:{rule}", project_dir(&s.file))
        } else {
            format!(
                "project:{}{}",
                project_dir(&s.file),
                s.key.to_ascii_lowercase()
            )
        };
        let mut h = Hit::at_row(rule, s.row, 0, message).construct(construct);
        match s.source {
            Source::Config => {}
            Source::Example => {
                h = h.confidence(Confidence::Medium);
            }
            Source::CodeDefault => {
                h = h.condition(format!(
                    "the code's default, used unless {} is set in the environment",
                    s.key
                ));
            }
            Source::Commented => {
                h = h
                    .confidence(Confidence::Low)
                    .condition(format!(
                        "a commented-out default in an example file: applies unless {} is set",
                        s.key
                    ))
                    .confidence(Confidence::Low);
            }
        }
        out.push((s.file.clone(), h));
    }
    // Action Cable's async adapter outside development.
    for s in &facts.settings {
        let name = s.file.rsplit('/').next().unwrap_or(&s.file);
        if name == "cable.yml"
            && s.key.to_ascii_lowercase().ends_with("adapter")
            && s.value.eq_ignore_ascii_case("async")
            && s.source <= Source::Example
        {
            out.push((
                s.file.clone(),
                Hit::at_row(
                    "CFG-WS-MEMORY",
                    s.row,
                    0,
                    format!(
                        "{} = {}: Action Cable broadcasts stay in this process",
                        s.key, s.value
                    ),
                ),
            ));
        }
    }
    out
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
        let toml = entries("config.toml", "[database]\ntype = \"sqlite\"\n");
        assert_eq!(toml[0].key, "database.type");
        assert_eq!(toml[0].value, "sqlite");
    }

    #[test]
    fn commented_defaults_are_read_only_when_they_look_like_settings() {
        let ini = entries(
            "app.example.ini",
            "[session]\n;; The provider, either memory or redis.\n;PROVIDER = memory\n",
        );
        assert_eq!(ini.len(), 1, "{ini:?}");
        assert_eq!(ini[0].key, "session.PROVIDER");
        assert!(ini[0].commented);
        let s = settings("app.ini", "[session]\n;PROVIDER = memory\n");
        assert!(s.is_empty(), "commented lines only count in example files");
        let s = settings(
            "custom/conf/app.example.ini",
            "[session]\n;PROVIDER = memory\nPROVIDER = redis\n",
        );
        assert_eq!(s.len(), 1, "the uncommented value wins: {s:?}");
        assert_eq!(s[0].value, "redis");
    }

    #[test]
    fn dev_profiles_and_files_are_left_out() {
        let y = entries(
            "application.yml",
            "spring:\n  cache:\n    type: redis\n---\nspring:\n  config:\n    activate:\n      on-profile: dev\n  cache:\n    type: simple\n",
        );
        assert!(y.iter().all(|e| e.value != "simple"), "{y:?}");
        assert!(
            settings(
                "config/application-dev.properties",
                "spring.cache.type=simple\n"
            )
            .is_empty()
        );
        assert!(settings(".env.testing", "SESSION_DRIVER=file\n").is_empty());
        assert!(!settings(".env.example", "SESSION_DRIVER=file\n").is_empty());
    }
}

//! Facts about the whole project, read before any file is scanned: the build manifests
//! (which dependencies each directory has) and every configuration setting (config
//! files, and the `env('KEY', 'default')` defaults of PHP config arrays), so a detector
//! in one file can resolve what another file configures (a "database" session driver on
//! a SQLite connection is local).
//!
//! Must only read: manifests and config files are small; source files are left to the
//! parallel scan.

use crate::Options;
use crate::walk::{SourceFile, is_manifest, is_test_path};

use super::config;

/// One configuration setting.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    /// File it comes from, relative to the root.
    pub file: String,
    /// Key as flattened by `config::entries` (`section.KEY`, `a.b.c`), original case.
    pub key: String,
    pub value: String,
    /// 0-based row.
    pub row: usize,
    /// Where the value comes from.
    pub source: Source,
}

/// Where a setting's value comes from, from most to least authoritative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    /// A deployed config file (`.env`, `application.properties`, `app.ini`).
    Config,
    /// An uncommented value in an example/sample/dist/default file.
    Example,
    /// The default the code supplies when the key is absent (`env('KEY', 'default')`).
    CodeDefault,
    /// A commented-out default in an example file (`;PROVIDER = memory`).
    Commented,
}

/// Facts about the whole project.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// `(directory prefix, lower-cased manifest contents)` for every manifest: a file sees
    /// the manifests of its own directory and its ancestors (so one example app in a
    /// monorepo does not lend its Redis adapter to another).
    manifests: Vec<(String, String)>,
    /// Every setting of every non-test config file.
    pub settings: Vec<Setting>,
}

impl Facts {
    /// Reads manifests and config files among `files`.
    pub(crate) fn read(files: &[SourceFile], options: &Options) -> Facts {
        let mut facts = Facts::default();
        for f in files {
            let name = f.rel.rsplit('/').next().unwrap_or(&f.rel);
            let rails_app = f.rel.ends_with("config/application.rb");
            if (is_manifest(name) || rails_app)
                && let Ok(text) = std::fs::read_to_string(&f.abs)
            {
                let dir = if rails_app {
                    // Governs the whole Rails app, not just config/.
                    f.rel.trim_end_matches("config/application.rb").to_string()
                } else {
                    match f.rel.rfind('/') {
                        Some(i) => f.rel[..=i].to_string(),
                        None => String::new(),
                    }
                };
                let mut text = text.to_ascii_lowercase();
                if name == "pom.xml" {
                    text = strip_build_plugins(&text);
                }
                facts.manifests.push((dir, text));
            }
            if f.size > options.max_file_bytes || (!options.include_tests && is_test_path(&f.rel)) {
                continue;
            }
            let lower = f.rel.to_ascii_lowercase();
            let php_config = lower.ends_with(".php")
                && (lower.starts_with("config/") || lower.contains("/config/"));
            if config::is_config_file(&f.rel) || php_config {
                let Ok(text) = std::fs::read(&f.abs) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&text);
                if php_config {
                    facts
                        .settings
                        .extend(config::php_env_defaults(&f.rel, &text));
                } else {
                    facts.settings.extend(config::settings(&f.rel, &text));
                }
            }
        }
        facts
    }

    /// True when a manifest governing `rel` names `dep` (a package name, lower case).
    pub(crate) fn has_dep(&self, rel: &str, dep: &str) -> bool {
        self.manifests.iter().any(|(dir, text)| {
            (dir.is_empty() || rel.starts_with(dir.as_str())) && text.contains(dep)
        })
    }

    /// Lower-cased texts of the manifests governing `rel`.
    pub(crate) fn manifests_of<'a>(&'a self, rel: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.manifests
            .iter()
            .filter(move |(dir, _)| dir.is_empty() || rel.starts_with(dir.as_str()))
            .map(|(_, t)| t.as_str())
    }

    /// The most authoritative setting of `key` (case-insensitive, exact flattened key)
    /// that governs `rel`: from the same directory tree, deployed config before examples
    /// before code defaults before commented defaults.
    pub(crate) fn setting(&self, rel: &str, key: &str) -> Option<&Setting> {
        let project = project_dir(rel);
        self.settings
            .iter()
            .filter(|s| s.key.eq_ignore_ascii_case(key) && project_dir(&s.file) == project)
            .min_by_key(|s| s.source)
    }
}

impl Facts {
    /// A deployed or example setting of `key` in any config file of the project.
    pub(crate) fn setting_anywhere(&self, key: &str) -> Option<&Setting> {
        self.settings
            .iter()
            .filter(|s| s.key.eq_ignore_ascii_case(key) && s.source <= Source::Example)
            .min_by_key(|s| s.source)
    }
}

/// A pom.xml without its `<build><plugins>` sections: a dependency of a build plugin (H2
/// for a code generator, a database for a migration plugin) is not on the application's
/// class path.
fn strip_build_plugins(pom: &str) -> String {
    let mut out = String::with_capacity(pom.len());
    let mut rest = pom;
    while let Some(start) = rest.find("<plugins>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</plugins>") {
            Some(end) => rest = &rest[start + end + "</plugins>".len()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The project a file belongs to, for config resolution: the directory above a
/// `config/` folder, or the file's own directory.
pub(crate) fn project_dir(rel: &str) -> &str {
    let lower = rel.to_ascii_lowercase();
    if let Some(i) = lower.rfind("config/")
        && (i == 0 || rel.as_bytes()[i - 1] == b'/')
    {
        // `app/Config/` (BookStack) belongs to the app root like `config/`.
        let root = &rel[..i];
        return root
            .strip_suffix("app/")
            .or_else(|| root.strip_suffix("App/"))
            .unwrap_or(root);
    }
    match rel.rfind('/') {
        Some(i) => &rel[..=i],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_plugin_dependencies_are_not_the_applications() {
        let pom = "<dependencies><dependency><artifactid>spring-web</artifactid></dependency>\
                   </dependencies><build><plugins><plugin><dependencies><dependency>\
                   <artifactid>h2</artifactid></dependency></dependencies></plugin></plugins>\
                   </build>";
        let stripped = strip_build_plugins(pom);
        assert!(stripped.contains("spring-web"));
        assert!(!stripped.contains("h2"));
        assert!(stripped.ends_with("</build>"));
    }
}

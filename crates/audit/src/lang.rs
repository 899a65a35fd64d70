//! Which language a file is written in, and its tree-sitter grammar.
//!
//! Detection is by file name only (extension, or a well-known config file name); it never
//! reads file contents. Config files are matched key by key (see `scan::config`), never
//! parsed with a grammar.

use std::path::Path;

/// A language the audit understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lang {
    /// JavaScript, including JSX and CommonJS/ES modules.
    JavaScript,
    /// TypeScript (`.ts`).
    TypeScript,
    /// TypeScript with JSX (`.tsx`).
    Tsx,
    /// Python.
    Python,
    /// Go.
    Go,
    /// Java.
    Java,
    /// Rust.
    Rust,
    /// PHP (files with `<?php` tags).
    Php,
    /// Ruby.
    Ruby,
    /// Configuration files: `.env`, `.ini`, `php.ini`, `.properties`, YAML, TOML (and
    /// their `.example`/`.sample`/`.dist` copies).
    Config,
}

impl Lang {
    /// The language of `path`, or `None` for files the audit does not read.
    pub fn from_path(path: &Path) -> Option<Lang> {
        let name = path.file_name()?.to_str()?;
        if name == ".env" || name.starts_with(".env.") || name.ends_with(".env") {
            return Some(Lang::Config);
        }
        if crate::walk::is_manifest(name) {
            return None;
        }
        // `app.ini.example`, `settings.yml.sample`, `config.toml.dist`: config examples.
        let (base, example) = crate::scan::strip_example(name);
        if example
            && let Some(ext) = base.rsplit_once('.').map(|(_, e)| e)
            && matches!(
                ext,
                "ini" | "properties" | "yml" | "yaml" | "cfg" | "conf" | "toml" | "json"
            )
        {
            return Some(Lang::Config);
        }
        if name.ends_with(".json") {
            return crate::scan::is_json_config(&path.to_string_lossy()).then_some(Lang::Config);
        }
        if name.ends_with(".min.js") || name.ends_with(".bundle.js") || name.ends_with(".d.ts") {
            return None;
        }
        let ext = name.rsplit_once('.').map(|(_, e)| e)?;
        Some(match ext {
            "js" | "mjs" | "cjs" | "jsx" => Lang::JavaScript,
            "ts" | "mts" | "cts" => Lang::TypeScript,
            "tsx" => Lang::Tsx,
            "py" => Lang::Python,
            "go" => Lang::Go,
            "java" => Lang::Java,
            "rs" => Lang::Rust,
            "php" => Lang::Php,
            "rb" | "rake" => Lang::Ruby,
            "ini" | "properties" | "yml" | "yaml" | "cfg" | "conf" | "toml" => Lang::Config,
            _ => return None,
        })
    }

    /// The tree-sitter grammar, or `None` for config files.
    pub fn grammar(self) -> Option<tree_sitter::Language> {
        Some(match self {
            Lang::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Lang::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Lang::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Lang::Python => tree_sitter_python::LANGUAGE.into(),
            Lang::Go => tree_sitter_go::LANGUAGE.into(),
            Lang::Java => tree_sitter_java::LANGUAGE.into(),
            Lang::Rust => tree_sitter_rust::LANGUAGE.into(),
            Lang::Php => tree_sitter_php::LANGUAGE_PHP.into(),
            Lang::Ruby => tree_sitter_ruby::LANGUAGE.into(),
            Lang::Config => return None,
        })
    }

    /// A short lowercase name used in reports and rule tables.
    pub fn name(self) -> &'static str {
        match self {
            Lang::JavaScript => "javascript",
            Lang::TypeScript | Lang::Tsx => "typescript",
            Lang::Python => "python",
            Lang::Go => "go",
            Lang::Java => "java",
            Lang::Rust => "rust",
            Lang::Php => "php",
            Lang::Ruby => "ruby",
            Lang::Config => "config",
        }
    }
}

/// Parses `src` as `lang`. `None` for config files or when the grammar fails to load.
pub fn parse(lang: Lang, src: &str) -> Option<tree_sitter::Tree> {
    let mut parser = tree_sitter::Parser::new();
    parser.set_language(&lang.grammar()?).ok()?;
    parser.parse(src, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grammar_loads_under_this_tree_sitter_abi() {
        for lang in [
            Lang::JavaScript,
            Lang::TypeScript,
            Lang::Tsx,
            Lang::Python,
            Lang::Go,
            Lang::Java,
            Lang::Rust,
            Lang::Php,
            Lang::Ruby,
        ] {
            let mut p = tree_sitter::Parser::new();
            p.set_language(&lang.grammar().unwrap())
                .unwrap_or_else(|e| panic!("{lang:?}: {e}"));
            // A grammar that really loaded parses its own language without errors and
            // names its root node (a mismatched ABI fails `set_language` above).
            let src = match lang {
                Lang::JavaScript | Lang::TypeScript | Lang::Tsx => "let x = 1;",
                Lang::Python => "x = 1\n",
                Lang::Go => "package main\n",
                Lang::Java => "class A {}",
                Lang::Rust => "fn main() {}",
                Lang::Php => "<?php $x = 1;",
                Lang::Ruby => "x = 1\n",
                Lang::Config => panic!("config files are matched by key, not parsed"),
            };
            let tree = p.parse(src, None).unwrap();
            let root = tree.root_node();
            assert!(
                !root.has_error(),
                "{lang:?} failed to parse {src:?}: {}",
                root.to_sexp()
            );
            assert!(root.child_count() > 0, "{lang:?}: empty tree for {src:?}");
        }
    }

    #[test]
    fn detects_by_name() {
        assert_eq!(Lang::from_path(Path::new("a/b.tsx")), Some(Lang::Tsx));
        assert_eq!(
            Lang::from_path(Path::new(".env.example")),
            Some(Lang::Config)
        );
        assert_eq!(Lang::from_path(Path::new("jquery.min.js")), None);
        assert_eq!(Lang::from_path(Path::new("README.md")), None);
    }
}

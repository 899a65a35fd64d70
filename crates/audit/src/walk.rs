//! Finds the files to audit: honours .gitignore (the `ignore` crate), skips vendored and
//! dependency folders and, unless asked, test files. Never follows symlinks out of the root.

use std::path::{Path, PathBuf};

use crate::{AuditError, Lang, Options};

/// Folders never audited: dependencies, virtualenvs, build output.
pub(crate) const SKIPPED_DIRS: &[&str] = &[
    "node_modules",
    "vendor",
    "target",
    ".venv",
    "venv",
    "dist",
    "build",
    "bower_components",
    "__pycache__",
    ".git",
    "site-packages",
    ".next",
    ".nuxt",
    "coverage",
];

/// A file to audit.
#[derive(Debug, Clone)]
pub(crate) struct SourceFile {
    /// Absolute (or root-joined) path to read.
    pub abs: PathBuf,
    /// Path relative to the root, `/`-separated, for reports.
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
}

/// Build manifests read for project facts (dependencies such as spring-session).
pub(crate) fn is_manifest(name: &str) -> bool {
    matches!(
        name,
        "pom.xml"
            | "build.gradle"
            | "build.gradle.kts"
            | "package.json"
            | "requirements.txt"
            | "pyproject.toml"
            | "Pipfile"
            | "setup.py"
            | "Gemfile"
            | "go.mod"
            | "composer.json"
            | "Cargo.toml"
    ) || (name.starts_with("requirements") && name.ends_with(".txt"))
}

/// True for test files and test folders, which are not deployed.
pub(crate) fn is_test_path(rel: &str) -> bool {
    let lower = rel.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    lower.split('/').any(|seg| {
        matches!(
            seg,
            "test" | "tests" | "__tests__" | "spec" | "specs" | "testdata" | "e2e" | "cypress"
        )
    }) || name.ends_with("_test.go")
        || name.starts_with("test_")
        || name.ends_with("_test.py")
        || name.ends_with("_spec.rb")
        || name.ends_with("_test.rb")
        || name.contains(".test.")
        || name.contains(".spec.")
        || name.ends_with("test.java")
        || name.ends_with("tests.java")
        || name == "conftest.py"
        || name == "tests.py"
        || name.starts_with("tests_")
        || name.ends_with("_tests.py")
        || name.ends_with(".env.testing")
}

/// Every auditable file and manifest under `root`.
pub(crate) fn collect(root: &Path, options: &Options) -> Result<Vec<SourceFile>, AuditError> {
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            !(e.file_type().is_some_and(|t| t.is_dir()) && SKIPPED_DIRS.contains(&name.as_ref()))
        })
        .build();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                if e.io_error().is_some() {
                    continue;
                }
                return Err(AuditError::Walk {
                    path: root.to_path_buf(),
                    message: e.to_string(),
                });
            }
        };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let abs = entry.path().to_path_buf();
        let name = entry.file_name().to_string_lossy();
        if Lang::from_path(&abs).is_none() && !is_manifest(&name) {
            continue;
        }
        let rel = abs
            .strip_prefix(root)
            .unwrap_or(&abs)
            .to_string_lossy()
            .replace('\\', "/");
        if !options.include_tests && is_test_path(&rel) && !is_manifest(&name) {
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push(SourceFile { abs, rel, size });
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_paths_are_recognised() {
        assert!(is_test_path("pkg/server_test.go"));
        assert!(is_test_path("app/tests/test_views.py"));
        assert!(is_test_path("src/a.spec.ts"));
        assert!(!is_test_path("src/server.js"));
        assert!(!is_test_path("src/contest/app.py"));
    }
}

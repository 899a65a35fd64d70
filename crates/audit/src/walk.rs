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

/// True for test files and folders, fixtures, mocks, test helpers, developer tooling
/// (scripts/, hack/, tools/, docs/) and superseded code (old/, legacy/, deprecated/),
/// which are not deployed.
pub(crate) fn is_test_path(rel: &str) -> bool {
    let lower = rel.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    lower.split('/').any(|seg| {
        matches!(
            seg,
            "test"
                | "tests"
                | "__tests__"
                | "spec"
                | "specs"
                | "testdata"
                | "e2e"
                | "cypress"
                | "playwright"
                | "fixtures"
                | "fixture"
                | "__fixtures__"
                | "__mocks__"
                | "mocks"
                | "testing"
                | "testutil"
                | "testutils"
                | "test_utils"
                | "test-utils"
                | "integration_tests"
                | "integration-tests"
                | "benches"
                | "benchmarks"
                | "scripts"
                | "hack"
                | "tools"
                | "devtools"
                | "docs"
                | "schemadoc"
                // Superseded code kept in the tree (not `example/`: Java's `com.example`
                // packages are real code).
                | "old"
                | "legacy"
                | "deprecated"
        ) || seg.ends_with("_tests")
            || seg.ends_with("-tests")
            || seg.starts_with("test_")
    }) || name.ends_with("_test.go")
        || name.starts_with("mock_")
        || name.ends_with("_mock.go")
        || name.ends_with("_mocks.go")
        || name.contains(".stories.")
        || name.starts_with("populate_")
        // Operator scripts in a top-level or package `bin/` (not Rust's `src/bin/`).
        || (lower.starts_with("bin/") || lower.contains("/bin/")) && !lower.contains("src/bin/")
        || lower.contains("/management/commands/")
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

/// Folder names that hold code shipped to browsers (bundled or static assets), never
/// server state. Only JavaScript/TypeScript files are judged by them (`public/index.php`
/// is server code).
const FRONTEND_DIRS: &[&str] = &[
    "static",
    "assets",
    "web_src",
    "public",
    "client",
    "frontend",
    "www",
    "browser",
    "webapp",
    "wwwroot",
    "components",
    "ui",
    // Mobile and desktop clients (React Native, Expo, Electron) next to the server.
    "mobile",
    "android",
    "ios",
    "electron",
    "desktop",
];

/// True for JavaScript/TypeScript that runs in a browser: under a frontend folder
/// (`static/`, `assets/`, `web_src/`, `public/`, `client/`, `*-client/`, Rails'
/// `app/javascript/`, Laravel's `resources/js/`), a `.jsx`/`.tsx`/`.vue` component, or a
/// minified/bundled file.
pub(crate) fn is_frontend_path(rel: &str) -> bool {
    let lower = rel.to_ascii_lowercase();
    let name = lower.rsplit('/').next().unwrap_or(&lower);
    let segs: Vec<&str> = lower.split('/').collect();
    let dirs = &segs[..segs.len().saturating_sub(1)];
    dirs.iter().any(|seg| {
        FRONTEND_DIRS.contains(seg)
            || FRONTEND_DIRS
                .iter()
                .any(|d| seg.ends_with(&format!("-{d}")) || seg.ends_with(&format!("_{d}")))
    }) || lower.contains("app/javascript/")
        || lower.starts_with("web/src/")
        || lower.contains("/web/src/")
        || lower.starts_with("ui/src/")
        || lower.contains("/ui/src/")
        // Build and bundler configuration runs at build time, not in the server.
        || [
            "next.config.", "vite.config.", "webpack.config.", "rollup.config.", "nuxt.config.",
            "tailwind.config.", "postcss.config.", "babel.config.", "jest.config.",
            "vitest.config.", "eslint.config.", "tsup.config.", "svelte.config.",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        || lower.contains("resources/js/")
        || lower.contains("resources/assets/")
        || name.ends_with(".jsx")
        || name.ends_with(".tsx")
        || name.contains(".min.")
        || name.contains(".bundle.")
        || name.contains(".chunk.")
}

/// True for generated or bundled code: a line longer than 1,000 characters in the first
/// 64 KiB (minified bundles, inlined data), which no hand-written server module has.
pub(crate) fn generated_or_bundled(src: &str) -> bool {
    let head = &src.as_bytes()[..src.len().min(64 * 1024)];
    head.split(|b| *b == b'\n').any(|l| l.len() > 1000)
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
        if matches!(
            Lang::from_path(&abs),
            Some(Lang::JavaScript | Lang::TypeScript | Lang::Tsx)
        ) && is_frontend_path(&rel)
        {
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
        assert!(is_test_path("app/fixtures/store.js"));
        assert!(is_test_path("internal/testutil/db.go"));
        assert!(is_test_path("pkg/mock_store.go"));
        assert!(!is_test_path("app/attestation/service.py"));
        assert!(is_test_path("old/archivebox.ts"));
        assert!(!is_test_path(
            "src/main/java/com/example/uploadingfiles/StorageService.java"
        ));
    }

    #[test]
    fn frontend_code_is_recognised() {
        assert!(is_frontend_path(
            "CTFd/themes/core/static/assets/index.94b01c79.js"
        ));
        assert!(is_frontend_path("web_src/js/features/upload.js"));
        assert!(is_frontend_path("public/js/app.js"));
        assert!(is_frontend_path("examples/chat/angular-client/src/app.ts"));
        assert!(is_frontend_path(
            "app/javascript/controllers/upload_controller.js"
        ));
        assert!(is_frontend_path("src/Button.tsx"));
        assert!(is_frontend_path("lib/vendor.min.js"));
        assert!(is_frontend_path("apps/mobile/lib/cache.ts"));
        assert!(!is_frontend_path("server/index.js"));
        assert!(!is_frontend_path(
            "examples/client-side-load-balancing-example/index.js"
        ));
        assert!(!is_frontend_path("src/api/upload.ts"));
        assert!(generated_or_bundled(&format!(
            "var a={};\n{}",
            1,
            "x".repeat(1200)
        )));
        assert!(!generated_or_bundled("const a = 1;\nmodule.exports = a;\n"));
    }
}

//! `--json FILE` of every command with a report: `-` means stdout, anything else a file
//! (written whole, with a final newline). The commands decide what goes in it.

use std::path::Path;

use anyhow::Context as _;

/// Whether `--json` asks for stdout (then the human text must not go there too).
pub fn is_stdout(path: Option<&Path>) -> bool {
    path.is_some_and(|p| p.as_os_str() == "-")
}

/// Writes `value` as pretty JSON to `path` (`-`: stdout).
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_text(path, &(text + "\n"))
}

/// Writes already-rendered JSON text to `path` (`-`: stdout).
pub fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
    if path.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

//! Statefulness audit: finds hidden per-instance state in a codebase; text, JSON and SARIF output.

//! The one error type of the load generator.
//!
//! Every variant is bad input or an environment problem found before or at the start of
//! a run (a run that starts never fails because of what the target does: target errors
//! are counted in the report). The CLI maps every variant to exit code 2. This module
//! must never hold I/O or retry logic.

/// Why a run could not start (or a file could not be written).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target URL could not be parsed or uses an unsupported scheme.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The target resolves outside loopback and `allow_remote` was not set.
    #[error(
        "target {host} is not on loopback (resolved to {addr}); pass --allow-remote to load a remote host"
    )]
    RemoteRefused {
        /// Host as given in the URL.
        host: String,
        /// The first non-loopback address it resolved to.
        addr: String,
    },
    /// The target host name does not resolve, or no connection could be made to it.
    #[error("target {target} is unreachable: {reason}")]
    Unreachable {
        /// host:port.
        target: String,
        /// The underlying error.
        reason: String,
    },
    /// A scenario file could not be read or parsed; the message names the field or line.
    #[error("scenario {path}: {reason}")]
    Scenario {
        /// The file.
        path: String,
        /// The field or line at fault and what is wrong.
        reason: String,
    },
    /// A threshold expression did not parse.
    #[error(
        "bad threshold {expr:?}: {reason} (examples: p99<250ms, p999<1s, errors<0.1%, rps>=1000, rate>=99%)"
    )]
    Threshold {
        /// The expression as given.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range; `field` names it.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The field (flag or scenario key).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing a report or chart failed.
    #[error("writing {path}: {reason}")]
    Output {
        /// The file.
        path: String,
        /// The underlying error.
        reason: String,
    },
    /// The load threads could not be started.
    #[error("runtime: {0}")]
    Runtime(String),
}

impl LoadError {
    /// Shorthand for [`LoadError::Config`].
    pub fn config(field: &str, reason: impl Into<String>) -> LoadError {
        LoadError::Config {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

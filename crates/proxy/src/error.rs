//! Error types: [`ProxyError`] for the public API, [`ForwardError`] for one forwarding
//! attempt, classified by the side that failed (logged with every local answer).
//! Whether a failed attempt is retried is not the error's to say: `balance::decide_retry`
//! decides from the method, the failure kind, the body and the budget.
//!
//! Errors are mapped to status codes here; their text is logged, never sent to clients
//! (clients get a short fixed reason).

use std::net::SocketAddr;

use balance::FailureKind;
use http::StatusCode;

use crate::config::ConfigError;
use crate::headers::RequestRule;

/// Errors of the proxy's public API.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration is invalid (names the field).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot bind the {what} listener on {addr}: {source}")]
    Bind {
        /// `public` or `admin`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A backend change was refused (invalid name, address, weight, duplicate).
    #[error("backend refused: {0}")]
    Backend(String),
    /// No backend with this name.
    #[error("no backend named {0:?}")]
    UnknownBackend(String),
    /// A worker thread could not start or failed.
    #[error("worker: {0}")]
    Worker(String),
}

/// Which side of the proxy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client (bad request, body too large, disconnected).
    Downstream,
    /// The backend (connect, reset, timeout).
    Upstream,
    /// The balancer itself (no backend available, shedding).
    Internal,
}

/// Why one forwarding attempt (or the whole request) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// The backend could not be reached or did not answer in time.
    Upstream(FailureKind),
    /// The client's body failed (disconnect) while being forwarded.
    ClientBody,
    /// The client's body exceeded `limits.max_body_bytes`.
    BodyTooLarge,
    /// The client did not send its (buffered) body within `timeouts.body_read_ms`.
    BodyTimeout,
    /// No backend may take the request (all down with `reject503`, all excluded).
    NoBackend,
    /// Every eligible backend is at `limits.max_in_flight_per_backend`.
    Shed,
    /// The request broke a request rule and is refused before forwarding.
    Rejected(RequestRule),
}

impl ForwardError {
    /// The side that failed.
    pub fn side(self) -> Side {
        match self {
            ForwardError::Upstream(_) => Side::Upstream,
            ForwardError::ClientBody
            | ForwardError::BodyTooLarge
            | ForwardError::BodyTimeout
            | ForwardError::Rejected(_) => Side::Downstream,
            ForwardError::NoBackend | ForwardError::Shed => Side::Internal,
        }
    }

    /// The status answered to the client when this is the final outcome.
    pub fn status(self) -> StatusCode {
        match self {
            ForwardError::Upstream(FailureKind::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ForwardError::ClientBody => StatusCode::BAD_REQUEST,
            ForwardError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ForwardError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ForwardError::NoBackend | ForwardError::Shed => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::Rejected(rule) => rule.status(),
        }
    }

    /// A short reason for the client (no internals).
    pub fn reason(self) -> &'static str {
        match self {
            ForwardError::Upstream(FailureKind::Timeout) => "upstream timed out\n",
            ForwardError::Upstream(_) => "upstream unavailable\n",
            ForwardError::ClientBody => "request body incomplete\n",
            ForwardError::BodyTooLarge => "request body too large\n",
            ForwardError::BodyTimeout => "request body too slow\n",
            ForwardError::NoBackend => "no backend available\n",
            ForwardError::Shed => "over capacity, retry later\n",
            ForwardError::Rejected(rule) => rule.reason(),
        }
    }
}

//! Errors: `ShopError` for starting and running the service, `AppError` for one request.
//!
//! `AppError` turns into a response with a JSON `{"error": ...}` body. Client mistakes get
//! a 4xx with a message about the input; store failures are logged here with their detail
//! and reach the client only as a generic 5xx. An `AppError` must never carry internals
//! (SQL, hostnames, stack traces) into a response body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Errors of starting or running a shop instance.
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// A configuration field is invalid; the message names it.
    #[error("invalid config: {0}")]
    Config(String),
    /// The connection math does not fit the database.
    #[error(
        "refusing to start: expected_instances ({instances}) x pool_size ({pool_size}) = {needed} \
         connections exceed max_connections ({max_connections}) of {server}; lower pool_size or \
         expected_instances, or raise max_connections"
    )]
    TooManyConnections {
        /// `expected_instances`.
        instances: u32,
        /// `pool_size`.
        pool_size: u32,
        /// Their product.
        needed: u64,
        /// The server's `max_connections`.
        max_connections: u64,
        /// Which server (primary or replica N).
        server: String,
    },
    /// A store could not be reached at start. Says once which store, where (the URL
    /// without its password) and why; carries no source, so an `anyhow` chain does not
    /// repeat the reason (issue 15: the refused port used to appear three times).
    #[error("cannot connect to {what} at {url}: {reason}")]
    Connect {
        /// Which store: `PostgreSQL primary`, `PostgreSQL replica 0`, `Redis`, ...
        what: String,
        /// The URL with any password replaced by `***` ([`redact_url`]).
        url: String,
        /// The innermost cause, once (`Connection refused (os error 111)`).
        reason: String,
    },
    /// A database call failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A Redis call failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A store call took longer than `store_timeout_ms`.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// Socket or file trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else internal (serialisation of our own values, hashing).
    #[error("internal: {0}")]
    Internal(String),
}

impl ShopError {
    /// A [`ShopError::Connect`] for `what` at `url`, with the innermost cause of `err` as
    /// the reason (sqlx and redis repeat their source in their own message).
    pub fn connect(what: impl Into<String>, url: &str, err: &dyn std::error::Error) -> Self {
        let mut reason = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            reason = s.to_string();
            source = s.source();
        }
        ShopError::Connect {
            what: what.into(),
            url: redact_url(url),
            reason,
        }
    }
}

/// `url` with the password of its userinfo replaced by `***` (`postgres://u:***@h/db`);
/// each comma-separated URL of a list (Redis Cluster seeds) likewise. Safe for logs.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let Some((scheme, rest)) = one.split_once("://") else {
                return one.to_string();
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    if userinfo.contains(':') {
                        format!("{scheme}://{user}:***@{host}{tail}")
                    } else {
                        format!("{scheme}://{user}@{host}{tail}")
                    }
                }
                None => one.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What can go wrong while serving one request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed input (bad JSON, missing header): 400.
    #[error("{0}")]
    BadRequest(String),
    /// Syntactically fine but unacceptable input (quantity <= 0, bad price): 422.
    #[error("{0}")]
    Unprocessable(String),
    /// No, bad or expired credentials: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated but not allowed: 403.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing: 404.
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with the current state (username taken, empty cart): 409.
    #[error("{0}")]
    Conflict(String),
    /// Body larger than the limit: 413.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Wrong content type: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A bounded resource is full (every password-hash permit taken): 503 with
    /// `Retry-After`, answered at once instead of queueing.
    #[error("too many concurrent {what} requests; retry later")]
    Overloaded {
        /// What is full.
        what: &'static str,
        /// Seconds for `Retry-After`.
        retry_after_s: u64,
    },
    /// One client (address or username) already holds its share of a bounded resource
    /// (password-hash permits): 429 with `Retry-After`, so one client cannot starve the
    /// others.
    #[error("too many concurrent {what} requests from this client; retry later")]
    ClientShare {
        /// What the share is of.
        what: &'static str,
        /// Seconds for `Retry-After`.
        retry_after_s: u64,
    },
    /// A store failed: 503 for timeouts and unreachable stores, 500 otherwise. The detail
    /// is logged, never sent.
    #[error(transparent)]
    Store(#[from] ShopError),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Store(ShopError::Db(e))
    }
}

impl From<redis::RedisError> for AppError {
    fn from(e: redis::RedisError) -> Self {
        AppError::Store(ShopError::Redis(e))
    }
}

impl AppError {
    /// The status code this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::ClientShare { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Store(ShopError::Timeout(_))
            | AppError::Store(ShopError::Redis(_))
            | AppError::Store(ShopError::Db(sqlx::Error::PoolTimedOut))
            | AppError::Store(ShopError::Db(sqlx::Error::Io(_))) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            AppError::Store(e) => {
                tracing::error!(error = %e, "store failure while serving a request");
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "a backing store is unavailable; retry later".to_string()
                } else {
                    "internal error".to_string()
                }
            }
            other => other.to_string(),
        };
        let mut r = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if let AppError::Overloaded { retry_after_s, .. }
        | AppError::ClientShare { retry_after_s, .. } = self
        {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry_after_s.into());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn store_errors_do_not_leak_detail() {
        let e = AppError::Store(ShopError::Internal("SELECT secret FROM users".into()));
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("secret") && body.contains("\"error\""),
            "{body}"
        );
        let r = AppError::Store(ShopError::Timeout("redis call")).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn too_many_connections_names_both_numbers() {
        let e = ShopError::TooManyConnections {
            instances: 10,
            pool_size: 20,
            needed: 200,
            max_connections: 100,
            server: "primary".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("(10)") && s.contains("(20)") && s.contains("(100)"),
            "{s}"
        );
    }
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    #[test]
    fn passwords_never_reach_a_message() {
        assert_eq!(
            redact_url("postgres://shop:s3cret@db:5432/shop?sslmode=disable"),
            "postgres://shop:***@db:5432/shop?sslmode=disable"
        );
        assert_eq!(
            redact_url("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(
            redact_url("redis://a:1@h1:7000,redis://h2:7001"),
            "redis://a:***@h1:7000,redis://h2:7001"
        );
        assert_eq!(redact_url("sqlite:/tmp/x.db"), "sqlite:/tmp/x.db");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = ShopError::connect("Redis", "redis://:pw@127.0.0.1:1", &io).to_string();
        assert_eq!(
            e,
            "cannot connect to Redis at redis://:***@127.0.0.1:1: Connection refused"
        );
    }
}

//! Who is calling: the session stores behind `--sessions` (password hashing lives in
//! `hashing`).
//!
//! - `jwt`: a signed HS256 token carrying the minimum (`sub` = user id, `iat`, `exp`);
//!   nothing stored server side, any instance with the deployment's key (see `secret`)
//!   verifies it. Only HS256 is accepted (so `alg: none` and other algorithms are
//!   rejected), and `exp` is required. A token carries no privilege: roles are read from
//!   the database on every write, so a forged or stale claim grants nothing.
//! - `redis` / `sql`: an opaque token `USERID.RANDOM`; the session lives in Redis under
//!   the user's hash tag, or in the `sessions` table, with a TTL.
//! - `memory`: the same opaque token kept in this process only. The anti-pattern: any
//!   other instance answers 401. Exists to demonstrate exactly that.
//!
//! Tokens are never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::config::SessionKind;
use crate::db::Db;
use crate::error::{AppError, ShopError};
use crate::redis_conn::RedisConn;
use crate::{keys, write_tx};

/// The authenticated caller: who, nothing more. Whether the user still exists and what
/// it may do is read from the database where it matters (writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUser {
    /// `users.id`.
    pub user_id: i64,
}

/// JWT claims: the minimum. Unknown claims in a token (say a forged `adm: true`) are
/// ignored, never read.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
}

fn random_token_part() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Splits an opaque session token `USERID.RANDOM`.
fn split_opaque(token: &str) -> Option<(i64, &str)> {
    let (uid, rest) = token.split_once('.')?;
    let uid: i64 = uid.parse().ok()?;
    (rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit())).then_some((uid, rest))
}

/// A session store (see the module docs).
pub enum SessionStore {
    /// Signed tokens.
    Jwt {
        /// Signing key.
        enc: EncodingKey,
        /// Verification key.
        dec: DecodingKey,
        /// Token lifetime.
        ttl_s: u64,
    },
    /// Sessions in Redis.
    Redis {
        /// Connection.
        conn: RedisConn,
        /// Key prefix.
        prefix: String,
        /// Session lifetime.
        ttl_s: u64,
    },
    /// Sessions in the `sessions` table of the primary.
    Sql {
        /// The database.
        db: Arc<Db>,
        /// Session lifetime.
        ttl_s: u64,
    },
    /// Sessions in this process (the anti-pattern).
    Memory {
        /// token -> (user, expires at unix ms)
        // scaleout-audit: ignore[RS-SESSION-MEMORY] `--sessions memory` is the deliberate anti-pattern the demo shows; it warns at start and the default is JWT
        map: Mutex<HashMap<String, (SessionUser, u64)>>,
        /// Session lifetime.
        ttl_s: u64,
    },
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SessionStore::Jwt { .. } => "SessionStore::Jwt",
            SessionStore::Redis { .. } => "SessionStore::Redis",
            SessionStore::Sql { .. } => "SessionStore::Sql",
            SessionStore::Memory { .. } => "SessionStore::Memory",
        })
    }
}

/// Most sessions a memory store keeps (it is a demonstration, but still bounded).
const MEMORY_SESSIONS_MAX: usize = 100_000;

impl SessionStore {
    /// Builds the store of `kind`.
    pub fn new(
        kind: SessionKind,
        secret: &[u8],
        ttl_s: u64,
        redis: Option<RedisConn>,
        prefix: &str,
        db: Arc<Db>,
    ) -> Result<Self, ShopError> {
        Ok(match kind {
            SessionKind::Jwt => SessionStore::Jwt {
                enc: EncodingKey::from_secret(secret),
                dec: DecodingKey::from_secret(secret),
                ttl_s,
            },
            SessionKind::Redis => SessionStore::Redis {
                conn: redis
                    .ok_or_else(|| ShopError::Config("sessions: redis needs --redis".into()))?,
                prefix: prefix.to_string(),
                ttl_s,
            },
            SessionKind::Sql => SessionStore::Sql { db, ttl_s },
            SessionKind::Memory => SessionStore::Memory {
                map: Mutex::new(HashMap::new()),
                ttl_s,
            },
        })
    }

    /// Whether the token should also travel as a cookie (server-side session stores).
    pub fn uses_cookie(&self) -> bool {
        !matches!(self, SessionStore::Jwt { .. })
    }

    /// Creates a session for `user` at `now_ms` (unix ms) and returns its token.
    pub async fn issue(&self, user: &SessionUser, now_ms: u64) -> Result<String, AppError> {
        match self {
            SessionStore::Jwt { enc, ttl_s, .. } => {
                let claims = Claims {
                    sub: user.user_id.to_string(),
                    iat: now_ms / 1000,
                    exp: now_ms / 1000 + ttl_s,
                };
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, enc)
                    .map_err(|e| AppError::Store(ShopError::Internal(format!("jwt encode: {e}"))))
            }
            SessionStore::Redis {
                conn,
                prefix,
                ttl_s,
            } => {
                let rand = random_token_part();
                let data =
                    serde_json::to_string(user).map_err(|e| ShopError::Internal(e.to_string()))?;
                conn.set_px(
                    &keys::session(prefix, user.user_id, &rand),
                    &data,
                    ttl_s * 1000,
                )
                .await?;
                Ok(format!("{}.{rand}", user.user_id))
            }
            SessionStore::Sql { db, ttl_s } => {
                let token = format!("{}.{}", user.user_id, random_token_part());
                let data =
                    serde_json::to_string(user).map_err(|e| ShopError::Internal(e.to_string()))?;
                let expires = (now_ms + ttl_s * 1000) as i64;
                write_tx!(db, tx => {
                    sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND expires_at < $2")
                        .bind(user.user_id)
                        .bind(now_ms as i64)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("INSERT INTO sessions (id, user_id, data, expires_at) VALUES ($1, $2, $3, $4)")
                        .bind(&token)
                        .bind(user.user_id)
                        .bind(&data)
                        .bind(expires)
                        .execute(&mut *tx)
                        .await?;
                });
                Ok(token)
            }
            SessionStore::Memory { map, ttl_s } => {
                let token = format!("{}.{}", user.user_id, random_token_part());
                let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
                if m.len() >= MEMORY_SESSIONS_MAX {
                    m.retain(|_, (_, exp)| *exp > now_ms);
                    if m.len() >= MEMORY_SESSIONS_MAX {
                        return Err(AppError::Store(ShopError::Internal(
                            "memory session store full".into(),
                        )));
                    }
                }
                m.insert(token.clone(), (user.clone(), now_ms + ttl_s * 1000));
                Ok(token)
            }
        }
    }

    /// Resolves a token at `now_ms`: `Ok(None)` for unknown, forged or expired tokens.
    pub async fn resolve(&self, token: &str, now_ms: u64) -> Result<Option<SessionUser>, AppError> {
        match self {
            SessionStore::Jwt { dec, .. } => {
                let mut v = Validation::new(Algorithm::HS256);
                v.set_required_spec_claims(&["exp", "sub"]);
                // Expiry is checked below against the caller's `now_ms` (testable time).
                v.validate_exp = false;
                match jsonwebtoken::decode::<Claims>(token, dec, &v) {
                    Ok(data) if data.claims.exp.saturating_mul(1000) <= now_ms => Ok(None),
                    Ok(data) => Ok(data
                        .claims
                        .sub
                        .parse()
                        .ok()
                        .map(|user_id| SessionUser { user_id })),
                    Err(e) => {
                        tracing::debug!(error = %e, "rejected a JWT");
                        Ok(None)
                    }
                }
            }
            SessionStore::Redis { conn, prefix, .. } => {
                let Some((uid, rand)) = split_opaque(token) else {
                    return Ok(None);
                };
                let v = conn.get(&keys::session(prefix, uid, rand)).await?;
                Ok(v.and_then(|s| serde_json::from_str::<SessionUser>(&s).ok())
                    .filter(|u| u.user_id == uid))
            }
            SessionStore::Sql { db, .. } => {
                if split_opaque(token).is_none() {
                    return Ok(None);
                }
                db.metrics().db_query(crate::metrics::DbRole::Primary);
                let row: Option<String> = crate::on_pool!(db.primary(), p => {
                    sqlx::query_scalar("SELECT data FROM sessions WHERE id = $1 AND expires_at > $2")
                        .bind(token)
                        .bind(now_ms as i64)
                        .fetch_optional(p)
                        .await?
                });
                Ok(row.and_then(|s| serde_json::from_str(&s).ok()))
            }
            SessionStore::Memory { map, .. } => {
                let m = map.lock().unwrap_or_else(|p| p.into_inner());
                Ok(m.get(token)
                    .filter(|(_, exp)| *exp > now_ms)
                    .map(|(u, _)| u.clone()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(secret: &[u8]) -> SessionStore {
        SessionStore::Jwt {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
            ttl_s: 60,
        }
    }

    fn alice() -> SessionUser {
        SessionUser { user_id: 7 }
    }

    #[tokio::test]
    async fn jwt_round_trip_expiry_and_forgery() {
        let s = jwt(b"k1");
        let now = 1_700_000_000_000;
        let t = s.issue(&alice(), now).await.unwrap();
        assert_eq!(s.resolve(&t, now).await.unwrap(), Some(alice()));
        // Another key: rejected.
        assert_eq!(jwt(b"k2").resolve(&t, now).await.unwrap(), None);
        // Expired: valid signature, checked 61 s after issue with a 60 s lifetime.
        assert_eq!(s.resolve(&t, now + 61_000).await.unwrap(), None);
        // alg none with the same claims: rejected.
        let payload = t.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert_eq!(s.resolve(&none, now).await.unwrap(), None);
        // Tampered payload: rejected.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1].push('A');
        assert_eq!(s.resolve(&parts.join("."), now).await.unwrap(), None);
    }

    #[test]
    fn opaque_tokens_parse_strictly() {
        let good = format!("12.{}", "a".repeat(64));
        assert_eq!(split_opaque(&good).map(|x| x.0), Some(12));
        assert!(split_opaque("12.short").is_none());
        assert!(split_opaque(&format!("x.{}", "a".repeat(64))).is_none());
    }
}

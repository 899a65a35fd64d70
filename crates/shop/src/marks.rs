//! Read-your-writes marks: the primary's WAL position after a user's last write, kept
//! where every instance can see it.
//!
//! With Redis, the mark lives under the user's hash tag (`{user:ID}:lsn`); without it, in
//! the `ryw_marks` table of the primary (one primary-key read per replica-bound read: the
//! price of having no Redis). Marks expire after `ttl_ms`, which is at least twice the
//! replica lag bound: a replica that has not replayed a write that old is skipped anyway,
//! so an expired mark can never send a user to a replica missing their write.
//! Marks only exist when replicas are configured; this module never sends a client the
//! position (the client cannot tamper with what it never holds).

use std::sync::Arc;

use crate::db::Db;
use crate::error::AppError;
use crate::redis_conn::RedisConn;
use crate::{keys, write_tx};

/// Raises the mark (never lowers it: a slower, older write must not hide a newer one)
/// and refreshes its TTL.
const RAISE_MARK_LUA: &str = "local c = tonumber(redis.call('GET', KEYS[1]) or '0') \
     if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
     else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 1";

/// Where marks live.
#[derive(Debug)]
pub enum MarkStore {
    /// No replicas: nothing to remember.
    Off,
    /// In Redis.
    Redis {
        /// Connection.
        conn: RedisConn,
        /// Key prefix.
        prefix: String,
        /// Lifetime of a mark.
        ttl_ms: u64,
    },
    /// In the primary's `ryw_marks` table.
    Sql {
        /// The database.
        db: Arc<Db>,
        /// Lifetime of a mark.
        ttl_ms: u64,
    },
}

impl MarkStore {
    /// Remembers that `user_id` wrote up to `lsn` at `now_ms`.
    pub async fn set(&self, user_id: i64, lsn: u64, now_ms: u64) -> Result<(), AppError> {
        match self {
            MarkStore::Off => Ok(()),
            MarkStore::Redis {
                conn,
                prefix,
                ttl_ms,
            } => {
                let mut cmd = redis::cmd("EVAL");
                // EVAL with the script body: works on a cluster without a SCRIPT LOAD per node.
                cmd.arg(RAISE_MARK_LUA)
                    .arg(1)
                    .arg(keys::ryw_mark(prefix, user_id))
                    .arg(lsn.to_string())
                    .arg(*ttl_ms);
                conn.query::<i64>(&cmd).await?;
                Ok(())
            }
            MarkStore::Sql { db, ttl_ms } => {
                let exp = (now_ms + ttl_ms) as i64;
                db.metrics().db_query(crate::metrics::DbRole::Primary);
                write_tx!(db, tx => {
                    sqlx::query(
                        "INSERT INTO ryw_marks (user_id, lsn, expires_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (user_id) DO UPDATE SET \
                         lsn = CASE WHEN excluded.lsn > ryw_marks.lsn THEN excluded.lsn ELSE ryw_marks.lsn END, \
                         expires_at = excluded.expires_at",
                    )
                    .bind(user_id)
                    .bind(lsn as i64)
                    .bind(exp)
                    .execute(&mut *tx)
                    .await?;
                });
                Ok(())
            }
        }
    }

    /// The user's live mark at `now_ms`, if any.
    pub async fn get(&self, user_id: i64, now_ms: u64) -> Result<Option<u64>, AppError> {
        match self {
            MarkStore::Off => Ok(None),
            MarkStore::Redis { conn, prefix, .. } => Ok(conn
                .get(&keys::ryw_mark(prefix, user_id))
                .await?
                .and_then(|s| s.parse().ok())),
            MarkStore::Sql { db, .. } => {
                db.metrics().db_query(crate::metrics::DbRole::Primary);
                let v: Option<i64> = crate::on_pool!(db.primary(), p => {
                    sqlx::query_scalar("SELECT lsn FROM ryw_marks WHERE user_id = $1 AND expires_at > $2")
                        .bind(user_id)
                        .bind(now_ms as i64)
                        .fetch_optional(p)
                        .await?
                });
                Ok(v.map(|x| x as u64))
            }
        }
    }
}

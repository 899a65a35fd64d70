//! Idempotency by job id: a processed-ids table written in the same transaction as a
//! handler's effect.
//!
//! The pattern, which makes at-least-once delivery exactly-once in effect:
//! ```text
//! BEGIN
//!   if !mark(tx, "jobs_processed", job.id) { COMMIT; return Ok }   -- done before
//!   ... the effect (insert the confirmation, adjust stock) ...
//! COMMIT                                                           -- both or neither
//! ack
//! ```
//! A worker killed before COMMIT leaves neither the mark nor the effect, so the
//! redelivery does the work; one killed after COMMIT but before the ack leaves both, so
//! the redelivery finds the mark and changes nothing. The table grows with the jobs done;
//! prune rows older than the longest redelivery window (the queue's visibility timeout
//! times `max_attempts` plus back-off) with [`prune_pg`] / [`prune_sqlite`].

use sqlx::{AssertSqlSafe, PgConnection, SqliteConnection};

use crate::JobsError;
use crate::config::validate_ident;

/// Creates the processed-ids table `table` on PostgreSQL if missing.
pub async fn ensure_pg(conn: &mut PgConnection, table: &str) -> Result<(), JobsError> {
    validate_ident("processed table", table, 63)?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(table)
        .execute(&mut *conn)
        .await?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {table} (job_id TEXT PRIMARY KEY, done_at_ms BIGINT NOT NULL)"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records `job_id` as processed inside the caller's transaction; `false` when it was
/// already recorded (the caller then skips its effect).
pub async fn mark_pg(
    conn: &mut PgConnection,
    table: &str,
    job_id: &str,
) -> Result<bool, JobsError> {
    validate_ident("processed table", table, 63)?;
    let r = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (job_id, done_at_ms)
         VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
         ON CONFLICT (job_id) DO NOTHING"
    )))
    .bind(job_id)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Deletes marks older than `older_than_ms`; returns how many.
pub async fn prune_pg(
    conn: &mut PgConnection,
    table: &str,
    older_than_ms: u64,
) -> Result<u64, JobsError> {
    validate_ident("processed table", table, 63)?;
    let r = sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {table}
         WHERE done_at_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1"
    )))
    .bind(older_than_ms as i64)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected())
}

/// Creates the processed-ids table `table` on SQLite if missing.
pub async fn ensure_sqlite(conn: &mut SqliteConnection, table: &str) -> Result<(), JobsError> {
    validate_ident("processed table", table, 63)?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {table} (job_id TEXT PRIMARY KEY, done_at_ms INTEGER NOT NULL)"
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records `job_id` as processed inside the caller's transaction (start it with
/// `BEGIN IMMEDIATE`); `false` when it was already recorded.
pub async fn mark_sqlite(
    conn: &mut SqliteConnection,
    table: &str,
    job_id: &str,
) -> Result<bool, JobsError> {
    validate_ident("processed table", table, 63)?;
    let r = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (job_id, done_at_ms) VALUES ($1, $2) ON CONFLICT (job_id) DO NOTHING"
    )))
    .bind(job_id)
    .bind(crate::unix_ms())
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Deletes marks older than `older_than_ms`; returns how many.
pub async fn prune_sqlite(
    conn: &mut SqliteConnection,
    table: &str,
    older_than_ms: u64,
) -> Result<u64, JobsError> {
    validate_ident("processed table", table, 63)?;
    let r = sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE done_at_ms < $1"
    )))
    .bind(crate::unix_ms() - older_than_ms as i64)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected())
}

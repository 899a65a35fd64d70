//! Stock reconciliation for the sharded checkout: closes the "stock reserved before a crash
//! is never given back" gap.
//!
//! The sharded checkout (`http/sharded.rs`) reserves stock on `--db` before it writes the
//! order on the user's shard, so a crash between the two leaves stock reserved with no
//! order. To make that state findable and repairable:
//! - the reserving transaction also inserts a row into `stock_reservations` (order id,
//!   user, lines, time): the ledger of stock taken but not yet settled;
//! - the shard transaction that commits the order also inserts `(order id, 'order')` into
//!   the shard's `order_claims`;
//! - once the order committed, the checkout deletes its ledger row (*settle*); if it did
//!   not, it gives the stock back in the transaction that deletes the row ([`give_back`]).
//!
//! [`reconcile_stock`] resolves every ledger row older than `stock_lease_ms` (its checkout
//! crashed or hangs):
//! 1. on the user's shard, one transaction claims the order id: `(id, 'void')` unless a
//!    claim exists. The primary key lets exactly one of checkout and reconciler win, so a
//!    checkout that outlived its lease finds the id voided and refuses the order (409)
//!    instead of committing an order whose stock was given back;
//! 2. on `--db`, one transaction deletes the ledger row and, only if it deleted it and the
//!    claim says `void`, returns the stock. A claim saying `order` just settles the row.
//!
//! Every step is idempotent (a crash of the reconciler anywhere is repaired by the next
//! run), and stock is returned at most once: only the transaction that deleted the ledger
//! row returns it. Invariant, at every instant: `initial stock = stock + units in orders +
//! units of ledger rows whose order does not exist` (the tests check it after SIGKILLing a
//! shop mid-checkout).
//!
//! Where it runs: every `--role worker` enqueues the job `stock:reconcile:<slot>` every
//! `reconcile_interval_ms` (the id dedups concurrent workers' enqueues within a slot) and
//! handles it; a web instance with `jobs = inline` (no workers) runs it in process. The
//! lease is compared with this process's clock against the reserving instance's clock, so
//! clocks must agree to well within the lease (one machine, or NTP).
//!
//! This module must never return stock outside the transaction that deletes its ledger
//! row, and never void an order id whose order exists.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::ShopConfig;
use crate::db::{AnyPool, Db};
use crate::error::ShopError;
use crate::http::AppState;
use crate::userdata::ShardedUserData;
use crate::{on_pool, pool_tx, write_tx};

/// Ledger rows resolved per run at most (the next run takes the rest).
pub const RECONCILE_BATCH: usize = 500;
/// Claims are kept at least this long (a void claim must outlive any checkout that could
/// still try to commit its order id; every checkout step is bounded by the store timeout).
pub const CLAIM_RETENTION_MIN_MS: u64 = 86_400_000;
/// Claims deleted per shard per run at most.
const CLAIM_PRUNE_BATCH: i64 = 1_000;
/// Job ids of the reconciliation: `stock:reconcile:<slot>`.
pub const JOB_PREFIX: &str = "stock:reconcile:";

/// Inserted by the reserving transaction on `--db` (order id, user id, lines, now ms).
pub(crate) const INSERT_RESERVATION: &str = "INSERT INTO stock_reservations \
     (order_id, user_id, lines, created_at) VALUES ($1, $2, $3, $4)";
/// Inserted by the order's shard transaction (order id, now ms); 0 rows: voided.
pub(crate) const CLAIM_ORDER: &str = "INSERT INTO order_claims (order_id, outcome, at_ms) \
     VALUES ($1, 'order', $2) ON CONFLICT (order_id) DO NOTHING";

/// Checks the reconciliation fields of `cfg`; the message names the field.
pub fn validate(cfg: &ShopConfig) -> Result<(), ShopError> {
    // A checkout's reserve and its shard commit each get store_timeout_ms; a lease
    // shorter than both together would void checkouts that are merely slow.
    let floor = cfg.store_timeout_ms.saturating_mul(2).max(1_000);
    if cfg.stock_lease_ms < floor || cfg.stock_lease_ms > 86_400_000 {
        return Err(ShopError::Config(format!(
            "stock_lease_ms: must be in {floor}..=86400000 (at least 2 x store_timeout_ms and 1 s)"
        )));
    }
    if cfg.reconcile_interval_ms < 100 || cfg.reconcile_interval_ms > 86_400_000 {
        return Err(ShopError::Config(
            "reconcile_interval_ms: must be in 100..=86400000".into(),
        ));
    }
    Ok(())
}

/// The ledger's text form of reserved lines: JSON `[[product_id, quantity], ...]`.
pub fn encode_lines(lines: &[(i64, i64)]) -> String {
    serde_json::to_string(lines).unwrap_or_else(|_| "[]".into())
}

fn decode_lines(text: &str) -> Result<Vec<(i64, i64)>, ShopError> {
    serde_json::from_str(text)
        .map_err(|e| ShopError::Internal(format!("stock_reservations.lines: {e}")))
}

/// Gives a reservation back if it is still held: one `--db` transaction deletes its ledger
/// row and, only if that delete found it, returns the stock. `true` when stock came back.
pub async fn give_back(db: &Db, order_id: &str, lines: &[(i64, i64)]) -> Result<bool, ShopError> {
    resolve_on_main(db, order_id, lines, Claim::Void).await
}

/// Settles a reservation whose order committed: the ledger row goes, the stock stays sold.
/// `true` when the row was still there.
pub async fn settle(db: &Db, order_id: &str) -> Result<bool, ShopError> {
    resolve_on_main(db, order_id, &[], Claim::Order).await
}

/// Which of checkout and reconciler claimed an order id on its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The order committed (stock stays sold).
    Order,
    /// The order will never commit (stock goes back).
    Void,
}

async fn resolve_on_main(
    db: &Db,
    order_id: &str,
    lines: &[(i64, i64)],
    claim: Claim,
) -> Result<bool, ShopError> {
    let deleted = write_tx!(db, tx => {
        let n = sqlx::query("DELETE FROM stock_reservations WHERE order_id = $1")
            .bind(order_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 && claim == Claim::Void {
            for &(product_id, quantity) in lines {
                sqlx::query("UPDATE products SET stock = stock + $1 WHERE id = $2")
                    .bind(quantity)
                    .bind(product_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        n == 1
    });
    Ok(deleted)
}

/// Claims `order_id` on its shard for the reconciler: `Order` when the order (or its
/// claim) is there, else `Void`, recorded so a late checkout cannot commit it.
async fn claim_on_shard(pool: &AnyPool, order_id: &str, now_ms: i64) -> Result<Claim, ShopError> {
    let outcome: String = pool_tx!(pool, tx => {
        let order: Option<String> = sqlx::query_scalar("SELECT id FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
        let mine = if order.is_some() { "order" } else { "void" };
        sqlx::query(
            "INSERT INTO order_claims (order_id, outcome, at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(mine)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query_scalar::<_, String>("SELECT outcome FROM order_claims WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(&mut *tx)
            .await?
    });
    Ok(if outcome == "order" {
        Claim::Order
    } else {
        Claim::Void
    })
}

/// What one reconciliation run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Ledger rows older than the lease that were looked at.
    pub examined: u64,
    /// Of those, rows whose order had committed (settled, stock kept sold).
    pub settled: u64,
    /// Rows whose order never committed: voided, stock given back.
    pub released: u64,
    /// Units of stock given back.
    pub units_returned: i64,
    /// Rows another process resolved first, or that could not be read (left for later).
    pub skipped: u64,
    /// Old claims deleted from the shards.
    pub claims_pruned: u64,
}

/// Resolves up to `limit` ledger rows older than `lease_ms` at `now_ms` (see the module
/// docs), then prunes claims older than the retention. Idempotent; safe to run in several
/// processes at once.
pub async fn reconcile_stock(
    db: &Db,
    shards: &ShardedUserData,
    lease_ms: u64,
    now_ms: i64,
    limit: usize,
) -> Result<ReconcileReport, ShopError> {
    let cutoff = now_ms - i64::try_from(lease_ms).unwrap_or(i64::MAX / 2);
    let rows: Vec<(String, i64, String)> = on_pool!(db.primary(), p => {
        sqlx::query_as(
            "SELECT order_id, user_id, lines FROM stock_reservations WHERE created_at <= $1 \
             ORDER BY created_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit.clamp(1, 10_000) as i64)
        .fetch_all(p)
        .await?
    });
    let mut report = ReconcileReport::default();
    for (order_id, user_id, text) in rows {
        report.examined += 1;
        let lines = match decode_lines(&text) {
            Ok(l) => l,
            Err(e) => {
                // Never written by this code; leave it for an operator rather than guess.
                tracing::error!(order = %order_id, error = %e, "unreadable stock reservation left in place");
                report.skipped += 1;
                continue;
            }
        };
        let (_, pool) = shards.home(user_id);
        let claim = claim_on_shard(pool, &order_id, now_ms).await?;
        let deleted = resolve_on_main(db, &order_id, &lines, claim).await?;
        match (claim, deleted) {
            (Claim::Void, true) => {
                report.released += 1;
                report.units_returned += lines.iter().map(|l| l.1).sum::<i64>();
                tracing::info!(order = %order_id, user = user_id, "stock of an order that never committed given back");
            }
            (Claim::Order, true) => report.settled += 1,
            (_, false) => report.skipped += 1,
        }
    }
    let retention = CLAIM_RETENTION_MIN_MS.max(lease_ms.saturating_mul(10));
    let prune_before = now_ms - i64::try_from(retention).unwrap_or(i64::MAX / 2);
    for pool in shards.pools() {
        let n = pool_tx!(pool, tx => {
            sqlx::query(
                "DELETE FROM order_claims WHERE order_id IN \
                 (SELECT order_id FROM order_claims WHERE at_ms < $1 LIMIT $2)",
            )
            .bind(prune_before)
            .bind(CLAIM_PRUNE_BATCH)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        report.claims_pruned += n;
    }
    Ok(report)
}

/// The job id of the reconciliation run due in the slot containing `now_ms`.
pub fn job_id(now_ms: u64, interval_ms: u64) -> String {
    format!("{JOB_PREFIX}{}", now_ms / interval_ms.max(1))
}

/// Whether `job_id` is a reconciliation job.
pub fn is_job(job_id: &str) -> bool {
    job_id
        .strip_prefix(JOB_PREFIX)
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Web instances with shards and `jobs = inline`: runs the reconciliation every
/// `interval` until `cancel` (there is no worker to give the job to).
pub async fn run_in_process(
    st: Arc<AppState>,
    lease_ms: u64,
    interval: Duration,
    cancel: CancellationToken,
) {
    let Some(shards) = st.shards.as_ref() else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = crate::http::now_ms() as i64;
        match reconcile_stock(&st.db, shards, lease_ms, now, RECONCILE_BATCH).await {
            Ok(r) if r.released + r.settled > 0 => {
                tracing::info!(?r, "stock reconciliation")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "stock reconciliation failed; retried next interval")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_name_the_slot() {
        assert_eq!(job_id(65_000, 30_000), "stock:reconcile:2");
        assert!(is_job(&job_id(65_000, 30_000)));
        assert!(!is_job("stock:reconcile:"));
        assert!(!is_job("stock:reconcile:1x"));
        assert!(!is_job("order:1:confirm"));
        ::jobs::validate_job_id(&job_id(u64::MAX, 1)).unwrap();
    }

    #[test]
    fn lines_round_trip() {
        let l = vec![(1, 2), (30, 4)];
        assert_eq!(decode_lines(&encode_lines(&l)).unwrap(), l);
        assert!(decode_lines("{").is_err());
    }

    #[test]
    fn lease_must_cover_a_checkout() {
        let mut c = ShopConfig {
            store_timeout_ms: 5_000,
            stock_lease_ms: 9_999,
            ..ShopConfig::default()
        };
        let e = validate(&c).unwrap_err().to_string();
        assert!(e.contains("stock_lease_ms"), "{e}");
        c.stock_lease_ms = 10_000;
        validate(&c).unwrap();
        c.reconcile_interval_ms = 0;
        let e = validate(&c).unwrap_err().to_string();
        assert!(e.contains("reconcile_interval_ms"), "{e}");
    }
}

//! The cart and checkout handlers' halves for `--shard-map`: the user's cart items,
//! orders and order items are read and written on the shard that owns the user; product
//! names, prices and stock stay on the main database.
//!
//! Checkout spans two databases, so it cannot be one transaction. The order is:
//! 1. on the shard: an order with this idempotency key already? Answer it (a replay);
//! 2. on the shard: snapshot the cart;
//! 3. on the main db, one transaction: **reserve** the stock of every line
//!    (`stock = stock - q WHERE stock >= q`, all or nothing) and read the prices;
//!    a short line refuses the checkout (409) before anything is written on the shard;
//! 4. on the shard, one `BEGIN IMMEDIATE` transaction: re-check the key, delete exactly
//!    the snapshot's cart rows (a row changed since the snapshot makes this roll back and
//!    the whole checkout retry), insert the order and its items, commit;
//! 5. if 4 did not commit, give the reservation back (stock + q).
//!
//! Step 3 records the reservation in the `stock_reservations` ledger and step 4 claims the
//! order id in `order_claims`; after 4 the ledger row is deleted (settled), and step 5
//! gives stock back only in the transaction that deletes the row.
//!
//! Failure modes: a crash or a failed give-back between 3 and 5 leaves stock reserved with
//! no order (stock under-counted, never over-sold) until the reconciliation job
//! (`crate::reconcile`) finds the ledger row older than the stock lease, voids the order
//! id on the shard and gives the stock back; an acknowledged order is committed on
//! the shard before the response, so it is never lost; an ambiguous commit error is
//! resolved by looking the order up by key before giving stock back (found: it is the
//! answer; lookup failed: the reservation is kept). The `UNIQUE (user_id,
//! idempotency_key)` constraint lives on the shard, which is enough because all of a
//! user's orders live on one shard, so one key gives exactly one order.
//!
//! This module must never write per-user rows to the main database, nor hold a
//! transaction open on one database while waiting on the other.

use std::collections::HashMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{AppState, CartLine, Checkout, MAX_QUANTITY, OrderLine, OrderOut, find_order_on};
use crate::db::AnyPool;
use crate::error::AppError;
use crate::metrics::{DbRole, Metrics};
use crate::reconcile;
use crate::userdata::ShardedUserData;
use crate::{on_pool, pool_tx, write_tx};

/// Checkout attempts when the cart changes under a checkout (then 409, retry later).
const CHECKOUT_ATTEMPTS: usize = 3;
/// Product ids per `IN (...)` price lookup.
const PRICE_BATCH: usize = 500;

/// `(product_id, quantity)` rows of the user's cart on its shard, by product id.
async fn cart_rows(pool: &AnyPool, user_id: i64) -> Result<Vec<(i64, i64)>, AppError> {
    Ok(on_pool!(pool, p => {
        sqlx::query_as(
            "SELECT product_id, quantity FROM cart_items WHERE user_id = $1 ORDER BY product_id",
        )
        .bind(user_id)
        .fetch_all(p)
        .await?
    }))
}

/// Current prices of `ids` from the main database (products that do not exist are absent).
async fn prices(st: &AppState, ids: &[i64]) -> Result<HashMap<i64, i64>, AppError> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(PRICE_BATCH) {
        // Only generated `$N` placeholders go into the text; the ids are bound.
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, price_cents FROM products WHERE id IN ({})",
            marks.join(", ")
        );
        let r = super::stale_ok_reader(st, None).await?;
        st.metrics.db_query(r.role);
        let rows: Vec<(i64, i64)> = on_pool!(&r.pool, p => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()));
            for id in chunk {
                q = q.bind(*id);
            }
            q.fetch_all(p).await?
        });
        out.extend(rows);
    }
    Ok(out)
}

/// `GET /cart`: the cart rows from the user's shard, priced from the main database.
pub(super) async fn cart_get(
    st: &AppState,
    sh: &ShardedUserData,
    user_id: i64,
) -> Result<Response, AppError> {
    let (i, pool) = sh.home(user_id);
    st.metrics.shard_query(i);
    let rows = cart_rows(pool, user_id).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let price = prices(st, &ids).await?;
    // Like the unsharded JOIN: a line whose product does not exist is not shown.
    let items: Vec<CartLine> = rows
        .into_iter()
        .filter_map(|(product_id, quantity)| {
            price.get(&product_id).map(|&price| CartLine {
                product_id,
                quantity,
                price,
            })
        })
        .collect();
    let total: i64 = items.iter().map(|i| i.price * i.quantity).sum();
    Ok(Json(serde_json::json!({ "items": items, "total": total })).into_response())
}

/// `POST /cart`: the product must exist on the main database; the line is upserted on the
/// user's shard (capped at [`MAX_QUANTITY`]).
pub(super) async fn cart_add(
    st: &AppState,
    sh: &ShardedUserData,
    user_id: i64,
    product_id: i64,
    quantity: i64,
) -> Result<Response, AppError> {
    st.metrics.db_query(DbRole::Primary);
    let exists: Option<i64> = on_pool!(st.db.primary(), p => {
        sqlx::query_scalar("SELECT id FROM products WHERE id = $1")
            .bind(product_id)
            .fetch_optional(p)
            .await?
    });
    if exists.is_none() {
        return Err(AppError::NotFound(format!(
            "product {product_id} not found"
        )));
    }
    let (i, pool) = sh.home(user_id);
    st.metrics.shard_query(i);
    let quantity: i64 = pool_tx!(pool, tx => {
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO cart_items (user_id, product_id, quantity) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, product_id) DO UPDATE \
             SET quantity = CASE WHEN cart_items.quantity + excluded.quantity > $4 THEN $4 \
             ELSE cart_items.quantity + excluded.quantity END RETURNING quantity",
        )
        .bind(user_id)
        .bind(product_id)
        .bind(quantity)
        .bind(MAX_QUANTITY)
        .fetch_one(&mut *tx)
        .await?
    });
    Ok(Json(serde_json::json!({ "product_id": product_id, "quantity": quantity })).into_response())
}

/// `DELETE /cart/{product_id}` on the user's shard.
pub(super) async fn cart_remove(
    sh: &ShardedUserData,
    metrics: &Metrics,
    user_id: i64,
    product_id: i64,
) -> Result<Response, AppError> {
    let (i, pool) = sh.home(user_id);
    metrics.shard_query(i);
    let n = pool_tx!(pool, tx => {
        sqlx::query("DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2")
            .bind(user_id)
            .bind(product_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
    });
    if n == 0 {
        return Err(AppError::NotFound(format!(
            "product {product_id} is not in the cart"
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Step 3: reserves stock for every line and reads prices, in one main-db transaction
/// that also records the reservation in the ledger under `order_id` (see
/// `crate::reconcile`). `Err(product_id)` (inside `Ok`) names the first short line;
/// nothing was reserved then.
async fn reserve(
    st: &AppState,
    cart: &[(i64, i64)],
    order_id: &str,
    user_id: i64,
    now_ms: i64,
) -> Result<Result<Vec<OrderLine>, i64>, AppError> {
    st.metrics.db_query(DbRole::Primary);
    Ok(write_tx!(st.db, tx => {
        let mut lines = Vec::with_capacity(cart.len());
        for &(product_id, quantity) in cart {
            let price: Option<i64> = sqlx::query_scalar(
                "UPDATE products SET stock = stock - $1 WHERE id = $2 AND stock >= $1 \
                 RETURNING price_cents",
            )
            .bind(quantity)
            .bind(product_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(price) = price else {
                // Returning early drops the transaction: earlier lines roll back.
                return Ok(Err(product_id));
            };
            lines.push(OrderLine {
                product_id,
                quantity,
                price,
            });
        }
        sqlx::query(reconcile::INSERT_RESERVATION)
            .bind(order_id)
            .bind(user_id)
            .bind(reconcile::encode_lines(cart))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        Ok(lines)
    }))
}

/// Step 5: gives a reservation back (only if its ledger row is still there, in the same
/// transaction that deletes it). A failure is logged and leaves the ledger row to the
/// reconciliation job (stock under-counted until then, never over-sold).
async fn release(st: &AppState, order_id: &str, lines: &[OrderLine]) {
    st.metrics.db_query(DbRole::Primary);
    let reserved: Vec<(i64, i64)> = lines.iter().map(|l| (l.product_id, l.quantity)).collect();
    if let Err(e) = reconcile::give_back(&st.db, order_id, &reserved).await {
        tracing::warn!(error = %e, lines = lines.len(), "could not give a checkout's stock reservation back; the reconciliation job will");
    }
}

/// After the order committed: the ledger row goes (the stock stays sold). A failure is
/// harmless: the reconciliation job finds the order's claim and settles the row.
async fn settle(st: &AppState, order_id: &str) {
    st.metrics.db_query(DbRole::Primary);
    if let Err(e) = reconcile::settle(&st.db, order_id).await {
        tracing::warn!(error = %e, "could not settle a checkout's stock reservation; the reconciliation job will");
    }
}

/// Outcome of the shard transaction of one checkout attempt.
enum ShardCommit {
    /// The order committed.
    Created(OrderOut),
    /// An order with this key already exists (nothing written).
    Replayed(OrderOut),
    /// A cart row changed since the snapshot (rolled back).
    CartChanged,
    /// The reconciliation job voided this order id (its lease ran out): rolled back.
    Voided,
}

/// Step 4: one transaction on the user's shard.
async fn commit_order(
    pool: &AnyPool,
    user_id: i64,
    key: &str,
    order: OrderOut,
) -> Result<ShardCommit, AppError> {
    Ok(pool_tx!(pool, tx => {
        let existing: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT id, total_cents, created_at FROM orders WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((id, total, created_at)) = existing {
            let items: Vec<OrderLine> = sqlx::query_as(
                "SELECT product_id, quantity, price_cents FROM order_items WHERE order_id = $1 ORDER BY product_id",
            )
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
            // Nothing written: dropping the transaction rolls it back.
            return Ok(ShardCommit::Replayed(OrderOut { id, total, created_at, items }));
        }
        // Delete exactly the snapshot's rows; on PostgreSQL a concurrent change to a row
        // makes its DELETE match nothing (the WHERE is re-checked after the row lock).
        for l in &order.items {
            let n = sqlx::query(
                "DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2 AND quantity = $3",
            )
            .bind(user_id)
            .bind(l.product_id)
            .bind(l.quantity)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(ShardCommit::CartChanged);
            }
        }
        // Claim the id before the reconciliation job can void it (crate::reconcile).
        let claimed = sqlx::query(reconcile::CLAIM_ORDER)
            .bind(&order.id)
            .bind(order.created_at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if claimed == 0 {
            return Ok(ShardCommit::Voided);
        }
        sqlx::query(
            "INSERT INTO orders (id, user_id, idempotency_key, total_cents, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&order.id)
        .bind(user_id)
        .bind(key)
        .bind(order.total)
        .bind(order.created_at)
        .execute(&mut *tx)
        .await?;
        for l in &order.items {
            sqlx::query(
                "INSERT INTO order_items (order_id, user_id, product_id, quantity, price_cents) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&order.id)
            .bind(user_id)
            .bind(l.product_id)
            .bind(l.quantity)
            .bind(l.price)
            .execute(&mut *tx)
            .await?;
        }
        ShardCommit::Created(order)
    }))
}

/// `POST /orders` with `--shard-map` (the protocol is in the module docs).
pub(super) async fn checkout(
    st: &AppState,
    sh: &ShardedUserData,
    user_id: i64,
    key: &str,
) -> Result<Checkout, AppError> {
    let (i, pool) = sh.home(user_id);
    for _ in 0..CHECKOUT_ATTEMPTS {
        // 1. A replay never reserves stock.
        st.metrics.shard_query(i);
        if let Some(o) = find_order_on(pool, user_id, key).await? {
            return Ok(Checkout::Replayed(o));
        }
        // 2. Snapshot.
        st.metrics.shard_query(i);
        let cart = cart_rows(pool, user_id).await?;
        if cart.is_empty() {
            // A concurrent checkout with this key may have just emptied it.
            st.metrics.shard_query(i);
            return Ok(match find_order_on(pool, user_id, key).await? {
                Some(o) => Checkout::Replayed(o),
                None => Checkout::EmptyCart,
            });
        }
        // 3. Reserve stock (recorded in the ledger under the order's id), read prices.
        let order_id = uuid::Uuid::now_v7().to_string();
        let created_at = super::now_ms() as i64;
        let lines = match reserve(st, &cart, &order_id, user_id, created_at).await? {
            Ok(lines) => lines,
            Err(short) => return Ok(Checkout::OutOfStock(short)),
        };
        let order = OrderOut {
            id: order_id.clone(),
            total: lines.iter().map(|l| l.price * l.quantity).sum(),
            created_at,
            items: lines,
        };
        let reserved = order.items.clone();
        // 4. The order, on the shard.
        st.metrics.shard_query(i);
        match commit_order(pool, user_id, key, order).await {
            Ok(ShardCommit::Created(o)) => {
                settle(st, &order_id).await;
                return Ok(Checkout::Created(o));
            }
            Ok(ShardCommit::Replayed(o)) => {
                release(st, &order_id, &reserved).await;
                return Ok(Checkout::Replayed(o));
            }
            Ok(ShardCommit::CartChanged) => {
                release(st, &order_id, &reserved).await;
                continue;
            }
            Ok(ShardCommit::Voided) => {
                // The reconciliation job gave this reservation back already.
                release(st, &order_id, &reserved).await;
                return Err(AppError::Conflict(
                    "checkout took longer than the stock lease; retry".into(),
                ));
            }
            Err(e) => {
                // Did it commit anyway (an ambiguous commit error), or did a concurrent
                // checkout with the same key win (unique violation)? Look before giving
                // the stock back.
                st.metrics.shard_query(i);
                match find_order_on(pool, user_id, key).await {
                    Ok(Some(o)) if o.id == order_id => {
                        settle(st, &order_id).await;
                        return Ok(Checkout::Created(o));
                    }
                    Ok(Some(o)) => {
                        release(st, &order_id, &reserved).await;
                        return Ok(Checkout::Replayed(o));
                    }
                    Ok(None) => {
                        release(st, &order_id, &reserved).await;
                        return Err(e);
                    }
                    Err(lookup) => {
                        tracing::warn!(error = %lookup, "checkout outcome unknown; its stock reservation is kept");
                        return Err(e);
                    }
                }
            }
        }
    }
    Err(AppError::Conflict(
        "the cart changed during checkout; retry".into(),
    ))
}

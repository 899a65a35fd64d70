//! One shard's database (SQLite file or PostgreSQL database) and the per-user row
//! operations resharding needs: list users, read a user's rows, copy them in (idempotent),
//! delete exactly what was copied.
//!
//! Every write runs in one transaction (`BEGIN IMMEDIATE` on SQLite so a writer never hits
//! SQLITE_BUSY half-way). SQL is written once with `$N` parameters, which both sqlx
//! drivers accept. This module never decides *where* a user goes (that is the router's
//! job) and never deletes a row it has not been handed.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::ShardError;

/// The three per-user tables, taken from `crate::schema` (same text for SQLite and
/// PostgreSQL). Created if missing so a fresh shard can receive users.
pub const SHARDED_TABLES_DDL: &[&str] = &[
    crate::schema::CART_ITEMS,
    crate::schema::ORDERS,
    crate::schema::ORDER_ITEMS,
    crate::schema::ORDER_ITEMS_ORDER_INDEX,
    // Not in crate::schema: listing a shard's users and reading one user's orders and
    // items would otherwise scan the whole table.
    "CREATE INDEX IF NOT EXISTS orders_user ON orders(user_id)",
    "CREATE INDEX IF NOT EXISTS order_items_user ON order_items(user_id)",
    // Checkout and the stock reconciliation job race on these (see crate::reconcile).
    crate::schema::ORDER_CLAIMS,
    crate::schema::ORDER_CLAIMS_AT_INDEX,
];

/// The directory router's table (in the directory database only).
const DIRECTORY_DDL: &str = "CREATE TABLE IF NOT EXISTS shard_directory (
    user_id BIGINT PRIMARY KEY,
    shard TEXT NOT NULL)";

/// Connections per shard pool (resharding is sequential; the shop sizes its own pools).
pub const DEFAULT_POOL_SIZE: u32 = 4;

/// A pool on one shard database.
#[derive(Debug, Clone)]
pub enum ShardPool {
    /// A SQLite file in WAL mode.
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// A row of `cart_items`: (user_id, product_id, quantity).
pub type CartRow = (i64, i64, i64);
/// A row of `orders`: (id, user_id, idempotency_key, total_cents, created_at).
pub type OrderRow = (String, i64, String, i64, i64);
/// A row of `order_items`: (order_id, user_id, product_id, quantity, price_cents).
pub type OrderItemRow = (String, i64, i64, i64, i64);

/// Every per-user row of one user on one shard, in a deterministic order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRows {
    /// Cart items, by product id.
    pub cart: Vec<CartRow>,
    /// Orders, by id.
    pub orders: Vec<OrderRow>,
    /// Order items, by (order id, product id, quantity, price).
    pub items: Vec<OrderItemRow>,
}

impl UserRows {
    /// Total number of rows.
    pub fn len(&self) -> usize {
        self.cart.len() + self.orders.len() + self.items.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Row counts of the three per-user tables of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// `cart_items` rows.
    pub cart_items: u64,
    /// `orders` rows.
    pub orders: u64,
    /// `order_items` rows.
    pub order_items: u64,
}

// Runs `$body` with `$p` bound to the concrete pool (the SQL is identical for both).
macro_rules! with_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            ShardPool::Sqlite($p) => $body,
            ShardPool::Postgres($p) => $body,
        }
    };
}

// Runs `$body` in a write transaction `$tx`, committing when it returns Ok; an early `?`
// drops the transaction, which rolls it back.
macro_rules! in_write_tx {
    ($pool:expr, $tx:ident => $body:block) => {
        match $pool {
            ShardPool::Sqlite(p) => {
                let mut $tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            ShardPool::Postgres(p) => {
                let mut $tx = p.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

impl ShardPool {
    /// Opens a pool on `url` (`sqlite:PATH`, created if missing, WAL, synchronous=NORMAL,
    /// busy timeout; or `postgres://...`). Fails when the database does not answer.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, ShardError> {
        Self::connect_sized(url, timeout, DEFAULT_POOL_SIZE).await
    }

    /// [`ShardPool::connect`] with `max_connections` connections (the shop sizes shard
    /// pools like its primary pool). SQLite gets the same discipline as the shop's main
    /// database: WAL, synchronous=NORMAL, and a busy timeout of at least 10 s, so that
    /// `BEGIN IMMEDIATE` writers from several processes wait instead of failing BUSY.
    pub async fn connect_sized(
        url: &str,
        timeout: Duration,
        max_connections: u32,
    ) -> Result<Self, ShardError> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(timeout.max(Duration::from_secs(10)));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(timeout)
                .connect_with(opts)
                .await?;
            Ok(Self::Sqlite(pool))
        } else {
            // `IF NOT EXISTS` DDL would log a NOTICE per statement on every start.
            // Every statement is bounded by the call timeout on the server side too.
            let opts = PgConnectOptions::from_str(url)?.options([
                ("client_min_messages", "warning".to_string()),
                ("statement_timeout", timeout.as_millis().to_string()),
            ]);
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(timeout)
                .connect_with(opts)
                .await?;
            Ok(Self::Postgres(pool))
        }
    }

    /// Whether the database answers `SELECT 1` within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let q = async {
            with_pool!(self, p => sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(p).await)
        };
        matches!(tokio::time::timeout(timeout, q).await, Ok(Ok(1)))
    }

    /// (pool size, idle connections) right now.
    pub fn usage(&self) -> (u32, u32) {
        with_pool!(self, p => (p.size(), p.num_idle() as u32))
    }

    /// Closes the pool, waiting for its connections to finish.
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }

    /// Creates the per-user tables if missing.
    pub async fn ensure_tables(&self) -> Result<(), ShardError> {
        for ddl in SHARDED_TABLES_DDL {
            with_pool!(self, p => sqlx::query(*ddl).execute(p).await.map(|_| ()))?;
        }
        Ok(())
    }

    /// Up to `limit` distinct user ids having any per-user row here, `>= from`, ascending.
    pub async fn users_page(&self, from: i64, limit: i64) -> Result<Vec<i64>, ShardError> {
        const SQL: &str = "SELECT user_id FROM (
                SELECT user_id FROM cart_items WHERE user_id >= $1
                UNION SELECT user_id FROM orders WHERE user_id >= $1
                UNION SELECT user_id FROM order_items WHERE user_id >= $1) u
            ORDER BY user_id LIMIT $2";
        let rows: Vec<(i64,)> = with_pool!(self, p => sqlx::query_as(SQL)
            .bind(from)
            .bind(limit)
            .fetch_all(p)
            .await)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Every per-user row of `user_id` here.
    pub async fn read_user(&self, user_id: i64) -> Result<UserRows, ShardError> {
        const CART: &str = "SELECT user_id, product_id, quantity FROM cart_items
            WHERE user_id = $1 ORDER BY product_id";
        const ORDERS: &str = "SELECT id, user_id, idempotency_key, total_cents, created_at
            FROM orders WHERE user_id = $1 ORDER BY id";
        const ITEMS: &str = "SELECT order_id, user_id, product_id, quantity, price_cents
            FROM order_items WHERE user_id = $1
            ORDER BY order_id, product_id, quantity, price_cents";
        Ok(with_pool!(self, p => UserRows {
            cart: sqlx::query_as(CART).bind(user_id).fetch_all(p).await?,
            orders: sqlx::query_as(ORDERS).bind(user_id).fetch_all(p).await?,
            items: sqlx::query_as(ITEMS).bind(user_id).fetch_all(p).await?,
        }))
    }

    /// Writes `rows` (one user's, read from another shard) here in one transaction,
    /// idempotently: cart items are upserted (the source's quantity wins), orders inserted
    /// unless their id exists, and an order's items inserted only when this shard has no
    /// item of that order yet (items of an order are always written in one transaction, so
    /// "some" means "all"). Returns the rows written.
    pub async fn copy_in(&self, rows: &UserRows) -> Result<u64, ShardError> {
        const CART: &str = "INSERT INTO cart_items (user_id, product_id, quantity)
            VALUES ($1, $2, $3)
            ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = excluded.quantity";
        const ORDER: &str = "INSERT INTO orders
            (id, user_id, idempotency_key, total_cents, created_at) VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT DO NOTHING";
        const HAS_ITEMS: &str = "SELECT COUNT(*) FROM order_items WHERE order_id = $1";
        const ITEM: &str = "INSERT INTO order_items
            (order_id, user_id, product_id, quantity, price_cents) VALUES ($1, $2, $3, $4, $5)";
        let mut written = 0u64;
        in_write_tx!(self, tx => {
            for (user, product, qty) in &rows.cart {
                written += sqlx::query(CART).bind(user).bind(product).bind(qty)
                    .execute(&mut *tx).await?.rows_affected();
            }
            for (id, user, key, total, at) in &rows.orders {
                written += sqlx::query(ORDER).bind(id).bind(user).bind(key).bind(total).bind(at)
                    .execute(&mut *tx).await?.rows_affected();
            }
            let mut i = 0;
            while i < rows.items.len() {
                // Items are sorted by order id: take this order's run.
                let order_id = &rows.items[i].0;
                let end = i + rows.items[i..].iter().take_while(|r| &r.0 == order_id).count();
                let (present,): (i64,) = sqlx::query_as(HAS_ITEMS).bind(order_id)
                    .fetch_one(&mut *tx).await?;
                if present == 0 {
                    for (oid, user, product, qty, price) in &rows.items[i..end] {
                        written += sqlx::query(ITEM).bind(oid).bind(user).bind(product)
                            .bind(qty).bind(price).execute(&mut *tx).await?.rows_affected();
                    }
                }
                i = end;
            }
        });
        Ok(written)
    }

    /// Deletes exactly `rows` (cart rows only if their quantity is unchanged; orders by id;
    /// items by order id) in one transaction. A row changed or added since `rows` was read
    /// stays, and the next reshard run moves it. Returns the rows deleted.
    pub async fn delete_exact(&self, rows: &UserRows) -> Result<u64, ShardError> {
        const CART: &str =
            "DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2 AND quantity = $3";
        const ITEMS: &str = "DELETE FROM order_items WHERE user_id = $1 AND order_id = $2";
        const ORDER: &str = "DELETE FROM orders WHERE id = $1 AND user_id = $2";
        let mut deleted = 0u64;
        let mut item_orders: Vec<(&str, i64)> =
            rows.items.iter().map(|r| (r.0.as_str(), r.1)).collect();
        item_orders.dedup();
        in_write_tx!(self, tx => {
            for (user, product, qty) in &rows.cart {
                deleted += sqlx::query(CART).bind(user).bind(product).bind(qty)
                    .execute(&mut *tx).await?.rows_affected();
            }
            for (order_id, user) in &item_orders {
                deleted += sqlx::query(ITEMS).bind(user).bind(*order_id)
                    .execute(&mut *tx).await?.rows_affected();
            }
            for (id, user, ..) in &rows.orders {
                deleted += sqlx::query(ORDER).bind(id).bind(user)
                    .execute(&mut *tx).await?.rows_affected();
            }
        });
        Ok(deleted)
    }

    /// Row counts of the per-user tables.
    pub async fn counts(&self) -> Result<TableCounts, ShardError> {
        let (c, o, i): (i64, i64, i64) = with_pool!(self, p => sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM cart_items), (SELECT COUNT(*) FROM orders),
                    (SELECT COUNT(*) FROM order_items)")
            .fetch_one(p)
            .await)?;
        Ok(TableCounts {
            cart_items: c as u64,
            orders: o as u64,
            order_items: i as u64,
        })
    }

    /// Creates the directory table if missing (directory database only).
    pub async fn ensure_directory(&self) -> Result<(), ShardError> {
        with_pool!(self, p => sqlx::query(DIRECTORY_DDL).execute(p).await.map(|_| ()))?;
        Ok(())
    }

    /// Every directory entry: (user_id, shard name).
    pub async fn directory_entries(&self) -> Result<Vec<(i64, String)>, ShardError> {
        Ok(with_pool!(self, p => sqlx::query_as(
            "SELECT user_id, shard FROM shard_directory ORDER BY user_id")
            .fetch_all(p)
            .await)?)
    }

    /// Pins `user_id` to the shard named `shard` (insert or replace).
    pub async fn directory_assign(&self, user_id: i64, shard: &str) -> Result<(), ShardError> {
        with_pool!(self, p => sqlx::query(
            "INSERT INTO shard_directory (user_id, shard) VALUES ($1, $2)
             ON CONFLICT (user_id) DO UPDATE SET shard = excluded.shard")
            .bind(user_id)
            .bind(shard)
            .execute(p)
            .await
            .map(|_| ()))?;
        Ok(())
    }
}

/// Whether every row of `source` is present in `target` (a multiset inclusion for items).
pub fn contains_all(target: &UserRows, source: &UserRows) -> Result<(), String> {
    for row in &source.cart {
        if !target.cart.contains(row) {
            return Err(format!(
                "cart item {row:?} missing or different on the target"
            ));
        }
    }
    for row in &source.orders {
        if !target.orders.contains(row) {
            return Err(format!(
                "order {} missing or different on the target",
                row.0
            ));
        }
    }
    let mut remaining = target.items.clone();
    for row in &source.items {
        match remaining.iter().position(|r| r == row) {
            Some(i) => {
                remaining.swap_remove(i);
            }
            None => return Err(format!("item of order {} missing on the target", row.0)),
        }
    }
    Ok(())
}

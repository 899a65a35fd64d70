//! THE SCHEMA of the shop, for SQLite and PostgreSQL: the one place that defines tables.
//! (crates/shop/src/schema.rs; the sharding module and bench scripts use these names.)
//!
//! Money is integer cents; user ids are BIGINT; order ids are UUID text; times are unix
//! milliseconds (BIGINT). Carts, orders and order items are the per-user data that
//! sharding moves by `user_id`. Every statement is idempotent (`IF NOT EXISTS`), so
//! `migrate` runs at every start, from several instances at once. This module must never
//! drop or rewrite data.

// Statements that read the same in SQLite and PostgreSQL, named once. The shard store
// creates the per-user ones (cart_items, orders, order_items) from these too.

/// Same text in both dialects.
pub const PRODUCTS_CATEGORY_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS products_category ON products(category, id)";

/// Same text in both dialects.
pub const CART_ITEMS: &str = "CREATE TABLE IF NOT EXISTS cart_items (
        user_id BIGINT NOT NULL,
        product_id BIGINT NOT NULL,
        quantity BIGINT NOT NULL,
        PRIMARY KEY (user_id, product_id))";

/// Same text in both dialects.
pub const ORDERS: &str = "CREATE TABLE IF NOT EXISTS orders (
        id TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL,
        idempotency_key TEXT NOT NULL,
        total_cents BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (user_id, idempotency_key))";

/// Same text in both dialects.
pub const ORDER_ITEMS: &str = "CREATE TABLE IF NOT EXISTS order_items (
        order_id TEXT NOT NULL,
        user_id BIGINT NOT NULL,
        product_id BIGINT NOT NULL,
        quantity BIGINT NOT NULL,
        price_cents BIGINT NOT NULL)";

/// Same text in both dialects.
pub const ORDER_ITEMS_ORDER_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS order_items_order ON order_items(order_id)";

/// Same text in both dialects.
pub const SESSIONS: &str = "CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL,
        data TEXT NOT NULL,
        expires_at BIGINT NOT NULL)";

/// Same text in both dialects.
pub const CACHE_ENTRIES: &str = "CREATE TABLE IF NOT EXISTS cache_entries (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        expires_at BIGINT NOT NULL)";

/// Same text in both dialects.
pub const RYW_MARKS: &str = "CREATE TABLE IF NOT EXISTS ryw_marks (
        user_id BIGINT PRIMARY KEY,
        lsn BIGINT NOT NULL,
        expires_at BIGINT NOT NULL)";

/// Stock reserved by a sharded checkout (on `--db`, in the reserving transaction) until
/// its order committed on the shard (settled) or the reservation was given back. A row
/// older than the stock lease is resolved by the reconciliation job (`reconcile.rs`).
/// `lines` is JSON `[[product_id, quantity], ...]`. Same text in both dialects.
pub const STOCK_RESERVATIONS: &str = "CREATE TABLE IF NOT EXISTS stock_reservations (
        order_id TEXT PRIMARY KEY,
        user_id BIGINT NOT NULL,
        lines TEXT NOT NULL,
        created_at BIGINT NOT NULL)";

/// Same text in both dialects.
pub const STOCK_RESERVATIONS_CREATED_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS stock_reservations_created ON stock_reservations(created_at)";

/// On each shard: who decided an order id's fate first. The checkout's shard transaction
/// inserts `(id, 'order')` with its order; the reconciliation job inserts `(id, 'void')`
/// for a reservation whose order never appeared. The primary key lets exactly one win,
/// so a checkout that outlived its lease cannot commit an order whose stock was given
/// back. Same text in both dialects.
pub const ORDER_CLAIMS: &str = "CREATE TABLE IF NOT EXISTS order_claims (
        order_id TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        at_ms BIGINT NOT NULL)";

/// Same text in both dialects.
pub const ORDER_CLAIMS_AT_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS order_claims_at ON order_claims(at_ms)";

/// DDL for SQLite, in order.
pub const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT UNIQUE NOT NULL,
        password_hash TEXT NOT NULL,
        is_admin BOOLEAN NOT NULL DEFAULT false)",
    "CREATE TABLE IF NOT EXISTS products (
        id BIGINT PRIMARY KEY,
        name TEXT NOT NULL,
        category TEXT NOT NULL,
        price_cents BIGINT NOT NULL,
        stock BIGINT NOT NULL,
        popularity REAL NOT NULL DEFAULT 0)",
    PRODUCTS_CATEGORY_INDEX,
    CART_ITEMS,
    ORDERS,
    ORDER_ITEMS,
    ORDER_ITEMS_ORDER_INDEX,
    SESSIONS,
    // The SQL cache-aside store (used when there is no Redis) and its stampede locks
    // (rows whose key starts with `lock:`).
    CACHE_ENTRIES,
    // Read-your-writes marks (the primary's WAL position after a user's last write) when
    // there is no Redis to keep them; PostgreSQL with replicas only.
    RYW_MARKS,
    STOCK_RESERVATIONS,
    STOCK_RESERVATIONS_CREATED_INDEX,
    // Used on the shards; here too because every shard table is part of this schema
    // (the shard module's copy is checked against it).
    ORDER_CLAIMS,
    ORDER_CLAIMS_AT_INDEX,
];

/// DDL for PostgreSQL, in order. Same tables and columns as [`SQLITE`].
pub const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        id BIGSERIAL PRIMARY KEY,
        username TEXT UNIQUE NOT NULL,
        password_hash TEXT NOT NULL,
        is_admin BOOLEAN NOT NULL DEFAULT false)",
    "CREATE TABLE IF NOT EXISTS products (
        id BIGINT PRIMARY KEY,
        name TEXT NOT NULL,
        category TEXT NOT NULL,
        price_cents BIGINT NOT NULL,
        stock BIGINT NOT NULL,
        popularity DOUBLE PRECISION NOT NULL DEFAULT 0)",
    PRODUCTS_CATEGORY_INDEX,
    CART_ITEMS,
    ORDERS,
    ORDER_ITEMS,
    ORDER_ITEMS_ORDER_INDEX,
    SESSIONS,
    CACHE_ENTRIES,
    RYW_MARKS,
    STOCK_RESERVATIONS,
    STOCK_RESERVATIONS_CREATED_INDEX,
    // Used on the shards; here too because every shard table is part of this schema
    // (the shard module's copy is checked against it).
    ORDER_CLAIMS,
    ORDER_CLAIMS_AT_INDEX,
];

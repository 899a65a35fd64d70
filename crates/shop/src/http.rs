//! The HTTP surface: `fn app(state) -> Router` and its handlers.
//!
//! Handlers validate input, call the state tier, and map failures through [`AppError`]
//! (clear 4xx for client mistakes; internals logged, never sent). Every response carries
//! `x-instance-id`. Reads that tolerate staleness go through [`Db::reader`] with the
//! caller's read-your-writes mark; writes go to the primary, then record the mark, then
//! invalidate cache keys, in that order. With `--shard-map`, carts and orders are read and
//! written on the user's shard instead (`http/sharded.rs`). Handlers keep no state of their own
//! between requests (the only exception is the `memory` session store, by design).
//!
//! Security rules kept here: a token only says who is calling; every write re-reads the
//! caller's row (401 when it does not exist) and its role (admin is the `is_admin` column,
//! set only by `scaleout shop admin grant`, never by a username). Signup and login take
//! a password-hash permit first (503 + `Retry-After` when none is free, 429 when the
//! client's address or the username already holds its share) and a login for
//! an unknown user verifies against a dummy hash, so it costs what a real one costs.
//! Every error status leaves with a JSON body (the `json_errors` layer catches the ones
//! axum produces itself: 405, extractor rejections). `/metrics` is not on this router:
//! [`metrics_app`] serves it on its own listener.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::Method;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cache::{CacheAside, CacheClass};
use crate::client_addr::ClientAddr;
use crate::db::{Db, Reader};
use crate::error::{AppError, ShopError};
use crate::hashing::Hasher;
use crate::marks::MarkStore;
use crate::metrics::{DbRole, Metrics};
use crate::redis_conn::RedisConn;
use crate::sessions::{SessionStore, SessionUser};
use crate::userdata::ShardedUserData;
use crate::{keys, on_pool, write_tx};

mod sharded;

/// Name of the session cookie (server-side session stores).
pub const SESSION_COOKIE: &str = "sid";
/// Header naming the instance that served a response.
pub const INSTANCE_HEADER: &str = "x-instance-id";
/// Most products one catalog page lists (the most popular first).
pub const CATALOG_PAGE: i64 = 50;
/// Largest quantity of one product in one cart line.
pub const MAX_QUANTITY: i64 = 1000;

/// Everything a handler needs; shared by all requests of one instance.
#[derive(Debug)]
pub struct AppState {
    /// This instance's name.
    pub instance_id: String,
    /// Database tier.
    pub db: Arc<Db>,
    /// With `--shard-map`: the shards serving carts, orders and order items.
    pub shards: Option<ShardedUserData>,
    /// Session store.
    pub sessions: SessionStore,
    /// Cache-aside layer.
    pub cache: CacheAside,
    /// Read-your-writes marks.
    pub marks: MarkStore,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Redis, when configured (for readiness).
    pub redis: Option<RedisConn>,
    /// Password hashing behind its concurrency bound and per-client shares.
    pub hasher: Hasher,
    /// Proxies whose `X-Forwarded-For` names the client (for the per-client shares).
    pub trusted_proxies: crate::client_addr::TrustedProxies,
    /// Key prefix for cache keys.
    pub key_prefix: String,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Stops this state's background tasks (the replica poller).
    pub background: tokio_util::sync::CancellationToken,
    /// Checkout's after-commit work: inline or on the shared queue.
    pub jobs: crate::jobs::ShopJobs,
}

/// Unix time in milliseconds (the shell reads the clock; decisions take it as input).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The public router of one instance (everything but `/metrics`).
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.max_body_bytes;
    let instance = HeaderValue::from_str(&state.instance_id)
        .unwrap_or(HeaderValue::from_static("invalid-instance-id"));
    Router::new()
        .route("/signup", post(signup))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/catalog", get(catalog))
        .route("/products/{id}", get(product))
        .route("/products/{id}/price", put(update_price))
        .route("/cart", get(cart_get).post(cart_add))
        .route("/cart/{product_id}", delete(cart_remove))
        .route("/orders", post(checkout))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route_layer(middleware::from_fn_with_state(state.clone(), record))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::map_response(json_errors))
        .layer(middleware::map_response(move |mut r: Response| {
            let instance = instance.clone();
            async move {
                r.headers_mut().insert(INSTANCE_HEADER, instance);
                r
            }
        }))
        .with_state(state)
}

/// The router of the separate metrics listener: `GET /metrics` only.
pub fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { AppError::NotFound("only /metrics is served here".into()) })
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Any path no route matched: 404, counted under the route `other`.
async fn not_found(State(st): State<Arc<AppState>>, method: Method) -> AppError {
    st.metrics.request(method.as_str(), "other", 404, 0.0);
    AppError::NotFound("no such endpoint".into())
}

/// Gives every error response without a JSON body one: `{"error": "<reason phrase>"}`,
/// keeping status and headers (`Allow` on a 405, `Retry-After`). Catches what axum
/// answers by itself (405, path and query rejections); our own errors are JSON already.
pub async fn json_errors(r: Response) -> Response {
    let status = r.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return r;
    }
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return r;
    }
    let (mut parts, _) = r.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let reason = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let body = serde_json::json!({ "error": reason }).to_string();
    Response::from_parts(parts, Body::from(body))
}

/// Records request count and latency per matched route.
async fn record(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let _in_flight = state.metrics.in_flight_guard();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    state.metrics.request(
        &method,
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// A JSON body whose rejections become JSON errors: 400 malformed, 422 wrong shape,
/// 413 too large, 415 not JSON.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = AppError;
    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> AppError {
    match rej.status() {
        StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            AppError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        StatusCode::UNPROCESSABLE_ENTITY => AppError::Unprocessable(rej.body_text()),
        _ => AppError::BadRequest(rej.body_text()),
    }
}

/// A query string whose rejections become JSON errors (400), like [`JsonBody`].
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(QueryParams(v)),
            Err(rej) => Err(AppError::BadRequest(rej.body_text())),
        }
    }
}

/// The authenticated caller (Bearer token or session cookie); 401 otherwise.
pub struct Auth(pub SessionUser);

fn token_from(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        // The scheme is case-insensitive (RFC 9110 11.1).
        let (scheme, token) = v.trim_start().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<Arc<AppState>> for Auth {
    type Rejection = AppError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, AppError> {
        let token = token_from(&parts.headers).ok_or_else(|| {
            AppError::Unauthorized(
                "missing credentials (Authorization: Bearer or session cookie)".into(),
            )
        })?;
        if token.is_empty() || token.len() > 4096 {
            return Err(AppError::Unauthorized("invalid or expired token".into()));
        }
        match state.sessions.resolve(&token, now_ms()).await? {
            Some(u) => Ok(Auth(u)),
            None => Err(AppError::Unauthorized("invalid or expired token".into())),
        }
    }
}

fn parse_id(raw: &str, what: &str) -> Result<i64, AppError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| AppError::BadRequest(format!("{what} must be a positive integer")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

fn validate_credentials(c: &Credentials) -> Result<(), AppError> {
    let ok_name = (1..=64).contains(&c.username.len())
        && c.username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok_name {
        return Err(AppError::Unprocessable(
            "username must be 1-64 characters of letters, digits, `_`, `.` or `-`".into(),
        ));
    }
    if !(6..=128).contains(&c.password.len()) {
        return Err(AppError::Unprocessable(
            "password must be 6-128 bytes".into(),
        ));
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct UserOut {
    id: i64,
    username: String,
    is_admin: bool,
}

async fn signup(
    State(st): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    JsonBody(c): JsonBody<Credentials>,
) -> Result<Response, AppError> {
    validate_credentials(&c)?;
    // Hash before looking at the name: a taken name answers 409 after the same work as a
    // free one (the 409 itself says the name exists; user-chosen names cannot avoid that,
    // see ARCHITECTURE.md), and every signup spends one hash permit, which bounds the
    // rate at which names can be probed.
    let permit = st.hasher.try_permit(client, &c.username)?;
    let hash = st.hasher.hash(permit, c.password.clone()).await?;
    // Never an admin: roles are granted only by `scaleout shop admin grant`.
    let is_admin = false;
    st.metrics.db_query(DbRole::Primary);
    let inserted: Result<i64, sqlx::Error> = async {
        Ok(write_tx!(st.db, tx => {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING id",
            )
            .bind(&c.username)
            .bind(&hash)
            .fetch_one(&mut *tx)
            .await?
        }))
    }
    .await;
    let id = match inserted {
        Ok(id) => id,
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(AppError::Conflict("username already taken".into()));
        }
        Err(e) => return Err(e.into()),
    };
    let out = UserOut {
        id,
        username: c.username,
        is_admin,
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    password_hash: String,
}

async fn login(
    State(st): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    JsonBody(c): JsonBody<Credentials>,
) -> Result<Response, AppError> {
    if c.username.len() > 64 || c.password.len() > 128 {
        return Err(AppError::Unauthorized(
            "invalid username or password".into(),
        ));
    }
    // The permit first: a flood is refused before it costs a query or a hash, and one
    // client (address or username) past its share is refused with 429.
    let permit = st.hasher.try_permit(client, &c.username)?;
    st.metrics.db_query(DbRole::Primary);
    let row: Option<UserRow> = on_pool!(st.db.primary(), p => {
        sqlx::query_as("SELECT id, password_hash FROM users WHERE username = $1")
            .bind(&c.username)
            .fetch_optional(p)
            .await?
    });
    // An unknown user is verified against the dummy hash: same work, same answer.
    let (user_id, stored) = match row {
        Some(r) => (Some(r.id), Some(r.password_hash)),
        None => (None, None),
    };
    let ok = st.hasher.verify(permit, c.password.clone(), stored).await?;
    let (true, Some(user_id)) = (ok, user_id) else {
        return Err(AppError::Unauthorized(
            "invalid username or password".into(),
        ));
    };
    let user = SessionUser { user_id };
    let token = st.sessions.issue(&user, now_ms()).await?;
    let mut resp =
        Json(serde_json::json!({ "token": token, "user_id": user.user_id })).into_response();
    if st.sessions.uses_cookie() {
        let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    Ok(resp)
}

async fn me(State(st): State<Arc<AppState>>, Auth(u): Auth) -> Result<Json<UserOut>, AppError> {
    let key = keys::profile(&st.key_prefix, u.user_id);
    let out = st
        .cache
        .get_or_load(CacheClass::Profile, &key, || async {
            let r = st.db.primary_reader();
            st.metrics.db_query(r.role);
            let row: Option<(i64, String, bool)> = on_pool!(&r.pool, p => {
                sqlx::query_as("SELECT id, username, is_admin FROM users WHERE id = $1")
                    .bind(u.user_id)
                    .fetch_optional(p)
                    .await?
            });
            row.map(|(id, username, is_admin)| UserOut {
                id,
                username,
                is_admin,
            })
            .ok_or_else(|| AppError::NotFound("user not found".into()))
        })
        .await?;
    Ok(Json(out))
}

/// One product as the API shows it (`price` in integer cents).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct ProductOut {
    /// Product id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Category.
    pub category: String,
    /// Price in cents.
    #[sqlx(rename = "price_cents")]
    pub price: i64,
}

#[derive(Deserialize)]
struct CatalogQuery {
    category: Option<String>,
}

/// The reader for a read that is not itself a cache fill: with replicas, a replica unless
/// the caller's read-your-writes mark requires the primary. Cache fills always read the
/// primary, so a lagging replica can never be copied into the shared cache.
async fn stale_ok_reader<'a>(st: &'a AppState, user: Option<i64>) -> Result<Reader<'a>, AppError> {
    if st.cache.enabled() || !st.db.has_replicas() {
        return Ok(st.db.primary_reader());
    }
    let mark = match user {
        Some(uid) => st.marks.get(uid, now_ms()).await?,
        None => None,
    };
    Ok(st.db.reader(mark).await)
}

async fn catalog(
    State(st): State<Arc<AppState>>,
    QueryParams(q): QueryParams<CatalogQuery>,
) -> Result<Response, AppError> {
    let category = q.category.filter(|c| !c.is_empty());
    if let Some(c) = &category
        && (c.len() > 64
            || !c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(AppError::BadRequest(
            "category must be letters, digits, `-` or `_`".into(),
        ));
    }
    let key = keys::catalog(&st.key_prefix, category.as_deref());
    let products: Vec<ProductOut> = st
        .cache
        .get_or_load(CacheClass::Catalog, &key, || async {
            let r = stale_ok_reader(&st, None).await?;
            st.metrics.db_query(r.role);
            Ok(on_pool!(&r.pool, p => {
                sqlx::query_as(
                    "SELECT id, name, category, price_cents FROM products \
                     WHERE ($1 IS NULL OR category = $1) ORDER BY popularity DESC, id LIMIT $2",
                )
                .bind(category.as_deref())
                .bind(CATALOG_PAGE)
                .fetch_all(p)
                .await?
            }))
        })
        .await?;
    Ok(Json(serde_json::json!({ "products": products })).into_response())
}

async fn load_product(st: &AppState, id: i64) -> Result<ProductOut, AppError> {
    let key = keys::product(&st.key_prefix, id);
    st.cache
        .get_or_load(CacheClass::Product, &key, || async {
            let r = stale_ok_reader(st, None).await?;
            st.metrics.db_query(r.role);
            let row: Option<ProductOut> = on_pool!(&r.pool, p => {
                sqlx::query_as("SELECT id, name, category, price_cents FROM products WHERE id = $1")
                    .bind(id)
                    .fetch_optional(p)
                    .await?
            });
            row.ok_or_else(|| AppError::NotFound(format!("product {id} not found")))
        })
        .await
}

async fn product(
    State(st): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let id = parse_id(&raw, "product id")?;
    let p = load_product(&st, id).await?;
    let stock: i64 = st
        .cache
        .get_or_load(
            CacheClass::Stock,
            &keys::stock(&st.key_prefix, id),
            || async {
                let r = stale_ok_reader(&st, None).await?;
                st.metrics.db_query(r.role);
                let s: Option<i64> = on_pool!(&r.pool, pool => {
                    sqlx::query_scalar("SELECT stock FROM products WHERE id = $1")
                        .bind(id)
                        .fetch_optional(pool)
                        .await?
                });
                s.ok_or_else(|| AppError::NotFound(format!("product {id} not found")))
            },
        )
        .await?;
    Ok(Json(serde_json::json!({
        "id": p.id, "name": p.name, "category": p.category, "price": p.price, "stock": stock
    }))
    .into_response())
}

/// What the database says about the caller now.
struct Role {
    is_admin: bool,
}

/// Re-reads the caller's row on the primary before a write: 401 when the token names a
/// user that does not exist (deleted, or a token signed for a made-up id), else its role.
async fn current_role(st: &AppState, user_id: i64) -> Result<Role, AppError> {
    st.metrics.db_query(DbRole::Primary);
    let is_admin: Option<bool> = on_pool!(st.db.primary(), p => {
        sqlx::query_scalar("SELECT is_admin FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(p)
            .await?
    });
    is_admin
        .map(|is_admin| Role { is_admin })
        .ok_or_else(|| AppError::Unauthorized("the token's user does not exist".into()))
}

/// After a commit on the primary: remember the user's WAL position for read-your-writes.
async fn mark_write(st: &AppState, user_id: i64) -> Result<(), AppError> {
    if st.db.has_replicas()
        && let Some(lsn) = st.db.primary_lsn().await?
    {
        st.marks.set(user_id, lsn, now_ms()).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceIn {
    price: i64,
}

async fn update_price(
    State(st): State<Arc<AppState>>,
    Auth(u): Auth,
    Path(raw): Path<String>,
    JsonBody(body): JsonBody<PriceIn>,
) -> Result<Response, AppError> {
    let id = parse_id(&raw, "product id")?;
    if !current_role(&st, u.user_id).await?.is_admin {
        return Err(AppError::Forbidden("only admins may change prices".into()));
    }
    if body.price <= 0 || body.price > 100_000_000 {
        return Err(AppError::Unprocessable(
            "price must be 1..=100000000 cents".into(),
        ));
    }
    st.metrics.db_query(DbRole::Primary);
    let updated: Option<ProductOut> = write_tx!(st.db, tx => {
        sqlx::query_as(
            "UPDATE products SET price_cents = $1 WHERE id = $2 RETURNING id, name, category, price_cents",
        )
        .bind(body.price)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    });
    let Some(p) = updated else {
        return Err(AppError::NotFound(format!("product {id} not found")));
    };
    // After the commit: RYW mark, then invalidate every key that shows this price.
    mark_write(&st, u.user_id).await?;
    st.cache
        .invalidate(&[
            keys::product(&st.key_prefix, id),
            keys::catalog(&st.key_prefix, None),
            keys::catalog(&st.key_prefix, Some(&p.category)),
        ])
        .await;
    Ok(Json(p).into_response())
}

#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
struct CartLine {
    product_id: i64,
    quantity: i64,
    #[sqlx(rename = "price_cents")]
    price: i64,
}

async fn cart_get(State(st): State<Arc<AppState>>, Auth(u): Auth) -> Result<Response, AppError> {
    if let Some(sh) = &st.shards {
        return sharded::cart_get(&st, sh, u.user_id).await;
    }
    // Carts are per user and change often: not cached; read-your-writes via the mark.
    let mark = if st.db.has_replicas() {
        st.marks.get(u.user_id, now_ms()).await?
    } else {
        None
    };
    let r = st.db.reader(mark).await;
    st.metrics.db_query(r.role);
    let items: Vec<CartLine> = on_pool!(&r.pool, p => {
        sqlx::query_as(
            "SELECT c.product_id, c.quantity, p.price_cents FROM cart_items c \
             JOIN products p ON p.id = c.product_id WHERE c.user_id = $1 ORDER BY c.product_id",
        )
        .bind(u.user_id)
        .fetch_all(p)
        .await?
    });
    drop(r);
    let total: i64 = items.iter().map(|i| i.price * i.quantity).sum();
    Ok(Json(serde_json::json!({ "items": items, "total": total })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CartIn {
    product_id: i64,
    quantity: i64,
}

async fn cart_add(
    State(st): State<Arc<AppState>>,
    Auth(u): Auth,
    JsonBody(body): JsonBody<CartIn>,
) -> Result<Response, AppError> {
    if body.quantity <= 0 || body.quantity > MAX_QUANTITY {
        return Err(AppError::Unprocessable(format!(
            "quantity must be 1..={MAX_QUANTITY}"
        )));
    }
    if body.product_id <= 0 {
        return Err(AppError::NotFound(format!(
            "product {} not found",
            body.product_id
        )));
    }
    current_role(&st, u.user_id).await?;
    if let Some(sh) = &st.shards {
        return sharded::cart_add(&st, sh, u.user_id, body.product_id, body.quantity).await;
    }
    st.metrics.db_query(DbRole::Primary);
    let quantity: Option<i64> = write_tx!(st.db, tx => {
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM products WHERE id = $1")
            .bind(body.product_id)
            .fetch_optional(&mut *tx)
            .await?;
        match exists {
            None => None,
            Some(_) => Some(
                sqlx::query_scalar::<_, i64>(
                    "INSERT INTO cart_items (user_id, product_id, quantity) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id, product_id) DO UPDATE \
                     SET quantity = CASE WHEN cart_items.quantity + excluded.quantity > $4 THEN $4 \
                     ELSE cart_items.quantity + excluded.quantity END RETURNING quantity",
                )
                .bind(u.user_id)
                .bind(body.product_id)
                .bind(body.quantity)
                .bind(MAX_QUANTITY)
                .fetch_one(&mut *tx)
                .await?,
            ),
        }
    });
    let Some(quantity) = quantity else {
        return Err(AppError::NotFound(format!(
            "product {} not found",
            body.product_id
        )));
    };
    mark_write(&st, u.user_id).await?;
    Ok(
        Json(serde_json::json!({ "product_id": body.product_id, "quantity": quantity }))
            .into_response(),
    )
}

async fn cart_remove(
    State(st): State<Arc<AppState>>,
    Auth(u): Auth,
    Path(raw): Path<String>,
) -> Result<Response, AppError> {
    let product_id = parse_id(&raw, "product id")?;
    current_role(&st, u.user_id).await?;
    if let Some(sh) = &st.shards {
        return sharded::cart_remove(sh, &st.metrics, u.user_id, product_id).await;
    }
    st.metrics.db_query(DbRole::Primary);
    let n = write_tx!(st.db, tx => {
        sqlx::query("DELETE FROM cart_items WHERE user_id = $1 AND product_id = $2")
            .bind(u.user_id)
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
    mark_write(&st, u.user_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An order as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct OrderOut {
    /// Order id (UUID).
    pub id: String,
    /// Total in cents.
    pub total: i64,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// Lines.
    pub items: Vec<OrderLine>,
}

/// One order line.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct OrderLine {
    /// Product.
    pub product_id: i64,
    /// Units.
    pub quantity: i64,
    /// Unit price at checkout, in cents.
    #[sqlx(rename = "price_cents")]
    pub price: i64,
}

/// Outcome of a checkout transaction.
enum Checkout {
    Created(OrderOut),
    Replayed(OrderOut),
    EmptyCart,
    OutOfStock(i64),
}

async fn checkout(
    State(st): State<Arc<AppState>>,
    Auth(u): Auth,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| AppError::BadRequest("Idempotency-Key header is required".into()))?
        .to_string();
    if key.len() > 128 {
        return Err(AppError::BadRequest(
            "Idempotency-Key is longer than 128 characters".into(),
        ));
    }
    current_role(&st, u.user_id).await?;
    let attempt = match &st.shards {
        Some(sh) => sharded::checkout(&st, sh, u.user_id, &key).await,
        None => checkout_tx(&st, u.user_id, &key).await,
    };
    let outcome = match attempt {
        Ok(o) => o,
        // Two concurrent checkouts with one key on PostgreSQL: the loser hits the unique
        // constraint; its transaction rolled back, and the winner's order is the answer.
        Err(AppError::Store(ShopError::Db(sqlx::Error::Database(e))))
            if e.is_unique_violation() =>
        {
            match find_order(&st, u.user_id, &key).await? {
                Some(o) => Checkout::Replayed(o),
                None => return Err(AppError::Conflict("concurrent checkout; retry".into())),
            }
        }
        Err(e) => return Err(e),
    };
    // A concurrent checkout with the same key may commit between this request's look-up
    // of the key and its read of the cart, leaving the cart empty: that is a replay of the
    // winner's order, not an empty cart.
    let outcome = match outcome {
        Checkout::EmptyCart => match find_order(&st, u.user_id, &key).await? {
            Some(o) => Checkout::Replayed(o),
            None => Checkout::EmptyCart,
        },
        other => other,
    };
    // After the order committed (never before): confirm it now or enqueue the job.
    if let Checkout::Created(o) | Checkout::Replayed(o) = &outcome {
        crate::jobs::after_checkout(&st.jobs, &st.db, &o.id, now_ms() as i64).await?;
    }
    match outcome {
        Checkout::Created(o) => {
            mark_write(&st, u.user_id).await?;
            let stock_keys: Vec<String> = o
                .items
                .iter()
                .map(|l| keys::stock(&st.key_prefix, l.product_id))
                .collect();
            st.cache.invalidate(&stock_keys).await;
            Ok((StatusCode::CREATED, Json(o)).into_response())
        }
        Checkout::Replayed(o) => Ok((StatusCode::OK, Json(o)).into_response()),
        Checkout::EmptyCart => Err(AppError::Conflict("the cart is empty".into())),
        Checkout::OutOfStock(id) => {
            Err(AppError::Conflict(format!("product {id} is out of stock")))
        }
    }
}

async fn find_order(st: &AppState, user_id: i64, key: &str) -> Result<Option<OrderOut>, AppError> {
    let pool = match &st.shards {
        Some(sh) => {
            let (i, pool) = sh.home(user_id);
            st.metrics.shard_query(i);
            pool
        }
        None => {
            st.metrics.db_query(DbRole::Primary);
            st.db.primary()
        }
    };
    find_order_on(pool, user_id, key).await
}

/// The order `user_id` placed with idempotency key `key` on `pool`, with its lines.
async fn find_order_on(
    pool: &crate::db::AnyPool,
    user_id: i64,
    key: &str,
) -> Result<Option<OrderOut>, AppError> {
    on_pool!(pool, p => {
        let o: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT id, total_cents, created_at FROM orders WHERE user_id = $1 AND idempotency_key = $2",
        )
        .bind(user_id)
        .bind(key)
        .fetch_optional(p)
        .await?;
        match o {
            None => Ok(None),
            Some((id, total, created_at)) => {
                let items: Vec<OrderLine> = sqlx::query_as(
                    "SELECT product_id, quantity, price_cents FROM order_items WHERE order_id = $1 ORDER BY product_id",
                )
                .bind(&id)
                .fetch_all(p)
                .await?;
                Ok(Some(OrderOut { id, total, created_at, items }))
            }
        }
    })
}

async fn checkout_tx(st: &AppState, user_id: i64, key: &str) -> Result<Checkout, AppError> {
    st.metrics.db_query(DbRole::Primary);
    let now = now_ms() as i64;
    let outcome = write_tx!(st.db, tx => {
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
            Checkout::Replayed(OrderOut { id, total, created_at, items })
        } else {
            let lines: Vec<OrderLine> = sqlx::query_as(
                "SELECT c.product_id, c.quantity, p.price_cents FROM cart_items c \
                 JOIN products p ON p.id = c.product_id WHERE c.user_id = $1 ORDER BY c.product_id",
            )
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?;
            if lines.is_empty() {
                Checkout::EmptyCart
            } else {
                let mut short = None;
                for l in &lines {
                    let n = sqlx::query("UPDATE products SET stock = stock - $1 WHERE id = $2 AND stock >= $1")
                        .bind(l.quantity)
                        .bind(l.product_id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if n == 0 {
                        short = Some(l.product_id);
                        break;
                    }
                }
                if let Some(id) = short {
                    // Returning early drops the transaction: the stock updates roll back.
                    return Ok(Checkout::OutOfStock(id));
                }
                let id = uuid::Uuid::now_v7().to_string();
                let total: i64 = lines.iter().map(|l| l.price * l.quantity).sum();
                sqlx::query(
                    "INSERT INTO orders (id, user_id, idempotency_key, total_cents, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&id)
                .bind(user_id)
                .bind(key)
                .bind(total)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                for l in &lines {
                    sqlx::query(
                        "INSERT INTO order_items (order_id, user_id, product_id, quantity, price_cents) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&id)
                    .bind(user_id)
                    .bind(l.product_id)
                    .bind(l.quantity)
                    .bind(l.price)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query("DELETE FROM cart_items WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                Checkout::Created(OrderOut { id, total, created_at: now, items: lines })
            }
        }
    });
    Ok(outcome)
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let db = st.db.ping().await;
    let redis = match &st.redis {
        Some(r) => Some(r.query::<String>(&redis::cmd("PING")).await.is_ok()),
        None => None,
    };
    let cache = st.cache.ping().await;
    let shards = match &st.shards {
        Some(sh) => Some(sh.ping_all().await),
        None => None,
    };
    let shards_ok = shards.as_ref().is_none_or(|v| v.iter().all(|(_, ok)| *ok));
    let ready = db && redis.unwrap_or(true) && cache && shards_ok;
    let shards: Option<serde_json::Map<String, serde_json::Value>> = shards.map(|v| {
        v.into_iter()
            .map(|(name, ok)| (name, serde_json::Value::Bool(ok)))
            .collect()
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            serde_json::json!({ "ready": ready, "db": db, "redis": redis, "cache": cache, "shards": shards }),
        ),
    )
        .into_response()
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut pools = st.db.pool_usage();
    if let Some(sh) = &st.shards {
        pools.extend(sh.pool_usage());
    }
    let mut body = st.metrics.render(&st.instance_id, &pools);
    body.push_str(&st.hasher.render_metrics(&st.instance_id));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

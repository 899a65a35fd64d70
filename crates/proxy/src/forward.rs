//! The request path, as phases (pingora's `ProxyHttp` is the model):
//!
//! 1. **prepare**: refuse what breaks a request rule, rewrite the head once (hop-by-hop
//!    headers out, `X-Forwarded-*` and `X-Request-Id` in), buffer a small body so it can be
//!    replayed, extract the sticky cookie and the hash key ([`Prepared`]);
//! 2. **attempt**, at most `retry.max_attempts` times: *pick* a backend from the current
//!    snapshot ([`Attempts::pick`]), *send* the request, *classify* the outcome
//!    ([`Attempts::on_response`], [`Attempts::on_failure`]): record it for passive
//!    ejection and metrics, and ask `balance::decide_retry` whether to try another backend;
//! 3. **respond**: strip the response's hop-by-hop headers, pin the client (sticky), keep
//!    the in-flight guards until the body ends, splice an upgraded connection.
//!
//! [`Attempts`] is shared with the HTTP/1.1 fast path (`h1`), so both paths pick, count,
//! eject and retry the same way; this module's hyper path serves h2c clients, upgrades
//! and connections the fast path hands over.
//!
//! Architecture invariants: the handler reads the snapshot through `ArcSwap` and holds no
//! lock across `.await`; the only lock it may take is the control lock, briefly and
//! without awaiting, when a failure run reaches the ejection threshold. A request is
//! retried only when its body is replayable (empty or buffered), on a different backend,
//! for an idempotent method or a connect failure, and only with a token from the budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use balance::{
    BackendId, FailureKind, HashKeySource, InFlightGuard, NoPick, Outcome, PickRequest,
    RetryDecision, RetryInput, StrategyKind,
};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER, SET_COOKIE};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use crate::admission::Slot;
use crate::body::{Guards, ProxyInFlight, RespBody};
use crate::config::UpstreamProtocol;
use crate::error::ForwardError;
use crate::headers::{self, ClientInfo};
use crate::shared::{BackendRt, Shared};
use crate::upstream::{Lease, ReqBody, UpstreamError, UpstreamPool};

/// What a worker knows about one client connection.
pub(crate) struct ConnCtx {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) client: ClientInfo,
    /// Requests in flight on this connection (for the idle timeout).
    pub(crate) active: Arc<AtomicUsize>,
    /// Set at the first request head (ends the accept-to-head deadline).
    pub(crate) started: Arc<AtomicBool>,
    /// The connection's admission slot (established at the first request head).
    pub(crate) slot: Slot,
}

impl ConnCtx {
    pub(crate) fn new(
        peer: SocketAddr,
        local: SocketAddr,
        active: Arc<AtomicUsize>,
        started: Arc<AtomicBool>,
        slot: Slot,
    ) -> Self {
        ConnCtx {
            peer,
            local,
            client: ClientInfo::new(peer.ip()),
            active,
            started,
            slot,
        }
    }

    /// A request head arrived: the connection is established (no longer evictable, no
    /// more accept-to-head deadline) and has one more request in flight until the guard
    /// drops.
    pub(crate) fn request_started(&self) -> ActiveGuard<'_> {
        self.active.fetch_add(1, Relaxed);
        if !self.started.load(Relaxed) {
            self.started.store(true, Relaxed);
            self.slot.establish();
        }
        ActiveGuard(&self.active)
    }
}

/// Counts a request in flight on its client connection while alive.
pub(crate) struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Most backends one request may have tried (`retry.max_attempts` is at most 10; a few
/// more for snapshot races). A fixed array, so the common request allocates nothing.
const MAX_TRIED: usize = 16;

/// A backend chosen for one attempt, counted in flight on it from the pick.
pub(crate) struct Picked {
    /// The backend's runtime data.
    pub rt: Arc<BackendRt>,
    /// Its in-flight count, held until the response body ends (or the attempt fails).
    pub guard: InFlightGuard,
    /// Sticky: the client was not pinned here; set the cookie.
    pub repin: bool,
    /// When the attempt started (its latency is measured from here).
    pub at: Instant,
    /// Pickable backends in the snapshot the pick came from.
    pickable: usize,
}

/// What to do with a response that came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send it to the client.
    Respond,
    /// Try another backend (keep this response in case none can be tried).
    Retry,
}

/// The *attempt* phase's bookkeeping for one request: which backends were tried, how many
/// attempts were made, why the last one failed. Shared by the hyper path and the HTTP/1.1
/// fast path; every decision in it is `balance`'s.
pub(crate) struct Attempts<'a> {
    shared: &'a Shared,
    start: Instant,
    tried: [BackendId; MAX_TRIED],
    tried_len: usize,
    made: u32,
    max: u32,
    last_err: ForwardError,
}

impl<'a> Attempts<'a> {
    /// Starts the attempts of a request that arrived at `start` (one budget deposit).
    pub(crate) fn new(shared: &'a Shared, start: Instant) -> Self {
        shared.budget.deposit(start);
        Attempts {
            shared,
            start,
            tried: [BackendId(u64::MAX); MAX_TRIED],
            tried_len: 0,
            made: 0,
            max: shared.balance.retry.max_attempts.max(1),
            last_err: ForwardError::NoBackend,
        }
    }

    /// Why the request failed when nothing more can be tried.
    pub(crate) fn last_err(&self) -> ForwardError {
        self.last_err
    }

    fn push_tried(&mut self, id: BackendId) -> bool {
        if self.tried_len == MAX_TRIED {
            return false;
        }
        self.tried[self.tried_len] = id;
        self.tried_len += 1;
        true
    }

    /// Phase *pick*: a backend not tried yet and not at its in-flight cap, from the
    /// snapshot in force now. `Shed` when every backend is full on the first attempt.
    pub(crate) fn pick(&mut self, req: &PickRequest<'_>) -> Result<Picked, ForwardError> {
        // One clock read per attempt: the first attempt reuses the request's start.
        let now = if self.made == 0 {
            self.start
        } else {
            Instant::now()
        };
        let snap = self.shared.snapshot.load();
        loop {
            let pick = match snap
                .selector
                .try_pick(req, &self.tried[..self.tried_len], now)
            {
                Ok(p) => p,
                Err(NoPick::AllFull) if self.made == 0 => return Err(ForwardError::Shed),
                Err(_) => return Err(self.last_err),
            };
            let id = pick.backend.id;
            let rt = snap.rt_of(pick.backend).cloned();
            if !self.push_tried(id) {
                return Err(self.last_err);
            }
            // A candidate without runtime data (a snapshot race): never pick it again.
            let Some(rt) = rt else { continue };
            self.made += 1;
            return Ok(Picked {
                rt,
                guard: pick.backend.load.start(),
                repin: pick.repin,
                at: now,
                pickable: snap.selector.pickable_len(),
            });
        }
    }

    fn retry_input<'m>(
        &self,
        picked: &Picked,
        method: &'m str,
        replayable: bool,
        failure: FailureKind,
    ) -> RetryInput<'m> {
        RetryInput {
            method,
            failure,
            replayable,
            attempts: self.made,
            max_attempts: self.max,
            untried: picked.pickable.saturating_sub(self.tried_len),
        }
    }

    /// Whether the attempt just picked could be followed by another one (any method may be
    /// retried after a connect failure): if not, the request's head can be moved into it
    /// instead of copied.
    pub(crate) fn may_retry(&self, picked: &Picked, method: &str, replayable: bool) -> bool {
        balance::should_retry(&self.retry_input(picked, method, replayable, FailureKind::Connect))
    }

    /// Asks `balance` whether to retry after `failure`, and counts the answer.
    fn decide(
        &mut self,
        picked: &Picked,
        method: &str,
        replayable: bool,
        failure: FailureKind,
        now: Instant,
    ) -> bool {
        self.last_err = ForwardError::Upstream(failure);
        let input = self.retry_input(picked, method, replayable, failure);
        let counters = &self.shared.counters;
        match balance::decide_retry(&input, &self.shared.budget, now) {
            RetryDecision::Retry => {
                counters.retries_total.fetch_add(1, Relaxed);
                true
            }
            RetryDecision::BudgetExhausted => {
                counters.retry_budget_exhausted_total.fetch_add(1, Relaxed);
                false
            }
            RetryDecision::Stop => false,
        }
    }

    /// Phase *classify*, for a response head with `status` at `now`: metrics, passive
    /// ejection, and whether a retryable status (502-504) goes to another backend.
    pub(crate) fn on_response(
        &mut self,
        picked: &Picked,
        status: u16,
        method: &str,
        replayable: bool,
        now: Instant,
    ) -> Next {
        let latency = now.saturating_duration_since(picked.at);
        let rt = &picked.rt;
        rt.counters.responses.record(status);
        rt.counters.latency.record(latency.as_micros() as u64);
        let outcome = Outcome::from_status(status);
        let run = picked.guard.load().record(outcome, latency, now);
        if outcome.is_failure() {
            self.after_failure(rt, run);
            if self.decide(picked, method, replayable, FailureKind::Status(status), now) {
                return Next::Retry;
            }
        }
        Next::Respond
    }

    /// Phase *classify*, for an attempt that got no response: records the failure (and
    /// releases the backend). `Ok` to retry on another backend, else the final error.
    pub(crate) fn on_failure(
        &mut self,
        picked: Picked,
        failure: FailureKind,
        method: &str,
        replayable: bool,
        now: Instant,
    ) -> Result<(), ForwardError> {
        let latency = now.saturating_duration_since(picked.at);
        let outcome = if failure == FailureKind::Connect {
            Outcome::ConnectFailure
        } else {
            Outcome::Failure
        };
        let run = picked.guard.load().record(outcome, latency, now);
        self.after_failure(&picked.rt, run);
        let retry = self.decide(&picked, method, replayable, failure, now);
        drop(picked);
        if retry { Ok(()) } else { Err(self.last_err) }
    }

    /// Called after a failed attempt with the failure run of its backend.
    fn after_failure(&self, rt: &BackendRt, run: u32) {
        let outlier = &self.shared.balance.outlier;
        if outlier.enabled && run >= outlier.consecutive_failures {
            self.shared.report_failures(rt, run);
        }
    }
}

/// The request body as prepared for the attempts.
enum PreparedBody {
    /// Empty or buffered whole: every attempt sends a copy (replayable).
    Replay(Bytes),
    /// Streamed as it arrives, so sent once; the flag records a client-side failure.
    Stream(Option<ReqBody>, Arc<AtomicBool>),
}

/// Phase *prepare*'s result: the request rewritten once for every attempt.
struct Prepared {
    method: Method,
    path_and_query: PathAndQuery,
    /// The rewritten head; the last possible attempt takes it, earlier ones copy it.
    headers: Option<HeaderMap>,
    body: PreparedBody,
    /// A WebSocket upgrade passed through, and the client side of it.
    upgrade: bool,
    on_client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    sticky: Option<String>,
    hash_key: Option<Vec<u8>>,
}

impl Prepared {
    fn replayable(&self) -> bool {
        matches!(self.body, PreparedBody::Replay(_))
    }

    /// Whether the client's streamed body failed (not the backend's fault).
    fn client_failed(&self) -> bool {
        match &self.body {
            PreparedBody::Stream(_, flag) => flag.load(Relaxed),
            PreparedBody::Replay(_) => false,
        }
    }

    /// The request for one attempt on `rt`; `None` when nothing is left to send (the head
    /// or the streamed body went to an earlier attempt).
    fn request_for(&mut self, rt: &BackendRt, keep_for_retry: bool) -> Option<Request<ReqBody>> {
        let headers = if keep_for_retry {
            self.headers.clone()?
        } else {
            self.headers.take()?
        };
        let body = match &mut self.body {
            PreparedBody::Replay(b) => ReqBody::full(b.clone()),
            PreparedBody::Stream(s, _) => s.take()?,
        };
        let mut uri_parts = http::uri::Parts::default();
        uri_parts.scheme = Some(Scheme::HTTP);
        uri_parts.authority = Some(rt.authority.clone());
        uri_parts.path_and_query = Some(self.path_and_query.clone());
        let uri = Uri::from_parts(uri_parts).ok()?;
        let mut up = Request::new(body);
        *up.method_mut() = self.method.clone();
        *up.uri_mut() = uri;
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = headers;
        Some(up)
    }
}

/// One worker's forwarding state: its own backend connection pools and RNG.
pub(crate) struct Worker {
    pub(crate) shared: Arc<Shared>,
    /// This worker's backend connections.
    pub pool: Arc<UpstreamPool>,
    rng: AtomicU64,
    pub(crate) retry_after: HeaderValue,
    /// Upgraded (WebSocket) tunnels, closed at shutdown.
    pub upgrades: TaskTracker,
}

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let pool = Arc::new(UpstreamPool::new(
            shared.config.upstream_protocol == UpstreamProtocol::H2c,
            shared.config.connect_timeout(),
            Duration::from_millis(shared.config.timeouts.upstream_idle_ms),
        ));
        let retry_after = HeaderValue::from(shared.config.limits.retry_after_s);
        Worker {
            shared,
            pool,
            rng: AtomicU64::new(rand::random()),
            retry_after,
            upgrades: TaskTracker::new(),
        }
    }

    pub(crate) fn next_random(&self) -> u64 {
        balance::hash::mix64(self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed))
    }

    /// Handles one client request; never fails (errors become responses).
    pub(crate) async fn handle(&self, ctx: &ConnCtx, req: Request<Incoming>) -> Response<RespBody> {
        let start = Instant::now();
        let counters = &self.shared.counters;
        counters.requests_total.fetch_add(1, Relaxed);
        let _active = ctx.request_started();
        let limits = &self.shared.config.limits;
        let checked = headers::check_request(
            req.method(),
            req.version(),
            req.headers(),
            limits.max_method_bytes as usize,
        )
        .and_then(|()| headers::check_loop(req.headers(), &self.shared.via_token));
        let resp = match checked {
            Err(rule) => {
                counters.rejected_total.fetch_add(1, Relaxed);
                self.local(ForwardError::Rejected(rule))
            }
            Ok(()) => {
                let in_flight = ProxyInFlight::new(&self.shared);
                match self.forward(ctx, req, start, in_flight).await {
                    Ok(r) => r,
                    Err(e) => self.local(e),
                }
            }
        };
        counters.responses.record(resp.status().as_u16());
        counters.latency.record(start.elapsed().as_micros() as u64);
        resp
    }

    /// Counts a locally generated error answer (shed requests, rejections) and logs it
    /// with the side that failed.
    pub(crate) fn count_local(&self, err: ForwardError) {
        if err == ForwardError::Shed {
            self.shared.counters.shed_total.fetch_add(1, Relaxed);
        }
        tracing::debug!(side = ?err.side(), status = err.status().as_u16(), "{}", err.reason().trim_end());
    }

    /// A response generated by the balancer for `err`.
    fn local(&self, err: ForwardError) -> Response<RespBody> {
        self.count_local(err);
        let mut r = Response::new(RespBody::full(Bytes::from_static(err.reason().as_bytes())));
        *r.status_mut() = err.status();
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if err.status() == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(RETRY_AFTER, self.retry_after.clone());
        }
        if let ForwardError::Rejected(rule) = err {
            if rule == headers::RequestRule::Connect {
                r.headers_mut().insert(
                    http::header::ALLOW,
                    HeaderValue::from_static(headers::ALLOWED_METHODS),
                );
            }
            // A refused request's connection is not reused (its framing is suspect).
            r.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }

    fn hash_key(&self, parts: &http::request::Parts) -> Option<Vec<u8>> {
        match self.shared.hash_key.as_ref()? {
            HashKeySource::Header(name) => parts
                .headers
                .get(name.as_str())
                .map(|v| v.as_bytes().to_vec()),
            HashKeySource::Cookie(name) => {
                headers::cookie_value(&parts.headers, name).map(|v| v.as_bytes().to_vec())
            }
            HashKeySource::Query(name) => parts
                .uri
                .query()
                .and_then(|q| headers::query_value(q, name))
                .map(|v| v.as_bytes().to_vec()),
            HashKeySource::Path => Some(parts.uri.path().as_bytes().to_vec()),
            HashKeySource::ClientIp => None,
        }
    }

    /// Phase *prepare*: the rewritten head, the body as replayable or streamed, and the
    /// keys the pick needs.
    async fn prepare(
        &self,
        ctx: &ConnCtx,
        mut req: Request<Incoming>,
    ) -> Result<Prepared, ForwardError> {
        let shared = &*self.shared;
        let cfg = &shared.config;
        let content_length = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        if content_length.is_some_and(|l| l > cfg.limits.max_body_bytes) {
            return Err(ForwardError::BodyTooLarge);
        }
        let upgrade =
            req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
        let on_client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();

        // Header rewriting (pure functions in `headers`).
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        // The target's authority (absolute form, h2 `:authority`) wins over Host.
        let authority = parts.uri.authority().cloned();
        headers::add_via(&mut parts.headers, &shared.via);
        headers::add_forwarded(
            &mut parts.headers,
            &ctx.client,
            authority.as_ref().map(|a| a.as_str()),
        );
        let r = (self.next_random() as u128) << 64 | self.next_random() as u128;
        headers::ensure_request_id(&mut parts.headers, r);
        if !parts.headers.contains_key(HOST) {
            // HTTP/1.0 without Host: name the balancer's listener rather than nothing.
            if let Ok(v) = HeaderValue::from_str(&ctx.local.to_string()) {
                parts.headers.insert(HOST, v);
            }
        }

        // The body: replayable when empty or small with a known length.
        let max_body = cfg.limits.max_body_bytes.min(usize::MAX as u64) as usize;
        let body = if body.is_end_stream() {
            PreparedBody::Replay(Bytes::new())
        } else if content_length.is_some_and(|l| l <= cfg.limits.retry_buffer_bytes) {
            let read = Duration::from_millis(cfg.timeouts.body_read_ms);
            match tokio::time::timeout(read, Limited::new(body, max_body).collect()).await {
                Ok(Ok(c)) => PreparedBody::Replay(c.to_bytes()),
                Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(ForwardError::BodyTooLarge),
                Ok(Err(_)) => return Err(ForwardError::ClientBody),
                Err(_) => return Err(ForwardError::BodyTimeout),
            }
        } else {
            let flag = Arc::new(AtomicBool::new(false));
            let stream = ReqBody::Stream {
                inner: Limited::new(body, max_body),
                client_failed: flag.clone(),
            };
            PreparedBody::Stream(Some(stream), flag)
        };

        let sticky = (shared.balance.strategy == StrategyKind::Sticky)
            .then(|| {
                headers::cookie_value(&parts.headers, &shared.balance.sticky.cookie)
                    .map(str::to_owned)
            })
            .flatten();
        let hash_key = if shared.balance.strategy == StrategyKind::ConsistentHash {
            self.hash_key(&parts)
        } else {
            None
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Prepared {
            method: parts.method,
            path_and_query,
            headers: Some(parts.headers),
            body,
            upgrade,
            on_client_upgrade,
            sticky,
            hash_key,
        })
    }

    /// The hyper path: prepare, then attempts until a response or a final error.
    async fn forward(
        &self,
        ctx: &ConnCtx,
        req: Request<Incoming>,
        start: Instant,
        in_flight: ProxyInFlight,
    ) -> Result<Response<RespBody>, ForwardError> {
        let mut prepared = self.prepare(ctx, req).await?;
        let upstream_timeout =
            Duration::from_millis(self.shared.config.timeouts.upstream_response_ms);
        let replayable = prepared.replayable();
        let method = prepared.method.clone();
        let mut attempts = Attempts::new(&self.shared, start);
        let mut fallback: Option<Response<RespBody>> = None;
        let mut in_flight = Some(in_flight);
        loop {
            let pick_req = PickRequest {
                client_ip: Some(ctx.peer.ip()),
                hash_key: prepared.hash_key.as_deref(),
                sticky: prepared.sticky.as_deref(),
                random: self.next_random(),
            };
            let picked = match attempts.pick(&pick_req) {
                Ok(p) => p,
                Err(e) => return fallback.ok_or(e),
            };
            let keep = attempts.may_retry(&picked, method.as_str(), replayable);
            let Some(up) = prepared.request_for(&picked.rt, keep) else {
                return fallback.ok_or(attempts.last_err());
            };
            let sent = self.pool.send(&picked.rt, up, prepared.upgrade);
            let result = tokio::time::timeout(upstream_timeout, sent).await;
            let now = Instant::now();
            let failure = match result {
                Ok(Ok((mut resp, lease))) => {
                    let status = resp.status().as_u16();
                    match attempts.on_response(&picked, status, method.as_str(), replayable, now) {
                        Next::Retry => {
                            // Keep this answer in case no other backend can be tried.
                            fallback =
                                Some(self.respond(resp, picked, lease, &mut in_flight, None));
                            continue;
                        }
                        Next::Respond => {
                            let upgraded = (prepared.upgrade && status == 101)
                                .then(|| hyper::upgrade::on(&mut resp))
                                .zip(prepared.on_client_upgrade.take());
                            return Ok(self.respond(resp, picked, lease, &mut in_flight, upgraded));
                        }
                    }
                }
                Ok(Err(UpstreamError::Connect(e))) => {
                    tracing::debug!(backend = %picked.rt.name, "upstream connect: {e}");
                    FailureKind::Connect
                }
                Ok(Err(UpstreamError::Http(e))) => {
                    if prepared.client_failed() {
                        // The client's body failed: not the backend's fault.
                        return Err(client_body_error(&e));
                    }
                    tracing::debug!(backend = %picked.rt.name, "upstream error: {e}");
                    FailureKind::Reset
                }
                Ok(Err(UpstreamError::Closed)) => {
                    if prepared.client_failed() {
                        return Err(ForwardError::ClientBody);
                    }
                    FailureKind::Reset
                }
                Err(_elapsed) => FailureKind::Timeout,
            };
            if let Err(e) = attempts.on_failure(picked, failure, method.as_str(), replayable, now) {
                return fallback.ok_or(e);
            }
        }
    }

    /// Phase *respond*: turns a backend's response into the client's: strips hop-by-hop
    /// headers, pins the client (sticky), keeps the in-flight guards until the body ends,
    /// and splices an upgraded connection (`upgraded`: the backend's and the client's).
    fn respond(
        &self,
        resp: Response<Incoming>,
        picked: Picked,
        lease: Option<Lease>,
        in_flight: &mut Option<ProxyInFlight>,
        upgraded: Option<(hyper::upgrade::OnUpgrade, hyper::upgrade::OnUpgrade)>,
    ) -> Response<RespBody> {
        let (mut parts, body) = resp.into_parts();
        parts.version = Version::HTTP_11;
        let proxy_guard = in_flight
            .take()
            .unwrap_or_else(|| ProxyInFlight::new(&self.shared));
        if picked.repin {
            parts
                .headers
                .append(SET_COOKIE, picked.rt.set_cookie.clone());
        }
        let guards = Guards::new(picked.guard, proxy_guard);
        if let Some((on_up, on_client)) = upgraded {
            headers::strip_hop_by_hop(&mut parts.headers, true);
            let stop = self.shared.stop.clone();
            self.upgrades.spawn(async move {
                let (client, upstream) = tokio::join!(on_client, on_up);
                if let (Ok(client), Ok(upstream)) = (client, upstream) {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    tokio::select! {
                        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                            if let Err(e) = r {
                                tracing::debug!("upgraded connection: {e}");
                            }
                        }
                        () = stop.cancelled() => {}
                    }
                }
                drop(guards);
            });
            return Response::from_parts(parts, RespBody::empty());
        }
        headers::strip_hop_by_hop(&mut parts.headers, false);
        Response::from_parts(parts, RespBody::upstream(body, guards, lease))
    }
}

/// The client-side error behind a failed streamed body: too large or incomplete.
fn client_body_error(e: &hyper::Error) -> ForwardError {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.is::<LengthLimitError>() {
            return ForwardError::BodyTooLarge;
        }
        src = s.source();
    }
    ForwardError::ClientBody
}

//! The request path: one worker's HTTP clients and the handler that picks a backend from
//! the current snapshot, rewrites headers, forwards, retries within the budget, records
//! outcomes for passive ejection and metrics, and passes upgrades through.
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
    BackendId, FailureKind, HashKeySource, InFlightGuard, Outcome, PickRequest, StrategyKind,
    is_retryable,
};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER, SET_COOKIE};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use tokio_util::task::TaskTracker;

use crate::admission::Slot;
use crate::body::{ReqBody, RespBody};
use crate::config::UpstreamProtocol;
use crate::error::ForwardError;
use crate::headers::{self, ClientInfo};
use crate::shared::{BackendRt, Shared};
use crate::upstream::{Lease, UpstreamError, UpstreamPool};

/// Keeps a request counted as in flight (proxy-wide and on its backend) until dropped,
/// which happens when the response body has been sent.
pub(crate) struct Guards {
    _backend: InFlightGuard,
    _proxy: ProxyInFlight,
}

/// Counts a client request in `ProxyCounters::in_flight` while alive.
pub(crate) struct ProxyInFlight(Arc<Shared>);

impl ProxyInFlight {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.counters.in_flight.fetch_add(1, Relaxed);
        ProxyInFlight(shared.clone())
    }
}

impl Drop for ProxyInFlight {
    fn drop(&mut self) {
        self.0.counters.in_flight.fetch_sub(1, Relaxed);
    }
}

/// What a worker knows about one client connection.
pub(crate) struct ConnCtx {
    peer: SocketAddr,
    local: SocketAddr,
    client: ClientInfo,
    /// Requests in flight on this connection (for the idle timeout).
    active: Arc<AtomicUsize>,
    /// Set at the first request head (ends the accept-to-head deadline).
    started: Arc<AtomicBool>,
    /// The connection's admission slot (established at the first request head).
    slot: Slot,
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
}

struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// One worker's forwarding state: its own backend connection pools and RNG.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    /// This worker's backend connections.
    pub pool: Arc<UpstreamPool>,
    rng: AtomicU64,
    retry_after: HeaderValue,
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

    fn next_random(&self) -> u64 {
        balance::hash::mix64(self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed))
    }

    /// Handles one client request; never fails (errors become responses).
    pub(crate) async fn handle(&self, ctx: &ConnCtx, req: Request<Incoming>) -> Response<RespBody> {
        let start = Instant::now();
        let counters = &self.shared.counters;
        counters.requests_total.fetch_add(1, Relaxed);
        ctx.active.fetch_add(1, Relaxed);
        let _active = ActiveGuard(&ctx.active);
        if !ctx.started.load(Relaxed) {
            ctx.started.store(true, Relaxed);
            ctx.slot.establish();
        }
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

    /// A response generated by the balancer for `err`.
    fn local(&self, err: ForwardError) -> Response<RespBody> {
        let mut r = Response::new(RespBody::full(Bytes::from_static(err.reason().as_bytes())));
        *r.status_mut() = err.status();
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if err.status() == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(RETRY_AFTER, self.retry_after.clone());
        }
        if err == ForwardError::Shed {
            self.shared.counters.shed_total.fetch_add(1, Relaxed);
        }
        if let ForwardError::Rejected(rule) = err {
            if rule == headers::RequestRule::Connect {
                r.headers_mut().insert(
                    http::header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
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
            HashKeySource::Query(name) => parts.uri.query().and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then(|| v.as_bytes().to_vec())
                })
            }),
            HashKeySource::Path => Some(parts.uri.path().as_bytes().to_vec()),
            HashKeySource::ClientIp => None,
        }
    }

    async fn forward(
        &self,
        ctx: &ConnCtx,
        mut req: Request<Incoming>,
        start: Instant,
        in_flight: ProxyInFlight,
    ) -> Result<Response<RespBody>, ForwardError> {
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
        // Only a streamed body can fail mid-way; allocate its flag only then.
        let mut client_failed: Option<Arc<AtomicBool>> = None;
        let (replay, mut stream) = if body.is_end_stream() {
            (Some(Bytes::new()), None)
        } else if content_length.is_some_and(|l| l <= cfg.limits.retry_buffer_bytes) {
            let read = Duration::from_millis(cfg.timeouts.body_read_ms);
            match tokio::time::timeout(read, Limited::new(body, max_body).collect()).await {
                Ok(Ok(c)) => (Some(c.to_bytes()), None),
                Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(ForwardError::BodyTooLarge),
                Ok(Err(_)) => return Err(ForwardError::ClientBody),
                Err(_) => return Err(ForwardError::BodyTimeout),
            }
        } else {
            let inner = Limited::new(body, max_body);
            let flag = Arc::new(AtomicBool::new(false));
            client_failed = Some(flag.clone());
            (
                None,
                Some(ReqBody::Stream {
                    inner,
                    client_failed: flag,
                }),
            )
        };

        let sticky_name = (shared.balance.strategy == StrategyKind::Sticky)
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
        let idempotent_method = parts.method.clone();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let max_attempts = shared.balance.retry.max_attempts.max(1);
        let limit = cfg.limits.max_in_flight_per_backend as u64;
        let upstream_timeout = Duration::from_millis(cfg.timeouts.upstream_response_ms);

        shared.budget.deposit(start);
        let mut tried: Vec<BackendId> = Vec::new();
        let mut attempts = 0u32;
        let mut skipped_full = false;
        let mut last_err = ForwardError::NoBackend;
        let mut headers_left = Some(parts.headers);
        let mut fallback: Option<Response<RespBody>> = None;
        let mut on_client_upgrade = on_client_upgrade;
        let mut in_flight = Some(in_flight);
        loop {
            let snap = shared.snapshot.load_full();
            // One clock read per attempt: the first attempt reuses the request's start.
            let now = if attempts == 0 { start } else { Instant::now() };
            let pick_req = PickRequest {
                client_ip: Some(ctx.peer.ip()),
                hash_key: hash_key.as_deref(),
                sticky: sticky_name.as_deref(),
                random: self.next_random(),
            };
            let Some(pick) = snap.selector.pick(&pick_req, &tried, now) else {
                if let Some(f) = fallback {
                    return Ok(f);
                }
                if attempts == 0 && skipped_full {
                    return Err(ForwardError::Shed);
                }
                return Err(last_err);
            };
            if limit > 0 && pick.backend.load.in_flight() >= limit {
                skipped_full = true;
                tried.push(pick.backend.id);
                continue;
            }
            let Some(rt) = snap.rt_of(pick.backend).cloned() else {
                tried.push(pick.backend.id);
                continue;
            };
            let repin = pick.repin;
            let guard = pick.backend.load.start();
            attempts += 1;
            // Headers are copied for this attempt only when a retry could follow.
            let may_retry_later = attempts < max_attempts
                && replay.is_some()
                && snap.selector.pickable_len() > tried.len() + 1;
            let Some(hdrs) = (if may_retry_later {
                headers_left.clone()
            } else {
                headers_left.take()
            }) else {
                return Err(last_err);
            };
            let body = match &replay {
                Some(b) => ReqBody::full(b.clone()),
                None => match stream.take() {
                    Some(s) => s,
                    None => return Err(last_err),
                },
            };
            let mut uri_parts = http::uri::Parts::default();
            uri_parts.scheme = Some(Scheme::HTTP);
            uri_parts.authority = Some(rt.authority.clone());
            uri_parts.path_and_query = Some(path_and_query.clone());
            let Ok(uri) = Uri::from_parts(uri_parts) else {
                return Err(ForwardError::NoBackend);
            };
            let mut up = Request::new(body);
            *up.method_mut() = parts.method.clone();
            *up.uri_mut() = uri;
            *up.version_mut() = Version::HTTP_11;
            *up.headers_mut() = hdrs;

            let t0 = now;
            let result =
                tokio::time::timeout(upstream_timeout, self.pool.send(&rt, up, upgrade)).await;
            let now = Instant::now();
            let latency = now.saturating_duration_since(t0);
            let load = guard.load().clone();
            let failure = match result {
                Ok(Ok((mut resp, lease))) => {
                    let status = resp.status().as_u16();
                    rt.counters.responses.record(status);
                    rt.counters.latency.record(latency.as_micros() as u64);
                    let outcome = Outcome::from_status(status);
                    let run = load.record(outcome, latency, now);
                    if outcome.is_failure() {
                        self.after_failure(&rt, run);
                    }
                    let kind = FailureKind::Status(status);
                    let retry_wanted = is_retryable(idempotent_method.as_str(), kind)
                        && may_retry_later
                        && headers_left.is_some()
                        && snap.selector.pickable_len() > tried.len() + 1;
                    if retry_wanted {
                        if shared.budget.try_withdraw(now) {
                            shared.counters.retries_total.fetch_add(1, Relaxed);
                            tried.push(rt.id);
                            // Keep this answer in case no other backend can be tried.
                            let on_up = None;
                            fallback = Some(self.respond(
                                resp,
                                (guard, lease),
                                &rt,
                                repin,
                                &mut in_flight,
                                on_up,
                                None,
                            ));
                            last_err = ForwardError::Upstream(kind);
                            continue;
                        }
                        shared
                            .counters
                            .retry_budget_exhausted_total
                            .fetch_add(1, Relaxed);
                    }
                    let on_up = (upgrade && status == 101).then(|| hyper::upgrade::on(&mut resp));
                    let on_client = if on_up.is_some() {
                        on_client_upgrade.take()
                    } else {
                        None
                    };
                    return Ok(self.respond(
                        resp,
                        (guard, lease),
                        &rt,
                        repin,
                        &mut in_flight,
                        on_up,
                        on_client,
                    ));
                }
                Ok(Err(UpstreamError::Connect(e))) => {
                    tracing::debug!(backend = %rt.name, "upstream connect: {e}");
                    FailureKind::Connect
                }
                Ok(Err(UpstreamError::Http(e))) => {
                    if client_failed.as_ref().is_some_and(|f| f.load(Relaxed)) {
                        // The client's body failed: not the backend's fault.
                        let mut too_large = false;
                        let mut src = std::error::Error::source(&e);
                        while let Some(s) = src {
                            too_large |= s.is::<LengthLimitError>();
                            src = s.source();
                        }
                        return Err(if too_large {
                            ForwardError::BodyTooLarge
                        } else {
                            ForwardError::ClientBody
                        });
                    }
                    tracing::debug!(backend = %rt.name, "upstream error: {e}");
                    FailureKind::Reset
                }
                Ok(Err(UpstreamError::Closed)) => {
                    if client_failed.as_ref().is_some_and(|f| f.load(Relaxed)) {
                        return Err(ForwardError::ClientBody);
                    }
                    FailureKind::Reset
                }
                Err(_elapsed) => FailureKind::Timeout,
            };
            let outcome = if failure == FailureKind::Connect {
                Outcome::ConnectFailure
            } else {
                Outcome::Failure
            };
            let run = load.record(outcome, latency, now);
            self.after_failure(&rt, run);
            drop(guard);
            last_err = ForwardError::Upstream(failure);
            // Only when another backend is left to try (the tried ones are excluded).
            let retry_wanted = is_retryable(idempotent_method.as_str(), failure)
                && replay.is_some()
                && headers_left.is_some()
                && attempts < max_attempts
                && snap.selector.pickable_len() > tried.len() + 1;
            if retry_wanted {
                if shared.budget.try_withdraw(now) {
                    shared.counters.retries_total.fetch_add(1, Relaxed);
                    tried.push(rt.id);
                    continue;
                }
                shared
                    .counters
                    .retry_budget_exhausted_total
                    .fetch_add(1, Relaxed);
            }
            if let Some(f) = fallback {
                return Ok(f);
            }
            return Err(last_err);
        }
    }

    /// Called after a failed attempt with the failure run of its backend.
    fn after_failure(&self, rt: &BackendRt, run: u32) {
        let outlier = &self.shared.balance.outlier;
        if outlier.enabled && run >= outlier.consecutive_failures {
            self.shared.report_failures(rt, run);
        }
    }

    /// Turns a backend's response into the client's: strips hop-by-hop headers, pins the
    /// client (sticky), keeps the in-flight guards until the body ends, and splices an
    /// upgraded connection.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        resp: Response<Incoming>,
        (guard, lease): (InFlightGuard, Option<Lease>),
        rt: &BackendRt,
        repin: bool,
        in_flight: &mut Option<ProxyInFlight>,
        on_upstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
        on_client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<RespBody> {
        let (mut parts, body) = resp.into_parts();
        parts.version = Version::HTTP_11;
        let proxy_guard = in_flight
            .take()
            .unwrap_or_else(|| ProxyInFlight::new(&self.shared));
        let guards = Guards {
            _backend: guard,
            _proxy: proxy_guard,
        };
        if repin {
            parts.headers.append(SET_COOKIE, rt.set_cookie.clone());
        }
        if let (Some(on_up), Some(on_client)) = (on_upstream_upgrade, on_client_upgrade) {
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

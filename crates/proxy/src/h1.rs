//! The HTTP/1.1 fast path: a client connection served by our own codec (`parse`) for the
//! common request (no body, or a `Content-Length` body small enough to be buffered for
//! retries), with hyper kept for everything else.
//!
//! Per request the fast path reads the head into the connection's buffer, validates it
//! strictly (a refused request is answered 4xx and the connection closed; nothing of it
//! is forwarded), rewrites it once into a reused buffer, and then runs the same phases as
//! the hyper path through [`Attempts`] (pick, send, classify, retry within the budget,
//! passive ejection, metrics). The request goes to a pooled raw backend connection in one
//! write; the response head is parsed, rewritten into a second reused buffer, and sent in
//! one write with the body bytes already read; the rest of the body is streamed through
//! the backend connection's buffer. No allocation per request once the buffers have
//! grown; no task hand-off between the client and backend halves (one task drives both).
//!
//! What goes to hyper instead (still after our parser has accepted the head, so hyper
//! only ever sees requests with unambiguous framing): an h2c connection (prior-knowledge
//! preface) for its whole life; a WebSocket upgrade, a chunked request body and a body
//! larger than `limits.retry_buffer_bytes` for one request, served by hyper's HTTP/1.1
//! server on the same socket without keep-alive (so the connection closes after it and no
//! later request bypasses this parser); every connection when the backends speak h2c or
//! `limits.max_headers` exceeds [`parse::MAX_HEADERS`].
//!
//! Architecture invariants: a request head our parser refuses is never forwarded and its
//! connection is closed; one task per client connection, no lock held across `.await`;
//! every wait is bounded (head from its first byte by `header_read_ms`, buffered body by
//! `body_read_ms`, response head and each body read by `upstream_response_ms`, writes to
//! the client by `client_idle_ms`; an idle connection by `IdleIo`).

pub mod parse;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use balance::{FailureKind, HashKeySource, PickRequest, StrategyKind};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::body::ProxyInFlight;
use crate::config::{Config, UpstreamProtocol};
use crate::error::ForwardError;
use crate::forward::{Attempts, ConnCtx, Next, Picked, Worker};
use crate::headers::{ALLOWED_METHODS, RequestRule};
use crate::shared::BackendRt;
use crate::upstream::{RawConn, UpstreamError};
use parse::{ChunkedDecoder, ClientBody, Framing, HeadInfo};

/// Errors of a served connection (logged at debug level).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether the fast path serves HTTP/1.1 clients with this config.
pub(crate) fn enabled(cfg: &Config) -> bool {
    cfg.upstream_protocol == UpstreamProtocol::Http1
        && cfg.limits.max_headers as usize <= parse::MAX_HEADERS
}

/// Read size for client and backend buffers.
const READ_CHUNK: usize = 16 * 1024;

/// Serves one client connection until it closes: the fast path, handing over to hyper
/// when needed (see the module docs). `watcher` keeps hyper's graceful shutdown waiting
/// for this connection; `shutdown` tells it to stop after the request in progress.
pub(crate) async fn serve<S>(
    worker: Arc<Worker>,
    ctx: Arc<ConnCtx>,
    io: S,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    shutdown: CancellationToken,
) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !enabled(&worker.shared.config) {
        return serve_hyper_whole(worker, ctx, Rewind::new(Vec::new(), io), builder, watcher).await;
    }
    let mut conn = Conn::new(worker, ctx, io);
    match conn.run(&shutdown).await {
        Ok(Handover::Done) => Ok(()),
        Ok(Handover::H2) => {
            let Conn {
                worker,
                ctx,
                io,
                buf,
                ..
            } = conn;
            serve_hyper_whole(worker, ctx, Rewind::new(buf, io), builder, watcher).await
        }
        Ok(Handover::OneRequest) => {
            let Conn {
                worker,
                ctx,
                io,
                buf,
                ..
            } = conn;
            serve_hyper_once(worker, ctx, Rewind::new(buf, io), watcher, shutdown).await
        }
        Err(e) => Err(e),
    }
}

/// The whole connection to hyper (h2c, or the fast path disabled).
async fn serve_hyper_whole<S>(
    worker: Arc<Worker>,
    ctx: Arc<ConnCtx>,
    io: Rewind<S>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let w = worker.clone();
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(w.handle(&ctx, req).await) }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    watcher.watch(conn).await
}

/// One request (already validated by our parser) to hyper's HTTP/1.1 server, without
/// keep-alive: the connection closes after it. `watcher` is held so that the worker's
/// graceful shutdown waits for it; `shutdown` asks hyper to finish gracefully.
async fn serve_hyper_once<S>(
    worker: Arc<Worker>,
    ctx: Arc<ConnCtx>,
    io: Rewind<S>,
    watcher: Watcher,
    shutdown: CancellationToken,
) -> Result<(), BoxError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut b = hyper::server::conn::http1::Builder::new();
    {
        let cfg = &worker.shared.config;
        b.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(cfg.timeouts.header_read_ms))
            .max_buf_size(cfg.limits.max_header_bytes as usize)
            .max_headers(cfg.limits.max_headers as usize)
            .keep_alive(false);
    }
    let svc = hyper::service::service_fn(move |req| {
        let w = worker.clone();
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(w.handle(&ctx, req).await) }
    });
    let conn = b.serve_connection(TokioIo::new(io), svc).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let _watcher = watcher;
    tokio::select! {
        r = conn.as_mut() => return r.map_err(Into::into),
        () = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    conn.await.map_err(Into::into)
}

/// Why the fast path stopped serving a connection.
enum Handover {
    /// The connection is finished (closed, refused, shut down).
    Done,
    /// An h2c connection: all of it to hyper.
    H2,
    /// The next request (at the start of the buffer) to hyper, then close.
    OneRequest,
}

/// The keys a pick needs, copied out of the head into the connection's reused buffers.
#[derive(Default)]
struct PickKeys {
    /// The sticky cookie's value (sticky strategy).
    sticky: String,
    has_sticky: bool,
    /// The consistent-hash key.
    hash: Vec<u8>,
    has_hash: bool,
}

/// What the *prepare* phase keeps about a request once its head is rewritten.
struct Prepared {
    info: HeadInfo,
    method: http::Method,
}

/// A response head received from a backend (parsed again, cheaply, when written out).
struct UpResponse {
    conn: RawConn,
    status: u16,
}

/// One client connection on the fast path, with its reused buffers.
struct Conn<S> {
    worker: Arc<Worker>,
    ctx: Arc<ConnCtx>,
    io: S,
    /// Client bytes not consumed yet (the head being read, the body, pipelined requests).
    buf: Vec<u8>,
    /// The rewritten request (head and buffered body) for every attempt.
    up: Vec<u8>,
    /// The response head (and first body bytes) to the client.
    down: Vec<u8>,
    keys: PickKeys,
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn new(worker: Arc<Worker>, ctx: Arc<ConnCtx>, io: S) -> Self {
        Conn {
            worker,
            ctx,
            io,
            buf: Vec::new(),
            up: Vec::new(),
            down: Vec::new(),
            keys: PickKeys::default(),
        }
    }

    fn limits(&self) -> parse::Limits {
        let l = &self.worker.shared.config.limits;
        parse::Limits {
            max_head_bytes: l.max_header_bytes as usize,
            max_headers: l.max_headers as usize,
            max_method_bytes: l.max_method_bytes as usize,
        }
    }

    /// Reads more client bytes into `buf`; 0 at end of stream. The buffer is allocated
    /// only once bytes have arrived, so a silent connection holds no buffer.
    async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            let mut first = [0u8; 512];
            let n = self.io.read(&mut first).await?;
            self.buf.reserve(READ_CHUNK);
            self.buf.extend_from_slice(&first[..n]);
            return Ok(n);
        }
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        self.io.read_buf(&mut self.buf).await
    }

    /// Writes `down` to the client within `client_idle_ms`.
    async fn write_down(&mut self) -> io::Result<()> {
        let d = Duration::from_millis(self.worker.shared.config.timeouts.client_idle_ms);
        match tokio::time::timeout(d, self.io.write_all(&self.down)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client write timed out",
            )),
        }
    }

    /// Serves requests until the connection ends or a request goes to hyper.
    async fn run(&mut self, shutdown: &CancellationToken) -> Result<Handover, BoxError> {
        let header_read = Duration::from_millis(self.worker.shared.config.timeouts.header_read_ms);
        loop {
            // Phase *prepare*, part 1: a complete, valid head.
            let mut deadline: Option<tokio::time::Instant> = None;
            let prepared = loop {
                // h2c with prior knowledge: "PRI" can start no HTTP/1.1 method we forward.
                if self.buf.len() >= 3
                    && !self.ctx.started.load(Relaxed)
                    && parse::is_h2_preface(&self.buf)
                {
                    return Ok(Handover::H2);
                }
                if !self.buf.is_empty() {
                    match self.prepare() {
                        Ok(Some(p)) => break p,
                        Ok(None) => {}
                        Err(rule) => {
                            self.refuse(rule).await;
                            return Ok(Handover::Done);
                        }
                    }
                }
                let n = if self.buf.is_empty() {
                    tokio::select! {
                        biased;
                        r = self.read_more() => r?,
                        () = shutdown.cancelled() => return Ok(Handover::Done),
                    }
                } else {
                    // From the first byte of a head, the whole head within header_read_ms.
                    let at =
                        *deadline.get_or_insert_with(|| tokio::time::Instant::now() + header_read);
                    match tokio::time::timeout_at(at, self.read_more()).await {
                        Ok(r) => r?,
                        Err(_) => return Ok(Handover::Done),
                    }
                };
                if n == 0 {
                    return Ok(Handover::Done);
                }
            };
            let info = prepared.info;
            let limits = &self.worker.shared.config.limits;
            let too_large = matches!(info.framing, Framing::Length(n) if n > limits.max_body_bytes);
            let buffered = match info.framing {
                Framing::Empty => true,
                Framing::Length(n) => n <= limits.retry_buffer_bytes,
                Framing::Chunked => false,
            };
            if !too_large && (info.websocket || !buffered) {
                return Ok(Handover::OneRequest);
            }
            let keep = self.exchange(prepared, too_large).await?;
            if !keep || shutdown.is_cancelled() {
                let _ = self.io.shutdown().await;
                return Ok(Handover::Done);
            }
        }
    }

    /// Parses the head at the start of `buf`; when complete and valid, writes the
    /// upstream head into `up` and the pick keys into `keys`.
    fn prepare(&mut self) -> Result<Option<Prepared>, RequestRule> {
        let limits = self.limits();
        let mut storage = parse::header_storage();
        let Some(req) = parse::parse_request(&self.buf, &limits, &mut storage)? else {
            return Ok(None);
        };
        let method =
            http::Method::from_bytes(req.method.as_bytes()).map_err(|_| RequestRule::Malformed)?;
        let w = &self.worker;
        let random = (w.next_random() as u128) << 64 | w.next_random() as u128;
        // `Host` for an HTTP/1.0 request without one: the listener (rare; rendered then).
        let listener = match req.effective_host() {
            Some(_) => String::new(),
            None => self.ctx.local.to_string(),
        };
        let fwd = parse::Forwarding {
            client_ip: self.ctx.client.client_ip.as_bytes(),
            proto: self.ctx.client.proto.as_bytes(),
            listener: listener.as_bytes(),
            random,
        };
        self.up.clear();
        parse::write_request_head(&req, &fwd, &mut self.up);
        let shared = &w.shared;
        let keys = &mut self.keys;
        keys.has_sticky = false;
        keys.has_hash = false;
        if shared.balance.strategy == StrategyKind::Sticky
            && let Some(v) = cookie_value(req.headers, &shared.balance.sticky.cookie)
            && let Ok(v) = std::str::from_utf8(v)
        {
            keys.sticky.clear();
            keys.sticky.push_str(v);
            keys.has_sticky = true;
        }
        if shared.balance.strategy == StrategyKind::ConsistentHash
            && let Some(src) = shared.hash_key.as_ref()
        {
            let key: Option<&[u8]> = match src {
                HashKeySource::Header(name) => req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| h.value),
                HashKeySource::Cookie(name) => cookie_value(req.headers, name),
                HashKeySource::Query(name) => req
                    .query()
                    .and_then(|q| crate::headers::query_value(q, name))
                    .map(str::as_bytes),
                HashKeySource::Path => Some(req.path_only().as_bytes()),
                HashKeySource::ClientIp => None,
            };
            if let Some(k) = key {
                keys.hash.clear();
                keys.hash.extend_from_slice(k);
                keys.has_hash = true;
            }
        }
        Ok(Some(Prepared {
            info: req.info,
            method,
        }))
    }

    /// Answers a refused request (the connection closes after it).
    async fn refuse(&mut self, rule: RequestRule) {
        let counters = &self.worker.shared.counters;
        counters.requests_total.fetch_add(1, Relaxed);
        counters.rejected_total.fetch_add(1, Relaxed);
        let err = ForwardError::Rejected(rule);
        self.local_response(err, false);
        let _ = self.write_down().await;
        self.linger().await;
    }

    /// Closes our side and reads (and drops) what the client still sends, for at most
    /// 1 s and 1 MiB: closing with unread bytes would send a reset that can destroy the
    /// answer before the client reads it (nginx's lingering close).
    async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut drained = 0usize;
        while drained < 1 << 20 {
            self.buf.clear();
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }

    /// Writes the balancer's own answer for `err` into `down`.
    fn local_response(&mut self, err: ForwardError, keep_alive: bool) {
        self.worker.count_local(err);
        let counters = &self.worker.shared.counters;
        counters.responses.record(err.status().as_u16());
        let d = &mut self.down;
        d.clear();
        let status = err.status();
        d.extend_from_slice(b"HTTP/1.1 ");
        d.extend_from_slice(status.as_str().as_bytes());
        d.push(b' ');
        d.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        d.extend_from_slice(b"\r\ncontent-type: text/plain\r\ncontent-length: ");
        parse::write_u64(d, err.reason().len() as u64);
        d.extend_from_slice(b"\r\n");
        if status == http::StatusCode::SERVICE_UNAVAILABLE {
            d.extend_from_slice(b"retry-after: ");
            d.extend_from_slice(self.worker.retry_after.as_bytes());
            d.extend_from_slice(b"\r\n");
        }
        if err == ForwardError::Rejected(RequestRule::Connect) {
            d.extend_from_slice(b"allow: ");
            d.extend_from_slice(ALLOWED_METHODS.as_bytes());
            d.extend_from_slice(b"\r\n");
        }
        if !keep_alive || matches!(err, ForwardError::Rejected(_)) {
            d.extend_from_slice(b"connection: close\r\n");
        }
        d.extend_from_slice(b"\r\n");
        d.extend_from_slice(err.reason().as_bytes());
    }

    /// One request, prepared: its body, the attempts, the response. Returns whether the
    /// connection may carry another request.
    async fn exchange(&mut self, prepared: Prepared, too_large: bool) -> Result<bool, BoxError> {
        let start = Instant::now();
        let shared = self.worker.shared.clone();
        let counters = &shared.counters;
        counters.requests_total.fetch_add(1, Relaxed);
        let ctx = self.ctx.clone();
        let _active = ctx.request_started();
        let info = prepared.info;
        let keep_alive = info.keep_alive;
        if too_large {
            // Refused before anything is read or forwarded; the unread body makes the
            // connection unusable.
            self.local_response(ForwardError::BodyTooLarge, false);
            counters.latency.record(start.elapsed().as_micros() as u64);
            let _ = self.write_down().await;
            self.linger().await;
            return Ok(false);
        }
        // Phase *prepare*, part 2: the buffered body, appended to the upstream head.
        let body_len = match info.framing {
            Framing::Length(n) => n as usize,
            _ => 0,
        };
        let need = info.head_len + body_len;
        if self.buf.len() < need
            && let Err(e) = self.read_body(need, info.expect_continue).await
        {
            self.local_response(e, false);
            counters.latency.record(start.elapsed().as_micros() as u64);
            let _ = self.write_down().await;
            return Ok(false);
        }
        self.up.extend_from_slice(&self.buf[info.head_len..need]);
        self.buf.drain(..need);

        // Phase *attempt*: pick, send, classify, maybe again.
        let in_flight = ProxyInFlight::new(&shared);
        let mut attempts = Attempts::new(&shared, start);
        let method = prepared.method.as_str();
        let mut fallback: Option<(Picked, UpResponse)> = None;
        let upstream_timeout = Duration::from_millis(shared.config.timeouts.upstream_response_ms);
        let (picked, resp) = loop {
            let pick_req = PickRequest {
                client_ip: Some(ctx.peer.ip()),
                hash_key: self.keys.has_hash.then_some(&self.keys.hash[..]),
                sticky: self.keys.has_sticky.then_some(self.keys.sticky.as_str()),
                random: self.worker.next_random(),
            };
            let picked = match attempts.pick(&pick_req) {
                Ok(p) => p,
                Err(e) => match fallback.take() {
                    Some(f) => break f,
                    None => {
                        self.local_response(e, keep_alive);
                        counters.latency.record(start.elapsed().as_micros() as u64);
                        drop(in_flight);
                        self.write_down().await?;
                        return Ok(keep_alive);
                    }
                },
            };
            let sent = send(
                &self.worker,
                &picked.rt,
                &self.up,
                info.head_method,
                &prepared.method,
            );
            let result = tokio::time::timeout(upstream_timeout, sent).await;
            let now = Instant::now();
            let failure = match result {
                Ok(Ok(resp)) => {
                    match attempts.on_response(&picked, resp.status, method, true, now) {
                        Next::Retry => {
                            // Kept in case no other backend can be tried.
                            if let Some((_, old)) = fallback.replace((picked, resp)) {
                                old.conn.abort();
                            }
                            continue;
                        }
                        Next::Respond => {
                            if let Some((_, old)) = fallback.take() {
                                old.conn.abort();
                            }
                            break (picked, resp);
                        }
                    }
                }
                Ok(Err(kind)) => kind,
                Err(_elapsed) => FailureKind::Timeout,
            };
            if let Err(e) = attempts.on_failure(picked, failure, method, true, now) {
                match fallback.take() {
                    Some(f) => break f,
                    None => {
                        self.local_response(e, keep_alive);
                        counters.latency.record(start.elapsed().as_micros() as u64);
                        drop(in_flight);
                        self.write_down().await?;
                        return Ok(keep_alive);
                    }
                }
            }
        };

        // Phase *respond*.
        counters.responses.record(resp.status);
        counters.latency.record(start.elapsed().as_micros() as u64);
        let keep = self
            .respond(&picked.rt, picked.repin, resp, info, upstream_timeout)
            .await;
        // The guards (backend and proxy-wide in flight) end with the body.
        drop(picked);
        drop(in_flight);
        keep
    }

    /// Reads until `buf` holds `need` bytes (head and body), within `body_read_ms`;
    /// sends `100 Continue` first when the client waits for it.
    async fn read_body(&mut self, need: usize, expect_continue: bool) -> Result<(), ForwardError> {
        if expect_continue {
            self.down.clear();
            self.down
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.write_down()
                .await
                .map_err(|_| ForwardError::ClientBody)?;
        }
        let d = Duration::from_millis(self.worker.shared.config.timeouts.body_read_ms);
        let deadline = tokio::time::Instant::now() + d;
        self.buf.reserve(need.saturating_sub(self.buf.len()));
        while self.buf.len() < need {
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Err(ForwardError::ClientBody),
                Ok(Ok(_)) => {}
                Err(_) => return Err(ForwardError::BodyTimeout),
            }
        }
        Ok(())
    }

    /// Writes the response head and streams the body to the client. Returns whether the
    /// client connection may carry another request; the backend connection goes back to
    /// the pool when its response was read whole and the backend keeps it open.
    async fn respond(
        &mut self,
        rt: &BackendRt,
        repin: bool,
        resp: UpResponse,
        info: HeadInfo,
        read_timeout: Duration,
    ) -> Result<bool, BoxError> {
        let UpResponse { mut conn, .. } = resp;
        let cookie = repin.then(|| rt.set_cookie.as_bytes());
        self.down.clear();
        let written = {
            let mut storage = parse::header_storage();
            match parse::parse_response(&conn.buf, info.head_method, &mut storage) {
                Ok(Some(head)) => {
                    let (framing, close) = parse::write_response_head(
                        &head,
                        info.http10,
                        info.keep_alive,
                        cookie,
                        &mut self.down,
                    );
                    Some((framing, close, head.reusable, head.head_len))
                }
                // Parsed once already in `send`: cannot happen.
                _ => None,
            }
        };
        let Some((framing, close_client, reusable, head_len)) = written else {
            conn.abort();
            return Ok(false);
        };
        conn.buf.drain(..head_len);
        // The body, streamed: whatever is in the backend buffer first, in the same write
        // as the head.
        let mut done = false;
        let mut left = 0u64;
        let mut decoder = ChunkedDecoder::default();
        let mut extra = false;
        match framing {
            ClientBody::Empty => {
                done = true;
                extra = !conn.buf.is_empty();
            }
            ClientBody::Length(n) => {
                let take = (conn.buf.len() as u64).min(n) as usize;
                self.down.extend_from_slice(&conn.buf[..take]);
                extra = conn.buf.len() > take;
                left = n - take as u64;
                done = left == 0;
            }
            ClientBody::Chunked => match decoder.feed(&conn.buf, |_| {}) {
                Ok(used) => {
                    self.down.extend_from_slice(&conn.buf[..used]);
                    done = decoder.is_done();
                    extra = used < conn.buf.len();
                }
                Err(_) => {
                    conn.abort();
                    return Ok(false);
                }
            },
            ClientBody::UntilClose { dechunk } => {
                if dechunk {
                    let down = &mut self.down;
                    if decoder
                        .feed(&conn.buf, |d| down.extend_from_slice(d))
                        .is_err()
                    {
                        conn.abort();
                        return Ok(false);
                    }
                    done = decoder.is_done();
                } else {
                    self.down.extend_from_slice(&conn.buf);
                }
            }
        }
        conn.buf.clear();
        if self.write_down().await.is_err() {
            conn.abort();
            return Ok(false);
        }
        while !done {
            conn.buf.clear();
            let read = tokio::time::timeout(read_timeout, conn.stream.read_buf(&mut conn.buf));
            let n = match read.await {
                Ok(Ok(n)) => n,
                _ => {
                    conn.abort();
                    return Ok(false);
                }
            };
            self.down.clear();
            match framing {
                ClientBody::Length(_) => {
                    if n == 0 {
                        conn.abort();
                        return Ok(false);
                    }
                    let take = (n as u64).min(left) as usize;
                    self.down.extend_from_slice(&conn.buf[..take]);
                    extra = n > take;
                    left -= take as u64;
                    done = left == 0;
                }
                ClientBody::Chunked => {
                    if n == 0 {
                        conn.abort();
                        return Ok(false);
                    }
                    match decoder.feed(&conn.buf, |_| {}) {
                        Ok(used) => {
                            self.down.extend_from_slice(&conn.buf[..used]);
                            done = decoder.is_done();
                            extra = used < n;
                        }
                        Err(_) => {
                            conn.abort();
                            return Ok(false);
                        }
                    }
                }
                ClientBody::UntilClose { dechunk } => {
                    if n == 0 {
                        if dechunk && !decoder.is_done() {
                            conn.abort();
                            return Ok(false);
                        }
                        break;
                    }
                    if dechunk {
                        let down = &mut self.down;
                        if decoder
                            .feed(&conn.buf, |d| down.extend_from_slice(d))
                            .is_err()
                        {
                            conn.abort();
                            return Ok(false);
                        }
                        done = decoder.is_done();
                    } else {
                        self.down.extend_from_slice(&conn.buf);
                    }
                }
                ClientBody::Empty => break,
            }
            if !self.down.is_empty() && self.write_down().await.is_err() {
                conn.abort();
                return Ok(false);
            }
        }
        if done && reusable && !extra && !matches!(framing, ClientBody::UntilClose { .. }) {
            self.worker.pool.checkin_raw(rt.id, conn);
        }
        Ok(!close_client)
    }
}

/// Sends the request bytes `up` to `rt` on a pooled or new connection and reads the
/// final response head into the connection's buffer (interim 1xx skipped). A pooled
/// connection that the backend closed before answering is replaced by a new one once
/// (the request was not processed: it got no byte of response), for idempotent methods.
async fn send(
    worker: &Worker,
    rt: &BackendRt,
    up: &[u8],
    head_request: bool,
    method: &http::Method,
) -> Result<UpResponse, FailureKind> {
    let pool = &worker.pool;
    let mut conn = match pool.checkout_raw(rt.id, Instant::now()) {
        Some(c) => c,
        None => new_conn(worker, rt).await?,
    };
    for _ in 0..2 {
        match exchange_on(&mut conn, up, head_request).await {
            Ok(status) => return Ok(UpResponse { conn, status }),
            Err(Some(kind)) => {
                conn.abort();
                return Err(kind);
            }
            // Closed before any response byte.
            Err(None) => {
                if conn.reused && balance::is_idempotent(method.as_str()) {
                    conn = new_conn(worker, rt).await?;
                    continue;
                }
                return Err(FailureKind::Reset);
            }
        }
    }
    Err(FailureKind::Reset)
}

async fn new_conn(worker: &Worker, rt: &BackendRt) -> Result<RawConn, FailureKind> {
    match worker.pool.connect_raw(rt).await {
        Ok(c) => Ok(c),
        Err(UpstreamError::Connect(e)) => {
            tracing::debug!(backend = %rt.name, "upstream connect: {e}");
            Err(FailureKind::Connect)
        }
        Err(e) => {
            tracing::debug!(backend = %rt.name, "upstream: {e}");
            Err(FailureKind::Connect)
        }
    }
}

/// One write of `up`, then reads until a final response head is in `conn.buf`. `Err(None)`:
/// the connection closed before any response byte.
async fn exchange_on(
    conn: &mut RawConn,
    up: &[u8],
    head_request: bool,
) -> Result<u16, Option<FailureKind>> {
    conn.buf.clear();
    if let Err(e) = conn.stream.write_all(up).await {
        tracing::debug!("upstream write: {e}");
        return Err(match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => None,
            _ => Some(FailureKind::Reset),
        });
    }
    let mut got_any = false;
    loop {
        if !conn.buf.is_empty() {
            // Some(Ok(n)): an interim head of n bytes; Some(Err(status)): the final head.
            let step = {
                let mut storage = parse::header_storage();
                match parse::parse_response(&conn.buf, head_request, &mut storage) {
                    Ok(Some(r)) if r.status < 200 => Some(Ok(r.head_len)),
                    Ok(Some(r)) => Some(Err(r.status)),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::debug!("bad response head from backend: {e:?}");
                        return Err(Some(FailureKind::Reset));
                    }
                }
            };
            match step {
                // Interim response (100 Continue, 103 Early Hints): skip it.
                Some(Ok(n)) => {
                    conn.buf.drain(..n);
                    continue;
                }
                Some(Err(status)) => return Ok(status),
                None => {}
            }
        }
        if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf.reserve(READ_CHUNK);
        }
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) => {
                return Err(if got_any {
                    Some(FailureKind::Reset)
                } else {
                    None
                });
            }
            Ok(_) => got_any = true,
            Err(e) if !got_any && e.kind() == io::ErrorKind::ConnectionReset => return Err(None),
            Err(_) => return Err(Some(FailureKind::Reset)),
        }
    }
}

/// The value of cookie `name` in the `Cookie` headers.
fn cookie_value<'b>(headers: &[parse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
    {
        for pair in h.value.split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            if let Some(eq) = pair.iter().position(|&b| b == b'=')
                && pair[..eq].trim_ascii() == name.as_bytes()
            {
                return Some(pair[eq + 1..].trim_ascii());
            }
        }
    }
    None
}

/// A stream that first yields bytes already read from it (handing a connection to hyper
/// after our parser looked at its start).
pub(crate) struct Rewind<S> {
    pre: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    fn new(pre: Vec<u8>, inner: S) -> Self {
        Rewind { pre, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.pre[start..start + n]);
            self.pos += n;
            if self.pos == self.pre.len() {
                self.pre = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;

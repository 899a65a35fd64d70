//! One worker's connections to the backends: a keep-alive pool of HTTP/1.1 connections per
//! backend (hyper's connection-level client), or one multiplexed h2c connection per
//! backend, with connect timeouts and idle expiry; and the request body they carry
//! ([`ReqBody`]: empty, buffered so it can be replayed on a retry, or streamed under a size
//! limit, recording when the *client* failed so that it is not blamed on the backend).
//!
//! Each worker owns its pool; only that worker's thread touches it, so its mutex is never
//! contended (it exists because hyper's server wants `Send` futures) and is never held
//! across an `.await`. An HTTP/1.1 connection is driven by the request that holds it: the
//! request's task polls it while waiting for the response head and the client's response
//! body polls it while the body streams, so there is no hand-off to a separate connection
//! task. It goes back to the pool when that body has ended; upgraded (WebSocket)
//! connections get their own task instead, since they outlive the request.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use balance::BackendId;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::shared::BackendRt;

/// Errors of request bodies: boxed, as hyper's client expects.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body on its way to a backend.
pub enum ReqBody {
    /// No body, or a buffered one (cloned for every attempt, so it can be replayed).
    Full(Option<Bytes>),
    /// Forwarded as it arrives, once, under the body size limit.
    Stream {
        /// The client's body, limited.
        inner: Limited<Incoming>,
        /// Set when reading the client's body failed (client gone or body too large).
        client_failed: Arc<AtomicBool>,
    },
}

impl ReqBody {
    /// A buffered body (empty bytes become an empty body).
    pub fn full(b: Bytes) -> Self {
        if b.is_empty() {
            ReqBody::Full(None)
        } else {
            ReqBody::Full(Some(b))
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream {
                inner,
                client_failed,
            } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    client_failed.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(e)))
                }
                other => other,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Full(None) => SizeHint::with_exact(0),
            ReqBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ReqBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// Why sending to a backend failed.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// No connection could be made (refused, unreachable, timed out, handshake failed):
    /// the request was not sent.
    Connect(io::Error),
    /// The request failed on an open connection (reset, closed, protocol error).
    Http(hyper::Error),
    /// The connection closed before answering.
    Closed,
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connect: {e}"),
            UpstreamError::Http(e) => write!(f, "http: {e}"),
            UpstreamError::Closed => write!(f, "connection closed before the response"),
        }
    }
}

/// Pauses before connecting again after a refused connect, milliseconds (one retry per
/// entry): 3 retries within 0.2 s, like HAProxy's default `retries 3`.
const CONNECT_RETRY_MS: [u64; 3] = [25, 50, 100];

/// Most idle HTTP/1.1 connections kept per backend and worker.
const MAX_IDLE_PER_BACKEND: usize = 512;

type Idle = (Inline, Instant);

/// A raw HTTP/1.1 backend connection of the fast path (`h1`), with its read buffer (kept
/// with the connection, so a pooled connection costs no allocation per request).
pub(crate) struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read from the backend and not consumed yet.
    pub buf: Vec<u8>,
    /// Whether it came from the pool (so it may have been closed by the backend).
    pub reused: bool,
}

impl RawConn {
    /// Closes the connection with a TCP reset (`SO_LINGER` 0): the backend must not take
    /// a truncated exchange for a whole one.
    pub fn abort(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }

    /// Whether a pooled connection still looks open: nothing to read (no EOF, no stray
    /// bytes). Costs no system call unless the reactor saw it become readable.
    fn looks_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// The worker's backend connections.
pub(crate) struct UpstreamPool {
    h2c: bool,
    connect_timeout: Duration,
    idle_timeout: Duration,
    h1: Mutex<HashMap<BackendId, Vec<Idle>>>,
    h2: Mutex<HashMap<BackendId, http2::SendRequest<ReqBody>>>,
    /// The fast path's idle connections.
    raw: Mutex<HashMap<BackendId, Vec<(RawConn, Instant)>>>,
}

type H1Conn = http1::Connection<TokioIo<TcpStream>, ReqBody>;

/// An HTTP/1.1 backend connection driven by whoever holds it.
pub(crate) struct Inline {
    tx: http1::SendRequest<ReqBody>,
    conn: Box<H1Conn>,
    closed: bool,
}

impl Inline {
    /// Drives the connection's I/O; true once it has finished (closed or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.closed && Pin::new(&mut *self.conn).poll(cx).is_ready() {
            self.closed = true;
        }
        self.closed
    }

    fn reusable(&self) -> bool {
        !self.closed && !self.tx.is_closed()
    }

    /// Closes the connection with a TCP reset (`SO_LINGER` 0) rather than a FIN, so the
    /// backend sees an abort and cannot mistake a truncated request body for a whole one.
    fn abort(self) {
        let parts = self.conn.into_parts();
        let _ = socket2::SockRef::from(parts.io.inner()).set_linger(Some(Duration::ZERO));
    }
}

/// Whether the client's streamed body failed (too large, or the client went away): the
/// backend connection carrying it must then be reset.
fn client_failed(flag: &Option<Arc<AtomicBool>>) -> bool {
    flag.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// An HTTP/1.1 connection lent to one request. The client's response body drives it
/// ([`Lease::drive`]) and marks it complete; dropped after a complete body on an open
/// connection it goes back to the pool, else it is closed.
pub(crate) struct Lease {
    conn: Option<Inline>,
    complete: bool,
    pool: Arc<UpstreamPool>,
    backend: BackendId,
    /// The streamed request body's failure flag (reset the connection when set).
    client_failed: Option<Arc<AtomicBool>>,
}

impl Lease {
    /// Drives the connection (called from the response body's `poll_frame`).
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(c) = self.conn.as_mut() {
            c.drive(cx);
        }
    }

    /// The response body has been read to its end.
    pub(crate) fn set_complete(&mut self) {
        self.complete = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(c) = self.conn.take() else { return };
        if client_failed(&self.client_failed) {
            c.abort();
        } else if self.complete && c.reusable() {
            self.pool.checkin(self.backend, c);
        }
    }
}

impl UpstreamPool {
    pub(crate) fn new(h2c: bool, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        UpstreamPool {
            h2c,
            connect_timeout,
            idle_timeout,
            h1: Mutex::new(HashMap::new()),
            h2: Mutex::new(HashMap::new()),
            raw: Mutex::new(HashMap::new()),
        }
    }

    /// Returns a fast-path connection whose response was read whole and which the
    /// backend keeps open.
    pub(crate) fn checkin_raw(&self, backend: BackendId, mut c: RawConn) {
        c.buf.clear();
        c.reused = true;
        let mut map = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        let v = map.entry(backend).or_default();
        if v.len() < MAX_IDLE_PER_BACKEND {
            v.push((c, Instant::now()));
        }
    }

    /// A pooled fast-path connection to `backend` that still looks open, if any.
    pub(crate) fn checkout_raw(&self, backend: BackendId, now: Instant) -> Option<RawConn> {
        let mut map = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        let v = map.get_mut(&backend)?;
        while let Some((c, since)) = v.pop() {
            if now.saturating_duration_since(since) < self.idle_timeout && c.looks_open() {
                return Some(c);
            }
        }
        None
    }

    /// A new fast-path connection to `rt` (within the connect timeout).
    pub(crate) async fn connect_raw(&self, rt: &BackendRt) -> Result<RawConn, UpstreamError> {
        let stream = self.connect(rt).await?;
        Ok(RawConn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            reused: false,
        })
    }

    fn checkin(&self, backend: BackendId, c: Inline) {
        let mut map = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let v = map.entry(backend).or_default();
        if v.len() < MAX_IDLE_PER_BACKEND {
            v.push((c, Instant::now()));
        }
    }

    fn checkout(&self, backend: BackendId, now: Instant) -> Option<Inline> {
        let mut map = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        let v = map.get_mut(&backend)?;
        while let Some((c, since)) = v.pop() {
            if c.reusable() && now.saturating_duration_since(since) < self.idle_timeout {
                return Some(c);
            }
        }
        None
    }

    /// Drops connections to backends not in `live` and idle ones past the idle timeout.
    pub(crate) fn upkeep(&self, live: &[BackendId], now: Instant) {
        let mut h1 = self.h1.lock().unwrap_or_else(|p| p.into_inner());
        h1.retain(|id, _| live.contains(id));
        for v in h1.values_mut() {
            v.retain(|(c, since)| {
                c.reusable() && now.saturating_duration_since(*since) < self.idle_timeout
            });
        }
        drop(h1);
        let mut raw = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        raw.retain(|id, _| live.contains(id));
        for v in raw.values_mut() {
            v.retain(|(_, since)| now.saturating_duration_since(*since) < self.idle_timeout);
        }
        drop(raw);
        self.h2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, tx| live.contains(id) && !tx.is_closed());
    }

    /// Connects to `rt`. A refused connection is tried again after [`CONNECT_RETRY_MS`]
    /// (at most that many more times): nothing has been sent, so it is always safe, and a
    /// server with a small listen backlog (`python3 -m http.server` has 5) refuses or
    /// drops connections in short bursts while it is busy accepting; HAProxy likewise
    /// retries a failed connect on the same server (`retries 3`) before giving up or
    /// redispatching. A connect that times out is not tried again here (it already cost
    /// `timeouts.connect_ms`); the request may still go to another backend.
    async fn connect(&self, rt: &BackendRt) -> Result<TcpStream, UpstreamError> {
        let mut retries = CONNECT_RETRY_MS.iter();
        loop {
            let fut = async {
                match rt.socket_addr {
                    Some(a) => TcpStream::connect(a).await,
                    None => TcpStream::connect(rt.addr.as_str()).await,
                }
            };
            let result = tokio::time::timeout(self.connect_timeout, fut)
                .await
                .map_err(|_| {
                    UpstreamError::Connect(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connect timed out",
                    ))
                })?;
            match result {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    let Some(&ms) = retries.next() else {
                        return Err(UpstreamError::Connect(e));
                    };
                    tracing::debug!(backend = %rt.name, "connect refused; again in {ms} ms");
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Err(e) => return Err(UpstreamError::Connect(e)),
            }
        }
    }

    async fn handshake_h1(
        &self,
        rt: &BackendRt,
    ) -> Result<(http1::SendRequest<ReqBody>, H1Conn), UpstreamError> {
        let stream = self.connect(rt).await?;
        http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(io::Error::other(e)))
    }

    async fn h2_sender(
        &self,
        rt: &BackendRt,
    ) -> Result<http2::SendRequest<ReqBody>, UpstreamError> {
        let existing = {
            let map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&rt.id).filter(|tx| !tx.is_closed()).cloned()
        };
        if let Some(tx) = existing {
            return Ok(tx);
        }
        let stream = self.connect(rt).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("backend h2 connection: {e}");
            }
        });
        self.h2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rt.id, tx.clone());
        Ok(tx)
    }

    /// Sends `req` to `rt`. The request's URI must be absolute (`http://authority/path`);
    /// HTTP/1.1 requests are sent in origin form. Returns the response head and, for
    /// HTTP/1.1 (not upgraded), the lease the response body must drive and then drop.
    pub(crate) async fn send(
        self: &Arc<Self>,
        rt: &BackendRt,
        mut req: Request<ReqBody>,
        upgrade: bool,
    ) -> Result<(Response<Incoming>, Option<Lease>), UpstreamError> {
        if self.h2c && !upgrade {
            let mut tx = self.h2_sender(rt).await?;
            tx.ready().await.map_err(UpstreamError::Http)?;
            let resp = tx.send_request(req).await.map_err(UpstreamError::Http)?;
            return Ok((resp, None));
        }
        // Origin form for HTTP/1.1.
        if let Some(pq) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = http::Uri::from(pq);
        }
        if upgrade {
            // The upgraded stream outlives the request: a fresh connection with its own task.
            let (mut tx, conn) = self.handshake_h1(rt).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!("upgraded backend connection: {e}");
                }
            });
            tx.ready().await.map_err(UpstreamError::Http)?;
            let resp = tx.send_request(req).await.map_err(UpstreamError::Http)?;
            return Ok((resp, None));
        }
        let failed_flag = match req.body() {
            ReqBody::Stream { client_failed, .. } => Some(client_failed.clone()),
            ReqBody::Full(_) => None,
        };
        let now = Instant::now();
        // A pooled connection that turns out closed gives the request back unsent; try
        // the next one, then a fresh connection. Bounded by the pool size + 1.
        for _ in 0..=MAX_IDLE_PER_BACKEND {
            let (mut c, fresh) = match self.checkout(rt.id, now) {
                Some(c) => (c, false),
                None => {
                    let (tx, conn) = self.handshake_h1(rt).await?;
                    (
                        Inline {
                            tx,
                            conn: Box::new(conn),
                            closed: false,
                        },
                        true,
                    )
                }
            };
            let ready = std::future::poll_fn(|cx| {
                if c.drive(cx) {
                    return Poll::Ready(false);
                }
                c.tx.poll_ready(cx).map(|r| r.is_ok())
            })
            .await;
            if !ready {
                if fresh {
                    return Err(UpstreamError::Connect(io::Error::other(
                        "backend closed the new connection",
                    )));
                }
                continue;
            }
            let mut fut = std::pin::pin!(c.tx.try_send_request(req));
            let outcome = std::future::poll_fn(|cx| {
                let finished = c.drive(cx);
                match fut.as_mut().poll(cx) {
                    Poll::Ready(r) => Poll::Ready(Some(r)),
                    Poll::Pending if finished => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match outcome {
                Some(Ok(resp)) => {
                    let lease = Lease {
                        conn: Some(c),
                        complete: false,
                        pool: self.clone(),
                        backend: rt.id,
                        client_failed: failed_flag,
                    };
                    return Ok((resp, Some(lease)));
                }
                Some(Err(mut e)) => match e.take_message() {
                    Some(r) if !fresh => {
                        req = r;
                        continue;
                    }
                    _ => {
                        if client_failed(&failed_flag) {
                            c.abort();
                        }
                        return Err(UpstreamError::Http(e.into_error()));
                    }
                },
                None => {
                    if client_failed(&failed_flag) {
                        c.abort();
                    }
                    return Err(UpstreamError::Closed);
                }
            }
        }
        Err(UpstreamError::Connect(io::Error::other(
            "no usable connection",
        )))
    }
}

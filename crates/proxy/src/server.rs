//! Listeners and worker threads: `SO_REUSEPORT` sockets, one single-threaded tokio runtime
//! per worker, the accept loop with the connection limit, per-connection idle timeouts,
//! and graceful shutdown of every client connection.
//!
//! Each worker owns its listener, its backend connection pool and its connections; workers
//! share only the immutable snapshot, atomics and the connection admission state
//! (`admission`: slots, with a share kept for clients that make progress). The accept loop
//! must never block and never hold a lock across `.await`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Conn;
use crate::forward::{ConnCtx, Worker};
use crate::shared::Shared;

/// Binds `n` listening sockets on `addr`. With more than one they share the port through
/// `SO_REUSEPORT` (the kernel spreads connections); port 0 is resolved by the first bind.
pub(crate) fn bind_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        if n > 1 {
            s.set_reuse_port(true)?;
        }
        s.set_nonblocking(true)?;
        s.set_tcp_nodelay(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        let l: std::net::TcpListener = s.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// The raw response written to a connection shed by the connection limit.
fn shed_response(retry_after_s: u32) -> Vec<u8> {
    let body = "over capacity, retry later\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: {retry_after_s}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Runs one worker until `shutdown`, then drains its connections within the grace period.
pub(crate) async fn run_worker(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let worker = Arc::new(Worker::new(shared.clone()));
    let cfg = &shared.config;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(cfg.timeouts.header_read_ms))
        .max_buf_size(cfg.limits.max_header_bytes as usize)
        .max_headers(cfg.limits.max_headers as usize)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.limits.max_header_bytes);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tracker = TaskTracker::new();
    let idle = Duration::from_millis(cfg.timeouts.client_idle_ms);
    let head = Duration::from_millis(cfg.timeouts.header_read_ms);
    let shed = Arc::new(shed_response(cfg.limits.retry_after_s));
    // Pool upkeep: drop connections to backends that left and idle ones past their time.
    let upkeep = {
        let worker = worker.clone();
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let snap = shared.snapshot.load();
                let live: Vec<balance::BackendId> =
                    snap.selector.candidates().iter().map(|c| c.id).collect();
                worker.pool.upkeep(&live, std::time::Instant::now());
            }
        })
    };
    // The strict HTTP/1.1 codec of our own (`[balancer] fast_path`, off by default).
    let fast_path = cfg.fast_path && crate::h1::enabled(cfg);
    // Set at shutdown: every response on an HTTP/1 connection says `connection: close`.
    let closing = Arc::new(AtomicBool::new(false));
    let mut backlog_left = 0usize;
    loop {
        let (stream, peer) = if closing.load(Ordering::Relaxed) {
            // Shutting down: take what the kernel had already accepted, then stop.
            match take_queued(&listener, &mut backlog_left).await {
                Some(x) => x,
                None => break,
            }
        } else {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    stop_accepting(&listener);
                    closing.store(true, Ordering::Relaxed);
                    backlog_left = ACCEPT_QUEUE_DRAIN_MAX;
                    continue;
                }
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
            }
        };
        let _ = stream.set_nodelay(true);
        let admitted = shared.admission.admit();
        if admitted.evicted > 0 {
            shared
                .counters
                .connections_evicted_total
                .fetch_add(admitted.evicted, Ordering::Relaxed);
        }
        let Some(slot) = admitted.slot else {
            shared.counters.shed_total.fetch_add(1, Ordering::Relaxed);
            let shed = shed.clone();
            tracker.spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stream.write_all(&shed).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            continue;
        };
        shared
            .counters
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        shared
            .counters
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        let started = Arc::new(AtomicBool::new(false));
        let local = stream.local_addr().unwrap_or(peer);
        let evict = slot.evict().clone();
        let conn_state = slot.conn().clone();
        let ctx = Arc::new(ConnCtx::new(
            peer,
            local,
            conn_state.active.clone(),
            started.clone(),
            slot,
        ));
        let io = IdleIo::new(stream, idle, head, conn_state.clone(), started);
        let conn: Pin<
            Box<dyn std::future::Future<Output = Result<(), crate::h1::BoxError>> + Send>,
        > = if fast_path {
            // The HTTP/1.1 fast path, handing over to hyper (h2c, upgrades, streamed
            // bodies).
            Box::pin(crate::h1::serve(
                worker.clone(),
                ctx,
                io,
                builder.clone(),
                graceful.watcher(),
                shutdown.clone(),
            ))
        } else {
            let w = worker.clone();
            let closing = closing.clone();
            let svc = hyper::service::service_fn(move |req| {
                let w = w.clone();
                let ctx = ctx.clone();
                let closing = closing.clone();
                // Counted from before the handler until the response body has been
                // sent, so admission never takes a connection with a body still
                // streaming for idle.
                let streaming = Streaming::start(conn_state.clone());
                async move {
                    let http1 = req.version() < hyper::Version::HTTP_2;
                    let mut resp = w.handle(&ctx, req).await;
                    if http1 && closing.load(Ordering::Relaxed) {
                        close_after_response(&mut resp);
                    }
                    Ok::<_, std::convert::Infallible>(resp.map(|body| streaming.wrap(body)))
                }
            });
            let conn = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), svc)
                .into_owned();
            Box::pin(graceful.watch(conn))
        };
        let shared2 = shared.clone();
        tracker.spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("client connection from {peer}: {e}");
                },
                // Evicted to make room (silent before its first request head, or an idle
                // keep-alive connection): just close it.
                () = evict.cancelled() => {}
            }
            shared2
                .counters
                .connections_active
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    upkeep.abort();
    let grace = Duration::from_millis(cfg.timeouts.shutdown_grace_ms);
    let linger = CLOSE_LINGER.min(grace / 2);
    linger_for_clients_to_close(&shared, linger).await;
    if tokio::time::timeout(grace.saturating_sub(linger), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("worker: grace period over with connections still open; closing them");
    }
    // Upgraded connections (WebSockets) are not watched by hyper's graceful shutdown.
    worker.upgrades.close();
    let _ = tokio::time::timeout(Duration::from_millis(100), worker.upgrades.wait()).await;
    tracker.close();
    Ok(())
}

/// At most this many connections already in the kernel's accept queue are taken at
/// shutdown (each worker); the rest would be reset when the listener closes.
const ACCEPT_QUEUE_DRAIN_MAX: usize = 4096;

/// How long an accept may wait at shutdown before the queue is deemed empty.
const ACCEPT_QUEUE_POLL: Duration = Duration::from_millis(10);

/// After the listener closes, open HTTP/1 connections are served for up to this long with
/// `connection: close` on every response, so a keep-alive client learns of the shutdown
/// from a complete response instead of a connection closed under its next request. Then
/// hyper's graceful shutdown closes what is idle and waits for what is in flight.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Graceful stop, step 1: stop accepting without resetting anyone. The accept queue is
/// shrunk to its minimum, so a client connecting from now on has its SYN dropped (its
/// retry finds the port closed: a refused connect) instead of being queued and then
/// reset when the listener closes; the connections the kernel has already completed are
/// still taken by [`take_queued`] and served.
fn stop_accepting(listener: &tokio::net::TcpListener) {
    if let Err(e) = socket2::SockRef::from(listener).listen(0) {
        tracing::debug!("shrinking the accept queue at shutdown: {e}");
    }
}

/// One connection still in the accept queue, if any (waits at most
/// [`ACCEPT_QUEUE_POLL`]; at most `left` more).
async fn take_queued(
    listener: &tokio::net::TcpListener,
    left: &mut usize,
) -> Option<(TcpStream, SocketAddr)> {
    if *left == 0 {
        return None;
    }
    *left -= 1;
    match tokio::time::timeout(ACCEPT_QUEUE_POLL, listener.accept()).await {
        Ok(Ok(x)) => Some(x),
        _ => None,
    }
}

/// Graceful stop, step 2: marks a response as the connection's last (HTTP/1 only; hyper
/// closes the connection once it is written).
fn close_after_response<B>(resp: &mut hyper::Response<B>) {
    resp.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
}

/// Graceful stop, step 3: waits until every client connection has closed (each keep-alive
/// client gets one last response with `connection: close`) or `linger` has passed.
async fn linger_for_clients_to_close(shared: &Shared, linger: Duration) {
    let deadline = Instant::now() + linger;
    while shared.counters.connections_active.load(Ordering::Relaxed) > 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client stream that fails with `TimedOut` when its first request head is not complete
/// within `head` from accept (silent and slowloris connections: hyper's own header read
/// timeout starts only at the first byte, and the protocol sniffing before it has none),
/// or when no request is in flight on it and nothing has been read or written for a whole
/// `idle` period (so an idle connection is closed between `idle` and `2 x idle` after its
/// last activity). Reads and writes only bump a counter (no clock read per I/O); the timer
/// checks it.
pub(crate) struct IdleIo {
    inner: TcpStream,
    idle: Duration,
    /// Deadline for the first request head (checked until `started` is set).
    head_deadline: Instant,
    /// Set by the handler when the first request head has arrived.
    started: Arc<AtomicBool>,
    /// Bumped on every read or write that moved bytes.
    activity: u64,
    /// `activity` when the timer last fired.
    seen: u64,
    sleep: Pin<Box<Sleep>>,
    /// The connection's admission state: requests in flight, last I/O stamp.
    conn: Arc<Conn>,
}

impl IdleIo {
    pub(crate) fn new(
        inner: TcpStream,
        idle: Duration,
        head: Duration,
        conn: Arc<Conn>,
        started: Arc<AtomicBool>,
    ) -> Self {
        let now = Instant::now();
        IdleIo {
            inner,
            idle,
            head_deadline: now + head,
            started,
            activity: 0,
            seen: 0,
            sleep: Box::pin(tokio::time::sleep_until(now + idle.min(head))),
            conn,
        }
    }

    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let started = self.started.load(Ordering::Relaxed);
            if !started && now >= self.head_deadline {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete request head within header_read_ms of accept",
                ));
            }
            if self.activity == self.seen && self.conn.active.load(Ordering::Relaxed) == 0 {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client connection idle",
                ));
            }
            self.seen = self.activity;
            let mut deadline = now + self.idle;
            if !started {
                deadline = deadline.min(self.head_deadline);
            }
            self.sleep.as_mut().reset(deadline);
        }
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.activity = self.activity.wrapping_add(1);
                    self.conn.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_idle(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            self.activity = self.activity.wrapping_add(1);
            self.conn.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            self.activity = self.activity.wrapping_add(1);
            self.conn.touch();
        }
        r
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

/// Counts one response in [`Conn::streaming`] from before its handler runs until its body
/// has been sent (or dropped).
pub(crate) struct Streaming(Option<Arc<Conn>>);

impl Streaming {
    fn start(conn: Arc<Conn>) -> Streaming {
        conn.streaming.fetch_add(1, Ordering::Relaxed);
        Streaming(Some(conn))
    }

    fn wrap<B>(self, inner: B) -> StreamingBody<B> {
        StreamingBody {
            inner,
            streaming: self,
        }
    }

    fn end(&mut self) {
        if let Some(c) = self.0.take() {
            c.streaming.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.end();
    }
}

/// A response body that keeps its connection counted as streaming until it ends.
pub(crate) struct StreamingBody<B> {
    inner: B,
    streaming: Streaming,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for StreamingBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &r {
            self.streaming.end();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

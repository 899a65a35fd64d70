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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
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
        let active = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicBool::new(false));
        let local = stream.local_addr().unwrap_or(peer);
        let evict = slot.evict.clone();
        let ctx = Arc::new(ConnCtx::new(
            peer,
            local,
            active.clone(),
            started.clone(),
            slot,
        ));
        let io = IdleIo::new(stream, idle, head, active, started);
        // The HTTP/1.1 fast path, handing over to hyper (h2c, upgrades, streamed bodies).
        let conn = crate::h1::serve(
            worker.clone(),
            ctx,
            io,
            builder.clone(),
            graceful.watcher(),
            shutdown.clone(),
        );
        let shared2 = shared.clone();
        tracker.spawn(async move {
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!("client connection from {peer}: {e}");
                },
                // Evicted before its first request head to make room: just close it.
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
    if tokio::time::timeout(grace, graceful.shutdown())
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
    active: Arc<AtomicUsize>,
}

impl IdleIo {
    pub(crate) fn new(
        inner: TcpStream,
        idle: Duration,
        head: Duration,
        active: Arc<AtomicUsize>,
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
            active,
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
            if self.activity == self.seen && self.active.load(Ordering::Relaxed) == 0 {
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

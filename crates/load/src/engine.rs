//! The hot path: one generator thread with a single-threaded tokio runtime, a dispatcher
//! that releases requests at their scheduled times (open loop) and a pool of connection
//! workers, each owning one keep-alive connection: HTTP/1.1 through the crate's own
//! minimal client ([`crate::h1`]), h2c through hyper's `client::conn::http2`.
//!
//! Why this shape: everything a thread touches is thread-local (`Rc`, `RefCell`, `Cell`),
//! so there is no lock or atomic on the request path; each worker reads its own socket in
//! its own task; HTTP/1.1 requests that do not vary are encoded to bytes once per
//! (target, kind).
//!
//! Connections end when the server says so (`Connection: close`, HTTP/1.0, a
//! close-delimited body), when it closes them, or on any error; the worker then opens a
//! new one for its next request and counts a reconnect (both modes). A request that
//! finds a reused connection closed before any response byte (the server's idle timeout
//! raced it) is sent again once on a fresh connection when its method is idempotent,
//! and counted as a reconnect, not an error. The dispatcher waits with [`Pacer`]
//! (timerfd plus a short spin), so requests leave within microseconds of their schedule;
//! the lag of every send is recorded and reported.
//!
//! Open loop: the dispatcher never waits for a response. A due request goes into the
//! thread's queue; an idle worker takes it, or, when none is idle, a new worker (a new
//! connection) is started, up to the thread's connection cap. Latency runs from the due
//! time, so time spent queued or connecting is charged to the request (no coordinated
//! omission). Closed loop: a fixed set of workers sends back to back until the deadline.
//!
//! Bounded: the schedule is finite, every request has a timeout, the queue has a cap,
//! and the thread stops waiting for workers at end + 2 x timeout + 1 s. This module
//! must never block the thread outside the runtime or hold a `RefCell` borrow across an
//! `.await`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::SmallRng;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::config::{Catalog, SessionSpec};
use crate::h1;
use crate::mix::{Kind, KindTable, Role, User, UserState, Users, Vars, Zipf, render, thread_rng};
use crate::pacer::Pacer;
use crate::profile::RateProfile;
use crate::stats::{Acc, Aggregator, Outcome, ThreadRecorder};

/// A target after name resolution.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedTarget {
    pub addr: SocketAddr,
    pub authority: String,
}

/// Pacing of one thread.
#[derive(Debug, Clone)]
pub(crate) enum ThreadMode {
    Open { profile: RateProfile, phase: f64 },
    Closed { connections: usize },
}

/// Everything one generator thread needs.
pub(crate) struct ThreadPlan {
    pub index: usize,
    pub start: std::time::Instant,
    pub duration: Duration,
    pub mode: ThreadMode,
    pub targets: Vec<ResolvedTarget>,
    pub kinds: KindTable,
    pub session: Option<SessionSpec>,
    pub users_cap: usize,
    pub catalog: Catalog,
    pub timeout: Duration,
    pub slice: Duration,
    pub late_threshold: Duration,
    pub max_connections: usize,
    pub min_connections: usize,
    pub max_queue: usize,
    pub h2c: bool,
    pub seed: u64,
    pub agg: Arc<Aggregator>,
    pub cancel: CancellationToken,
}

/// What a thread hands back.
pub(crate) struct ThreadResult {
    pub kinds: Vec<Acc>,
    pub targets: Vec<Acc>,
    pub total: Acc,
    pub connections_opened: u64,
    pub reconnects: u64,
    pub lag: hdrhistogram::Histogram<u64>,
    pub precise_timer: bool,
}

/// Runs one generator thread to completion on the calling OS thread.
pub(crate) fn run_thread(plan: ThreadPlan) -> std::io::Result<ThreadResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, thread_main(plan)))
}

const NO_USER: u32 = u32::MAX;

/// One request to send.
#[derive(Debug, Clone, Copy)]
struct Job {
    /// When it was due (open loop) or created (closed loop).
    intended: Instant,
    kind: u32,
    user: u32,
}

/// Request parts that do not vary, per (target, kind).
struct StaticReq {
    /// h2c: the absolute URI, headers and body of a hyper request.
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// HTTP/1.1: Host, the kind's validated headers, and the whole encoded request when
    /// neither path nor body is templated and no token is added (else empty).
    host: HeaderValue,
    fields: Vec<(HeaderName, HeaderValue)>,
    encoded: Vec<u8>,
}

/// A parsed URI's path and query, or `/` when the rendered path is not a valid one.
fn request_target(path: &str) -> String {
    match path.parse::<Uri>() {
        Ok(u) if u.scheme().is_none() => u
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        _ => "/".into(),
    }
}

struct Ctx {
    plan: ThreadPlan,
    closed_loop: bool,
    start: Instant,
    end: Instant,
    rec: RefCell<ThreadRecorder>,
    queue: RefCell<VecDeque<Job>>,
    work: Notify,
    all_done: Notify,
    idle: Cell<usize>,
    /// Workers without a connection (starting, connecting, or reconnecting).
    connecting: Cell<usize>,
    workers: Cell<usize>,
    spawned: Cell<usize>,
    /// No more jobs will be queued.
    closing: Cell<bool>,
    /// After this, no job is started.
    stop_at: Cell<Option<Instant>>,
    rng: RefCell<SmallRng>,
    zipf: Zipf,
    users: RefCell<Option<Users>>,
    seq: Cell<u64>,
    statics: Vec<Vec<StaticReq>>,
}

impl Ctx {
    fn new(plan: ThreadPlan, agg: Arc<Aggregator>) -> Ctx {
        let now_std = std::time::Instant::now();
        let now = Instant::now();
        // Convert the shared std start instant into this runtime's clock.
        let start = if plan.start > now_std {
            now + (plan.start - now_std)
        } else {
            now - (now_std - plan.start)
        };
        let statics = plan
            .targets
            .iter()
            .map(|t| {
                plan.kinds
                    .kinds
                    .iter()
                    .map(|k| {
                        let host = HeaderValue::from_str(&t.authority)
                            .unwrap_or(HeaderValue::from_static("localhost"));
                        let fields: Vec<(HeaderName, HeaderValue)> = k
                            .headers
                            .iter()
                            .filter_map(|(n, v)| {
                                Some((
                                    HeaderName::try_from(n.as_str()).ok()?,
                                    HeaderValue::try_from(v.as_str()).ok()?,
                                ))
                            })
                            .collect();
                        let mut headers = HeaderMap::with_capacity(fields.len());
                        for (n, v) in &fields {
                            headers.append(n.clone(), v.clone());
                        }
                        let body = Bytes::from(k.body.clone().unwrap_or_default());
                        let mut encoded = Vec::new();
                        if !plan.h2c && !k.templated && !k.auth {
                            h1::encode_request(
                                &mut encoded,
                                &k.method,
                                &request_target(&k.path),
                                &host,
                                &fields,
                                None,
                                &body,
                            );
                        }
                        StaticReq {
                            uri: make_uri(plan.h2c, &t.authority, &k.path),
                            headers,
                            body,
                            host,
                            fields,
                            encoded,
                        }
                    })
                    .collect()
            })
            .collect();
        let users = plan.session.as_ref().map(|s| {
            Users::new(
                format!("load{}-{}", plan.seed, plan.index),
                plan.users_cap,
                s.requests_per_session,
            )
        });
        let rec = ThreadRecorder::new(
            plan.index,
            plan.kinds.kinds.len(),
            plan.targets.len(),
            plan.start,
            plan.slice,
            plan.late_threshold,
            agg,
        );
        Ctx {
            closed_loop: matches!(plan.mode, ThreadMode::Closed { .. }),
            start,
            end: start + plan.duration,
            rec: RefCell::new(rec),
            queue: RefCell::new(VecDeque::new()),
            work: Notify::new(),
            all_done: Notify::new(),
            idle: Cell::new(0),
            connecting: Cell::new(0),
            workers: Cell::new(0),
            spawned: Cell::new(0),
            closing: Cell::new(false),
            stop_at: Cell::new(None),
            rng: RefCell::new(thread_rng(plan.seed, plan.index)),
            zipf: Zipf::new(plan.catalog.products, plan.catalog.zipf_s),
            users: RefCell::new(users),
            seq: Cell::new(0),
            statics,
            plan,
        }
    }

    /// Records a std-clock-based event: the recorder's start is a std instant.
    fn std(&self, t: Instant) -> std::time::Instant {
        t.into_std()
    }

    /// Picks the next request: a mix draw, or the next step of an idle user's session.
    fn make_job(&self, intended: Instant) -> Option<Job> {
        let mut rng = self.rng.borrow_mut();
        let mut users = self.users.borrow_mut();
        let Some(users) = users.as_mut() else {
            return Some(Job {
                intended,
                kind: self.plan.kinds.pick(&mut *rng) as u32,
                user: NO_USER,
            });
        };
        let id = users.take()?;
        let kinds = &self.plan.kinds;
        let kind = match users.next_role(id) {
            Role::Signup => kinds.signup.unwrap_or(0),
            Role::Login => kinds.login.unwrap_or(0),
            Role::Plain => kinds.pick(&mut *rng),
        };
        Some(Job {
            intended,
            kind: kind as u32,
            user: id,
        })
    }

    fn stopped(&self, now: Instant) -> bool {
        self.plan.cancel.is_cancelled() || self.stop_at.get().is_some_and(|s| now >= s)
    }

    /// The next job for a worker, or `None` when the worker should exit.
    async fn next_job(&self) -> Option<Job> {
        loop {
            let now = Instant::now();
            if self.stopped(now) {
                return None;
            }
            if self.closed_loop {
                if now >= self.end {
                    return None;
                }
                return self.make_job(now);
            }
            if let Some(j) = self.queue.borrow_mut().pop_front() {
                return Some(j);
            }
            if self.closing.get() {
                return None;
            }
            self.idle.set(self.idle.get() + 1);
            tokio::select! {
                _ = self.work.notified() => {}
                _ = self.plan.cancel.cancelled() => {}
            }
            self.idle.set(self.idle.get() - 1);
        }
    }

    /// The path and body of a templated request kind, rendered for `user` with the next
    /// sequence number (shared by the HTTP/1.1 and h2c request builders).
    fn render_templated(&self, kind: &Kind, user: Option<&User>) -> (String, Bytes) {
        let n = self.seq.get();
        self.seq.set(n + 1);
        let vars = Vars {
            username: user.map(|u| u.name.as_str()).unwrap_or(""),
            password: self
                .plan
                .session
                .as_ref()
                .map(|s| s.password.as_str())
                .unwrap_or(""),
            n,
        };
        let mut rng = self.rng.borrow_mut();
        let path = render(&kind.path, &vars, &self.zipf, &mut *rng);
        let body = kind
            .body
            .as_deref()
            .map(|b| Bytes::from(render(b, &vars, &self.zipf, &mut *rng)))
            .unwrap_or_default();
        (path, body)
    }

    /// The encoded HTTP/1.1 request for `job` to target `t`: the pre-encoded bytes, or
    /// `buf` filled with a rendered one.
    fn encode_h1<'a>(&'a self, t: usize, job: &Job, buf: &'a mut Vec<u8>) -> &'a [u8] {
        let st = &self.statics[t][job.kind as usize];
        if !st.encoded.is_empty() {
            return &st.encoded;
        }
        let kind = &self.plan.kinds.kinds[job.kind as usize];
        let users = self.users.borrow();
        let user = users
            .as_ref()
            .filter(|_| job.user != NO_USER)
            .map(|u| &u.users[job.user as usize]);
        let (path, body) = if kind.templated {
            let (path, body) = self.render_templated(kind, user);
            (request_target(&path), body)
        } else {
            (request_target(&kind.path), st.body.clone())
        };
        let auth = if kind.auth
            && let Some(UserState::Ready { token, .. }) = user.map(|u| &u.state)
        {
            HeaderValue::try_from(format!("Bearer {token}")).ok()
        } else {
            None
        };
        buf.clear();
        h1::encode_request(
            buf,
            &kind.method,
            &path,
            &st.host,
            &st.fields,
            auth.as_ref(),
            &body,
        );
        buf
    }

    /// Builds the h2c request for `job` on connection to target `t`.
    fn build(&self, t: usize, job: &Job) -> Request<Full<Bytes>> {
        let kind = &self.plan.kinds.kinds[job.kind as usize];
        let st = &self.statics[t][job.kind as usize];
        let users = self.users.borrow();
        let user = users
            .as_ref()
            .filter(|_| job.user != NO_USER)
            .map(|u| &u.users[job.user as usize]);
        let (uri, body) = if kind.templated {
            let (path, body) = self.render_templated(kind, user);
            let authority = &self.plan.targets[t].authority;
            (make_uri(self.plan.h2c, authority, &path), body)
        } else {
            (st.uri.clone(), st.body.clone())
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = kind.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = st.headers.clone();
        if kind.auth
            && let Some(UserState::Ready { token, .. }) = user.map(|u| &u.state)
            && let Ok(v) = HeaderValue::try_from(format!("Bearer {token}"))
        {
            req.headers_mut().insert(AUTHORIZATION, v);
        }
        req
    }

    /// Hands a finished job's outcome to its user, if it has one.
    fn finish_user(&self, job: &Job, status: Option<u16>, body: Option<Vec<u8>>) {
        if job.user == NO_USER {
            return;
        }
        let role = self.plan.kinds.kinds[job.kind as usize].role;
        let token = body.and_then(|b| {
            serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_string))
        });
        if let Some(u) = self.users.borrow_mut().as_mut() {
            u.finish(job.user, role, status, token);
        }
    }

    fn spawn_worker(self: &Rc<Self>) {
        let n = self.spawned.get();
        self.spawned.set(n + 1);
        self.workers.set(self.workers.get() + 1);
        self.connecting.set(self.connecting.get() + 1);
        let target = n % self.plan.targets.len();
        tokio::task::spawn_local(worker(self.clone(), target));
    }
}

fn make_uri(absolute: bool, authority: &str, path: &str) -> Uri {
    let s = if absolute {
        format!("http://{authority}{path}")
    } else {
        path.to_string()
    };
    s.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

async fn thread_main(plan: ThreadPlan) -> ThreadResult {
    let agg = plan.agg.clone();
    let ctx = Rc::new(Ctx::new(plan, agg));
    // Rolls the recorder into the next slice just after each slice boundary, so a slice
    // is handed over (and progress can report it) within milliseconds of its end, even
    // when nothing completes (a stalled target must still produce its empty slices).
    let ticker = {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            let slice = ctx.plan.slice;
            let mut k: u32 = 1;
            loop {
                sleep_until(ctx.start + slice * k + Duration::from_millis(1)).await;
                let now = Instant::now();
                ctx.rec.borrow_mut().roll(now.into_std());
                // Skip boundaries that passed while this thread was descheduled.
                let since = now.saturating_duration_since(ctx.start);
                k = (since.as_nanos() / slice.as_nanos().max(1)) as u32 + 1;
            }
        })
    };
    let mut precise = true;
    match ctx.plan.mode.clone() {
        ThreadMode::Open { profile, phase } => {
            for _ in 0..ctx.plan.min_connections.min(ctx.plan.max_connections) {
                ctx.spawn_worker();
            }
            precise = dispatch(&ctx, &profile, phase).await;
        }
        ThreadMode::Closed { connections } => {
            tokio::select! {
                _ = sleep_until(ctx.start) => {}
                _ = ctx.plan.cancel.cancelled() => {}
            }
            for _ in 0..connections {
                ctx.spawn_worker();
            }
        }
    }
    // Wait for the workers, bounded: each request has a timeout, queued jobs may still go
    // out until end + timeout, after which nothing new starts.
    let hard = ctx.end + ctx.plan.timeout * 2 + Duration::from_secs(1);
    while ctx.workers.get() > 0 {
        tokio::select! {
            _ = ctx.all_done.notified() => {}
            _ = sleep_until(hard) => break,
            _ = ctx.plan.cancel.cancelled(), if ctx.stop_at.get().is_none() => {
                ctx.stop_at.set(Some(Instant::now()));
                ctx.work.notify_waiters();
            }
        }
    }
    ticker.abort();
    let leftover = ctx.queue.borrow_mut().drain(..).count();
    let mut rec = ctx.rec.borrow_mut();
    let now = Instant::now().into_std();
    for _ in 0..leftover {
        rec.dropped(now);
    }
    rec.finish();
    ThreadResult {
        kinds: rec.kinds.clone(),
        targets: rec.targets.clone(),
        total: rec.total.clone(),
        connections_opened: rec.connections_opened,
        reconnects: rec.reconnects,
        lag: rec.lag.clone(),
        precise_timer: precise,
    }
}

/// Releases requests at their scheduled times. Never waits for a response. Returns
/// whether the high-resolution timer was used throughout.
async fn dispatch(ctx: &Rc<Ctx>, profile: &RateProfile, phase: f64) -> bool {
    let mut pacer = Pacer::new();
    let mut now = Instant::now();
    for offset in profile.schedule(phase) {
        let due = ctx.start + offset;
        if due > now {
            tokio::select! {
                _ = pacer.wait_until(due) => {}
                _ = ctx.plan.cancel.cancelled() => break,
            }
            now = Instant::now();
        }
        let now_std = ctx.std(now);
        ctx.rec.borrow_mut().scheduled(now_std);
        if ctx.queue.borrow().len() >= ctx.plan.max_queue {
            ctx.rec.borrow_mut().dropped(now_std);
            continue;
        }
        let Some(job) = ctx.make_job(due) else {
            // Every session user is busy and the user cap is reached.
            ctx.rec.borrow_mut().dropped(now_std);
            continue;
        };
        let queued = {
            let mut q = ctx.queue.borrow_mut();
            q.push_back(job);
            q.len()
        };
        if ctx.idle.get() > 0 {
            ctx.work.notify_one();
        } else if ctx.workers.get() < ctx.plan.max_connections
            && queued > ctx.connecting.get()
            && ctx.connecting.get() < (ctx.workers.get() / 4).max(4)
        {
            // Grow the pool, but with a bounded number of connects in flight: when the
            // generator itself fell behind (a burst of due requests after the thread was
            // descheduled), opening a connection per queued request would only add work.
            ctx.spawn_worker();
        }
    }
    ctx.closing.set(true);
    // Queued jobs may still go out for one timeout after the end; then the thread stops.
    let stop = Instant::now().max(ctx.end) + ctx.plan.timeout;
    ctx.stop_at.set(Some(if ctx.plan.cancel.is_cancelled() {
        Instant::now()
    } else {
        stop
    }));
    ctx.work.notify_waiters();
    pacer.precise()
}

/// How a connection ended, as far as the worker is concerned.
enum Ended {
    /// No more work, or the connection is unusable: reconnect for the next job, if any.
    Done,
    /// The connection was found closed before this job got any response byte; send it
    /// again on a fresh connection.
    Retry(Job),
}

/// One connection slot: connect, serve jobs until the connection is unusable, reconnect.
async fn worker(ctx: Rc<Ctx>, target: usize) {
    let mut backoff = Duration::from_millis(1);
    let mut had_connection = false;
    let mut retry: Option<Job> = None;
    loop {
        let job = match retry.take() {
            Some(j) => j,
            None => match ctx.next_job().await {
                Some(j) => j,
                None => break,
            },
        };
        let addr = ctx.plan.targets[target].addr;
        match timeout(ctx.plan.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                backoff = Duration::from_millis(1);
                let _ = stream.set_nodelay(true);
                {
                    let mut rec = ctx.rec.borrow_mut();
                    rec.connection_opened();
                    if had_connection {
                        rec.reconnected();
                    }
                }
                had_connection = true;
                ctx.connecting.set(ctx.connecting.get() - 1);
                let ended = if ctx.plan.h2c {
                    serve_h2(&ctx, target, stream, job).await;
                    Ended::Done
                } else {
                    serve_h1(&ctx, target, stream, job).await
                };
                if let Ended::Retry(j) = ended {
                    retry = Some(j);
                }
                ctx.connecting.set(ctx.connecting.get() + 1);
            }
            Ok(Err(_)) | Err(_) => {
                let now = Instant::now();
                let from = if ctx.closed_loop { now } else { job.intended };
                ctx.rec.borrow_mut().done(
                    job.kind as usize,
                    target,
                    ctx.std(from),
                    ctx.std(now),
                    Outcome::Connect,
                );
                ctx.finish_user(&job, None, None);
                // Bounded backoff so a dead target does not turn into a connect storm.
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = ctx.plan.cancel.cancelled() => {}
                }
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
        }
    }
    ctx.connecting.set(ctx.connecting.get() - 1);
    ctx.workers.set(ctx.workers.get() - 1);
    if ctx.workers.get() == 0 {
        ctx.all_done.notify_one();
    }
}

/// Largest login response body kept (for its token).
const KEEP_BODY: usize = 64 * 1024;

/// Sends jobs on one HTTP/1.1 connection until it ends, times out, breaks, or there is
/// no more work.
async fn serve_h1(ctx: &Rc<Ctx>, target: usize, stream: TcpStream, first: Job) -> Ended {
    let mut conn = h1::Conn::new(stream);
    let mut buf = Vec::with_capacity(512);
    let mut next = Some(first);
    let mut reused = false;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match ctx.next_job().await {
                Some(j) => j,
                None => return Ended::Done,
            },
        };
        let kind = &ctx.plan.kinds.kinds[job.kind as usize];
        let keep_body = (kind.role == Role::Login).then_some(KEEP_BODY);
        let head = kind.method == http::Method::HEAD;
        let idempotent = kind.method.is_idempotent();
        let req = ctx.encode_h1(target, &job, &mut buf);
        let sent_at = Instant::now();
        let from = if ctx.closed_loop {
            sent_at
        } else {
            job.intended
        };
        let res = timeout(ctx.plan.timeout, conn.exchange(req, head, keep_body)).await;
        if reused && idempotent && matches!(res, Ok(Err(h1::H1Error::Closed(0)))) {
            // The server closed this idle connection as we reused it: not the request's
            // fault. Sent again once, on a fresh connection (which is never retried);
            // only that send is recorded.
            return Ended::Retry(job);
        }
        // Recorded after the exchange (with the time it left) so a retried send counts
        // once.
        ctx.rec.borrow_mut().sent(
            job.kind as usize,
            target,
            ctx.std(job.intended),
            ctx.std(sent_at),
        );
        let now = Instant::now();
        let (outcome, keep, status, body) = match res {
            Err(_) => (Outcome::Timeout, false, None, None),
            Ok(Err(_)) => (Outcome::Other, false, None, None),
            Ok(Ok(x)) => (
                Outcome::Status(x.status),
                x.keep_alive,
                Some(x.status),
                x.body,
            ),
        };
        ctx.rec.borrow_mut().done(
            job.kind as usize,
            target,
            ctx.std(from),
            ctx.std(now),
            outcome,
        );
        ctx.finish_user(&job, status, body);
        if !keep {
            return Ended::Done;
        }
        reused = true;
    }
}

async fn serve_h2(ctx: &Rc<Ctx>, target: usize, stream: TcpStream, first: Job) {
    let hs = http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await;
    match hs {
        Ok((tx, conn)) => drive(conn, request_loop(ctx, target, tx, first)).await,
        Err(_) => fail_first(ctx, target, &first),
    }
}

fn fail_first(ctx: &Ctx, target: usize, job: &Job) {
    let now = Instant::now();
    ctx.rec.borrow_mut().done(
        job.kind as usize,
        target,
        ctx.std(job.intended),
        ctx.std(now),
        Outcome::Other,
    );
    ctx.finish_user(job, None, None);
}

/// Polls the connection and the request loop in one task. When the connection ends
/// first (server closed it), it is dropped at once, so the sender sees the close and
/// the request loop returns after accounting for its in-flight request.
async fn drive<C: Future, W: Future>(conn: C, work: W) {
    let mut work = pin!(work);
    {
        let conn = pin!(conn);
        tokio::select! {
            biased;
            _ = &mut work => return,
            _ = conn => {}
        }
    }
    work.await;
}

/// Sends jobs on one h2c connection until it breaks, times out, or there is no more work.
async fn request_loop(
    ctx: &Rc<Ctx>,
    target: usize,
    mut tx: http2::SendRequest<Full<Bytes>>,
    first: Job,
) {
    let mut next = Some(first);
    loop {
        let ready = matches!(timeout(ctx.plan.timeout, tx.ready()).await, Ok(Ok(())));
        let job = match next.take() {
            Some(j) => j,
            None if !ready => return,
            None => match ctx.next_job().await {
                Some(j) => j,
                None => return,
            },
        };
        if !ready {
            fail_first(ctx, target, &job);
            return;
        }
        let req = ctx.build(target, &job);
        let want_body = ctx.plan.kinds.kinds[job.kind as usize].role == Role::Login;
        let sent_at = Instant::now();
        ctx.rec.borrow_mut().sent(
            job.kind as usize,
            target,
            ctx.std(job.intended),
            ctx.std(sent_at),
        );
        let from = if ctx.closed_loop {
            sent_at
        } else {
            job.intended
        };
        let res = timeout(ctx.plan.timeout, async {
            let resp = tx.send_request(req).await?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut buf = want_body.then(Vec::new);
            while let Some(frame) = body.frame().await {
                let frame = frame?;
                if let (Some(b), Some(d)) = (buf.as_mut(), frame.data_ref())
                    && b.len() < KEEP_BODY
                {
                    b.extend_from_slice(d);
                }
            }
            Ok::<_, hyper::Error>((status, buf))
        })
        .await;
        let now = Instant::now();
        let (outcome, keep, status, body) = match res {
            Err(_) => (Outcome::Timeout, false, None, None),
            Ok(Err(_)) => (Outcome::Other, false, None, None),
            Ok(Ok((s, b))) => (Outcome::Status(s), true, Some(s), b),
        };
        ctx.rec.borrow_mut().done(
            job.kind as usize,
            target,
            ctx.std(from),
            ctx.std(now),
            outcome,
        );
        ctx.finish_user(&job, status, body);
        if !keep {
            return;
        }
    }
}

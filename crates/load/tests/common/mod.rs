//! Test servers for the load generator's in-process tests: real HTTP on loopback, each in
//! its own OS thread and runtime so the generator under test never shares a scheduler
//! with them. Every server stops when its guard drops.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::sync::CancellationToken;

/// How the test server answers.
#[derive(Clone)]
pub enum Behaviour {
    /// 200 at once, except: `/missing` 404, `/fail` 503, `/slow` after 2 s.
    Plain,
    /// Every request arriving in the first `stall` of each `period` (from server start)
    /// is held until that window ends.
    Stall { period: Duration, stall: Duration },
    /// One request at a time, each taking `service` (a server with a fixed capacity).
    Serial { service: Duration },
}

/// A running test server; stops on drop.
pub struct Server {
    pub addr: SocketAddr,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    b: Behaviour,
    started: Instant,
    lock: Arc<tokio::sync::Mutex<()>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let ok = || Response::new(Full::new(Bytes::from_static(b"ok\n")));
    let status = |s: u16| {
        let mut r = ok();
        *r.status_mut() = hyper::StatusCode::from_u16(s).unwrap();
        r
    };
    Ok(match b {
        Behaviour::Plain => match req.uri().path() {
            "/missing" => status(404),
            "/fail" => status(503),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                ok()
            }
            _ => ok(),
        },
        Behaviour::Stall { period, stall } => {
            let phase =
                Duration::from_nanos((started.elapsed().as_nanos() % period.as_nanos()) as u64);
            if phase < stall {
                tokio::time::sleep(stall - phase).await;
            }
            ok()
        }
        Behaviour::Serial { service } => {
            let _g = lock.lock().await;
            tokio::time::sleep(service).await;
            ok()
        }
    })
}

/// Starts a server (HTTP/1.1 and h2c) on 127.0.0.1:0.
pub fn start(b: Behaviour) -> Server {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let started = Instant::now();
            let lock = Arc::new(tokio::sync::Mutex::new(()));
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = c.cancelled() => return,
                };
                let _ = stream.set_nodelay(true);
                let b = b.clone();
                let lock = lock.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        answer(req, b.clone(), started, lock.clone())
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = c.cancelled() => {}
                    }
                });
            }
        });
    });
    Server {
        addr,
        cancel,
        thread: Some(thread),
    }
}

/// A listener that accepts exactly one connection (the generator's reachability probe)
/// and then closes, so every later connect is refused.
pub fn accept_once() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let _ = l.accept();
        drop(l);
    });
    addr
}

//! Shared by the fleet's integration tests: a tiny HTTP instance served by the test
//! binary itself, and a minimal test runner.
//!
//! The test binaries use `harness = false`: when started with `FLEET_TEST_ADDR` set they
//! are an *instance* (a real child process the fleet supervises); otherwise they run
//! their tests. This gives real processes without a separate binary. The instance never
//! lives longer than `MAX_LIFETIME` and only listens on loopback.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// An instance exits on its own after this long, whatever happens to the test.
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);

/// Runs the instance and exits if this process was started as one; returns otherwise.
pub fn serve_if_child() {
    let Ok(addr) = std::env::var("FLEET_TEST_ADDR") else {
        return;
    };
    let id = std::env::var("FLEET_TEST_ID").unwrap_or_default();
    let mode = std::env::var("FLEET_TEST_MODE").unwrap_or_else(|_| "ok".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let code = rt.block_on(serve(addr.parse().expect("FLEET_TEST_ADDR"), id, mode));
    std::process::exit(code);
}

async fn serve(addr: SocketAddr, id: String, mode: String) -> i32 {
    if let Some(ms) = mode.strip_prefix("alloc_after_ms:") {
        // Serve (and become ready), then allocate and touch memory until the kernel's
        // OOM killer stops it at its envelope's limit (bounded at 2 GiB regardless).
        let ms = ms.parse().unwrap_or(0);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            allocate_mib(2048);
        });
    }
    if let Some(ms) = mode.strip_prefix("slow_start_ms:") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("instance {id}: bind {addr}: {e}");
            return 3;
        }
    };
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("sig");
    let tracker = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let deadline = tokio::time::sleep(MAX_LIFETIME);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return 4,
            _ = term.recv() => {
                if mode == "ignore_term" {
                    continue;
                }
                break;
            }
            acc = listener.accept() => {
                let Ok((sock, _)) = acc else { continue };
                let (id, mode, stop) = (id.clone(), mode.clone(), stop.clone());
                tracker.spawn(async move {
                    let _ = conn(sock, &id, &mode, stop).await;
                });
            }
        }
    }
    // Graceful: stop accepting, let in-flight requests finish (bounded).
    drop(listener);
    stop.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    0
}

async fn conn(
    sock: tokio::net::TcpStream,
    id: &str,
    mode: &str,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    // Keep-alive, bounded: at most 100 000 requests per connection.
    for _ in 0..100_000 {
        let mut line = String::new();
        let read = tokio::select! {
            n = r.read_line(&mut line) => n?,
            // Idle keep-alive connections close at shutdown.
            _ = stop.cancelled() => return Ok(()),
        };
        if read == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut len = 0usize;
        let mut client_close = false;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("connection")
                && v.trim().eq_ignore_ascii_case("close")
            {
                client_close = true;
            }
        }
        let mut body = vec![0u8; len.min(1 << 20)];
        r.read_exact(&mut body).await?;
        let (status, text) = match path.as_str() {
            "/readyz" if mode == "never_ready" => (503, "not ready".to_string()),
            "/readyz" | "/healthz" => (200, "ok".to_string()),
            "/id" => (200, id.to_string()),
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                (200, format!("slow from {id}"))
            }
            "/spin" => {
                // About 20 ms of CPU, for CPU sampling tests.
                let t = std::time::Instant::now();
                let mut x = 1u64;
                while t.elapsed() < Duration::from_millis(20) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                (200, format!("{}", x & 1))
            }
            _ => (200, format!("hello from {id}")),
        };
        let closing = stop.is_cancelled() || client_close;
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\ncontent-type: text/plain\r\n{}\r\n{text}",
            text.len(),
            if closing { "Connection: close\r\n" } else { "" }
        );
        w.write_all(resp.as_bytes()).await?;
        if closing {
            return Ok(());
        }
    }
    Ok(())
}

/// Allocates and touches `mib` MiB in 4 MiB steps, keeping all of it, then sleeps; used
/// to provoke an OOM kill under a memory limit.
pub fn allocate_mib(mib: usize) {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for _ in 0..mib / 4 {
        kept.push(vec![1u8; 4 << 20]);
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_secs(60));
    drop(kept);
}

/// A fleet config running this test binary as the instance in `mode`.
pub fn instance_config(tag: &str, instances: u32, mode: &str) -> fleet::Config {
    let dir = temp_dir(tag);
    fleet::Config {
        instances,
        command: vec!["{exe}".into()],
        env: BTreeMap::from([
            ("FLEET_TEST_ADDR".to_string(), "{addr}".to_string()),
            ("FLEET_TEST_ID".to_string(), "{id}".to_string()),
            ("FLEET_TEST_MODE".to_string(), mode.to_string()),
        ]),
        data_dir: dir,
        ready_timeout_ms: 10_000,
        ready_poll_ms: 50,
        drain_grace_ms: 2_000,
        stop_grace_ms: 2_000,
        restart_backoff_initial_ms: 200,
        restart_backoff_max_ms: 2_000,
        sync_period_ms: 200,
        child_output: fleet::config::ChildOutput::Inherit,
        ..fleet::Config::default()
    }
}

/// This test binary (the instance program).
pub fn me() -> PathBuf {
    std::env::current_exe().expect("current_exe")
}

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let p = std::env::temp_dir().join(format!("fleet-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).expect("temp dir");
    p
}

/// Whether a process is alive (not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// A blocking GET over a fresh connection: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timeout"))??;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("read timeout"))??;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Runs `tests` one by one (each on a fresh runtime), prints a summary and exits
/// non-zero when any failed. Honours a substring filter given as the first argument.
pub fn run_tests(tests: &[(&str, fn())]) {
    let filter: Option<String> = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, f) in tests {
        if filter
            .as_ref()
            .is_some_and(|flt| !name.contains(flt.as_str()))
        {
            continue;
        }
        ran += 1;
        eprintln!("test {name} ...");
        let started = std::time::Instant::now();
        match std::panic::catch_unwind(f) {
            Ok(()) => eprintln!("test {name} ... ok ({:?})", started.elapsed()),
            Err(_) => {
                eprintln!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    eprintln!("\n{ran} tests, {} failed {failed:?}", failed.len());
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

/// Runs an async test body on a fresh multi-threaded runtime.
pub fn block_on<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

//! Real processes for the demo: `scaleout shop` instances on free loopback ports,
//! killed when their guard drops, with CPU time read from /proc.
//!
//! Must never: leave a child running after the demo (kill_on_drop on every child) or
//! wait without a deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::DemoError;
use crate::http;

/// A running `scaleout shop` instance.
#[derive(Debug)]
pub struct Instance {
    /// Instance id (also its `x-instance-id`).
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it serves `/metrics` (`--metrics-listen`; never on `addr`).
    pub metrics_addr: SocketAddr,
    child: tokio::process::Child,
}

impl Instance {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// SIGKILL now (the failure act), and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// CPU seconds (user + system) used so far, from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid())
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct ShopSpec {
    /// The `scaleout` executable.
    pub exe: PathBuf,
    /// Instance id.
    pub id: String,
    /// `--db` URL.
    pub db: String,
    /// `--workers`.
    pub workers: usize,
    /// Extra flags (`--sessions memory`, `--cache none`, ...).
    pub extra: Vec<String>,
    /// CPUs to pin the process to, if any.
    pub cpus: Option<Vec<usize>>,
}

/// A free loopback port, by binding port 0 and letting it go.
pub fn free_addr() -> Result<SocketAddr, DemoError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| DemoError::io("bind 127.0.0.1:0", e))?;
    l.local_addr().map_err(|e| DemoError::io("local_addr", e))
}

/// Starts an instance on a free port and waits (bounded) until `/readyz` answers 200.
pub async fn start_shop(spec: &ShopSpec, log_dir: &Path) -> Result<Instance, DemoError> {
    start_shop_at(spec, free_addr()?, log_dir).await
}

/// Starts an instance on `addr` (a restart takes its old address back).
pub async fn start_shop_at(
    spec: &ShopSpec,
    addr: SocketAddr,
    log_dir: &Path,
) -> Result<Instance, DemoError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join(format!("{}.log", spec.id)))
        .map_err(|e| DemoError::io("create instance log", e))?;
    let metrics_addr = free_addr()?;
    let mut cmd = tokio::process::Command::new(&spec.exe);
    cmd.arg("shop")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--instance-id")
        .arg(&spec.id)
        .arg("--db")
        .arg(&spec.db)
        .arg("--workers")
        .arg(spec.workers.to_string())
        .arg("--metrics-listen")
        .arg(metrics_addr.to_string())
        // One JWT key for every instance of the demo (created by the first to start).
        .arg("--jwt-secret-file")
        .arg(log_dir.join("shop-jwt-secret"))
        .args(&spec.extra)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| DemoError::io("spawn scaleout shop", e))?;
    let inst = Instance {
        id: spec.id.clone(),
        addr,
        metrics_addr,
        child,
    };
    if let Some(cpus) = &spec.cpus {
        // Pin early so start-up runs where it will serve; threads that appear later are
        // caught by the second pass below, whose result counts.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = fleet::process::pin(inst.pid(), cpus);
    }
    wait_ready(addr, Duration::from_secs(30))
        .await
        .map_err(|e| {
            DemoError::Step(format!(
                "{e}; see {}",
                log_dir.join(format!("{}.log", spec.id)).display()
            ))
        })?;
    if let Some(cpus) = &spec.cpus {
        // Pin again: threads started after the first pass (blocking pool) are caught too.
        // This pass must succeed: a run labelled "on 1 core" that was not pinned would
        // report a comparison that never happened.
        fleet::process::pin(inst.pid(), cpus)
            .map_err(|e| DemoError::Step(format!("pinning {} to cores {cpus:?}: {e}", spec.id)))?;
    }
    Ok(inst)
}

/// Polls `GET /readyz` until 200 or `timeout`.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<(), DemoError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = http::request(addr, "GET", "/readyz", &[], None).await
            && r.status == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DemoError::Step(format!(
                "instance on {addr} not ready after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// CPU seconds (utime + stime) of a process, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let ticks = fleet::cpu::read_ticks(pid)?;
    Some(ticks as f64 / fleet::cpu::ticks_per_second() as f64)
}

/// CPU seconds used by this process (the demo: balancer in-process plus load generator).
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}

/// The cores this process may run on (its affinity mask), which pinning maps onto.
pub fn allowed_cpus() -> Vec<usize> {
    fleet::process::own_cpus()
}

/// Cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

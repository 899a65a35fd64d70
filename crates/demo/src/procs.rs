//! Real processes for the demo: `scaleout shop` instances on free loopback ports, each in
//! its CPU and memory envelope when the demo runs with envelopes, owned by the act's
//! [`Scope`] (killed, reaped and their envelope removed when the act ends).
//!
//! Must never: leave a child running after the demo or wait without a deadline.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet::envelope::{Envelope, EnvelopeStats, FleetScope, Group};

use crate::scope::Scope;
use crate::{DemoError, http};

/// A running `scaleout shop` instance (the process itself is owned by a [`Scope`]).
#[derive(Debug, Clone)]
pub struct Instance {
    /// Instance id (also its `x-instance-id`, and its name in the scope).
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its process id.
    pub pid: u32,
    /// The envelope it runs in, if any.
    pub envelope: Option<Envelope>,
    /// Where it serves `/metrics` (`--metrics-listen`; never on `addr`).
    pub metrics_addr: SocketAddr,
    /// Its cgroup (shared with the scope, which removes it once the process is reaped).
    group: Option<Arc<Group>>,
}

impl Instance {
    /// An instance started by someone else (the fleet in act 7), for CPU readings only.
    pub fn external(id: &str, addr: SocketAddr, pid: u32, envelope: Option<Envelope>) -> Instance {
        Instance {
            id: id.to_string(),
            addr,
            pid,
            envelope,
            // Instances started elsewhere are only read for CPU, never scraped.
            metrics_addr: addr,
            group: None,
        }
    }

    /// Usage counters of its envelope (`None` without one).
    pub fn stats(&self) -> Option<EnvelopeStats> {
        self.group.as_ref().map(|g| g.stats())
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
    /// CPU and memory envelope, if any.
    pub envelope: Option<Envelope>,
}

/// A free loopback port, by binding port 0 and letting it go.
pub fn free_addr() -> Result<SocketAddr, DemoError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| DemoError::io("bind 127.0.0.1:0", e))?;
    l.local_addr().map_err(|e| DemoError::io("local_addr", e))
}

/// Starts an instance (on `addr`, else a free port) owned by `scope`, in its envelope
/// (a group under `groups`), and waits (bounded) until `/readyz` answers 200.
pub async fn start_shop(
    scope: &mut Scope,
    groups: Option<&FleetScope>,
    spec: &ShopSpec,
    addr: Option<SocketAddr>,
    log_dir: &Path,
) -> Result<Instance, DemoError> {
    let addr = match addr {
        Some(a) => a,
        None => free_addr()?,
    };
    let log_path = log_dir.join(format!("{}.log", spec.id));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| DemoError::io("create instance log", e))?;
    let metrics_addr = free_addr()?;
    let mut args: Vec<OsString> = vec![
        "shop".into(),
        "--listen".into(),
        addr.to_string().into(),
        "--instance-id".into(),
        spec.id.clone().into(),
        "--db".into(),
        spec.db.clone().into(),
        "--workers".into(),
        spec.workers.to_string().into(),
        "--metrics-listen".into(),
        metrics_addr.to_string().into(),
        // One JWT key for every instance of the demo (created by the first to start).
        "--jwt-secret-file".into(),
        log_dir.join("shop-jwt-secret").into_os_string(),
    ];
    args.extend(spec.extra.iter().map(OsString::from));
    let group = match (spec.envelope, groups) {
        (Some(e), Some(g)) => {
            Some(Arc::new(g.create(&spec.id, &e).map_err(|e| {
                DemoError::Step(format!("envelope of {}: {e}", spec.id))
            })?))
        }
        (Some(_), None) => {
            return Err(DemoError::Step(format!(
                "{} needs an envelope but the demo runs without cgroups",
                spec.id
            )));
        }
        (None, _) => None,
    };
    let mut cmd = match &group {
        // The child joins its group before the shop runs (see fleet::envelope).
        Some(g) => g.command(&spec.exe, &args),
        None => {
            let mut c = tokio::process::Command::new(&spec.exe);
            c.args(&args);
            c
        }
    };
    cmd.env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| DemoError::io("spawn scaleout shop", e))?;
    let owned = group.clone();
    let pid = scope.child(&spec.id, child, move || {
        // The process is reaped: its group can go now.
        if let Some(g) = owned
            && let Err(e) = g.remove()
        {
            tracing::warn!("removing an instance envelope: {e}");
        }
    });
    let inst = Instance {
        id: spec.id.clone(),
        addr,
        pid,
        envelope: spec.envelope,
        metrics_addr,
        group,
    };
    wait_ready(addr, Duration::from_secs(30))
        .await
        .map_err(|e| DemoError::Step(format!("{e}; see {}", log_path.display())))?;
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

//! One instance process: template expansion, spawn, CPU pinning, readiness probe, stop.
//!
//! Everything that touches the operating system for a single child lives here, so the
//! supervisor reads as policy. It must never block the runtime (every wait is async and
//! bounded) and never leave a child behind: children are spawned with `kill_on_drop`, in
//! their own process group, and (when `setpriv` exists) with a parent-death signal.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::FleetError;
use crate::config::ChildOutput;

/// The values substituted into a command template for one instance.
#[derive(Debug, Clone)]
pub struct TemplateVars {
    /// This executable (`{exe}`).
    pub exe: PathBuf,
    /// Listen address (`{addr}`, `{host}`, `{port}`).
    pub addr: SocketAddr,
    /// Instance id (`{id}`).
    pub id: String,
    /// Data directory (`{data_dir}`).
    pub data_dir: PathBuf,
}

/// Replaces every placeholder in `word`.
pub fn expand(word: &str, v: &TemplateVars) -> String {
    word.replace("{exe}", &v.exe.to_string_lossy())
        .replace("{addr}", &v.addr.to_string())
        .replace("{host}", &v.addr.ip().to_string())
        .replace("{port}", &v.addr.port().to_string())
        .replace("{id}", &v.id)
        .replace("{data_dir}", &v.data_dir.to_string_lossy())
}

/// A command template for people (the `up` banner): `{exe}` and `{data_dir}` filled in,
/// the per-instance placeholders shown as `<addr>`, `<id>`, ... (they differ for every
/// instance), so no `{...}` reaches the console.
pub fn describe_template(words: &[String], exe: &Path, data_dir: &Path) -> String {
    words
        .iter()
        .map(|w| {
            w.replace("{exe}", &exe.to_string_lossy())
                .replace("{data_dir}", &data_dir.to_string_lossy())
                .replace("{addr}", "<addr>")
                .replace("{host}", "<host>")
                .replace("{port}", "<port>")
                .replace("{id}", "<id>")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A free TCP port on `host`, found by binding port 0 and releasing it. A child that
/// loses the race for it exits, which the supervisor treats as a crash and retries.
pub fn free_addr(host: IpAddr) -> Result<SocketAddr, FleetError> {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| FleetError::Spawn(format!("no free port on {host}: {e}")))
}

/// How to start one instance.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Expanded argv (program first).
    pub argv: Vec<String>,
    /// Extra environment, already expanded.
    pub env: BTreeMap<String, String>,
    /// Where output goes.
    pub output: ChildOutput,
    /// Log file used when `output` is `File`.
    pub log_file: PathBuf,
    /// Wrap in `setpriv --pdeathsig KILL` when available.
    pub parent_death_signal: bool,
    /// Cores to pin to, if any.
    pub cpus: Option<Vec<usize>>,
    /// `cgroup.procs` files the child joins before the program runs (its resource
    /// envelope; see [`crate::envelope`]). Empty: no envelope.
    pub join_cgroups: Vec<PathBuf>,
}

/// The path of `setpriv` if it is installed and supports `--pdeathsig`.
pub fn setpriv_path() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Spawns the child. Returns it and its pid.
pub fn spawn(spec: &SpawnSpec) -> Result<(Child, u32), FleetError> {
    if spec.argv.is_empty() {
        return Err(FleetError::Spawn("empty command".into()));
    }
    // Join the envelope first (through `sh`, which execs the program: same pid).
    let argv: Vec<std::ffi::OsString> = if spec.join_cgroups.is_empty() {
        spec.argv.iter().map(Into::into).collect()
    } else {
        let argv: Vec<std::ffi::OsString> = spec.argv.iter().map(Into::into).collect();
        crate::envelope::join_wrapper(&spec.join_cgroups, &argv)
    };
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| FleetError::Spawn("empty command".into()))?;
    let program_name = spec.argv[0].as_str();
    let mut cmd = match (spec.parent_death_signal, setpriv_path()) {
        (true, Some(setpriv)) => {
            // The kernel delivers SIGKILL to the child when the thread that spawned it
            // dies; tokio's worker threads live as long as the runtime, i.e. as long as
            // the supervisor. `setpriv` sets the flag and then execs the real program,
            // so the pid we hold is the instance's own.
            let mut c = Command::new(setpriv);
            c.arg("--pdeathsig")
                .arg("KILL")
                .arg("--")
                .arg(program)
                .args(args);
            c
        }
        _ => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    };
    cmd.envs(&spec.env)
        .stdin(Stdio::null())
        // Own process group: a terminal Ctrl-C reaches only the supervisor, which then
        // drains and stops the instances in order.
        .process_group(0)
        .kill_on_drop(true);
    match spec.output {
        ChildOutput::Inherit => {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        }
        ChildOutput::Null => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        ChildOutput::File => {
            if let Some(dir) = spec.log_file.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| FleetError::Spawn(format!("create {}: {e}", dir.display())))?;
            }
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&spec.log_file)
                    .map_err(|e| {
                        FleetError::Spawn(format!("open {}: {e}", spec.log_file.display()))
                    })
            };
            cmd.stdout(open()?).stderr(open()?);
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| FleetError::Spawn(format!("spawn {program_name}: {e}")))?;
    let pid = child
        .id()
        .ok_or_else(|| FleetError::Spawn(format!("{program_name} exited at once")))?;
    Ok((child, pid))
}

/// Pins every thread of `pid` to `cpus`. Threads created later inherit the mask from
/// the thread that creates them, so calling this right after spawn and again once the
/// instance is ready covers the threads a runtime starts in between.
pub fn pin(pid: u32, cpus: &[usize]) -> Result<usize, FleetError> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c)
            .map_err(|e| FleetError::Pin(format!("core {c}: {e}")))?;
    }
    let mut tids = thread_ids(pid);
    if tids.is_empty() {
        tids.push(pid);
    }
    let mut pinned = 0;
    for tid in tids {
        match sched_setaffinity(Pid::from_raw(tid as i32), &set) {
            Ok(()) => pinned += 1,
            // A thread that exited between listing and pinning is fine.
            Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(FleetError::Pin(format!("pid {pid} thread {tid}: {e}"))),
        }
    }
    Ok(pinned)
}

/// The thread ids of `pid` (`/proc/<pid>/task`).
pub fn thread_ids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The cores a thread may run on (`Cpus_allowed_list` of `/proc/<pid>/task/<tid>/status`).
pub fn allowed_cpus(pid: u32, tid: u32) -> Option<Vec<usize>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    let mut out = Vec::new();
    for part in line.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().ok()?..=b.parse::<usize>().ok()?),
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// The cores this process may run on (its affinity mask, e.g. under taskset or a
/// cpuset), in order; `0..available_cpus()` when /proc cannot be read.
pub fn own_cpus() -> Vec<usize> {
    let me = std::process::id();
    allowed_cpus(me, me)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| (0..available_cpus()).collect())
}

/// Number of cores this process may use.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// One readiness probe: `GET path` over a fresh connection, bounded by `timeout`.
/// True on a 2xx status line.
pub async fn probe(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, probe_inner(addr, path))
        .await
        .unwrap_or(false)
}

async fn probe_inner(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    // The status line fits in the first read; never read more than 1 KiB.
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    head.starts_with("HTTP/1.") && head.get(9..10) == Some("2")
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub fn signal(pid: u32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), signal);
}

/// Stops a child: SIGTERM, then SIGKILL if it has not exited after `grace`. Returns its
/// exit status and whether SIGKILL was needed.
pub async fn stop(child: &mut Child, pid: u32, grace: Duration) -> (Option<ExitStatus>, bool) {
    if let Ok(Some(st)) = child.try_wait() {
        return (Some(st), false);
    }
    signal(pid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(st) => (st.ok(), false),
        Err(_) => {
            let _ = child.start_kill();
            // SIGKILL cannot be ignored; the bound only guards against a zombie reaper bug.
            let st = tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .ok()
                .and_then(|r| r.ok());
            (st, true)
        }
    }
}

/// The log file of instance `id` under `data_dir`.
pub fn log_file(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{id}.log"))
}

/// Bytes read from the end of a log file for [`log_tail`].
const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// The last `lines` non-empty lines of a log file (at most its last 8 KiB read), with
/// terminal colour codes removed: what a crashed instance said last, for the console.
/// Empty when the file cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(LOG_TAIL_BYTES);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err()
        || f.take(LOG_TAIL_BYTES).read_to_end(&mut buf).is_err()
    {
        return Vec::new();
    }
    let text = strip_ansi(&String::from_utf8_lossy(&buf));
    let mut all: Vec<&str> = text.lines().collect();
    if start > 0 && !all.is_empty() {
        all.remove(0); // cut mid-line
    }
    let kept: Vec<String> = all
        .into_iter()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    kept[kept.len().saturating_sub(lines)..].to_vec()
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_gives_the_last_lines_without_colour() {
        let dir = std::env::temp_dir().join(format!("fleet-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("i-1.log");
        let mut text = "x".repeat(20_000);
        text.push('\n');
        for i in 0..10 {
            text.push_str(&format!("\u{1b}[2mline\u{1b}[0m {i}\n\n"));
        }
        text.push_str("error: invalid config: sessions: `redis` sessions need --redis\n");
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path, 3);
        assert_eq!(
            tail,
            [
                "line 8",
                "line 9",
                "error: invalid config: sessions: `redis` sessions need --redis"
            ]
        );
        assert!(log_tail(&dir.join("missing.log"), 3).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn template_expands_every_placeholder() {
        let v = TemplateVars {
            exe: "/bin/x".into(),
            addr: "127.0.0.1:4100".parse().unwrap(),
            id: "i-3".into(),
            data_dir: "/tmp/d".into(),
        };
        assert_eq!(expand("{exe}", &v), "/bin/x");
        let banner = describe_template(
            &[
                "{exe}".into(),
                "shop".into(),
                "--listen".into(),
                "{addr}".into(),
                "--db".into(),
                "sqlite:{data_dir}/shop.db".into(),
                "--instance-id".into(),
                "{id}".into(),
            ],
            Path::new("/bin/x"),
            Path::new("/d"),
        );
        assert_eq!(
            banner,
            "/bin/x shop --listen <addr> --db sqlite:/d/shop.db --instance-id <id>"
        );
        assert_eq!(expand("--listen={addr}", &v), "--listen=127.0.0.1:4100");
        assert_eq!(expand("{host}:{port}/{id}", &v), "127.0.0.1:4100/i-3");
        assert_eq!(
            expand("sqlite:{data_dir}/shop.db", &v),
            "sqlite:/tmp/d/shop.db"
        );
    }

    #[test]
    fn allowed_cpus_of_self_is_not_empty() {
        let me = std::process::id();
        let cpus = allowed_cpus(me, me).expect("own status readable");
        assert!(!cpus.is_empty());
        // The mask and the scheduler agree on how many cores this process may use.
        assert_eq!(cpus.len(), available_cpus(), "{cpus:?}");
        assert_eq!(own_cpus(), cpus);
    }
}

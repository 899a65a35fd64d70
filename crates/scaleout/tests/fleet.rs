//! End to end: `scaleout up` with real shop instances behind the balancer. Defaults with
//! no file, status line, Ctrl-C (SIGINT) leaving no child, SIGKILL of `up` taking its
//! children down too, invalid config named before anything starts, and a rolling restart
//! (SIGHUP) under a client loop with zero failed requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use testkit::{ChildGuard, free_addr, http_get, temp_dir, wait_http_ok};

const BOOT: Duration = Duration::from_secs(120);

fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_scaleout")
}

/// Direct children of `pid` (`/proc/<pid>/task/*/children`).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Starts `scaleout up` in `dir` with `args`, stderr to `dir/up.log`.
fn start_up(dir: &Path, args: &[&str]) -> (ChildGuard, PathBuf) {
    let log = dir.join("up.log");
    let mut cmd = Command::new(exe());
    cmd.arg("up")
        .args(args)
        .current_dir(dir)
        .stdout(std::fs::File::create(dir.join("up.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    (ChildGuard::spawn("scaleout up", &mut cmd), log)
}

/// Writes a deployment file that keeps everything on free loopback ports.
fn write_config(dir: &Path, listen: SocketAddr, admin: SocketAddr, extra: &str) -> PathBuf {
    let path = dir.join("scaleout.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[balancer]
listen = "{listen}"
[balancer.admin]
listen = "{admin}"
token = "test-token-123"

[fleet]
instances = 2
data_dir = "{data}"
drain_grace_ms = 3000
stop_grace_ms = 3000

[autoscale]
min_instances = 2
max_instances = 3
{extra}
"#,
            data = dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn up_with_no_file_runs_the_shop_and_sigint_leaves_no_child() {
    let dir = temp_dir("up-defaults");
    let (listen, admin) = (free_addr(), free_addr());
    let (mut up, log) = start_up(
        &dir,
        &[
            "--listen",
            &listen.to_string(),
            "--admin",
            &admin.to_string(),
            "--status-every-s",
            "0.5",
        ],
    );
    wait_http_ok(listen, "/readyz", BOOT);
    wait_until("2 ready instances in the status line", BOOT, || {
        log_text(&log).contains("[up] instances 2/2 ready")
    });
    let kids = children(up.pid());
    assert_eq!(
        kids.len(),
        2,
        "two shop instances: {kids:?}\n{}",
        log_text(&log)
    );
    // The shop serves through the balancer, on SQLite under the default data dir.
    let (code, body) = http_get(listen, "/catalog").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(dir.join("scaleout-data/shop.db").exists());
    assert!(dir.join("scaleout-data/admin-token").exists());
    // The status line: instances, then RPS and p99 once two balancer samples exist,
    // then the decision and its reason.
    wait_until("a status line with metrics and a decision", BOOT, || {
        log_text(&log).lines().any(|l| {
            l.starts_with("[up] instances 2/2 ready")
                && l.contains("| rps ")
                && l.contains(" ms | ")
                && l.contains("| decision 2: ")
        })
    });

    up.signal("INT");
    let st = up
        .wait_exit(Duration::from_secs(60))
        .expect("up exits after SIGINT");
    assert!(st.success(), "exit status {st:?}\n{}", log_text(&log));
    for pid in kids {
        assert!(!alive(pid), "instance {pid} survived Ctrl-C");
    }
    // Two shops opening one fresh SQLite file at once must both come up first time.
    assert!(
        log_text(&log).contains("stopped; 2 spawned, 0 crashed"),
        "{}",
        log_text(&log)
    );
}

#[test]
fn sigkill_of_up_takes_its_children_down() {
    let dir = temp_dir("up-kill");
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = write_config(&dir, listen, admin, "");
    let (mut up, log) = start_up(
        &dir,
        &["-c", cfg.to_str().unwrap(), "--status-every-s", "0"],
    );
    wait_http_ok(listen, "/readyz", BOOT);
    wait_until("2 children", BOOT, || children(up.pid()).len() == 2);
    let kids = children(up.pid());
    let groups: Vec<PathBuf> = kids.iter().flat_map(|&k| envelope_dirs(k)).collect();
    assert!(!groups.is_empty(), "instances run in envelope groups");
    up.kill(); // SIGKILL: no chance to clean up.
    wait_until(
        "children to die with their parent",
        Duration::from_secs(15),
        || kids.iter().all(|&p| !alive(p)),
    );
    let _ = log;
    // Their groups outlive a SIGKILLed `up`; the next `up` removes them at start.
    assert!(groups.iter().all(|g| g.exists()), "{groups:?}");
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = write_config(&dir, listen, admin, "");
    let (mut again, log) = start_up(
        &dir,
        &["-c", cfg.to_str().unwrap(), "--status-every-s", "0"],
    );
    wait_http_ok(listen, "/readyz", BOOT);
    for g in &groups {
        assert!(
            !g.exists(),
            "stale group {} left\n{}",
            g.display(),
            log_text(&log)
        );
    }
    again.signal("INT");
    again.wait_exit(Duration::from_secs(60)).expect("up exits");
}

/// The `scaleout` cgroup directories `pid` is in (v1: one per hierarchy; v2: one).
fn envelope_dirs(pid: u32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("/scaleout/"))
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            let mount = match ctrls {
                "" if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() => "".to_string(),
                "" => "unified".to_string(),
                c => c.split(',').next()?.to_string(),
            };
            Some(
                Path::new("/sys/fs/cgroup")
                    .join(mount)
                    .join(path.trim_start_matches('/')),
            )
        })
        .filter(|p| p.is_dir())
        .collect()
}

#[test]
fn up_runs_instances_in_envelopes_and_reports_them() {
    let dir = temp_dir("up-envelope");
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = write_config(&dir, listen, admin, "");
    let (mut up, log) = start_up(
        &dir,
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--cpu",
            "0.5",
            "--memory-mib",
            "192",
            "--status-every-s",
            "0.5",
        ],
    );
    wait_http_ok(listen, "/readyz", BOOT);
    wait_until("2 children", BOOT, || children(up.pid()).len() == 2);
    let kids = children(up.pid());
    let mut groups = Vec::new();
    for &k in &kids {
        let dirs = envelope_dirs(k);
        assert!(!dirs.is_empty(), "instance {k} is in no scaleout group");
        for d in &dirs {
            for (file, want) in [
                ("cpu.cfs_quota_us", "50000"),
                ("memory.limit_in_bytes", "201326592"),
                ("cpu.max", "50000 100000"),
                ("memory.max", "201326592"),
            ] {
                if let Ok(v) = std::fs::read_to_string(d.join(file)) {
                    assert_eq!(v.trim(), want, "{}", d.join(file).display());
                }
            }
        }
        groups.extend(dirs);
    }
    wait_until("the envelope in the status line", BOOT, || {
        log_text(&log).lines().any(|l| {
            l.starts_with("[up] instances 2/2 ready")
                && l.contains("| envelope 0.5cpu/192MiB: i-")
                && l.contains("cpu thr ")
        })
    });
    let auth = [("Authorization", "Bearer test-token-123")];
    let (code, metrics) =
        testkit::http_request(admin, "GET", "/metrics", &auth, b"").expect("metrics");
    assert_eq!(code, 200);
    for want in [
        "scaleout_fleet_envelope_enforced 1",
        "scaleout_instance_cpu_limit_cores 0.5",
        "scaleout_instance_memory_limit_bytes 201326592",
        "scaleout_instance_memory_bytes{instance=\"i-",
        "scaleout_instance_cpu_throttled_periods_total{instance=\"i-",
        "scaleout_fleet_oom_kills_total 0",
    ] {
        assert!(metrics.contains(want), "{want} missing from\n{metrics}");
    }
    let (code, fleet) = testkit::http_request(admin, "GET", "/fleet", &auth, b"").expect("fleet");
    assert_eq!(code, 200, "{fleet}");
    let j: serde_json::Value = serde_json::from_str(&fleet).unwrap();
    assert_eq!(j["envelope"]["memory_mib"], 192, "{j}");
    assert_eq!(j["instances"].as_array().map(Vec::len), Some(2), "{j}");
    assert!(
        j["instances"][0]["envelope_stats"]["memory_bytes"].as_u64() > Some(0),
        "{j}"
    );
    up.signal("INT");
    let st = up.wait_exit(Duration::from_secs(60)).expect("up exits");
    assert!(st.success(), "{}", log_text(&log));
    for g in &groups {
        assert!(!g.exists(), "group {} left after stop", g.display());
    }
}

#[test]
fn no_envelopes_runs_unlimited_and_says_so() {
    let dir = temp_dir("up-noenv");
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = write_config(&dir, listen, admin, "");
    let (mut up, log) = start_up(
        &dir,
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--no-envelopes",
            "--status-every-s",
            "0.5",
        ],
    );
    wait_http_ok(listen, "/readyz", BOOT);
    wait_until("the status line says unlimited", BOOT, || {
        log_text(&log).contains("| envelopes off (unlimited)")
    });
    assert!(log_text(&log).contains("envelopes OFF (--no-envelopes)"));
    for k in children(up.pid()) {
        assert!(envelope_dirs(k).is_empty(), "instance {k} is in a group");
    }
    up.signal("INT");
    up.wait_exit(Duration::from_secs(60)).expect("up exits");
}

#[test]
fn invalid_config_is_named_before_anything_starts() {
    for (extra, field) in [
        ("instancez = 3", "instancez"),
        ("[fleet.oops]\n", "oops"),
        (
            "policy = \"hpa\"\n[autoscale.hpa]\ntolerance = 2.0",
            "autoscale.hpa.tolerance",
        ),
        ("target_in_flight = -1.0", "autoscale.target_in_flight"),
    ] {
        let dir = temp_dir("up-bad");
        let (listen, admin) = (free_addr(), free_addr());
        let cfg = write_config(&dir, listen, admin, extra);
        let out = Command::new(exe())
            .args(["up", "-c", cfg.to_str().unwrap()])
            .current_dir(&dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra}: {err}");
        assert!(
            err.contains(field),
            "{extra}: expected {field} named in: {err}"
        );
        assert!(!dir.join("data").exists(), "nothing was started or created");
        assert!(
            std::net::TcpListener::bind(listen).is_ok(),
            "nothing listened"
        );
    }
    // The --instances flag is checked against the autoscaler's bounds too.
    let dir = temp_dir("up-bad-flag");
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = write_config(&dir, listen, admin, "");
    let out = Command::new(exe())
        .args(["up", "-c", cfg.to_str().unwrap(), "--instances", "9"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fleet.instances"));
}

#[test]
fn rolling_restart_on_sighup_under_load_fails_no_request() {
    let dir = temp_dir("up-roll");
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = write_config(&dir, listen, admin, "");
    let (mut up, log) = start_up(
        &dir,
        &["-c", cfg.to_str().unwrap(), "--status-every-s", "0.5"],
    );
    wait_http_ok(listen, "/readyz", BOOT);
    wait_until("2 ready", BOOT, || {
        log_text(&log).contains("[up] instances 2/2 ready")
    });
    let before = children(up.pid());
    assert_eq!(before.len(), 2);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                // Bounded: at most 20 000 requests per client.
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match http_get(listen, "/catalog") {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        other => {
                            eprintln!("failed request: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    up.signal("HUP");
    // Both old instances replaced, one at a time: the second old one is retired only
    // once the second new one is ready, so "both old gone, two new" means done.
    wait_until("both instances replaced", BOOT, || {
        let now = children(up.pid());
        now.len() == 2 && now.iter().all(|p| !before.contains(p))
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("rolling restart through `scaleout up`: {ok} ok, {failed} failed");
    assert!(ok > 0);
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    for p in &before {
        assert!(!alive(*p), "old instance {p} still running");
    }
    up.signal("TERM");
    let st = up
        .wait_exit(Duration::from_secs(60))
        .expect("exits on SIGTERM");
    assert!(st.success());
}

#[test]
fn taken_port_fails_before_any_instance_starts() {
    let dir = temp_dir("up-taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let cfg = write_config(&dir, listen, free_addr(), "");
    let out = Command::new(exe())
        .args(["up", "-c", cfg.to_str().unwrap()])
        .current_dir(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&listen.to_string()),
        "names the address: {err}"
    );
    assert!(
        !dir.join("data/logs").exists(),
        "no instance was started: {err}"
    );
}

#[test]
fn up_runs_any_command_and_restarts_a_killed_instance() {
    let dir = temp_dir("up-crash");
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = write_config(&dir, listen, admin, "[fleet.env]\nRUST_LOG = \"warn\"");
    // The same file with the test backend instead of the shop.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[fleet]\n",
        "[fleet]\ncommand = [\"{exe}\", \"backend\", \"--listen\", \"{addr}\", \"--id\", \"{id}\"]\nrestart_backoff_initial_ms = 200\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let (mut up, log) = start_up(
        &dir,
        &["-c", cfg.to_str().unwrap(), "--status-every-s", "0.3"],
    );
    wait_http_ok(listen, "/", BOOT);
    wait_until("2 children", BOOT, || children(up.pid()).len() == 2);
    let before = children(up.pid());
    let (code, body) = http_get(listen, "/").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.starts_with("ok from i-"),
        "the id reached the instance: {body}"
    );

    // SIGKILL one instance: reported, restarted, back to 2/2 with a new pid.
    let victim = before[0];
    let _ = Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status();
    wait_until("the crash in the status line", BOOT, || {
        log_text(&log).contains("crashes 1")
    });
    wait_until("a replacement process", BOOT, || {
        let now = children(up.pid());
        now.len() == 2 && !now.contains(&victim)
    });
    wait_until("2/2 ready again", BOOT, || {
        log_text(&log)
            .lines()
            .rev()
            .find(|l| l.starts_with("[up] "))
            .is_some_and(|l| l.contains("instances 2/2 ready"))
    });
    for _ in 0..20 {
        assert_eq!(http_get(listen, "/").unwrap().0, 200);
    }
    let last = children(up.pid());
    up.signal("TERM");
    assert!(
        up.wait_exit(Duration::from_secs(60))
            .expect("exits")
            .success()
    );
    for p in last {
        assert!(!alive(p), "{p} survived");
    }
}

//! Resource envelopes with real processes and the real cgroup filesystem (these tests
//! need root, or a delegated cgroup; they fail, never skip, without one): CPU quota
//! enforced, OOM kill reported and restarted, groups removed after stop, stale groups of
//! a SIGKILLed owner cleaned at start, and refusal where cgroups are unusable.
//!
//! The test binary doubles as every child: `ENVELOPE_TEST_CHILD=busy` spins,
//! `ENVELOPE_TEST_CHILD=owner` plays a `scaleout up` that gets SIGKILLed,
//! `ENVELOPE_TEST_CHILD=detect` prints what detection says (run as `nobody`), and
//! `FLEET_TEST_ADDR` makes it an HTTP instance (see `common`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{alive, block_on, instance_config, me};
use fleet::envelope::{Cgroups, DEFAULT_CGROUP_ROOT, Envelope};
use fleet::{Fleet, FleetError, NoBalancer, Resources};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn main() {
    child_modes();
    common::serve_if_child();
    common::run_tests(&[
        (
            "busy_loop_at_quarter_cpu_uses_a_quarter_core",
            busy_loop_at_quarter_cpu_uses_a_quarter_core,
        ),
        (
            "oom_kill_is_reported_and_restarted",
            oom_kill_is_reported_and_restarted,
        ),
        (
            "groups_are_removed_after_stop",
            groups_are_removed_after_stop,
        ),
        (
            "stale_groups_of_a_killed_owner_are_cleaned_at_start",
            stale_groups_of_a_killed_owner_are_cleaned_at_start,
        ),
        (
            "refuses_without_cgroup_access",
            refuses_without_cgroup_access,
        ),
    ]);
}

/// The child roles of this binary; returns when it is the test runner.
fn child_modes() {
    let Ok(mode) = std::env::var("ENVELOPE_TEST_CHILD") else {
        return;
    };
    match mode.as_str() {
        "busy" => {
            // Spin for at most 60 s whatever happens to the test.
            let t = Instant::now();
            let mut x = 1u64;
            while t.elapsed() < Duration::from_secs(60) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            std::process::exit((x & 1) as i32);
        }
        "owner" => {
            // A fleet owner with one instance group holding a spinning child; prints the
            // directories and the child's pid, then waits to be SIGKILLed (60 s at most).
            let cg = Cgroups::detect(Path::new(DEFAULT_CGROUP_ROOT)).expect("cgroups");
            let scope = cg.fleet_scope().expect("scope");
            let group = scope
                .create(
                    "i-1",
                    &Envelope {
                        cpu: 0.1,
                        memory_mib: 64,
                    },
                )
                .expect("group");
            let child = std::process::Command::new("/bin/sh")
                .args(group.wrap(&[me().into()]).iter().skip(1))
                .env("ENVELOPE_TEST_CHILD", "busy")
                .spawn()
                .expect("spawn");
            for d in scope.dirs() {
                println!("dir {}", d.display());
            }
            println!("pid {}", child.id());
            std::thread::sleep(Duration::from_secs(60));
            std::process::exit(0);
        }
        "detect" => {
            match Cgroups::detect(Path::new(DEFAULT_CGROUP_ROOT)) {
                Ok(c) => println!("ok {}", c.describe()),
                Err(e) => println!("refused {e}"),
            }
            std::process::exit(0);
        }
        other => panic!("unknown ENVELOPE_TEST_CHILD {other}"),
    }
}

fn cgroups() -> Cgroups {
    Cgroups::detect(Path::new(DEFAULT_CGROUP_ROOT))
        .expect("these tests need writable cgroups (run as root)")
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

fn busy_loop_at_quarter_cpu_uses_a_quarter_core() {
    block_on(async {
        let scope = cgroups().fleet_scope().unwrap();
        let envelope = Envelope {
            cpu: 0.25,
            memory_mib: 64,
        };
        let group = scope.create("busy", &envelope).unwrap();
        let mut child = group
            .command(me(), Vec::<String>::new())
            .env("ENVELOPE_TEST_CHILD", "busy")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        // Joined before exec: the pid we hold is in the group, and it is the program
        // (the shell exec'd it).
        assert!(
            wait_until(Duration::from_secs(5), || group.pids().contains(&pid)
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| e.file_name() == me().file_name())),
            "pid {pid} not in {:?}",
            group.dirs()
        );
        // Measure ~2 s of the group's own CPU accounting. A machine saturated by other
        // work can hand the child less than its quota; the upper bound (enforcement) must
        // hold every time, the lower bound gets three windows.
        let mut measured = Vec::new();
        let mut ok = false;
        for _ in 0..3 {
            let (a, t0) = (group.stats(), Instant::now());
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (b, wall) = (group.stats(), t0.elapsed());
            let cores = (b.cpu_usage_ns - a.cpu_usage_ns) as f64 / wall.as_nanos() as f64;
            eprintln!(
                "  busy loop at {envelope}: {cores:.3} cores, throttled {} periods ({} ms) in {wall:?}",
                b.nr_throttled - a.nr_throttled,
                (b.throttled_ns - a.throttled_ns) / 1_000_000
            );
            assert!(cores <= 0.3, "quota not enforced: {cores:.3} cores");
            assert!(
                b.nr_throttled > a.nr_throttled,
                "never throttled: {a:?} {b:?}"
            );
            measured.push(cores);
            if cores >= 0.2 {
                ok = true;
                break;
            }
        }
        assert!(ok, "a busy loop got less than 0.2 cores: {measured:?}");
        let _ = child.start_kill();
        let _ = child.wait().await;
        let dirs = group.dirs();
        drop(group);
        for d in &dirs {
            assert!(!d.exists(), "{} left behind", d.display());
        }
        let scope_dirs = scope.dirs();
        drop(scope);
        for d in &scope_dirs {
            assert!(!d.exists(), "{} left behind", d.display());
        }
    });
}

fn oom_kill_is_reported_and_restarted() {
    block_on(async {
        let mut cfg = instance_config("oom", 1, "alloc_after_ms:300");
        cfg.resources = Resources {
            cpu: Some(1.0),
            memory_mib: Some(48),
            ..Resources::default()
        };
        let (fleet, handle) = Fleet::new(cfg, me(), NoBalancer).unwrap();
        assert_eq!(
            handle.envelope(),
            Some(Envelope {
                cpu: 1.0,
                memory_mib: 48
            })
        );
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        // Ready first, then killed at the limit, then restarted under the same id.
        let s = handle
            .wait_for(WAIT, |s| {
                s.oom_kills_total >= 1 && s.instances.first().is_some_and(|i| i.restarts >= 1)
            })
            .await
            .expect("an OOM kill, then a restart");
        let i = &s.instances[0];
        assert!(i.oom_kills >= 1, "{i:?}");
        let why = i.last_failure.clone().unwrap_or_default();
        assert!(
            why.contains("OOM-killed") && why.contains("48 MiB"),
            "{why}"
        );
        assert!(s.crashes_total >= s.oom_kills_total, "{s:?}");
        assert!(s.startup_s.is_some(), "it was ready before the kill");
        let stats = handle.envelope_stats();
        let st = stats.get(&i.id).expect("stats of the live instance");
        assert!(st.oom_kills >= 1, "{st:?}");
        assert_eq!(st.memory_limit_bytes, 48 << 20);
        assert!(st.memory_max_bytes >= 40 << 20, "peak {st:?}");
        stop.cancel();
        run.await.unwrap();
    });
}

fn groups_are_removed_after_stop() {
    block_on(async {
        let mut cfg = instance_config("rm", 2, "ok");
        cfg.resources.cpu = Some(0.5);
        cfg.resources.memory_mib = Some(128);
        let (fleet, handle) = Fleet::new(cfg, me(), NoBalancer).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        let s = handle
            .wait_for(WAIT, |s| s.ready() == 2)
            .await
            .expect("2 ready");
        let dirs = handle.group_dirs();
        assert_eq!(dirs.len(), 2, "{dirs:?}");
        let mut fleet_dirs: Vec<PathBuf> = Vec::new();
        for i in &s.instances {
            let pid = i.pid.unwrap();
            let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            for d in &dirs[&i.id] {
                assert!(d.join("cgroup.procs").exists());
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap();
                assert!(procs.lines().any(|l| l == pid.to_string()), "{d:?}");
                let rel = d.to_string_lossy();
                let tail = rel.split("/scaleout/").nth(1).unwrap();
                assert!(own.contains(tail), "{own} lacks {tail}");
                fleet_dirs.push(d.parent().unwrap().to_path_buf());
            }
            let stats = handle.envelope_stats();
            assert!(stats[&i.id].memory_bytes > 0, "{stats:?}");
            assert_eq!(stats[&i.id].memory_limit_bytes, 128 << 20);
        }
        // Scale in: the retired instance's group goes with it.
        handle.set_count(1);
        handle
            .wait_for(WAIT, |s| s.instances.len() == 1)
            .await
            .expect("scaled in");
        let left = handle.group_dirs();
        assert_eq!(left.len(), 1);
        for (id, ds) in &dirs {
            if !left.contains_key(id) {
                for d in ds {
                    assert!(!d.exists(), "{} left after scale-in", d.display());
                }
            }
        }
        stop.cancel();
        run.await.unwrap();
        for ds in dirs.values() {
            for d in ds {
                assert!(!d.exists(), "{} left after stop", d.display());
            }
        }
        fleet_dirs.dedup();
        for d in &fleet_dirs {
            assert!(!d.exists(), "fleet group {} left after stop", d.display());
        }
        assert!(handle.envelope_stats().is_empty());
    });
}

fn stale_groups_of_a_killed_owner_are_cleaned_at_start() {
    block_on(async {
        let mut owner = std::process::Command::new(me())
            .env("ENVELOPE_TEST_CHILD", "owner")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = owner.stdout.take().unwrap();
        let mut dirs = Vec::new();
        let mut grandchild = 0u32;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(d) = line.strip_prefix("dir ") {
                dirs.push(PathBuf::from(d));
            }
            if let Some(p) = line.strip_prefix("pid ") {
                grandchild = p.parse().unwrap();
                break;
            }
        }
        assert!(!dirs.is_empty() && grandchild > 0, "owner did not report");
        // SIGKILL the owner, as an operator's `kill -9 scaleout up` would.
        owner.kill().unwrap();
        owner.wait().unwrap();
        assert!(alive(grandchild), "its instance outlived it, in the group");
        for d in &dirs {
            assert!(d.exists());
        }
        // A live fleet's group next to it must survive the cleaning.
        let live = cgroups().fleet_scope().unwrap();
        let (fleet, _handle) =
            Fleet::new(instance_config("stale", 1, "ok"), me(), NoBalancer).unwrap();
        for d in &dirs {
            assert!(!d.exists(), "stale {} not cleaned", d.display());
        }
        assert!(
            wait_until(Duration::from_secs(5), || !alive(grandchild)),
            "the stale group's process was not killed"
        );
        for d in live.dirs() {
            assert!(
                d.exists(),
                "a live owner's group {} was removed",
                d.display()
            );
        }
        drop(fleet);
        drop(live);
    });
}

fn refuses_without_cgroup_access() {
    // 1. No cgroup filesystem at the configured root (the test seam): refused, naming
    //    what was looked for and the flag.
    let empty = common::temp_dir("nocg");
    let mut cfg = instance_config("refuse", 1, "ok");
    cfg.resources.cgroup_root = Some(empty.clone());
    let err = Fleet::new(cfg.clone(), me(), NoBalancer).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, FleetError::Envelope(_)), "{err:?}");
    assert!(text.contains("--no-envelopes"), "{text}");
    assert!(text.contains("no cgroup v1 cpu hierarchy"), "{text}");
    // 2. The real hybrid mount's v2 tree without controllers: refused with the reason,
    //    not used half-way.
    let unified = Path::new(DEFAULT_CGROUP_ROOT).join("unified");
    if unified.join("cgroup.controllers").exists() {
        let ctrls = std::fs::read_to_string(unified.join("cgroup.controllers")).unwrap();
        if !ctrls.contains("cpu") {
            cfg.resources.cgroup_root = Some(unified.clone());
            let text = Fleet::new(cfg.clone(), me(), NoBalancer)
                .unwrap_err()
                .to_string();
            assert!(text.contains("not cpu and memory"), "{text}");
            assert!(text.contains("--no-envelopes"), "{text}");
        }
    }
    // 3. Not root: the real /sys/fs/cgroup, as `nobody` (setpriv drops the uid).
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(me())
        .env("ENVELOPE_TEST_CHILD", "detect")
        .output()
        .expect("setpriv (util-linux) is needed for this test");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("refused"), "as nobody: {said}");
    assert!(said.contains("Permission denied"), "{said}");
    assert!(said.contains("--no-envelopes"), "{said}");
    // 4. Opting out runs without envelopes, and the status says so.
    cfg.resources.enforce = false;
    let (_fleet, handle) = Fleet::new(cfg, me(), NoBalancer).unwrap();
    assert_eq!(handle.status().envelope, None);
    assert_eq!(handle.envelope(), None);
    let _ = std::fs::remove_dir_all(empty);
}

//! Process supervision with real child processes (this test binary serving HTTP):
//! readiness gating, ids, crash restart with back-off, ready timeout, graceful and
//! forced stop, scale-in, CPU pinning, shutdown leaving no child behind.

mod common;

use std::time::Duration;

use common::{alive, block_on, get, instance_config, me};
use fleet::{Fleet, FleetStatus, NoBalancer, Phase};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn main() {
    common::serve_if_child();
    common::run_tests(&[
        (
            "spawns_ready_instances_with_their_own_ids",
            spawns_ready_instances_with_their_own_ids,
        ),
        (
            "crashed_instance_is_restarted_with_backoff",
            crashed_instance_is_restarted_with_backoff,
        ),
        (
            "never_ready_instance_is_killed_and_counted",
            never_ready_instance_is_killed_and_counted,
        ),
        (
            "scale_in_stops_gracefully_or_kills_after_grace",
            scale_in_stops_gracefully_or_kills_after_grace,
        ),
        (
            "cpu_pinning_applies_to_every_thread",
            cpu_pinning_applies_to_every_thread,
        ),
        ("shutdown_leaves_no_child", shutdown_leaves_no_child),
    ]);
}

fn all_ready(n: usize) -> impl FnMut(&FleetStatus) -> bool {
    move |s| s.ready() == n && s.instances.len() == n
}

fn spawns_ready_instances_with_their_own_ids() {
    block_on(async {
        let (fleet, handle) =
            Fleet::new(instance_config("ids", 3, "ok"), me(), NoBalancer).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        let s = handle.wait_for(WAIT, all_ready(3)).await.expect("3 ready");
        let mut ids = Vec::new();
        let mut ports = Vec::new();
        for i in &s.instances {
            let addr = i.addr.expect("addr");
            let (code, body) = get(addr, "/id").await.unwrap();
            assert_eq!(code, 200);
            assert_eq!(body, i.id, "instance answers with the id it was given");
            assert!(alive(i.pid.unwrap()));
            ids.push(i.id.clone());
            ports.push(addr.port());
        }
        ids.sort();
        ids.dedup();
        ports.sort();
        ports.dedup();
        assert_eq!((ids.len(), ports.len()), (3, 3));
        assert!(s.startup_s.is_some());
        stop.cancel();
        run.await.unwrap();
    });
}

fn crashed_instance_is_restarted_with_backoff() {
    block_on(async {
        let (fleet, handle) =
            Fleet::new(instance_config("crash", 2, "ok"), me(), NoBalancer).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        let s = handle.wait_for(WAIT, all_ready(2)).await.expect("2 ready");
        let victim = s.instances[0].clone();
        let old_pid = victim.pid.unwrap();
        kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).unwrap();
        // Reported as crashed and put in back-off.
        let s = handle
            .wait_for(WAIT, |s| s.crashes_total >= 1)
            .await
            .expect("crash detected");
        let v = s.instances.iter().find(|i| i.id == victim.id).unwrap();
        assert!(
            v.last_failure.as_deref().unwrap_or("").contains("exited"),
            "{v:?}"
        );
        // Restarted under the same id, with a new process.
        let s = handle
            .wait_for(WAIT, |s| {
                s.ready() == 2
                    && s.instances
                        .iter()
                        .any(|i| i.id == victim.id && i.restarts == 1 && i.phase == Phase::Ready)
            })
            .await
            .expect("restarted");
        let v = s.instances.iter().find(|i| i.id == victim.id).unwrap();
        assert_ne!(v.pid, Some(old_pid));
        let (_, body) = get(v.addr.unwrap(), "/id").await.unwrap();
        assert_eq!(body, victim.id);

        // Crash it twice more quickly: the back-off grows (200 ms, then 400 ms, 800 ms).
        for round in 2..=3u32 {
            let pid = handle
                .wait_for(WAIT, |s| {
                    s.instances.iter().any(|i| {
                        i.id == victim.id && i.restarts == round - 1 && i.phase == Phase::Ready
                    })
                })
                .await
                .expect("ready again")
                .instances
                .iter()
                .find(|i| i.id == victim.id)
                .and_then(|i| i.pid)
                .unwrap();
            let t0 = std::time::Instant::now();
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
            handle
                .wait_for(WAIT, |s| {
                    s.instances
                        .iter()
                        .any(|i| i.id == victim.id && i.restarts == round)
                })
                .await
                .expect("restarted again");
            // Failure number `round` waits 200 ms * 2^(round-1) before the restart.
            let min = Duration::from_millis(200 * (1 << (round - 1)));
            assert!(
                t0.elapsed() >= min,
                "round {round}: restarted after {:?} < {min:?}",
                t0.elapsed()
            );
        }
        stop.cancel();
        run.await.unwrap();
        assert_eq!(handle.status().crashes_total, 3);
    });
}

fn never_ready_instance_is_killed_and_counted() {
    block_on(async {
        let mut cfg = instance_config("never", 1, "never_ready");
        cfg.ready_timeout_ms = 800;
        let (fleet, handle) = Fleet::new(cfg, me(), NoBalancer).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        let first_pid = handle
            .wait_for(WAIT, |s| s.pids().len() == 1)
            .await
            .expect("spawned")
            .pids()[0];
        let s = handle
            .wait_for(WAIT, |s| s.ready_timeouts_total >= 2)
            .await
            .expect("timed out twice");
        assert_eq!(s.ready(), 0, "never admitted");
        assert_eq!(s.crashes_total, 0);
        assert!(!alive(first_pid), "the unready process was killed");
        assert!(
            s.instances[0]
                .last_failure
                .as_deref()
                .unwrap()
                .contains("not ready")
        );
        stop.cancel();
        run.await.unwrap();
        assert!(handle.status().pids().is_empty());
    });
}

fn scale_in_stops_gracefully_or_kills_after_grace() {
    block_on(async {
        // Graceful: the instance exits on SIGTERM, no SIGKILL needed.
        let (fleet, handle) = Fleet::new(instance_config("in", 3, "ok"), me(), NoBalancer).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        let s = handle.wait_for(WAIT, all_ready(3)).await.expect("3 ready");
        let newest = s.instances.last().unwrap().clone();
        handle.set_count(2);
        let s = handle
            .wait_for(WAIT, |s| s.instances.len() == 2 && s.stopped_total == 1)
            .await
            .expect("scaled in");
        assert!(
            s.instances.iter().all(|i| i.id != newest.id),
            "newest retired first"
        );
        assert_eq!(s.killed_total, 0);
        assert!(!alive(newest.pid.unwrap()));
        stop.cancel();
        run.await.unwrap();

        // Forced: an instance that ignores SIGTERM is killed after stop_grace.
        let mut cfg = instance_config("in-kill", 2, "ignore_term");
        cfg.stop_grace_ms = 500;
        let (fleet, handle) = Fleet::new(cfg, me(), NoBalancer).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        handle.wait_for(WAIT, all_ready(2)).await.expect("2 ready");
        let t0 = std::time::Instant::now();
        handle.set_count(1);
        let s = handle
            .wait_for(WAIT, |s| s.stopped_total == 1)
            .await
            .expect("stopped");
        assert_eq!(s.killed_total, 1);
        assert!(
            t0.elapsed() >= Duration::from_millis(500),
            "waited the grace first"
        );
        stop.cancel();
        run.await.unwrap();
        let s = handle.status();
        assert_eq!(s.killed_total, 2, "shutdown also had to kill the last one");
        assert!(s.shut_down);
    });
}

fn cpu_pinning_applies_to_every_thread() {
    block_on(async {
        let cores = fleet::process::available_cpus();
        let mut cfg = instance_config("pin", 2, "ok");
        cfg.cpus_per_instance = 1;
        let (fleet, handle) = Fleet::new(cfg, me(), NoBalancer).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        let s = handle.wait_for(WAIT, all_ready(2)).await.expect("2 ready");
        for i in &s.instances {
            let pid = i.pid.unwrap();
            let want = vec![i.slot % cores];
            assert_eq!(i.cpus.as_ref(), Some(&want));
            let tids = fleet::process::thread_ids(pid);
            assert!(tids.len() > 1, "the instance runs a multi-threaded runtime");
            for tid in tids {
                assert_eq!(
                    fleet::process::allowed_cpus(pid, tid),
                    Some(want.clone()),
                    "thread {tid} of {pid}"
                );
            }
        }
        stop.cancel();
        run.await.unwrap();
    });
}

fn shutdown_leaves_no_child() {
    block_on(async {
        let (fleet, handle) =
            Fleet::new(instance_config("down", 3, "ok"), me(), NoBalancer).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        let s = handle.wait_for(WAIT, all_ready(3)).await.expect("3 ready");
        let pids = s.pids();
        assert_eq!(pids.len(), 3);
        stop.cancel();
        tokio::time::timeout(WAIT, run)
            .await
            .expect("bounded")
            .unwrap();
        for pid in pids {
            assert!(!alive(pid), "pid {pid} survived shutdown");
        }
        let s = handle.status();
        assert!(s.shut_down && s.instances.is_empty());
        assert_eq!(s.stopped_total, 3);
    });
}

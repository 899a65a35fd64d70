//! The fleet behind the real in-process balancer (`proxy`): readiness gating, rolling
//! restart and scale-in under a client loop with zero failed requests, and the
//! autoscaler scaling out, back in, and holding when the balancer cannot be read.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{alive, block_on, get, instance_config, me};
use fleet::{Autoscaler, Fleet, FleetHandle, FleetStatus, MetricsSource, Phase};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

fn main() {
    common::serve_if_child();
    common::run_tests(&[
        (
            "instances_join_the_balancer_only_when_ready",
            instances_join_the_balancer_only_when_ready,
        ),
        (
            "rolling_restart_and_scale_in_under_load_fail_nothing",
            rolling_restart_and_scale_in_under_load_fail_nothing,
        ),
        (
            "autoscaler_scales_out_under_load_and_back_in",
            autoscaler_scales_out_under_load_and_back_in,
        ),
        (
            "autoscaler_holds_when_balancer_metrics_are_unavailable",
            autoscaler_holds_when_balancer_metrics_are_unavailable,
        ),
    ]);
}

async fn balancer() -> (
    proxy::ProxyHandle,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let cfg = proxy::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..proxy::Config::default()
    };
    let p = proxy::Proxy::bind(cfg).await.expect("bind balancer");
    let h = p.handle();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        p.run(s).await.expect("balancer run");
    });
    (h, stop, task)
}

/// A closed-loop client: `workers` tasks each sending GET `path` through the balancer
/// until stopped. Counts successes and failures (non-200 or transport error).
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn load(addr: std::net::SocketAddr, path: &'static str, workers: usize) -> Load {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..workers)
        .map(|_| {
            let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                // Bounded: at most 100 000 requests per worker.
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match get(addr, path).await {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok((code, body)) => {
                            eprintln!("request failed: {code} {body}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("request failed: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    Load {
        ok,
        failed,
        stop,
        tasks,
    }
}

impl Load {
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn registered(p: &proxy::ProxyHandle) -> Vec<String> {
    let mut v: Vec<String> = p.backends().into_iter().map(|b| b.name).collect();
    v.sort();
    v
}

fn instances_join_the_balancer_only_when_ready() {
    block_on(async {
        let (p, pstop, ptask) = balancer().await;
        // The instance takes 1.5 s before it even listens.
        let cfg = instance_config("gate", 1, "slow_start_ms:1500");
        let (fleet, handle) = Fleet::new(cfg, me(), p.clone()).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        handle
            .wait_for(WAIT, |s| s.pids().len() == 1)
            .await
            .expect("spawned");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let s = handle.status();
        assert_eq!(s.instances[0].phase, Phase::Starting);
        assert!(
            registered(&p).is_empty(),
            "admitted before ready: {:?}",
            registered(&p)
        );
        let s = handle
            .wait_for(WAIT, |s| s.ready() == 1)
            .await
            .expect("ready");
        assert_eq!(registered(&p), vec![s.instances[0].id.clone()]);
        let (code, body) = get(p.listen_addr(), "/id").await.unwrap();
        assert_eq!((code, body), (200, s.instances[0].id.clone()));
        stop.cancel();
        run.await.unwrap();
        assert!(registered(&p).is_empty(), "deregistered on shutdown");
        pstop.cancel();
        ptask.await.unwrap();
    });
}

fn rolling_restart_and_scale_in_under_load_fail_nothing() {
    block_on(async {
        let (p, pstop, ptask) = balancer().await;
        let (fleet, handle) =
            Fleet::new(instance_config("roll", 3, "ok"), me(), p.clone()).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        let before = handle
            .wait_for(WAIT, |s| s.ready() == 3 && s.instances.len() == 3)
            .await
            .expect("3 ready");
        let old_pids = before.pids();

        // Watch the rollout: ready capacity must never drop below 3 and never more than
        // one surge instance may start at a time.
        let watch_stop = CancellationToken::new();
        let watch = tokio::spawn(watch_min_ready(handle.clone(), watch_stop.clone()));
        let l = load(p.listen_addr(), "/slow", 6);
        tokio::time::sleep(Duration::from_millis(500)).await;
        handle.rolling_restart();
        let s = handle
            .wait_for(WAIT, |s| FleetHandle::rolled_out(s) && s.generation == 1)
            .await
            .expect("rolled out");
        assert!(s.instances.iter().all(|i| i.generation == 1));
        for pid in &old_pids {
            assert!(!alive(*pid), "old instance {pid} still running");
        }
        assert_eq!(s.stopped_total, 3);
        tokio::time::sleep(Duration::from_millis(300)).await;
        watch_stop.cancel();
        let (min_ready, max_starting) = watch.await.expect("rollout invariants held");
        assert_eq!(min_ready, 3, "ready capacity during the rollout");
        assert_eq!(max_starting, 1, "exactly one surge instance at a time");

        // Scale in under the same load.
        handle.set_count(1);
        handle
            .wait_for(WAIT, |s| s.instances.len() == 1 && s.ready() == 1)
            .await
            .expect("scaled in");
        assert_eq!(registered(&p).len(), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (ok, failed) = l.finish().await;
        eprintln!("rolling restart + scale-in: {ok} ok, {failed} failed");
        assert!(ok > 0, "the load loop made progress");
        assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
        let s = handle.status();
        assert_eq!(s.crashes_total, 0);
        assert_eq!(s.killed_total, 0, "every instance stopped on SIGTERM");
        stop.cancel();
        run.await.unwrap();
        pstop.cancel();
        ptask.await.unwrap();
    });
}

/// Until `stop`, asserts the surge-of-one invariants on every status change: ready
/// instances never fewer than 3, starting instances never more than 1.
async fn watch_min_ready(handle: FleetHandle, stop: CancellationToken) -> (usize, usize) {
    let mut rx = handle.subscribe();
    let mut min_ready = usize::MAX;
    let mut max_starting = 0;
    loop {
        {
            let s: FleetStatus = rx.borrow_and_update().clone();
            min_ready = min_ready.min(s.ready());
            let starting = s
                .instances
                .iter()
                .filter(|i| i.phase == Phase::Starting)
                .count();
            max_starting = max_starting.max(starting);
            assert!(
                s.ready() >= 3 || s.desired < 3,
                "ready dropped to {}: {s:?}",
                s.ready()
            );
            assert!(starting <= 1, "{starting} starting at once: {s:?}");
        }
        tokio::select! {
            _ = stop.cancelled() => return (min_ready, max_starting),
            r = rx.changed() => if r.is_err() { return (min_ready, max_starting) },
        }
    }
}

fn hpa_config(min: u32, max: u32) -> autoscale::Config {
    let mut c: autoscale::Config = toml::from_str(&format!(
        r#"
policy = "hpa"
min_instances = {min}
max_instances = {max}
target_in_flight = 1.0
tick_ms = 200
[hpa]
sync_period_s = 1
[hpa.scale_down]
stabilization_window_s = 2
policies = [{{ kind = "pods", value = 4, period_s = 1 }}]
"#
    ))
    .expect("autoscale config");
    c.validate().expect("valid");
    c.hpa.tolerance = 0.1;
    c
}

fn autoscaler_scales_out_under_load_and_back_in() {
    block_on(async {
        let (p, pstop, ptask) = balancer().await;
        let (fleet, handle) = Fleet::new(instance_config("as", 1, "ok"), me(), p.clone()).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        handle
            .wait_for(WAIT, |s| s.ready() == 1)
            .await
            .expect("1 ready");
        let (scaler, status) =
            Autoscaler::new(hpa_config(1, 3), handle.clone(), p.clone()).unwrap();
        let sstop = CancellationToken::new();
        let stask = tokio::spawn(scaler.run(sstop.clone()));

        // 6 concurrent clients on a 100 ms endpoint: ~6 in flight against a target of 1
        // per instance: the HPA wants 6, capped at max 3.
        let l = load(p.listen_addr(), "/slow", 6);
        handle
            .wait_for(WAIT, |s| s.desired == 3 && s.ready() == 3)
            .await
            .expect("scaled out to max under load");
        let d = status.borrow().decision.clone().expect("a decision");
        assert!(
            d.reason.contains("in_flight"),
            "reason names the metric: {}",
            d.reason
        );
        let (ok, failed) = l.finish().await;
        assert!(ok > 0);
        assert_eq!(failed, 0);

        // Idle: back to min once the 2 s scale-down window has passed.
        handle
            .wait_for(WAIT, |s| s.desired == 1 && s.instances.len() == 1)
            .await
            .expect("scaled back in when idle");
        assert!(status.borrow().changes >= 2);
        sstop.cancel();
        stask.await.unwrap();
        stop.cancel();
        run.await.unwrap();
        pstop.cancel();
        ptask.await.unwrap();
    });
}

/// A balancer that cannot be read (the in-process handle always can, so this fault is
/// produced by a source that reports nothing).
struct Unreachable;
impl MetricsSource for Unreachable {
    fn sample(&self) -> Option<fleet::BalancerSample> {
        None
    }
}

fn autoscaler_holds_when_balancer_metrics_are_unavailable() {
    block_on(async {
        let (p, pstop, ptask) = balancer().await;
        let (fleet, handle) =
            Fleet::new(instance_config("hold", 2, "ok"), me(), p.clone()).unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(fleet.run(stop.clone()));
        handle
            .wait_for(WAIT, |s| s.ready() == 2)
            .await
            .expect("2 ready");

        // Unreadable balancer: after 3 s (15 ticks, 3 HPA periods, past the 2 s window)
        // the count is unchanged.
        let (scaler, status) =
            Autoscaler::new(hpa_config(1, 3), handle.clone(), Unreachable).unwrap();
        let sstop = CancellationToken::new();
        let stask = tokio::spawn(scaler.run(sstop.clone()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(handle.desired().count, 2);
        assert_eq!(handle.status().ready(), 2);
        let st = status.borrow().clone();
        assert!(st.held >= 5, "held {} ticks", st.held);
        assert!(st.decision.unwrap().reason.contains("unavailable"));
        sstop.cancel();
        stask.await.unwrap();

        // Same idle fleet with the readable balancer: the HPA scales it in. This is what
        // holding prevented.
        let (scaler, _) = Autoscaler::new(hpa_config(1, 3), handle.clone(), p.clone()).unwrap();
        let sstop = CancellationToken::new();
        let stask = tokio::spawn(scaler.run(sstop.clone()));
        handle
            .wait_for(WAIT, |s| s.desired == 1)
            .await
            .expect("idle fleet scaled in with metrics available");
        sstop.cancel();
        stask.await.unwrap();
        stop.cancel();
        run.await.unwrap();
        pstop.cancel();
        ptask.await.unwrap();
    });
}

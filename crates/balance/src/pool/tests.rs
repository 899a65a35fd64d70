use super::*;
use crate::backend::Outcome;
use crate::config::StrategyKind;
use crate::select::PickRequest;
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

fn spec(name: &str, port: u16) -> BackendSpec {
    BackendSpec {
        name: name.into(),
        addr: format!("127.0.0.1:{port}"),
        weight: 1,
    }
}

fn pool(n: u16, now: Instant) -> (Pool, Vec<BackendId>) {
    let mut config = BalanceConfig {
        strategy: StrategyKind::RoundRobin,
        ..BalanceConfig::default()
    };
    config.outlier.consecutive_failures = 3;
    config.outlier.base_ejection_ms = 1000;
    config.outlier.max_ejection_percent = 50;
    let mut p = Pool::new(config);
    let ids = (0..n)
        .map(|i| {
            p.add_initial(spec(&format!("b{i}"), 9000 + i), now)
                .unwrap()
        })
        .collect();
    (p, ids)
}

fn picked(p: &Pool, now: Instant, picks: u64) -> Vec<BackendId> {
    let s = p.selector(now);
    let mut ids: Vec<BackendId> = (0..picks)
        .filter_map(|r| s.pick(&PickRequest::new(r), &[], now))
        .map(|x| x.backend.id)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn add_validates_name_address_weight_and_uniqueness() {
    let now = Instant::now();
    let (mut p, _) = pool(1, now);
    assert_eq!(
        p.add(spec("b0", 1), now),
        Err(PoolError::DuplicateName("b0".into()))
    );
    assert!(matches!(
        p.add(spec("", 1), now),
        Err(PoolError::InvalidName(_))
    ));
    assert!(matches!(
        p.add(spec("a b", 1), now),
        Err(PoolError::InvalidName(_))
    ));
    for addr in ["localhost", "host:0", "host:99999", ":80", "a b:80"] {
        let s = BackendSpec {
            addr: addr.into(),
            ..spec("x", 1)
        };
        assert!(
            matches!(p.add(s, now), Err(PoolError::InvalidAddr(_))),
            "{addr}"
        );
    }
    let s = BackendSpec {
        weight: 0,
        ..spec("x", 1)
    };
    assert_eq!(p.add(s, now), Err(PoolError::InvalidWeight(0)));
    assert_eq!(
        p.set_weight(p.ids()[0], MAX_WEIGHT + 1),
        Err(PoolError::InvalidWeight(MAX_WEIGHT + 1))
    );
    assert!(p.add(spec("x", 1), now).is_ok());
    assert_eq!(p.len(), 2);
    assert_eq!(
        p.drain(BackendId(999)),
        Err(PoolError::UnknownBackend(BackendId(999)))
    );
}

#[test]
fn draining_backend_gets_no_new_requests_and_reports_when_idle() {
    let now = Instant::now();
    let (mut p, ids) = pool(3, now);
    let guard = p.load(ids[1]).unwrap().start();
    p.drain(ids[1]).unwrap();
    assert_eq!(picked(&p, now, 30), [ids[0], ids[2]]);
    assert_eq!(p.tick(now), []);
    assert!(!p.is_drained(ids[1]).unwrap());
    drop(guard);
    assert_eq!(p.tick(now), [PoolEvent::Drained(ids[1])]);
    assert_eq!(p.tick(now), [], "reported once");
    assert!(p.is_drained(ids[1]).unwrap());
    // Still listed; re-activated it takes traffic again.
    assert_eq!(p.len(), 3);
    p.activate(ids[1], now).unwrap();
    assert_eq!(picked(&p, now, 30), ids);
}

#[test]
fn removed_backend_leaves_once_in_flight_requests_finish() {
    let now = Instant::now();
    let (mut p, ids) = pool(2, now);
    let guard = p.load(ids[0]).unwrap().start();
    p.remove(ids[0]).unwrap();
    assert_eq!(picked(&p, now, 10), [ids[1]]);
    assert_eq!(p.tick(now), []);
    assert_eq!(p.len(), 2);
    drop(guard);
    assert_eq!(p.tick(now), [PoolEvent::Removed(ids[0])]);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p.admin_state(ids[0]),
        Err(PoolError::UnknownBackend(ids[0]))
    );
    // The name is free again.
    assert!(p.add(spec("b0", 9000), now).is_ok());
}

#[test]
fn health_transitions_change_eligibility() {
    let now = Instant::now();
    let (mut p, ids) = pool(3, now);
    let fall = p.config().health.fall;
    let rise = p.config().health.rise;
    for i in 0..fall {
        let t = p.observe_health(ids[2], false, now).unwrap();
        assert_eq!(t.is_some(), i + 1 == fall);
    }
    assert_eq!(p.health(ids[2]).unwrap(), HealthStatus::Unhealthy);
    assert_eq!(picked(&p, now, 30), [ids[0], ids[1]]);
    for _ in 0..rise {
        p.observe_health(ids[2], true, now).unwrap();
    }
    assert_eq!(picked(&p, now, 30), ids);
}

#[test]
fn consecutive_failures_eject_until_the_time_passes() {
    let t0 = Instant::now();
    let (mut p, ids) = pool(4, t0);
    let load = p.load(ids[0]).unwrap();
    let mut run = 0;
    for _ in 0..2 {
        run = load.record(Outcome::ConnectFailure, MS, t0);
        assert_eq!(p.report_failures(ids[0], run, t0).unwrap(), None);
    }
    run = load.record(Outcome::ServerError, MS, t0).max(run);
    assert_eq!(
        p.report_failures(ids[0], run, t0).unwrap(),
        Some(t0 + 1000 * MS)
    );
    assert_eq!(load.consecutive_failures(), 0, "run reset after ejection");
    assert_eq!(picked(&p, t0, 40), ids[1..]);
    let s = p.selector(t0);
    assert_eq!(s.rebuild_at(), Some(t0 + 1000 * MS));
    assert!(!s.needs_rebuild(t0 + 999 * MS));
    assert!(s.needs_rebuild(t0 + 1000 * MS));
    assert_eq!(p.tick(t0 + 999 * MS), []);
    assert_eq!(p.tick(t0 + 1000 * MS), [PoolEvent::Unejected(ids[0])]);
    assert_eq!(picked(&p, t0 + 1000 * MS, 40), ids);
    // Ejected again soon: twice as long.
    assert_eq!(
        p.eject(ids[0], t0 + 1100 * MS).unwrap(),
        Some(t0 + 3100 * MS)
    );
}

#[test]
fn ejection_cap_keeps_part_of_the_pool() {
    let t0 = Instant::now();
    let (mut p, ids) = pool(4, t0);
    assert!(p.eject(ids[0], t0).unwrap().is_some());
    assert!(p.eject(ids[1], t0).unwrap().is_some());
    // 2 of 4 = 50%: no more.
    assert_eq!(p.eject(ids[2], t0).unwrap(), None);
    assert_eq!(p.report_failures(ids[3], 100, t0).unwrap(), None);
    // Already ejected: no double ejection.
    assert_eq!(p.eject(ids[0], t0).unwrap(), None);
    assert_eq!(picked(&p, t0, 40), ids[2..]);
}

#[test]
fn passive_detection_can_be_disabled() {
    let t0 = Instant::now();
    let mut config = BalanceConfig::default();
    config.outlier.enabled = false;
    let mut p = Pool::new(config);
    let id = p.add_initial(spec("a", 1), t0).unwrap();
    assert_eq!(p.report_failures(id, 1000, t0).unwrap(), None);
}

#[test]
fn slow_start_ramps_a_new_backend_and_schedules_rebuilds() {
    let t0 = Instant::now();
    let mut config = BalanceConfig {
        strategy: StrategyKind::Random,
        ..BalanceConfig::default()
    };
    config.slow_start.window_ms = 10_000;
    config.slow_start.min_weight_percent = 10;
    let mut p = Pool::new(config);
    let old = p.add_initial(spec("old", 1), t0).unwrap();
    let new = p.add(spec("new", 2), t0).unwrap();
    let share = |p: &Pool, at: Instant| {
        let s = p.selector(at);
        let n = (0..20_000u64)
            .filter(|&r| {
                s.pick(&PickRequest::new(crate::hash::mix64(r)), &[], at)
                    .unwrap()
                    .backend
                    .id
                    == new
            })
            .count();
        n as f64 / 20_000.0
    };
    // weight 0.1 vs 1: about 9%.
    assert!(
        (share(&p, t0) - 0.1 / 1.1).abs() < 0.02,
        "{}",
        share(&p, t0)
    );
    assert!((share(&p, t0 + 5000 * MS) - 0.5 / 1.5).abs() < 0.02);
    assert!((share(&p, t0 + 10_000 * MS) - 0.5).abs() < 0.02);
    assert_eq!(p.selector(t0).rebuild_at(), Some(t0 + 500 * MS));
    assert_eq!(p.selector(t0 + 10_000 * MS).rebuild_at(), None);
    let st = p.statuses(t0);
    assert!(st.iter().find(|s| s.id == new).unwrap().slow_start);
    assert!(!st.iter().find(|s| s.id == old).unwrap().slow_start);
}

#[test]
fn statuses_report_state_and_counters() {
    let t0 = Instant::now();
    let (mut p, ids) = pool(2, t0);
    let load = p.load(ids[1]).unwrap();
    let _g = load.start();
    load.record(Outcome::ServerError, 40 * MS, t0);
    p.eject(ids[1], t0).unwrap();
    p.drain(ids[0]).unwrap();
    let st = p.statuses(t0 + 100 * MS);
    assert_eq!(st.len(), 2);
    assert_eq!((st[0].admin, st[0].eligible), (AdminState::Draining, false));
    assert!(st[1].ejected && !st[1].eligible);
    assert_eq!(st[1].ejected_for_ms, 900);
    assert_eq!(
        (st[1].in_flight, st[1].requests_total, st[1].failures_total),
        (1, 1, 1)
    );
    assert!((st[1].latency_ewma_ms - 40.0).abs() < 0.01);
    let json = serde_json::to_string(&st).unwrap();
    assert!(json.contains("\"admin\":\"draining\""), "{json}");
}

#[test]
fn consistent_hash_moves_only_the_lost_backends_keys() {
    let t0 = Instant::now();
    let mut config = BalanceConfig {
        strategy: StrategyKind::ConsistentHash,
        ..BalanceConfig::default()
    };
    config.health.fall = 1;
    let mut p = Pool::new(config);
    let ids: Vec<BackendId> = (0..10)
        .map(|i| p.add_initial(spec(&format!("b{i}"), 9000 + i), t0).unwrap())
        .collect();
    let assign = |p: &Pool| {
        let s = p.selector(t0);
        (0..20_000u32)
            .map(|k| {
                let key = k.to_le_bytes();
                let req = PickRequest {
                    hash_key: Some(&key),
                    ..PickRequest::new(k as u64)
                };
                s.pick(&req, &[], t0).unwrap().backend.id
            })
            .collect::<Vec<_>>()
    };
    let before = assign(&p);
    p.observe_health(ids[3], false, t0).unwrap();
    let after = assign(&p);
    let mut moved_foreign = 0;
    for (b, a) in before.iter().zip(&after) {
        if *b == ids[3] {
            assert_ne!(a, b);
        } else if a != b {
            moved_foreign += 1;
        }
    }
    assert!(
        moved_foreign < 20_000 / 50,
        "{moved_foreign} keys of healthy backends moved"
    );
    // Healthy again: keys return to their original backend.
    p.observe_health(ids[3], true, t0).unwrap();
    p.observe_health(ids[3], true, t0).unwrap();
    assert_eq!(assign(&p), before);
}

#[test]
fn fail_open_skips_unreachable_and_ejected_backends_while_another_answers() {
    let now = Instant::now();
    let (mut p, ids) = pool(3, now);
    let fall = p.config().health.fall;
    // Every backend fails its check: b0 answers badly, b1 refuses connections, b2 is
    // ejected by passive detection as well.
    for _ in 0..fall {
        p.observe_check(ids[0], CheckOutcome::Fail, now).unwrap();
        p.observe_check(ids[1], CheckOutcome::Unreachable, now)
            .unwrap();
        p.observe_check(ids[2], CheckOutcome::Fail, now).unwrap();
    }
    assert!(!p.reachable(ids[1]).unwrap());
    assert!(p.report_failures(ids[2], 3, now).unwrap().is_some());
    let s = p.selector(now);
    assert!(s.is_fail_open());
    assert_eq!(picked(&p, now, 30), [ids[0]]);
    // When b0 stops answering too, fail-open falls back to every active backend.
    for _ in 0..fall {
        p.observe_check(ids[0], CheckOutcome::Unreachable, now)
            .unwrap();
    }
    assert!(p.selector(now).is_fail_open());
    assert_eq!(picked(&p, now, 30), ids);
    // One backend passing again ends fail-open.
    for _ in 0..p.config().health.rise {
        p.observe_check(ids[1], CheckOutcome::Pass, now).unwrap();
    }
    assert!(!p.selector(now).is_fail_open());
    assert_eq!(picked(&p, now, 30), [ids[1]]);
}

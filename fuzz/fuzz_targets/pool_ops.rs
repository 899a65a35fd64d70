//! Fuzzes the balancing core as a state machine: arbitrary sequences of pool changes,
//! health results, failure runs, time steps and picks, for every strategy.
//!
//! Properties: never panics; a pick never returns an excluded backend, and never a
//! draining one; outside fail-open it returns only eligible (healthy, not ejected, active)
//! backends; it returns nothing only when no eligible backend is left to try.
//! (The ejection cap is checked in unit tests: draining can shrink the pool after an
//! ejection, so the share is not an invariant of arbitrary sequences.)
#![no_main]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use balance::{
    AdminState, AllDownPolicy, BackendId, BackendSpec, BalanceConfig, HealthStatus, PickRequest,
    Pool, StrategyKind,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Op {
    Add {
        name: u8,
        weight: u16,
        slow: bool,
    },
    Drain(u8),
    Remove(u8),
    Activate(u8),
    Weight(u8, u16),
    Health(u8, bool),
    Failures(u8, u8),
    Advance(u16),
    Tick,
    Start(u8),
    Finish(u8),
    Pick {
        random: u64,
        key: Vec<u8>,
        ip: [u8; 4],
        sticky: u8,
        exclude: Vec<u8>,
    },
}

#[derive(Debug, Arbitrary)]
struct Input {
    strategy: u8,
    fail_open: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut config = BalanceConfig {
        strategy: StrategyKind::ALL[input.strategy as usize % StrategyKind::ALL.len()],
        all_down: if input.fail_open {
            AllDownPolicy::FailOpen
        } else {
            AllDownPolicy::Reject503
        },
        ..BalanceConfig::default()
    };
    config.hash.table_size = 1009;
    config.health.fall = 1;
    config.health.rise = 1;
    config.outlier.consecutive_failures = 2;
    let mut pool = Pool::new(config);
    let mut guards = Vec::new();
    let id_at = |pool: &Pool, i: u8| {
        let ids = pool.ids();
        (!ids.is_empty()).then(|| ids[i as usize % ids.len()])
    };
    for op in input.ops.into_iter().take(200) {
        match op {
            Op::Add { name, weight, slow } => {
                let spec = BackendSpec {
                    name: format!("b{}", name % 40),
                    addr: format!("127.0.0.1:{}", 9000 + name as u16),
                    weight: weight as u32 % 1200,
                };
                let _ = if slow {
                    pool.add(spec, now)
                } else {
                    pool.add_initial(spec, now)
                };
            }
            Op::Drain(i) => {
                if let Some(id) = id_at(&pool, i) {
                    pool.drain(id).unwrap();
                }
            }
            Op::Remove(i) => {
                if let Some(id) = id_at(&pool, i) {
                    pool.remove(id).unwrap();
                }
            }
            Op::Activate(i) => {
                if let Some(id) = id_at(&pool, i) {
                    pool.activate(id, now).unwrap();
                }
            }
            Op::Weight(i, w) => {
                if let Some(id) = id_at(&pool, i) {
                    let _ = pool.set_weight(id, w as u32);
                }
            }
            Op::Health(i, ok) => {
                if let Some(id) = id_at(&pool, i) {
                    pool.observe_health(id, ok, now).unwrap();
                }
            }
            Op::Failures(i, n) => {
                if let Some(id) = id_at(&pool, i) {
                    pool.report_failures(id, n as u32, now).unwrap();
                }
            }
            Op::Advance(ms) => now += Duration::from_millis(ms as u64 * 10),
            Op::Tick => {
                pool.tick(now);
            }
            Op::Start(i) => {
                if let Some(id) = id_at(&pool, i) {
                    guards.push(pool.load(id).unwrap().start());
                }
            }
            Op::Finish(i) => {
                if !guards.is_empty() {
                    guards.swap_remove(i as usize % guards.len());
                }
            }
            Op::Pick {
                random,
                key,
                ip,
                sticky,
                exclude,
            } => {
                let statuses = pool.statuses(now);
                let selector = pool.selector(now);
                let exclude: Vec<BackendId> = exclude
                    .iter()
                    .take(4)
                    .filter_map(|&i| id_at(&pool, i))
                    .collect();
                let name = format!("b{}", sticky % 40);
                let req = PickRequest {
                    client_ip: Some(IpAddr::from(ip)),
                    hash_key: (!key.is_empty()).then_some(&key[..]),
                    sticky: Some(&name),
                    random,
                };
                if let Some(p) = selector.pick(&req, &exclude, now) {
                    let id = p.backend.id;
                    assert!(!exclude.contains(&id), "picked an excluded backend");
                    let s = statuses
                        .iter()
                        .find(|s| s.id == id)
                        .expect("picked a listed backend");
                    assert_eq!(s.admin, AdminState::Active, "picked a draining backend");
                    if !p.fail_open {
                        assert!(
                            s.eligible && s.health == HealthStatus::Healthy && !s.ejected,
                            "picked an ineligible backend"
                        );
                    }
                } else if !selector.is_fail_open() {
                    let eligible = statuses
                        .iter()
                        .filter(|s| s.eligible && !exclude.contains(&s.id))
                        .count();
                    assert_eq!(eligible, 0, "no pick although {eligible} were eligible");
                }
            }
        }
    }
});

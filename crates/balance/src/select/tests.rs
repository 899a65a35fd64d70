use super::*;
use crate::backend::BackendLoad;
use crate::config::EwmaConfig;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

fn cand(i: u64, weight: f64, eligibility: Eligibility, now: Instant) -> Candidate {
    Candidate {
        id: BackendId(i),
        name: format!("b{i}").into(),
        addr: format!("127.0.0.1:{}", 9000 + i).into(),
        load: Arc::new(BackendLoad::new(&EwmaConfig::default(), now)),
        weight,
        eligibility,
    }
}

fn selector(strategy: StrategyKind, weights: &[f64], now: Instant) -> Selector {
    let cands = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| cand(i as u64, w, Eligibility::Eligible, now))
        .collect();
    Selector::build(&config(strategy), cands, None)
}

fn config(strategy: StrategyKind) -> BalanceConfig {
    BalanceConfig {
        strategy,
        ..BalanceConfig::default()
    }
}

fn pick_id(s: &Selector, random: u64, now: Instant) -> u64 {
    s.pick(&PickRequest::new(random), &[], now)
        .unwrap()
        .backend
        .id
        .0
}

fn counts(s: &Selector, picks: usize, seed: u64, now: Instant) -> Vec<usize> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut c = vec![0; s.candidates().len()];
    for _ in 0..picks {
        c[pick_id(s, rng.random(), now) as usize] += 1;
    }
    c
}

#[test]
fn round_robin_cycles_in_order_ignoring_weights() {
    let now = Instant::now();
    let s = selector(StrategyKind::RoundRobin, &[5.0, 1.0, 1.0], now);
    let seq: Vec<u64> = (0..6).map(|r| pick_id(&s, r, now)).collect();
    assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
}

#[test]
fn smooth_weighted_round_robin_matches_nginx_pattern() {
    let now = Instant::now();
    let s = selector(StrategyKind::WeightedRoundRobin, &[5.0, 1.0, 1.0], now);
    let seq: Vec<u64> = (0..14).map(|r| pick_id(&s, r, now)).collect();
    // a a b a c a a, twice: the weight-5 backend never gets more than two in a row.
    assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn smooth_weighted_round_robin_is_proportional_without_bursts() {
    let now = Instant::now();
    let s = selector(StrategyKind::WeightedRoundRobin, &[3.0, 2.0, 1.0], now);
    let seq: Vec<u64> = (0..600).map(|r| pick_id(&s, r, now)).collect();
    let c = |id| seq.iter().filter(|&&x| x == id).count();
    assert_eq!((c(0), c(1), c(2)), (300, 200, 100));
    let longest_run = seq.chunk_by(|a, b| a == b).map(<[u64]>::len).max().unwrap();
    assert!(longest_run <= 2, "a burst of {longest_run}");
}

#[test]
fn least_connections_picks_fewest_in_flight_per_weight() {
    let now = Instant::now();
    let s = selector(StrategyKind::LeastConnections, &[1.0, 1.0, 2.0], now);
    let loads: Vec<_> = s.candidates().iter().map(|c| c.load.clone()).collect();
    let _g: Vec<_> = [(0, 3), (1, 1), (2, 3)]
        .into_iter()
        .flat_map(|(i, n)| (0..n).map(|_| loads[i].start()).collect::<Vec<_>>())
        .collect();
    // 3/1, 1/1, 3/2: backend 1 has the least load per weight.
    for r in 0..50 {
        assert_eq!(pick_id(&s, r * 7919, now), 1);
    }
    drop(_g);
}

#[test]
fn least_connections_breaks_ties_fairly() {
    let now = Instant::now();
    let s = selector(StrategyKind::LeastConnections, &[1.0; 4], now);
    let c = counts(&s, 40_000, 7, now);
    for &x in &c {
        assert!((9_000..11_000).contains(&x), "{c:?}");
    }
}

#[test]
fn p2c_avoids_the_slow_and_the_busy() {
    let now = Instant::now();
    let s = selector(StrategyKind::P2cPeakEwma, &[1.0; 2], now);
    s.candidates()[0]
        .load
        .record(crate::Outcome::Success, Duration::from_millis(500), now);
    // With two backends P2C compares both every time: the slow one is never chosen.
    for r in 0..100u64 {
        assert_eq!(pick_id(&s, mix64(r), now), 1);
    }
    // Enough in-flight on the fast one outweighs its latency advantage (30ms x 20 > 500ms).
    let guards: Vec<_> = (0..20).map(|_| s.candidates()[1].load.start()).collect();
    assert_eq!(pick_id(&s, 1, now), 0);
    drop(guards);
}

#[test]
fn p2c_spreads_over_equal_backends_and_starves_the_worst() {
    let now = Instant::now();
    let s = selector(StrategyKind::P2cPeakEwma, &[1.0; 5], now);
    s.candidates()[4]
        .load
        .record(crate::Outcome::Success, Duration::from_secs(2), now);
    let c = counts(&s, 50_000, 11, now);
    // The worst of five wins no pair; the other four share evenly.
    assert_eq!(c[4], 0, "{c:?}");
    for &x in &c[..4] {
        assert!((11_000..14_000).contains(&x), "{c:?}");
    }
}

#[test]
fn random_follows_weights() {
    let now = Instant::now();
    let s = selector(StrategyKind::Random, &[6.0, 3.0, 1.0], now);
    let c = counts(&s, 100_000, 3, now);
    for (x, share) in c.iter().zip([0.6, 0.3, 0.1]) {
        let got = *x as f64 / 100_000.0;
        assert!((got - share).abs() < 0.01, "{c:?}");
    }
}

#[test]
fn ip_hash_is_stable_per_client_and_spreads_clients() {
    let now = Instant::now();
    let s = selector(StrategyKind::IpHash, &[1.0; 4], now);
    let pick = |ip: IpAddr, r| {
        let req = PickRequest {
            client_ip: Some(ip),
            ..PickRequest::new(r)
        };
        s.pick(&req, &[], now).unwrap().backend.id.0
    };
    let mut seen = [0usize; 4];
    for i in 0..=255u8 {
        let ip = IpAddr::from([10, 0, 7, i]);
        let first = pick(ip, 1);
        assert_eq!(pick(ip, 99), first);
        seen[first as usize] += 1;
    }
    assert!(seen.iter().all(|&n| n > 30), "{seen:?}");
    let v4 = IpAddr::from([192, 168, 1, 20]);
    let mapped = IpAddr::V6(std::net::Ipv4Addr::new(192, 168, 1, 20).to_ipv6_mapped());
    assert_eq!(pick(v4, 0), pick(mapped, 5));
}

#[test]
fn consistent_hash_is_stable_per_key_and_falls_back_to_random_without_key() {
    let now = Instant::now();
    let s = selector(StrategyKind::ConsistentHash, &[1.0; 5], now);
    for k in 0..200u32 {
        let key = format!("user-{k}");
        let ids: Vec<u64> = (0..5)
            .map(|r| {
                let req = PickRequest {
                    hash_key: Some(key.as_bytes()),
                    ..PickRequest::new(r * 31)
                };
                s.pick(&req, &[], now).unwrap().backend.id.0
            })
            .collect();
        assert!(ids.iter().all(|&i| i == ids[0]));
    }
    let c = counts(&s, 10_000, 5, now);
    assert!(c.iter().all(|&x| x > 1500), "{c:?}");
}

#[test]
fn sticky_keeps_the_pin_while_eligible() {
    let now = Instant::now();
    let s = selector(StrategyKind::Sticky, &[1.0; 3], now);
    for r in 0..20 {
        let req = PickRequest {
            sticky: Some("b2"),
            ..PickRequest::new(r)
        };
        let p = s.pick(&req, &[], now).unwrap();
        assert_eq!(&*p.backend.name, "b2");
        assert!(!p.repin);
    }
    let p = s.pick(&PickRequest::new(3), &[], now).unwrap();
    assert!(p.repin, "no cookie: the proxy must pin");
}

#[test]
fn sticky_falls_back_and_repins_when_the_pin_is_not_eligible() {
    let now = Instant::now();
    let cands = vec![
        cand(0, 1.0, Eligibility::Eligible, now),
        cand(1, 1.0, Eligibility::Unavailable, now),
        cand(2, 1.0, Eligibility::Draining, now),
    ];
    let s = Selector::build(&config(StrategyKind::Sticky), cands, None);
    for pin in ["b1", "b2", "gone"] {
        let req = PickRequest {
            sticky: Some(pin),
            ..PickRequest::new(17)
        };
        let p = s.pick(&req, &[], now).unwrap();
        assert_eq!(p.backend.id, BackendId(0), "pin {pin}");
        assert!(p.repin, "pin {pin}");
    }
    // A retry that excludes the pinned backend re-pins too.
    let s = selector(StrategyKind::Sticky, &[1.0; 2], now);
    let req = PickRequest {
        sticky: Some("b0"),
        ..PickRequest::new(1)
    };
    let p = s.pick(&req, &[BackendId(0)], now).unwrap();
    assert_eq!((p.backend.id, p.repin), (BackendId(1), true));
}

#[test]
fn only_eligible_backends_are_picked_by_every_strategy() {
    let now = Instant::now();
    for strategy in StrategyKind::ALL {
        let cands = vec![
            cand(0, 1.0, Eligibility::Unavailable, now),
            cand(1, 1.0, Eligibility::Eligible, now),
            cand(2, 1.0, Eligibility::Draining, now),
            cand(3, 1.0, Eligibility::Eligible, now),
        ];
        let s = Selector::build(&config(strategy), cands, None);
        assert_eq!(s.pickable_len(), 2);
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..500 {
            let key: [u8; 8] = rng.random();
            let req = PickRequest {
                client_ip: Some(IpAddr::from(rng.random::<[u8; 4]>())),
                hash_key: Some(&key),
                sticky: Some(["b0", "b1", "b2", "b3"][rng.random_range(0..4)]),
                random: rng.random(),
            };
            let p = s.pick(&req, &[], now).unwrap();
            assert!(
                matches!(p.backend.id.0, 1 | 3),
                "{strategy}: picked {}",
                p.backend.id
            );
            assert!(!p.fail_open);
        }
    }
}

#[test]
fn exclude_sends_retries_elsewhere_and_none_when_all_tried() {
    let now = Instant::now();
    for strategy in StrategyKind::ALL {
        let s = selector(strategy, &[1.0; 3], now);
        let mut rng = SmallRng::seed_from_u64(2);
        for _ in 0..300 {
            let key: [u8; 4] = rng.random();
            let req = PickRequest {
                client_ip: Some(IpAddr::from(key)),
                hash_key: Some(&key),
                sticky: Some("b1"),
                random: rng.random(),
            };
            let first = s.pick(&req, &[], now).unwrap().backend.id;
            let second = s.pick(&req, &[first], now).unwrap().backend.id;
            assert_ne!(first, second, "{strategy}");
            let third = s.pick(&req, &[first, second], now).unwrap().backend.id;
            assert!(third != first && third != second, "{strategy}");
            assert!(
                s.pick(&req, &[first, second, third], now).is_none(),
                "{strategy}"
            );
        }
    }
}

#[test]
fn all_down_fails_open_or_rejects_by_policy() {
    let now = Instant::now();
    let cands = || {
        vec![
            cand(0, 1.0, Eligibility::Unavailable, now),
            cand(1, 1.0, Eligibility::Draining, now),
            cand(2, 1.0, Eligibility::Unavailable, now),
        ]
    };
    let mut c = config(StrategyKind::RoundRobin);
    c.all_down = AllDownPolicy::FailOpen;
    let s = Selector::build(&c, cands(), None);
    assert!(s.is_fail_open());
    let picked: Vec<(u64, bool)> = (0..4)
        .map(|r| {
            let p = s.pick(&PickRequest::new(r), &[], now).unwrap();
            (p.backend.id.0, p.fail_open)
        })
        .collect();
    // Fail-open ignores health but still never sends to a draining backend.
    assert_eq!(picked, [(0, true), (2, true), (0, true), (2, true)]);
    c.all_down = AllDownPolicy::Reject503;
    let s = Selector::build(&c, cands(), None);
    assert!(!s.is_fail_open());
    assert!(s.pick(&PickRequest::new(0), &[], now).is_none());
}

#[test]
fn empty_selector_picks_nothing() {
    let now = Instant::now();
    for strategy in StrategyKind::ALL {
        let s = Selector::build(&config(strategy), Vec::new(), None);
        assert!(s.pick(&PickRequest::new(0), &[], now).is_none());
    }
}

#[test]
fn integer_weights_keep_ratios_and_stay_bounded() {
    assert_eq!(integer_weights(&[5.0, 1.0, 1.0], MAX_SEQUENCE), [5, 1, 1]);
    assert_eq!(integer_weights(&[0.5, 1.0], MAX_SEQUENCE), [1, 2]);
    let many = integer_weights(&[1000.0; 300], MAX_SEQUENCE);
    assert_eq!(many, vec![1; 300]);
    let skewed = integer_weights(&[1000.0, 999.0, 0.1], 1000);
    assert!(skewed.iter().map(|&w| w as u64).sum::<u64>() <= 1000 + 3);
    assert!(skewed[2] >= 1);
}

#[test]
fn a_backend_at_the_in_flight_cap_is_skipped_by_every_strategy() {
    let now = Instant::now();
    for strategy in StrategyKind::ALL {
        let cfg = BalanceConfig {
            strategy,
            max_in_flight_per_backend: 2,
            ..BalanceConfig::default()
        };
        let cands = (0..3)
            .map(|i| cand(i, 1.0, Eligibility::Eligible, now))
            .collect();
        let s = Selector::build(&cfg, cands, None);
        // Fill backend 1 to the cap: no pick may return it, sticky pins included.
        let full = s.candidates()[1].load.clone();
        let _guards = [full.start(), full.start()];
        for r in 0..200u64 {
            let req = PickRequest {
                client_ip: Some(IpAddr::from([10, 0, 0, r as u8])),
                hash_key: Some(&r.to_le_bytes()),
                sticky: Some("b1"),
                random: mix64(r),
            };
            let p = s.try_pick(&req, &[], now).expect("two backends have room");
            assert_ne!(
                p.backend.id,
                BackendId(1),
                "{strategy:?} picked a full backend"
            );
            if strategy == StrategyKind::Sticky {
                assert!(p.repin, "a full pinned backend must repin the client");
            }
        }
        // Every backend full, or the rest excluded: shed (AllFull), not "none left".
        let others = [BackendId(0), BackendId(2)];
        assert_eq!(
            s.try_pick(&PickRequest::new(1), &others, now).err(),
            Some(NoPick::AllFull),
            "{strategy:?}"
        );
        let all = [BackendId(0), BackendId(1), BackendId(2)];
        assert_eq!(
            s.try_pick(&PickRequest::new(1), &all, now).err(),
            Some(NoPick::NoneLeft),
            "{strategy:?}"
        );
    }
}

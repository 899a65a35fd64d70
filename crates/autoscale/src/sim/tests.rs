//! Simulator: the queueing model's shape, determinism, and policies reacting to traces.

use super::*;
use crate::trace::generate;

#[test]
fn model_latency_and_concurrency_grow_with_load() {
    let m = CapacityModel::default();
    let mut prev_p99 = 0.0;
    let mut prev_l = 0.0;
    for rps in [10.0, 40.0, 60.0, 80.0, 95.0] {
        let p = m.steady_p99_ms(rps);
        let l = m.steady_in_flight(rps);
        assert!(
            p >= prev_p99 && l > prev_l,
            "at {rps}: p99 {p}, in-flight {l}"
        );
        prev_p99 = p;
        prev_l = l;
    }
    assert!(m.steady_p99_ms(100.0).is_infinite());
    let rho = m.max_utilisation_for_slo();
    assert!(rho > 0.3 && rho < 1.0, "{rho}");
    assert!(m.steady_p99_ms(rho * m.capacity_rps) <= m.slo_p99_ms + 1e-6);
}

#[test]
fn same_seed_same_json_other_seed_other_run() {
    let trace = generate::step();
    let cfg = named_policy("hpa").unwrap();
    let m = CapacityModel::default();
    let a = serde_json::to_string(&simulate(&trace, &cfg, &m, 7).unwrap().report).unwrap();
    let b = serde_json::to_string(&simulate(&trace, &cfg, &m, 7).unwrap().report).unwrap();
    assert_eq!(a, b);
    let c = serde_json::to_string(&simulate(&trace, &cfg, &m, 8).unwrap().report).unwrap();
    assert_ne!(a, c);
}

#[test]
fn every_named_policy_follows_a_step_up_and_back_down() {
    let trace = generate::step();
    let m = CapacityModel::default();
    for name in POLICY_NAMES {
        let cfg = named_policy(name).unwrap();
        let run = simulate(&trace, &cfg, &m, 1).unwrap();
        let at = |t: usize| run.timeline[t].instances;
        let before = at(299);
        let during = at(890);
        let after = at(1499);
        assert!(during >= 5 * before, "{name}: {before} -> {during}");
        assert!(
            after < during,
            "{name}: did not scale in ({during} -> {after})"
        );
        assert!(
            run.report.slo_violation_s > 0,
            "{name}: a 10x step with 30 s start-up must hurt"
        );
        assert!(run.report.slo_violation_s < 600, "{name}: never caught up");
    }
}

#[test]
fn a_flat_trace_without_noise_is_left_alone() {
    let trace = Trace {
        rps: vec![300.0; 900],
    };
    let m = CapacityModel {
        noise_pct: 0.0,
        ..CapacityModel::default()
    };
    for name in POLICY_NAMES {
        let run = simulate(&trace, &named_policy(name).unwrap(), &m, 1).unwrap();
        assert_eq!(run.report.slo_violation_s, 0, "{name}");
        // Each policy settles on its own target (the KPA aims at 70% of it, so it first
        // grows, then trims once out of its start-up panic); after that, nothing moves.
        let settled = run.timeline[600].instances;
        assert!(
            run.timeline[600..].iter().all(|k| k.instances == settled),
            "{name}"
        );
        if name != "kpa" {
            assert_eq!(run.report.flaps, 0, "{name}");
        }
    }
}

#[test]
fn bad_model_fields_are_named() {
    let trace = Trace { rps: vec![1.0] };
    let cfg = named_policy("hpa").unwrap();
    let m = CapacityModel {
        capacity_rps: 0.0,
        ..CapacityModel::default()
    };
    match simulate(&trace, &cfg, &m, 1) {
        Err(SimError::Model(e)) => assert_eq!(e.field, "capacity_rps"),
        other => panic!("{other:?}"),
    }
}

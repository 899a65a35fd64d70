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

/// 100 rps then 1000 rps from 60 s, for 400 s, without noise; a step policy that adds 14
/// instances once (its cooldown outlasts the trace).
fn step_run(m: CapacityModel) -> SimRun {
    let trace = Trace {
        rps: (0..400)
            .map(|t| if t < 60 { 100.0 } else { 1000.0 })
            .collect(),
    };
    let mut cfg = named_policy("step").unwrap();
    cfg.step.cooldown_s = 1000;
    cfg.step.steps = vec![crate::config::StepRule {
        lower_pct: Some(10.0),
        upper_pct: None,
        adjust_instances: 14,
    }];
    simulate(&trace, &cfg, &m, 3).unwrap()
}

/// (second of the first launch, seconds after it at which each new instance became ready).
fn ready_delays(run: &SimRun) -> (u64, Vec<u64>) {
    let first = run.timeline[0].instances;
    let launch = run
        .timeline
        .iter()
        .find(|k| k.desired > first)
        .expect("scaled out")
        .t;
    let mut delays = Vec::new();
    for w in run.timeline.windows(2) {
        for _ in w[0].ready..w[1].ready {
            delays.push(w[1].t - launch);
        }
    }
    (launch, delays)
}

fn quiet() -> CapacityModel {
    CapacityModel {
        noise_pct: 0.0,
        ..CapacityModel::default()
    }
}

#[test]
fn without_jitter_every_instance_takes_the_start_up_time() {
    let (_, delays) = ready_delays(&step_run(quiet()));
    assert_eq!(delays.len(), 14);
    // Launched at the end of the launch second: ready startup_s + 1 s later.
    assert!(delays.iter().all(|d| *d == 31), "{delays:?}");
}

#[test]
fn start_up_jitter_spreads_readiness_within_its_bounds() {
    let (_, delays) = ready_delays(&step_run(CapacityModel {
        startup_jitter_pct: 50.0,
        ..quiet()
    }));
    assert!(delays.len() >= 4, "{delays:?}");
    // 30 s x (1 +- 0.5), plus the launch second; at least two distinct times.
    assert!(delays.iter().all(|d| (16..=46).contains(d)), "{delays:?}");
    assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
}

#[test]
fn failed_start_ups_are_relaunched_and_arrive_late() {
    let run = step_run(CapacityModel {
        fail_start_pct: 50.0,
        ..quiet()
    });
    let (launch, delays) = ready_delays(&run);
    // Some launches failed once or more: ready a whole start-up time (or more) later.
    assert!(delays.contains(&31), "{delays:?}");
    assert!(delays.iter().any(|d| *d >= 61), "{delays:?}");
    // The fleet keeps the count while relaunching: instances never drop below desired.
    let desired = run.timeline[launch as usize].desired;
    assert!(
        run.timeline[launch as usize + 1..launch as usize + 60]
            .iter()
            .all(|k| k.instances >= desired)
    );
}

#[test]
fn cold_instances_serve_less_until_warm() {
    let m = CapacityModel {
        cold_s: 60,
        cold_capacity_pct: 30.0,
        ..quiet()
    };
    assert_eq!(m.capacity_at_age(0), 30.0);
    assert!((m.capacity_at_age(30) - 65.0).abs() < 1e-9);
    assert_eq!(m.capacity_at_age(60), 100.0);
    let warm = step_run(quiet()).report;
    let cold = step_run(m).report;
    assert!(
        cold.slo_violation_s > warm.slo_violation_s,
        "cold {} vs warm {}",
        cold.slo_violation_s,
        warm.slo_violation_s
    );
}

#[test]
fn bad_imperfection_fields_are_named() {
    let trace = Trace { rps: vec![1.0] };
    let cfg = named_policy("hpa").unwrap();
    let cases = [
        (
            CapacityModel {
                startup_jitter_pct: 150.0,
                ..CapacityModel::default()
            },
            "startup_jitter_pct",
        ),
        (
            CapacityModel {
                fail_start_pct: 80.0,
                ..CapacityModel::default()
            },
            "fail_start_pct",
        ),
        (
            CapacityModel {
                cold_capacity_pct: 0.0,
                ..CapacityModel::default()
            },
            "cold_capacity_pct",
        ),
    ];
    for (m, field) in cases {
        match simulate(&trace, &cfg, &m, 1) {
            Err(SimError::Model(e)) => assert_eq!(e.field, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

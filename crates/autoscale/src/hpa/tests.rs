//! The HPA clone against the behaviours Kubernetes documents, case by case.

use super::*;
use crate::Policy;
use crate::config::{Config, PolicyKind};
use crate::metrics::{AggregateSample, InstanceSample};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn cfg_in_flight(target: f64) -> Config {
    Config {
        policy: PolicyKind::Hpa,
        target_in_flight: Some(target),
        min_instances: 1,
        max_instances: 100,
        ..Config::default()
    }
}

fn ready(v: f64) -> InstanceSample {
    InstanceSample::ready_with_in_flight(v)
}

fn input(instances: Vec<InstanceSample>) -> ScalingInput {
    ScalingInput {
        current: instances.len() as u32,
        ready: instances.iter().filter(|s| s.ready).count() as u32,
        instances,
        ..ScalingInput::default()
    }
}

#[test]
fn desired_is_ceil_of_ratio_times_ready() {
    // 3 instances at 15 in flight, target 10: ratio 1.5, ceil(4.5) = 5.
    let p = replicas_for_metric(
        MetricKind::InFlight,
        10.0,
        0.1,
        &input(vec![ready(15.0); 3]),
    )
    .unwrap();
    assert_eq!(p.replicas, 5);
    assert!((p.ratio - 1.5).abs() < 1e-9);
}

#[test]
fn within_tolerance_keeps_current() {
    // ratio 1.09 and 0.91: inside the 10% band.
    for v in [10.9, 9.1] {
        let p = replicas_for_metric(MetricKind::InFlight, 10.0, 0.1, &input(vec![ready(v); 4]))
            .unwrap();
        assert_eq!(p.replicas, 4, "value {v}");
    }
    // ratio 1.11: outside, ceil(4.44) = 5.
    let p = replicas_for_metric(
        MetricKind::InFlight,
        10.0,
        0.1,
        &input(vec![ready(11.1); 4]),
    )
    .unwrap();
    assert_eq!(p.replicas, 5);
}

#[test]
fn uses_ready_instances_not_current() {
    // 2 ready at 20 (target 10), 2 starting: ratio 2 over ready. With unready pods on a
    // scale-up they count as 0: ratio becomes 40/4/10 = 1.0 -> within tolerance, no change.
    let mut inst = vec![ready(20.0); 2];
    inst.extend([InstanceSample::starting(); 2]);
    let p = replicas_for_metric(MetricKind::InFlight, 10.0, 0.1, &input(inst)).unwrap();
    assert_eq!(p.replicas, 4);
    // 2 ready at 40, 2 starting: new ratio 80/4/10 = 2.0, ceil(2.0 x 4) = 8.
    let mut inst = vec![ready(40.0); 2];
    inst.extend([InstanceSample::starting(); 2]);
    let p = replicas_for_metric(MetricKind::InFlight, 10.0, 0.1, &input(inst)).unwrap();
    assert_eq!(p.replicas, 8);
}

#[test]
fn missing_metrics_count_as_target_on_scale_down() {
    // 2 reporting 2.0 (ratio 0.2), 2 ready but missing. Scale-down: missing count as 10.
    // New ratio = (2+2+10+10)/4/10 = 0.6, ceil(0.6 x 4) = 3 (not ceil(0.2 x 2) = 1).
    let inst = vec![
        ready(2.0),
        ready(2.0),
        InstanceSample {
            ready: true,
            ..InstanceSample::default()
        },
        InstanceSample {
            ready: true,
            ..InstanceSample::default()
        },
    ];
    let p = replicas_for_metric(MetricKind::InFlight, 10.0, 0.1, &input(inst)).unwrap();
    assert_eq!(p.replicas, 3);
}

#[test]
fn missing_metrics_count_as_zero_on_scale_up() {
    // 2 reporting 30 (ratio 3), 2 missing: (30+30+0+0)/4/10 = 1.5, ceil(1.5 x 4) = 6.
    let inst = vec![
        ready(30.0),
        ready(30.0),
        InstanceSample {
            ready: true,
            ..InstanceSample::default()
        },
        InstanceSample {
            ready: true,
            ..InstanceSample::default()
        },
    ];
    let p = replicas_for_metric(MetricKind::InFlight, 10.0, 0.1, &input(inst)).unwrap();
    assert_eq!(p.replicas, 6);
}

#[test]
fn a_move_that_missing_metrics_would_reverse_is_dropped() {
    // 1 reporting 12 (ratio 1.2: scale up), 3 missing count as 0: new ratio 0.3 < 1,
    // which reverses direction: keep current.
    let inst = vec![
        ready(12.0),
        InstanceSample {
            ready: true,
            ..InstanceSample::default()
        },
        InstanceSample {
            ready: true,
            ..InstanceSample::default()
        },
        InstanceSample {
            ready: true,
            ..InstanceSample::default()
        },
    ];
    let p = replicas_for_metric(MetricKind::InFlight, 10.0, 0.1, &input(inst)).unwrap();
    assert_eq!(p.replicas, 4);
    assert!(p.detail.contains("no change"), "{}", p.detail);
}

#[test]
fn several_metrics_largest_proposal_wins() {
    let mut cfg = cfg_in_flight(10.0);
    cfg.target_cpu_pct = Some(50.0);
    let mut hpa = Hpa::new(&cfg);
    // in_flight ratio 1.5 -> 6 of 4; CPU 100% vs 50% -> ratio 2 -> 8.
    let inst = vec![
        InstanceSample {
            ready: true,
            in_flight: Some(15.0),
            cpu_utilisation: Some(1.0),
            ..InstanceSample::default()
        };
        4
    ];
    let d = hpa.decide(s(0), &input(inst));
    assert_eq!(d.recommended, 8);
    assert_eq!(d.desired, 8);
    assert!(d.reason.contains("cpu"), "{}", d.reason);
}

#[test]
fn no_metrics_holds_current() {
    let mut hpa = Hpa::new(&cfg_in_flight(10.0));
    let inst = vec![
        InstanceSample {
            ready: true,
            ..InstanceSample::default()
        };
        3
    ];
    let d = hpa.decide(s(0), &input(inst));
    assert_eq!(d.desired, 3);
    assert!(d.reason.contains("no usable metric"), "{}", d.reason);
}

#[test]
fn unusable_metric_blocks_scale_down_but_not_up() {
    let mut cfg = cfg_in_flight(10.0);
    cfg.target_cpu_pct = Some(50.0);
    cfg.hpa.scale_down.stabilization_window_s = 0;
    let mut hpa = Hpa::new(&cfg);
    // in_flight says 1 (ratio 0.1), CPU has no samples: hold.
    let d = hpa.decide(s(0), &input(vec![ready(1.0); 4]));
    assert_eq!(d.desired, 4, "{}", d.reason);
    // in_flight says 8 (ratio 2): scale up despite the missing CPU.
    let d = hpa.decide(s(15), &input(vec![ready(20.0); 4]));
    assert_eq!(d.desired, 8, "{}", d.reason);
}

#[test]
fn evaluates_every_sync_period_and_holds_in_between() {
    let mut hpa = Hpa::new(&cfg_in_flight(10.0));
    let d = hpa.decide(s(0), &input(vec![ready(20.0); 2]));
    assert_eq!(d.desired, 4);
    assert!(d.evaluated);
    let d = hpa.decide(s(14), &input(vec![ready(100.0); 2]));
    assert_eq!(d.desired, 4);
    assert!(!d.evaluated);
    let d = hpa.decide(s(15), &input(vec![ready(100.0); 4]));
    assert!(d.evaluated);
    // ratio 10 x 4 = 40, rate: max(4 + 4, 8) = 8 (the 2 -> 4 event is outside the 15 s).
    assert_eq!(d.recommended, 40);
    assert_eq!(d.desired, 8, "{}", d.reason);
}

#[test]
fn default_scale_down_is_held_for_300_s() {
    let mut hpa = Hpa::new(&cfg_in_flight(10.0));
    let mut t = 0;
    let mut first_drop = None;
    while t <= 600 {
        let d = hpa.decide(s(t), &input(vec![ready(1.0); 10]));
        if d.desired < 10 && first_drop.is_none() {
            first_drop = Some(t);
        }
        t += 15;
    }
    // Seeded with 10 at t=0; at t=300 that sample is no longer strictly after the cutoff
    // (now - 300 s), as in Kubernetes' `timestamp.After(cutoff)`, so the drop happens.
    assert_eq!(first_drop, Some(300));
}

#[test]
fn aggregate_only_uses_external_average_value() {
    let input = ScalingInput {
        current: 4,
        ready: 4,
        aggregate: AggregateSample {
            rps: Some(1000.0),
            ..AggregateSample::default()
        },
        ..ScalingInput::default()
    };
    // 1000 rps total, 100 per instance target: ratio 1000/(100 x 4) = 2.5 -> ceil(10) = 10.
    let p = replicas_for_metric(MetricKind::Rps, 100.0, 0.1, &input).unwrap();
    assert_eq!(p.replicas, 10);
}

#[test]
fn p99_is_an_object_value_metric_over_ready() {
    let input = ScalingInput {
        current: 5,
        ready: 4,
        aggregate: AggregateSample {
            p99_ms: Some(300.0),
            ..AggregateSample::default()
        },
        ..ScalingInput::default()
    };
    // ratio 1.5 x 4 ready = 6.
    let p = replicas_for_metric(MetricKind::P99Ms, 200.0, 0.1, &input).unwrap();
    assert_eq!(p.replicas, 6);
}

//! The KPA clone: windows, panic entry, hold and exit, rate clamps.

use super::*;
use crate::Policy;
use crate::config::PolicyKind;
use crate::metrics::AggregateSample;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn cfg() -> Config {
    Config {
        policy: PolicyKind::Kpa,
        target_in_flight: Some(10.0), // effective target 7 per instance
        min_instances: 1,
        max_instances: 1000,
        ..Config::default()
    }
}

fn input(ready: u32, total_in_flight: f64) -> ScalingInput {
    ScalingInput {
        current: ready,
        ready,
        aggregate: AggregateSample {
            in_flight: Some(total_in_flight),
            ..AggregateSample::default()
        },
        ..ScalingInput::default()
    }
}

#[test]
fn window_average_counts_gaps_as_zero_and_divides_by_elapsed() {
    let mut b = SecondBuckets::new(60);
    b.record(s(10), 6.0);
    b.record(s(10), 8.0); // same second: averaged to 7
    assert_eq!(b.window_average(s(10), 60), Some(7.0));
    b.record(s(12), 4.0); // second 11 has no sample: counts as 0
    assert_eq!(b.window_average(s(12), 60), Some((7.0 + 0.0 + 4.0) / 3.0));
    // Window of 2 s at 12: seconds 11 and 12.
    assert_eq!(b.window_average(s(12), 2), Some(2.0));
}

#[test]
fn stable_desired_is_ceil_of_average_over_target() {
    let mut k = Kpa::new(&cfg());
    // 1 ready instance, total concurrency 20 for a minute: ceil(20 / 7) = 3.
    let mut d = k.decide(s(0), &input(1, 20.0));
    for t in 1..=60 {
        d = k.decide(s(t), &input(1, 20.0));
    }
    // 20/7 = 2.9 -> 3 is also >= 2 x 1 ready: the panic threshold is crossed.
    assert_eq!(d.desired, 3);
    assert!(d.panic, "{}", d.reason);
}

#[test]
fn panic_starts_at_twice_ready_and_holds_the_maximum() {
    let mut k = Kpa::new(&cfg());
    let mut now = 0;
    // 4 ready, steady 28 total (4 instances' worth). A fresh KPA with 4 ready starts in
    // panic; it leaves panic once a full stable window (60 s) passed below threshold.
    for _ in 0..70 {
        k.decide(s(now), &input(4, 28.0));
        now += 1;
    }
    let d = k.decide(s(now), &input(4, 28.0));
    assert!(!d.panic, "{}", d.reason);
    assert_eq!(d.desired, 4);
    // Spike to 70 (10 instances' worth) for 6 s: panic avg crosses 8/4 = 2.
    let mut d = d;
    for _ in 0..6 {
        now += 1;
        d = k.decide(s(now), &input(4, 70.0));
    }
    assert!(d.panic, "{}", d.reason);
    let peak = d.desired;
    assert!(peak >= 8, "{}", d.reason);
    // Load drops: while panicking the count never goes down.
    for _ in 0..50 {
        now += 1;
        d = k.decide(s(now), &input(peak, 7.0));
        assert!(
            d.desired >= peak,
            "scaled down while panicking: {}",
            d.reason
        );
    }
    // After a full stable window below the threshold, panic ends and it scales down
    // (by at most half of ready per decision: floor(ready / 2)).
    for _ in 0..80 {
        now += 1;
        d = k.decide(s(now), &input(peak, 7.0));
    }
    assert!(!d.panic, "{}", d.reason);
    assert!(d.desired < peak, "{}", d.reason);
    assert!(d.desired >= peak / 2, "{}", d.reason);
}

#[test]
fn decides_every_two_seconds() {
    let mut k = Kpa::new(&cfg());
    assert!(k.decide(s(0), &input(1, 7.0)).evaluated);
    assert!(!k.decide(s(1), &input(1, 7.0)).evaluated);
    assert!(k.decide(s(2), &input(1, 7.0)).evaluated);
}

#[test]
fn starts_in_panic_with_more_than_one_ready_instance() {
    let mut k = Kpa::new(&cfg());
    // 5 ready but almost idle: a fresh KPA holds 5 instead of dropping to 1.
    let d = k.decide(s(0), &input(5, 1.0));
    assert!(d.panic);
    assert_eq!(d.desired, 5);
}

#[test]
fn scale_down_is_clamped_by_max_scale_down_rate() {
    let mut c = cfg();
    c.kpa.stable_window_s = 6;
    let mut k = Kpa::new(&c);
    let mut d = k.decide(s(0), &input(1, 0.5));
    for t in 1..20 {
        d = k.decide(s(t), &input(1, 0.5));
    }
    assert!(!d.panic);
    // Now 10 ready with almost no load: at most halve per decision.
    for t in 20..30 {
        d = k.decide(s(t), &input(10, 0.5));
    }
    assert_eq!(d.desired, 5, "{}", d.reason);
}

#[test]
fn no_data_holds_current() {
    let mut k = Kpa::new(&cfg());
    let d = k.decide(
        s(0),
        &ScalingInput {
            current: 3,
            ready: 1,
            ..ScalingInput::default()
        },
    );
    assert_eq!(d.desired, 3);
    assert!(d.reason.contains("no in_flight data"), "{}", d.reason);
}

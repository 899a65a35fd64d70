//! Unit tests for stabilisation and rate policies, case by case against the HPA docs.

use super::*;
use crate::config::{RatePolicy, ScalingRules};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn hpa_default() -> Behavior {
    Behavior::new(ScalingRules::hpa_scale_up(), ScalingRules::hpa_scale_down())
}

#[test]
fn scale_down_waits_for_the_300_s_window_max() {
    let mut b = hpa_default();
    // First sync seeds the window with the current count (10), so no scale-down.
    let n = b.normalize(s(0), 10, 4, 1, 20);
    assert_eq!(n.desired, 10);
    assert!(n.note.contains("stabilised"), "{}", n.note);
    // Still inside 300 s of the seed: held.
    let n = b.normalize(s(299), 10, 4, 1, 20);
    assert_eq!(n.desired, 10);
    // The seed at t=0 drops out after 300 s; the recommendations since are all 4.
    let n = b.normalize(s(301), 10, 4, 1, 20);
    assert_eq!(n.desired, 4);
}

#[test]
fn scale_down_uses_the_highest_recommendation_in_the_window() {
    let mut b = Behavior::new(
        ScalingRules::hpa_scale_up(),
        ScalingRules {
            stabilization_window_s: 60,
            ..ScalingRules::hpa_scale_down()
        },
    );
    b.normalize(s(0), 10, 10, 1, 20);
    b.normalize(s(15), 10, 8, 1, 20);
    b.normalize(s(30), 10, 6, 1, 20);
    // At 65 s the window (5 s, 65 s] holds 8, 6 and the new 5: max 8.
    let n = b.normalize(s(65), 10, 5, 1, 20);
    assert_eq!(n.desired, 8);
    assert_eq!(n.stabilized, 8);
}

#[test]
fn scale_up_window_takes_the_minimum() {
    let mut b = Behavior::new(
        ScalingRules {
            stabilization_window_s: 30,
            ..ScalingRules::hpa_scale_up()
        },
        ScalingRules::hpa_scale_down(),
    );
    b.normalize(s(0), 4, 4, 1, 100);
    b.normalize(s(10), 4, 6, 1, 100);
    // Min over the up window (0, 20] is 4 (t=0 is not after the cutoff -10... it is:
    // all three samples count), so the raw 9 is held at the window minimum 4.
    let n = b.normalize(s(20), 4, 9, 1, 100);
    assert_eq!(n.desired, 4);
    // At 41 s only t=20 (9) and t=41 (9) are inside (11, 41]: scale to 8 (rate: 4 -> 8).
    let n = b.normalize(s(41), 4, 9, 1, 100);
    assert_eq!(n.stabilized, 9);
    assert_eq!(n.desired, 8, "{}", n.note);
}

#[test]
fn default_scale_up_rate_is_max_of_4_pods_and_100_percent_per_15_s() {
    let b = hpa_default();
    // 2 instances: max(2 + 4, ceil(2 x 2)) = 6.
    assert_eq!(b.scale_up_limit(s(0), 2), 6);
    // 10 instances: max(14, 20) = 20.
    assert_eq!(b.scale_up_limit(s(0), 10), 20);
}

#[test]
fn rate_counts_changes_already_made_in_the_period() {
    let mut b = hpa_default();
    b.record_scale(s(0), 2, 6);
    // 10 s later the period started at 6 - 4 = 2: limit is still 6.
    assert_eq!(b.scale_up_limit(s(10), 6), 6);
    let n = b.normalize(s(10), 6, 30, 1, 100);
    assert_eq!(n.desired, 6, "{}", n.note);
    assert!(n.note.contains("rate policy"), "{}", n.note);
    // After the 15 s period the event no longer counts: max(6 + 4, 12) = 12.
    assert_eq!(b.scale_up_limit(s(16), 6), 12);
}

#[test]
fn select_policy_min_picks_the_least_permissive() {
    let up = ScalingRules {
        select_policy: SelectPolicy::Min,
        ..ScalingRules::hpa_scale_up()
    };
    let b = Behavior::new(up, ScalingRules::hpa_scale_down());
    // 10 instances: min(14, 20) = 14.
    assert_eq!(b.scale_up_limit(s(0), 10), 14);
}

#[test]
fn select_policy_disabled_blocks_the_direction() {
    let down = ScalingRules {
        select_policy: SelectPolicy::Disabled,
        stabilization_window_s: 0,
        ..ScalingRules::hpa_scale_down()
    };
    let mut b = Behavior::new(ScalingRules::hpa_scale_up(), down);
    let n = b.normalize(s(0), 10, 2, 1, 20);
    assert_eq!(n.desired, 10);
}

#[test]
fn percent_scale_down_floors_and_pods_policy_subtracts() {
    let down = ScalingRules {
        stabilization_window_s: 0,
        select_policy: SelectPolicy::Max,
        policies: vec![
            RatePolicy {
                kind: RatePolicyKind::Percent,
                value: 10,
                period_s: 60,
            },
            RatePolicy {
                kind: RatePolicyKind::Pods,
                value: 1,
                period_s: 60,
            },
        ],
    };
    let mut b = Behavior::new(ScalingRules::hpa_scale_up(), down);
    // 15 instances: percent floor(15 x 0.9) = 13, pods 14; Max (most permissive) = 13.
    assert_eq!(b.scale_down_limit(s(0), 15), 13);
    let n = b.normalize(s(0), 15, 1, 1, 20);
    assert_eq!(n.desired, 13);
    b.record_scale(s(0), 15, 13);
    // Within the minute the period still starts at 15: limit 13, no further drop.
    assert_eq!(b.scale_down_limit(s(30), 13), 13);
}

#[test]
fn min_and_max_bound_the_result() {
    let mut b = Behavior::new(
        ScalingRules::hpa_scale_up(),
        ScalingRules {
            stabilization_window_s: 0,
            ..ScalingRules::hpa_scale_down()
        },
    );
    let n = b.normalize(s(0), 4, 50, 1, 6);
    assert_eq!(n.desired, 6);
    assert!(n.note.contains("max_instances"), "{}", n.note);
    let n = b.normalize(s(100), 4, 0, 2, 6);
    assert_eq!(n.desired, 2);
    assert!(n.note.contains("min_instances"), "{}", n.note);
}

//! Evaluation: summaries, ratios and the thread-count independence of results.

use super::*;

#[test]
fn spread_is_nearest_rank() {
    let v: Vec<f64> = (1..=10).map(f64::from).collect();
    let s = Spread::of(&v);
    assert_eq!((s.median, s.p90, s.worst), (5.0, 9.0, 10.0));
    let s = Spread::of(&[3.0]);
    assert_eq!((s.median, s.p90, s.worst), (3.0, 3.0, 3.0));
    assert_eq!(Spread::of(&[]).worst, 0.0);
}

#[test]
fn run_parallel_keeps_input_order() {
    let items: Vec<u64> = (0..100).collect();
    let one = run_parallel(&items, 1, |x| x * x);
    let four = run_parallel(&items, 4, |x| x * x);
    assert_eq!(one, four);
    assert_eq!(four[7], 49);
}

fn result(outcomes: &[(&str, u64, u64)]) -> TraceResult {
    TraceResult {
        scenario: Scenario::draw(Family::Step, 1),
        set: SeedSet::Dev,
        duration_s: 100,
        outcomes: outcomes
            .iter()
            .map(|(n, v, i)| {
                (
                    n.to_string(),
                    Outcome {
                        slo_violation_s: *v,
                        instance_seconds: *i,
                        peak_instances: 1,
                        dropped_requests: 0,
                    },
                )
            })
            .collect(),
    }
}

#[test]
fn ratios_are_per_trace_with_one_second_added() {
    let a = result(&[("hpa", 9, 100), ("default", 4, 50), ("kpa", 9, 200)]);
    let b = result(&[("hpa", 0, 100), ("default", 1, 100), ("kpa", 0, 100)]);
    let names = vec!["default".to_string(), "hpa".into(), "kpa".into()];
    let s = summarise(&[&a, &b], &names);
    let d = &s[0];
    // Ratios 0.5 and 2.0: lower middle 0.5, p90 2.0.
    assert_eq!(d.slo_ratio_to_hpa.median, 0.5);
    assert_eq!(d.slo_ratio_to_hpa.worst, 2.0);
    assert_eq!(d.cost_ratio_to_hpa.median, 0.5);
    assert_eq!(d.worse_than_hpa_pct, 50.0);
    let g = goal_check("dev", &s);
    // Worse than HPA on half the traces: not met even though the medians are.
    assert!(g.at_least_kpa && !g.met, "{g:?}");
}

#[test]
fn the_same_scenarios_give_the_same_evaluation_on_any_thread_count() {
    let a = evaluate(&[Family::Step], &[SeedSet::Dev], 6.0, 1).unwrap();
    let b = evaluate(&[Family::Step], &[SeedSet::Dev], 6.0, 2).unwrap();
    assert_eq!(
        serde_json::to_string(&a.traces).unwrap(),
        serde_json::to_string(&b.traces).unwrap()
    );
    assert_eq!(a.traces.len(), 16);
    assert!(a.to_text().contains("[dev / step]"));
}

#[test]
fn dev_and_held_out_seeds_do_not_overlap() {
    let dev: Vec<u64> = SeedSet::Dev.seeds().collect();
    assert!(SeedSet::HeldOut.seeds().all(|s| !dev.contains(&s)));
    // At least 200 traces over both sets.
    assert!(scenarios(&Family::ALL, &SeedSet::ALL).len() >= 200);
}

#[test]
fn an_invalid_target_is_an_error_naming_the_field() {
    match evaluate(&[Family::Step], &[SeedSet::Dev], -1.0, 1) {
        Err(SimError::Config(e)) => assert!(e.to_string().contains("target_in_flight"), "{e}"),
        other => panic!("{:?}", other.map(|e| e.traces.len())),
    }
}

//! Runs every shipped trace against every named policy with one seed and prints the
//! table recorded in BENCHMARKS.md, plus the target check on the step and flash-crowd
//! traces. `cargo run --release -p autoscale --example compare -- [SEED]`.

use autoscale::sim::{POLICY_NAMES, named_policy};
use autoscale::trace::generate;
use autoscale::{CapacityModel, simulate};

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let only: Option<String> = std::env::args().nth(2);
    let model = CapacityModel::default();
    println!("seed {seed}; model {model:?}");
    println!(
        "| trace | policy | slo_violation_s | instance_seconds | peak | accuracy_under_pct | accuracy_over_pct | timeshare_under_pct | timeshare_over_pct | instability_pct | jitter_per_min | flaps | dropped |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for trace_name in generate::NAMES {
        if only.as_deref().is_some_and(|o| o != trace_name) {
            continue;
        }
        let (trace, _) = generate::by_name(trace_name).expect("shipped trace");
        let mut hpa = None;
        for policy in POLICY_NAMES {
            let cfg = named_policy(policy).expect("named policy");
            let r = simulate(&trace, &cfg, &model, seed).expect("valid").report;
            println!(
                "| {trace_name} | {policy} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
                r.slo_violation_s,
                r.instance_seconds,
                r.peak_instances,
                r.accuracy_under_pct,
                r.accuracy_over_pct,
                r.timeshare_under_pct,
                r.timeshare_over_pct,
                r.instability_pct,
                r.jitter_per_min,
                r.flaps,
                r.dropped_requests
            );
            if policy == "hpa" {
                hpa = Some(r);
            } else if policy == "default" {
                hpa = hpa.or(None);
                // Compared after the HPA row below.
                DEFAULT.with(|d| *d.borrow_mut() = Some(r));
            }
        }
        if let (Some(h), Some(d)) = (hpa, DEFAULT.with(|d| d.borrow_mut().take())) {
            let v = d.slo_violation_s as f64 / (h.slo_violation_s.max(1)) as f64;
            let i = d.instance_seconds as f64 / h.instance_seconds as f64;
            println!(
                "<!-- {trace_name}: default/hpa slo_violation {v:.2}x (target <= 0.5), instance_seconds {i:.2}x (target <= 1.1), instability {:.2}% (< 5), flaps {} (0) -> {} -->",
                d.instability_pct,
                d.flaps,
                if v <= 0.5 && i <= 1.1 && d.instability_pct < 5.0 && d.flaps == 0 {
                    "MET"
                } else {
                    "NOT MET"
                }
            );
        }
    }
}

thread_local! {
    static DEFAULT: std::cell::RefCell<Option<autoscale::SimReport>> = const { std::cell::RefCell::new(None) };
}

//! Reconstructing issue 17's held-out flash-crowd trace. The issue gives only a
//! description ("an hour of noisy base traffic, a surge of about an order of magnitude
//! that decays over minutes, then a second smaller surge") and the figures of `default`,
//! `hpa` and `kpa` at seed 1 with the shipped model; the trace file itself was not kept.
//! This searches a grid of flash-crowd shapes matching the description and prints the
//! shapes whose figures come closest to the issue's, so the reconstruction is itself
//! reproducible: `cargo run --release -p autoscale --example issue17 [-- TOP_N]`, and
//! `-- check` replays the chosen shape with every policy.

use autoscale::families::{Params, generate};
use autoscale::sim::named_policy;
use autoscale::{CapacityModel, simulate};

/// The issue's table: (policy, SLO-violation s, instance-seconds, peak, dropped).
const ISSUE: [(&str, f64, f64, f64, f64); 3] = [
    ("default", 92.0, 34_252.0, 23.0, 0.0),
    ("hpa", 125.0, 56_159.0, 70.0, 8_061.0),
    ("kpa", 82.0, 39_423.0, 100.0, 3_954.0),
];

/// The closest shape found with the `default` policy of commit dce9c55 (before issue
/// 17's changes): it reproduces the issue's finding (default/HPA 0.75x, KPA ahead of
/// default) within about 10% on each figure. `-- check` replays it with today's policies.
const RECONSTRUCTED: Params = Params::FlashCrowd {
    base_rps: 150.0,
    factor: 8.0,
    at_s: 900,
    rise_s: 60,
    plateau_s: 60,
    decay_s: 420.0,
    second: Some((1800, 0.5)),
};

fn main() {
    let model = CapacityModel::default();
    if std::env::args().nth(1).as_deref() == Some("check") {
        let trace = generate(&RECONSTRUCTED, 1);
        for name in ["default", "hpa", "kpa", "step"] {
            let r = simulate(&trace, &named_policy(name).unwrap(), &model, 1)
                .unwrap()
                .report;
            println!(
                "| {name} | {} | {} | {} | {} |",
                r.slo_violation_s, r.instance_seconds, r.peak_instances, r.dropped_requests
            );
        }
        return;
    }
    let top: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut shapes = Vec::new();
    for base in [100.0, 150.0, 200.0, 250.0] {
        for factor in [8.0, 10.0, 12.0] {
            for rise in [10u64, 30, 60] {
                for decay in [120.0, 240.0, 420.0] {
                    for share in [0.3, 0.5] {
                        for second_at in [1800u64, 2400] {
                            shapes.push(Params::FlashCrowd {
                                base_rps: base,
                                factor,
                                at_s: 900,
                                rise_s: rise,
                                plateau_s: 60,
                                decay_s: decay,
                                second: Some((second_at, share)),
                            });
                        }
                    }
                }
            }
        }
    }
    let scored = autoscale::evaluate::run_parallel(&shapes, 2, |p| {
        let trace = generate(p, 1);
        let mut err = 0.0;
        let mut rows = Vec::new();
        for (name, v, i, peak, dropped) in ISSUE {
            let r = simulate(&trace, &named_policy(name).unwrap(), &model, 1)
                .unwrap()
                .report;
            let rel = |got: f64, want: f64| ((got - want) / want.max(100.0)).abs();
            err += rel(r.slo_violation_s as f64, v)
                + rel(r.instance_seconds as f64, i)
                + rel(f64::from(r.peak_instances), peak.max(1.0))
                + rel(r.dropped_requests as f64, dropped.max(1000.0));
            rows.push(format!(
                "{name} {} s / {} inst-s / peak {} / dropped {}",
                r.slo_violation_s, r.instance_seconds, r.peak_instances, r.dropped_requests
            ));
        }
        (err, rows)
    });
    let mut idx: Vec<usize> = (0..shapes.len()).collect();
    idx.sort_by(|a, b| scored[*a].0.total_cmp(&scored[*b].0));
    for &i in idx.iter().take(top) {
        println!("error {:.3}: {:?}", scored[i].0, shapes[i]);
        for r in &scored[i].1 {
            println!("    {r}");
        }
    }
}

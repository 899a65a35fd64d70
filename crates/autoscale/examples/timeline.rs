//! Prints a window of one simulated run's timeline, to see how a policy reacts:
//! `cargo run --release -p autoscale --example timeline -- TRACE POLICY FROM TO [SEED]`.

use autoscale::sim::named_policy;
use autoscale::trace::generate;
use autoscale::{CapacityModel, simulate};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    // A shipped trace name, or `flat:RPS:SECONDS`.
    let trace = match a[1].strip_prefix("flat:") {
        Some(spec) => {
            let (rps, secs) = spec.split_once(':').expect("flat:RPS:SECONDS");
            autoscale::Trace {
                rps: vec![rps.parse().expect("rps"); secs.parse().expect("seconds")],
            }
        }
        None => generate::by_name(&a[1]).expect("trace name").0,
    };
    let noise: f64 = a.get(6).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let cfg = named_policy(&a[2]).expect("policy name");
    let from: usize = a[3].parse().expect("from");
    let to: usize = a[4].parse().expect("to");
    let seed: u64 = a.get(5).and_then(|s| s.parse().ok()).unwrap_or(1);
    let run = simulate(
        &trace,
        &cfg,
        &CapacityModel {
            noise_pct: noise,
            ..CapacityModel::default()
        },
        seed,
    )
    .expect("valid");
    for k in &run.timeline[from..to.min(run.timeline.len())] {
        println!(
            "t {:4} a {:7.1} d {:3} ready {:3} inst {:3} want {:3} backlog {:7.1} p99 {:8.1} {} {}",
            k.t,
            k.arrivals_rps,
            k.demand,
            k.ready,
            k.instances,
            k.desired,
            k.backlog,
            k.p99_ms,
            if k.slo_violated { "VIOL" } else { "" },
            if k.panic { "panic" } else { "" }
        );
    }
}

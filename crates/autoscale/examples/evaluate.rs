//! The evaluation of `scaleout autoscale evaluate` without building the whole binary:
//! `cargo run --release -p autoscale --example evaluate -- [dev|held-out|all] [THREADS] [pareto.svg]`.
//! Prints the text report (and the wall time, to stderr); with a third argument also
//! sweeps the Pareto chart into that SVG file.

use autoscale::evaluate::{self, SeedSet};
use autoscale::families::Family;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sets: Vec<SeedSet> = match args.get(1).map(String::as_str) {
        Some("dev") => vec![SeedSet::Dev],
        Some("held-out") => vec![SeedSet::HeldOut],
        _ => SeedSet::ALL.to_vec(),
    };
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let started = std::time::Instant::now();
    let eval = evaluate::evaluate(&Family::ALL, &sets, 6.0, threads).expect("valid contenders");
    print!("{}", eval.to_text());
    eprintln!("evaluation: {:.1} s", started.elapsed().as_secs_f64());
    if let Some(path) = args.get(3) {
        let started = std::time::Instant::now();
        let points = evaluate::pareto(&Family::ALL, &sets, threads).expect("valid contenders");
        std::fs::write(path, evaluate::pareto_svg(&points)).expect("write the SVG");
        for p in &points {
            println!(
                "pareto {:<8} target {:>3}: median slo_violation_s {:>5.0}  median instance_seconds {:>8.0}",
                p.policy, p.target_in_flight, p.slo_violation_s, p.instance_seconds
            );
        }
        eprintln!("pareto: {:.1} s", started.elapsed().as_secs_f64());
    }
}

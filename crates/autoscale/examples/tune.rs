//! Tuning `default` on the DEV seeds only: each argument is a variant, written as the
//! lines of a `[default]` TOML section separated by `;` (an empty string is the shipped
//! default). Prints, per variant, the issue-17 goal figures against the HPA clone and
//! KPA over the dev set, overall and per family.
//! `cargo run --release -p autoscale --example tune -- "" "headroom = 1.2;max_headroom = 1.2" ...`

use autoscale::Config;
use autoscale::evaluate::{self, Contender, SeedSet, TraceResult};
use autoscale::families::Family;

fn main() {
    let variants: Vec<String> = std::env::args().skip(1).collect();
    let mut contenders = evaluate::contenders(6.0)
        .into_iter()
        .filter(|c| c.name == "hpa" || c.name == "kpa")
        .collect::<Vec<_>>();
    for (i, v) in variants.iter().enumerate() {
        let text = format!(
            "policy = \"default\"\nmin_instances = 1\nmax_instances = 100\ntarget_in_flight = 6.0\n[default]\n{}",
            v.replace(';', "\n")
        );
        let cfg = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("variant {v:?}: {e}"));
        contenders.push(Contender {
            name: format!("v{i}"),
            cfg,
        });
    }
    // Tuning reads the dev set only; `TUNE_SET=held-out` exists to report a variant that
    // was already fixed (e.g. the pre-issue-17 default) beside the dev figures.
    let set = match std::env::var("TUNE_SET").as_deref() {
        Ok("held-out") => SeedSet::HeldOut,
        _ => SeedSet::Dev,
    };
    let cases = evaluate::scenarios(&Family::ALL, &[set]);
    let results: Vec<TraceResult> = evaluate::run_parallel(&cases, 2, |(s, set)| {
        evaluate::run_scenario(s, *set, &contenders).expect("validated variants")
    });
    let names: Vec<String> = contenders.iter().map(|c| c.name.clone()).collect();
    let refs: Vec<&TraceResult> = results.iter().collect();
    let all = evaluate::summarise(&refs, &names);
    let kpa = all
        .iter()
        .find(|p| p.policy == "kpa")
        .unwrap()
        .slo_ratio_to_hpa
        .median;
    for (i, v) in variants.iter().enumerate() {
        let p = all.iter().find(|p| p.policy == format!("v{i}")).unwrap();
        let mut fam = String::new();
        for f in Family::ALL {
            let rs: Vec<&TraceResult> = results.iter().filter(|r| r.scenario.family == f).collect();
            let s = evaluate::summarise(&rs, &names);
            let q = s.iter().find(|q| q.policy == p.policy).unwrap();
            fam.push_str(&format!(
                " {}={:.2}/{:.2}",
                &f.as_str()[..4],
                q.slo_ratio_to_hpa.median,
                q.cost_ratio_to_hpa.median
            ));
        }
        println!(
            "v{i} slo {:.3} cost {:.3} worse {:.1}% (kpa {kpa:.3}) |{fam} | {v:?}",
            p.slo_ratio_to_hpa.median, p.cost_ratio_to_hpa.median, p.worse_than_hpa_pct
        );
    }
}

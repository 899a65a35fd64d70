use super::*;
use crate::decision::Action;
use crate::sweep::{self, SweepPoint};

/// The sweep from issue 11: act 3 of the demo on a 2-core machine, every process sharing
/// the cores. Throughput falls from the first instance on.
fn retrograde() -> Sweep {
    sweep_of(
        SweepKind::Instances,
        &[
            (1.0, 13447.0),
            (2.0, 10180.0),
            (3.0, 9905.0),
            (4.0, 9164.0),
            (6.0, 7460.0),
            (8.0, 6743.0),
        ],
    )
}

fn sweep_of(kind: SweepKind, pts: &[(f64, f64)]) -> Sweep {
    Sweep {
        kind,
        points: pts
            .iter()
            .map(|&(n, x)| SweepPoint {
                n,
                throughput_rps: x,
                p99_ms: None,
                errors_pct: None,
                tiers: None,
            })
            .collect(),
        p99_bound_ms: None,
        stateless: Some(true),
    }
}

fn run(s: &Sweep, opts: PlanOptions) -> (Analysis, Plan, String) {
    let a = sweep::analyse(s);
    let p = plan(s, &a, &opts, &PriceTable::bundled()).unwrap();
    let text = format!("{}{}", sweep::render_text(&a), render_text(&p));
    crate::finite::check(&(&a, &p)).unwrap();
    assert!(!crate::finite::text_has_non_finite(&text), "{text}");
    (a, p, text)
}

#[test]
fn todays_load_defaults_to_the_sweep_at_todays_instance_count() {
    let (_, p, text) = run(&retrograde(), PlanOptions::default());
    let load = p.current_load.as_ref().unwrap();
    assert_eq!(load.rps, 13447.0);
    assert_eq!(load.source, Source::Measured { n: 1.0 });
    assert!(
        text.contains(
            "today: 13447 req/s, measured by the sweep at 1 instance; no --current-rps given"
        ),
        "{text}"
    );
    // Today's capacity and today's load are the same deployment's figures.
    assert_eq!(
        p.recommendation.as_ref().unwrap().current_capacity_rps,
        13447.0
    );

    let at = |instances: u32| {
        let (_, p, text) = run(
            &retrograde(),
            PlanOptions {
                current_instances: instances,
                ..Default::default()
            },
        );
        (p.current_load.unwrap(), text)
    };
    let (four, _) = at(4);
    assert_eq!(
        (four.rps, four.source),
        (9164.0, Source::Measured { n: 4.0 })
    );
    let (five, text) = at(5);
    assert_eq!(five.rps, (9164.0 + 7460.0) / 2.0);
    assert_eq!(five.source, Source::Interpolated { lo: 4.0, hi: 6.0 });
    assert!(
        text.contains("interpolated between the sweep's 4 instances"),
        "{text}"
    );
    let (twelve, text) = at(12);
    assert_eq!(twelve.source, Source::Predicted { n: 12.0 });
    assert!(
        text.contains("outside the measured range 1..8: low confidence"),
        "{text}"
    );
    // Never the largest instance count's figure.
    for n in [1, 2, 3, 5] {
        assert_ne!(at(n).0.rps, 6743.0);
    }
}

#[test]
fn a_given_load_says_so_and_one_above_capacity_is_questioned() {
    let (_, p, text) = run(
        &retrograde(),
        PlanOptions {
            current_rps: Some(20_000.0),
            ..Default::default()
        },
    );
    assert_eq!(p.current_load.as_ref().unwrap().source, Source::Given);
    assert!(
        text.contains("today: 20000 req/s, given (--current-rps)"),
        "{text}"
    );
    assert!(text.contains("today's capacity: 13447 req/s"), "{text}");
    assert!(text.contains("is above the 13447 req/s capacity"), "{text}");
}

#[test]
fn the_retrograde_sweep_says_scaling_out_adds_nothing() {
    let (a, p, text) = run(&retrograde(), PlanOptions::default());
    let f = a.usl.as_ref().unwrap();
    assert_eq!(f.sigma, 1.0, "{f:?}");
    assert!(f.at_bound.iter().any(|b| b.parameter == "sigma"));
    assert!(matches!(f.peak, crate::usl::Peak::NoRise { .. }));
    assert_eq!(f.n_star, 1.0);
    assert!(f.x_max.is_finite());
    assert!(text.contains("[at bound: sigma = 1"), "{text}");
    assert!(text.contains("fit at a parameter bound"), "{text}");
    assert!(
        text.contains("scaling: scaling out this way does not add capacity: the measurement cannot tell which resource is the bottleneck"),
        "{text}"
    );
    assert!(!text.contains("peaks at 0"), "{text}");
    assert!(text.contains("knee: none (throughput never rose"), "{text}");
    let rec = p.recommendation.as_ref().unwrap();
    let out = rec.options.iter().find(|o| o.name == "scale out").unwrap();
    assert!(!out.feasible);
    assert_eq!(out.instances, 1);
    assert!(
        out.detail
            .starts_with("scaling out this way does not add capacity"),
        "{}",
        out.detail
    );
    assert_ne!(rec.action, Action::ScaleOut, "{}", rec.reason);
    assert!(
        rec.reason.contains("does not add capacity"),
        "{}",
        rec.reason
    );
}

/// The README's example once printed "RefactorFirst for 927 → 1853 req/s (… capacity
/// needed 2647, today 65)": today's load was half the sweep's peak (at 72 users) while
/// today's capacity was the one-unit figure. Both now come from today's level.
#[test]
fn the_readme_example_figures_agree() {
    let s = Sweep::from_json(include_str!("../../examples/specsdm91-sweep.json")).unwrap();
    let (_, p, text) = run(
        &s,
        PlanOptions {
            growth: 2.0,
            ..Default::default()
        },
    );
    let rec = p.recommendation.as_ref().unwrap();
    let load = p.current_load.as_ref().unwrap();
    assert_eq!(load.rps, 64.9);
    assert_eq!(rec.current_capacity_rps, 64.9);
    assert!((p.projected_rps - 129.8).abs() < 1e-9);
    assert!((rec.required_rps - 129.8 / 0.7).abs() < 1e-9);
    assert!(text.contains("for 65 → 130 req/s"), "{text}");
    assert_ne!(rec.action, Action::RefactorFirst, "{}", rec.reason);
    // Today at 72 units the same sweep gives today's load and capacity there.
    let (_, p, _) = run(
        &s,
        PlanOptions {
            growth: 2.0,
            current_instances: 72,
            ..Default::default()
        },
    );
    assert_eq!(p.current_load.unwrap().rps, 1853.2);
}

#[test]
fn a_concurrency_sweep_takes_its_peak_as_todays_capacity() {
    let s = sweep_of(
        SweepKind::Concurrency,
        &[
            (1.0, 100.0),
            (2.0, 190.0),
            (4.0, 300.0),
            (8.0, 310.0),
            (16.0, 280.0),
        ],
    );
    let (_, p, text) = run(&s, PlanOptions::default());
    let load = p.current_load.as_ref().unwrap();
    assert_eq!(
        (load.rps, load.source),
        (310.0, Source::SweepPeak { n: 8.0 })
    );
    assert!(
        text.contains("the sweep's highest throughput, at concurrency 8"),
        "{text}"
    );
}

#[test]
fn short_flat_and_zero_sweeps_give_reasons_not_numbers_out_of_thin_air() {
    // One point: no fit; today's load is still the measured figure.
    let (_, p, text) = run(
        &sweep_of(SweepKind::Instances, &[(1.0, 500.0)]),
        PlanOptions::default(),
    );
    assert_eq!(p.current_load.as_ref().unwrap().rps, 500.0);
    assert!(text.contains("one level measured"), "{text}");
    assert!(text.contains("USL fit: not possible"), "{text}");
    // Two points, today outside them and no fit: today's load is unknown, said so.
    let two = sweep_of(SweepKind::Instances, &[(1.0, 500.0), (2.0, 400.0)]);
    let (_, p, text) = run(
        &two,
        PlanOptions {
            current_instances: 3,
            ..Default::default()
        },
    );
    assert!(p.current_load.is_err());
    assert!(
        text.contains("decision: none: today's load is unknown"),
        "{text}"
    );
    // Flat.
    let flat = sweep_of(
        SweepKind::Instances,
        &[
            (1.0, 1000.0),
            (2.0, 1010.0),
            (3.0, 995.0),
            (4.0, 1003.0),
            (6.0, 998.0),
            (8.0, 1001.0),
        ],
    );
    let (a, p, text) = run(&flat, PlanOptions::default());
    assert_eq!(a.scaling.shape, crate::scaling::Shape::Flat);
    assert!(
        text.contains("scaling out this way does not add capacity"),
        "{text}"
    );
    let out = p
        .recommendation
        .as_ref()
        .unwrap()
        .options
        .iter()
        .find(|o| o.name == "scale out")
        .unwrap()
        .clone();
    assert!(!out.feasible, "{out:?}");
    // Zero throughput everywhere: no fit, no decision, no NaN.
    let zero = sweep_of(SweepKind::Instances, &[(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)]);
    let (_, p, text) = run(&zero, PlanOptions::default());
    assert!(p.recommendation.is_err(), "{text}");
    assert!(text.contains("no level measured any throughput"), "{text}");
}

#[test]
fn bad_options_name_the_field() {
    let s = retrograde();
    let a = sweep::analyse(&s);
    let e = |o: PlanOptions| {
        plan(&s, &a, &o, &PriceTable::bundled())
            .unwrap_err()
            .to_string()
    };
    assert!(
        e(PlanOptions {
            growth: 0.0,
            ..Default::default()
        })
        .contains("growth")
    );
    assert!(
        e(PlanOptions {
            growth: f64::NAN,
            ..Default::default()
        })
        .contains("growth")
    );
    assert!(
        e(PlanOptions {
            current_rps: Some(-1.0),
            ..Default::default()
        })
        .contains("current_rps")
    );
    assert!(
        e(PlanOptions {
            current_instances: 0,
            ..Default::default()
        })
        .contains("current_instances")
    );
}

#[test]
fn without_a_fit_the_instance_curve_follows_the_measured_points() {
    // Two falling levels: scaling out is not offered.
    let (_, p, _) = run(
        &sweep_of(SweepKind::Instances, &[(1.0, 1000.0), (2.0, 700.0)]),
        PlanOptions::default(),
    );
    let input = p.input.as_ref().unwrap();
    assert_eq!((input.out_sigma, input.out_kappa), (1.0, 0.0));
    assert_ne!(p.recommendation.as_ref().unwrap().action, Action::ScaleOut);
    // Two rising levels: Amdahl through them (X(2) = 2λ / (1 + σ) = 1800 at λ 1000).
    let (_, p, text) = run(
        &sweep_of(SweepKind::Instances, &[(1.0, 1000.0), (2.0, 1800.0)]),
        PlanOptions::default(),
    );
    let sigma = p.input.as_ref().unwrap().out_sigma;
    assert!((sigma - 1.0 / 9.0).abs() < 1e-12, "{sigma}");
    assert!(
        text.contains("Amdahl's law through 1 and 2 instances, sigma 0.111"),
        "{text}"
    );
}

/// The release run of issue 11's act 3 on envelopes (2026-11-30 09:12, 2 cores, 0.25 cpu
/// each): linear or better up to 4 instances, then flat at 6 and 8 with the host's cores
/// 87% and 92% busy and the instances starved of their allotment.
fn enveloped() -> Sweep {
    // (n, req/s, instances' cores, host's busy cores of 2)
    let rows = [
        (1.0, 1578.0, 0.24, 0.35),
        (2.0, 3802.0, 0.48, 0.65),
        (3.0, 6984.0, 0.73, 1.03),
        (4.0, 10397.0, 0.95, 1.38),
        (6.0, 9535.0, 1.24, 1.73),
        (8.0, 9688.0, 1.32, 1.83),
    ];
    Sweep {
        kind: SweepKind::Instances,
        points: rows
            .iter()
            .map(|&(n, x, inst, host)| SweepPoint {
                n,
                throughput_rps: x,
                p99_ms: None,
                errors_pct: None,
                tiers: Some(crate::bottleneck::TierReadings {
                    load: n,
                    app_cpu: Some(inst / (0.25 * n)),
                    host_cpu: Some(host / 2.0),
                    load_generator_cpu: Some(0.1),
                    ..Default::default()
                }),
            })
            .collect(),
        p99_bound_ms: None,
        stateless: Some(true),
    }
}

#[test]
fn host_limited_levels_are_set_apart_and_the_advice_scales_out() {
    let opts = PlanOptions {
        app_size: "app.medium".into(),
        ..PlanOptions::default()
    };
    let (a, p, text) = run(&enveloped(), opts);
    println!("{text}");
    let set_apart: Vec<f64> = a.host_limited.iter().map(|h| h.n).collect();
    assert_eq!(set_apart, vec![6.0, 8.0], "{text}");
    // The fit and the verdict read 1..=4 instances only: rising, no retrograde peak.
    let fit = a.usl.as_ref().unwrap();
    assert_eq!(fit.points, 4, "{text}");
    assert!(!matches!(fit.peak, Peak::At { n, .. } if n < 8.0), "{text}");
    assert_eq!(a.scaling.shape, Shape::Rising, "{text}");
    assert!(
        a.scaling
            .text
            .contains("The host ran out of cores at 6 instances"),
        "{text}"
    );
    assert!(
        !a.scaling.text.contains("the app tier is the bottleneck"),
        "{text}"
    );
    let rec = p.recommendation.as_ref().unwrap();
    assert_eq!(rec.action, Action::ScaleOut, "{text}");
    // Every option is priced, and the note says where the host stopped measuring.
    assert!(rec.options.iter().all(|o| o.monthly > 0.0), "{text}");
    assert!(
        text.contains("this host ran out of cores at 6 instances"),
        "{text}"
    );
}

#[test]
fn a_sweep_the_host_limited_throughout_is_read_whole() {
    // Every level past the first is host-limited: nothing is set apart (one level with
    // room says nothing about scaling), and the fit reads every level.
    let mut s = enveloped();
    for p in s.points.iter_mut().skip(1) {
        p.tiers.as_mut().unwrap().host_cpu = Some(0.97);
    }
    let (a, _, text) = run(&s, PlanOptions::default());
    assert!(a.host_limited.is_empty(), "{text}");
    assert_eq!(a.usl.as_ref().unwrap().points, 6, "{text}");
}

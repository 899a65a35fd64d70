use super::*;
use rand::{Rng, SeedableRng, rngs::SmallRng};

fn pts(data: &[(f64, f64)]) -> Vec<Point> {
    data.iter().map(|&(n, x)| Point { n, x }).collect()
}

fn rel(a: f64, b: f64) -> f64 {
    ((a - b) / b).abs()
}

/// SPEC SDM91 (Sun SPARCcenter 2000), the dataset Gunther's book and the R `usl`
/// package fit; the package's nonlinear fit gives λ = 89.9952382, σ = 0.0277285,
/// κ = 0.0001044 (7 significant digits published). We must reproduce those.
#[test]
fn reproduces_the_published_specsdm91_fit() {
    let data = pts(&[
        (1.0, 64.9),
        (18.0, 995.9),
        (36.0, 1652.4),
        (72.0, 1853.2),
        (108.0, 1828.9),
        (144.0, 1775.0),
        (216.0, 1702.2),
    ]);
    let f = fit(&data).unwrap();
    assert!(rel(f.lambda, 89.9952382) < 2e-4, "lambda {}", f.lambda);
    assert!(rel(f.sigma, 0.0277285) < 2e-4, "sigma {}", f.sigma);
    // κ is published to 4 significant digits only.
    assert!(rel(f.kappa, 0.0001044) < 5e-4, "kappa {}", f.kappa);
    assert!((f.n_star - 96.0).abs() < 1.0, "N* {}", f.n_star);
    assert_eq!(f.limited_by, Limit::Contention);
    // The package's fitted values, rounded to 3 digits: 90 1078 1541 1850 1879 1822 1646.
    let expected = [90.0, 1078.0, 1541.0, 1850.0, 1879.0, 1822.0, 1646.0];
    for (p, e) in data.iter().zip(expected) {
        assert!(
            (f.predict(p.n).x - e).abs() < 1.0,
            "X({}) = {}",
            p.n,
            f.predict(p.n).x
        );
    }
}

/// The R package's own coefficient test: data from σ = κ = 0.02, λ = 1, rounded to 4 places.
#[test]
fn recovers_exact_coefficients_from_rounded_model_data() {
    let data = pts(&[
        (1.0, 1.0),
        (2.0, 1.8868),
        (4.0, 3.0769),
        (6.0, 3.5294),
        (8.0, 3.5398),
        (10.0, 3.3557),
    ]);
    let f = fit(&data).unwrap();
    assert!((f.sigma - 0.02).abs() < 5e-4, "sigma {}", f.sigma);
    assert!((f.kappa - 0.02).abs() < 5e-4, "kappa {}", f.kappa);
    assert!((f.lambda - 1.0).abs() < 1e-3, "lambda {}", f.lambda);
}

#[test]
fn names_the_dominant_limit() {
    let points = |s: f64, k: f64| -> Vec<Point> {
        [1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0]
            .iter()
            .map(|&n| Point {
                n,
                x: model(n, 10.0, s, k),
            })
            .collect()
    };
    assert_eq!(
        fit(&points(0.01, 0.05)).unwrap().limited_by,
        Limit::Coherency
    );
    assert_eq!(
        fit(&points(0.2, 0.001)).unwrap().limited_by,
        Limit::Contention
    );
}

/// Points from known σ and κ with 2% multiplicative noise are recovered, seed by seed.
#[test]
fn recovers_known_coefficients_through_noise() {
    let seed: u64 = std::env::var("ADVISOR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    println!("seed {seed} (replay with ADVISOR_SEED)");
    let mut rng = SmallRng::seed_from_u64(seed);
    for case in 0..20 {
        let (lambda, sigma, kappa) = (1000.0, 0.05, 0.002);
        let data: Vec<Point> = [1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0]
            .iter()
            .map(|&n| Point {
                n,
                x: model(n, lambda, sigma, kappa) * (1.0 + rng.random_range(-0.02..0.02)),
            })
            .collect();
        let f = fit(&data).unwrap();
        assert!(
            (f.sigma - sigma).abs() < 0.02,
            "case {case}: sigma {}",
            f.sigma
        );
        assert!(rel(f.kappa, kappa) < 0.35, "case {case}: kappa {}", f.kappa);
        assert!(
            rel(f.lambda, lambda) < 0.05,
            "case {case}: lambda {}",
            f.lambda
        );
        let true_nstar = ((1.0 - sigma) / kappa).sqrt();
        assert!(
            rel(f.n_star, true_nstar) < 0.2,
            "case {case}: N* {}",
            f.n_star
        );
        let ci = f.sigma_ci.unwrap();
        assert!(ci.lo < f.sigma && f.sigma < ci.hi);
        assert!(
            f.warnings.iter().all(|w| !w.contains("only")),
            "{:?}",
            f.warnings
        );
    }
}

#[test]
fn linear_data_has_no_peak_and_says_so() {
    let data = pts(&[(1.0, 100.0), (2.0, 200.0), (3.0, 300.0), (4.0, 400.0)]);
    let f = fit(&data).unwrap();
    assert!(f.sigma < 1e-6 && f.kappa < 1e-9);
    assert!(f.n_star.is_infinite());
    assert!(f.warnings.iter().any(|w| w.contains("only 4 points")));
    assert!(f.warnings.iter().any(|w| w.contains("cannot be located")));
    assert!(!f.predict(8.0).confident);
    assert!(f.predict(4.0).confident);
}

#[test]
fn warns_when_no_point_is_near_the_peak() {
    let (lambda, sigma, kappa) = (100.0, 0.01, 0.0001); // N* ≈ 99
    let data: Vec<Point> = (1..=8)
        .map(|n| Point {
            n: n as f64,
            x: model(n as f64, lambda, sigma, kappa),
        })
        .collect();
    let f = fit(&data).unwrap();
    assert!(
        f.warnings
            .iter()
            .any(|w| w.contains("no points near the peak")),
        "{:?}",
        f.warnings
    );
}

#[test]
fn rejects_bad_input_naming_the_point() {
    let e = fit(&pts(&[(1.0, 1.0), (0.0, 2.0), (3.0, 3.0)])).unwrap_err();
    assert!(e.to_string().contains("points[1].n"), "{e}");
    let e = fit(&pts(&[(1.0, 1.0), (2.0, f64::NAN), (3.0, 3.0)])).unwrap_err();
    assert!(e.to_string().contains("points[1].x"), "{e}");
    let e = fit(&pts(&[(1.0, 1.0), (1.0, 1.1), (2.0, 2.0)])).unwrap_err();
    assert!(e.to_string().contains("3 distinct"), "{e}");
}

#[test]
fn instances_needed_for_a_throughput() {
    let data: Vec<Point> = (1..=8)
        .map(|n| Point {
            n: n as f64,
            x: model(n as f64, 500.0, 0.05, 0.001),
        })
        .collect();
    let f = fit(&data).unwrap();
    let need = f.n_for_throughput(2000.0, 64).unwrap();
    assert!(model(need as f64, 500.0, 0.05, 0.001) >= 2000.0 * 0.99);
    assert!(model((need - 1) as f64, 500.0, 0.05, 0.001) < 2000.0 * 1.01);
    assert_eq!(f.n_for_throughput(1e9, 64), None);
}

/// A falling sweep pins σ at its upper bound: flagged, and the peak is read over N ≥ 1
/// (one unit), never "N* 0, X_max NaN".
#[test]
fn flags_a_fit_at_its_bounds_and_keeps_the_peak_finite() {
    // X(N) = 100/N is the USL with σ = 1, κ = 1 exactly.
    let falling = pts(&[(1.0, 100.0), (2.0, 50.0), (4.0, 25.0), (8.0, 12.5)]);
    let f = fit(&falling).unwrap();
    assert_eq!(f.sigma, 1.0);
    assert!(rel(f.kappa, 1.0) < 1e-6, "kappa {}", f.kappa);
    assert_eq!(
        f.at_bound,
        vec![BoundHit {
            parameter: "sigma".into(),
            bound: 1.0,
            side: BoundSide::Upper
        }]
    );
    assert_eq!(f.peak, Peak::NoRise { x: f.lambda });
    assert_eq!((f.n_star, f.x_max), (1.0, f.lambda));
    assert!(
        f.warnings
            .iter()
            .any(|w| w.contains("fit at a parameter bound: sigma = 1"))
    );
    assert!(
        f.peak_text("instances")
            .contains("never rises above 100 req/s")
    );
    // Linear data sit on both lower bounds; N* is infinite in the API, null in JSON.
    let linear = fit(&pts(&[(1.0, 100.0), (2.0, 200.0), (3.0, 300.0)])).unwrap();
    assert!(
        linear
            .at_bound
            .iter()
            .any(|b| b.parameter == "kappa" && b.side == BoundSide::Lower)
    );
    assert_eq!(linear.peak, Peak::Unbounded);
    let json = serde_json::to_value(&linear).unwrap();
    assert!(
        json["n_star"].is_null() && json["x_max"].is_null(),
        "{json}"
    );
    assert_eq!(json["peak"]["case"], "unbounded");
    crate::finite::check(&linear).unwrap();
    // And it reads back: null is the infinity it stands for.
    let back: UslFit = serde_json::from_value(json).unwrap();
    assert!(back.n_star.is_infinite());
    // A peak below one unit without σ at its bound (σ + κ ≥ 1) is no rise either.
    let f = fit(&pts(&[(1.0, 100.0), (2.0, 80.0), (3.0, 62.0), (4.0, 50.0)])).unwrap();
    assert!(matches!(f.peak, Peak::NoRise { .. }), "{f:?}");
    assert!(f.x_max.is_finite() && f.n_star == 1.0);
}

#[test]
fn refuses_a_sweep_with_no_throughput_and_out_of_range_figures() {
    let e = fit(&pts(&[(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)])).unwrap_err();
    assert!(e.to_string().contains("zero throughput"), "{e}");
    let e = fit(&pts(&[(1.0, 1.0), (2.0, 1e300), (3.0, 3.0)])).unwrap_err();
    assert!(e.to_string().contains("points[1].x"), "{e}");
}

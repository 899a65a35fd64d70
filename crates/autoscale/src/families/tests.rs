//! Generators: seed replay, ranges, and each family's shape.

use super::*;

/// Seed-replay contract: scenario 1 of each family, fingerprinted. A change here means
/// every evaluation figure of that family changed; update BENCHMARKS.md with it.
const PINNED_SEED_1: [(Family, u64); 7] = [
    (Family::Step, 0xf5a9f05b9c54f15d),
    (Family::Ramp, 0x00df162ff1ca2a0e),
    (Family::FlashCrowd, 0x4106494e910a0a31),
    (Family::Diurnal, 0xe17c0aa5f590be5b),
    (Family::Mmpp, 0x295388a7df1ba7bd),
    (Family::Sawtooth, 0x0a85a43b103a60ac),
    (Family::QuietSpikes, 0xc6a4faae16a6ca2c),
];

#[test]
fn a_fixed_seed_replays_byte_for_byte() {
    let mut got = Vec::new();
    for (family, want) in PINNED_SEED_1 {
        let a = Scenario::draw(family, 1);
        let b = Scenario::draw(family, 1);
        assert_eq!(a, b, "{family:?}: parameters differ between two draws");
        let (ta, tb) = (a.trace(), b.trace());
        assert_eq!(
            ta.rps.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            tb.rps.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{family:?}: traces differ between two generations"
        );
        got.push((family, fingerprint(&ta)));
        if fingerprint(&ta) != want {
            eprintln!("{family:?} seed 1: fingerprint {:#018x}", fingerprint(&ta));
        }
    }
    assert_eq!(
        got,
        PINNED_SEED_1.to_vec(),
        "seed 1 no longer replays the pinned traces"
    );
}

#[test]
fn other_seeds_give_other_traces_and_families_are_independent() {
    for family in Family::ALL {
        let a = fingerprint(&Scenario::draw(family, 1).trace());
        let b = fingerprint(&Scenario::draw(family, 2).trace());
        assert_ne!(a, b, "{family:?}");
    }
    let step = Scenario::draw(Family::Step, 5);
    let ramp = Scenario::draw(Family::Ramp, 5);
    assert_ne!(
        step.startup_s as f64 + step.noise_pct,
        ramp.startup_s as f64 + ramp.noise_pct
    );
}

#[test]
fn drawn_parameters_stay_in_their_documented_ranges() {
    for family in Family::ALL {
        for seed in 0..300 {
            let s = Scenario::draw(family, seed);
            assert!((STARTUP_S.0..=STARTUP_S.1).contains(&s.startup_s), "{s:?}");
            assert!((NOISE_PCT.0..=NOISE_PCT.1).contains(&s.noise_pct), "{s:?}");
            let ok = match s.params {
                Params::Step {
                    factor,
                    at_s,
                    hold_s,
                    ..
                } => {
                    (2.0..=20.0).contains(&factor)
                        && (300..=900).contains(&at_s)
                        && (300..=900).contains(&hold_s)
                }
                Params::Ramp { factor, ramp_s, .. } => {
                    (2.0..=10.0).contains(&factor) && (10..=600).contains(&ramp_s)
                }
                Params::FlashCrowd {
                    factor,
                    rise_s,
                    decay_s,
                    second,
                    plateau_s,
                    ..
                } => {
                    (3.0..=20.0).contains(&factor)
                        && (10..=300).contains(&rise_s)
                        && (0..=120).contains(&plateau_s)
                        && (60.0..=900.0).contains(&decay_s)
                        && second.is_none_or(|(at, share)| {
                            at <= TRACE_S - 600 && (0.3..=0.8).contains(&share)
                        })
                }
                Params::Diurnal {
                    factor,
                    day_s,
                    weekend_share,
                    noise_sd,
                    ..
                } => {
                    (3.0..=15.0).contains(&factor)
                        && (480..=720).contains(&day_s)
                        && (0.3..=0.8).contains(&weekend_share)
                        && (0.0..=0.15).contains(&noise_sd)
                }
                Params::Mmpp {
                    factor,
                    mean_on_s,
                    mean_off_s,
                    ..
                } => {
                    (2.0..=8.0).contains(&factor)
                        && (20.0..=300.0).contains(&mean_on_s)
                        && (60.0..=600.0).contains(&mean_off_s)
                }
                Params::Sawtooth {
                    factor, period_s, ..
                } => (2.0..=6.0).contains(&factor) && (600..=1800).contains(&period_s),
                Params::QuietSpikes {
                    base_rps,
                    mean_gap_s,
                } => (20.0..=100.0).contains(&base_rps) && (600.0..=1800.0).contains(&mean_gap_s),
            };
            assert!(ok, "out of range: {s:?}");
            let t = s.trace();
            assert!(!t.rps.is_empty() && t.len_s() <= crate::trace::MAX_TRACE_S);
            let peak = t.rps.iter().copied().fold(0.0, f64::max);
            assert!(t.rps.iter().all(|v| v.is_finite() && *v >= 0.0), "{s:?}");
            // Diurnal slow noise may lift the peak (0.15 sd: 4 sd is +60%); quiet
            // spikes may overlap (two spikes of 15x on 100 rps).
            assert!(peak <= MAX_PEAK_RPS * 1.6 + 1e-6, "{s:?}: peak {peak}");
        }
    }
}

#[test]
fn each_family_has_its_shape() {
    // step: exactly two level changes, up by the factor and back.
    let s = Scenario::draw(Family::Step, 3);
    let t = s.trace();
    let changes = t.rps.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(changes, 2, "{s:?}");
    if let Params::Step {
        base_rps, factor, ..
    } = s.params
    {
        let peak = t.rps.iter().copied().fold(0.0, f64::max);
        assert!((peak / base_rps - factor).abs() < 1e-9);
    }

    // flash-crowd: the peak is base x factor (or higher with a second surge), the end
    // is back near base when the decay is short.
    for seed in 0..50 {
        let s = Scenario::draw(Family::FlashCrowd, seed);
        let t = s.trace();
        let Params::FlashCrowd {
            base_rps,
            factor,
            second,
            at_s,
            ..
        } = s.params
        else {
            unreachable!()
        };
        let peak = t.rps.iter().copied().fold(0.0, f64::max);
        assert!(peak >= base_rps * factor - 1e-6, "{s:?}");
        assert!(
            t.rps[..at_s as usize]
                .iter()
                .all(|v| (*v - base_rps).abs() < 1e-9)
        );
        if let Some((start, _)) = second {
            // The second surge raises demand after it starts.
            assert!(t.rps[start as usize + 30] > t.rps[start as usize], "{s:?}");
        }
    }

    // mmpp: only two levels, and both occur over some seed.
    let mut saw_on = false;
    for seed in 0..10 {
        let s = Scenario::draw(Family::Mmpp, seed);
        let Params::Mmpp {
            base_rps, factor, ..
        } = s.params
        else {
            unreachable!()
        };
        for v in s.trace().rps {
            let on = (v - base_rps * factor).abs() < 1e-9;
            assert!(on || (v - base_rps).abs() < 1e-9);
            saw_on |= on;
        }
    }
    assert!(saw_on);

    // diurnal: a week; weekend days peak lower than weekdays when noise is off.
    let mut s = Scenario::draw(Family::Diurnal, 4);
    if let Params::Diurnal {
        noise_sd,
        first_day,
        ..
    } = &mut s.params
    {
        *noise_sd = 0.0;
        *first_day = 0;
    }
    let Params::Diurnal { day_s, .. } = s.params else {
        unreachable!()
    };
    let t = s.trace();
    assert_eq!(t.len_s() as u64, 7 * day_s);
    let day_peak = |d: u64| {
        t.rps[(d * day_s) as usize..((d + 1) * day_s) as usize]
            .iter()
            .copied()
            .fold(0.0, f64::max)
    };
    assert!(day_peak(5) < day_peak(0) && day_peak(6) < day_peak(4));

    // quiet-spikes: mostly at base, with at least one spike over some seed.
    let mut spikes = 0;
    for seed in 0..10 {
        let s = Scenario::draw(Family::QuietSpikes, seed);
        let Params::QuietSpikes { base_rps, .. } = s.params else {
            unreachable!()
        };
        let t = s.trace();
        let at_base = t
            .rps
            .iter()
            .filter(|v| (**v - base_rps).abs() < 1e-9)
            .count();
        assert!(at_base * 2 > t.len_s(), "{s:?}");
        spikes += usize::from(at_base < t.len_s());
    }
    assert!(spikes > 0);

    // sawtooth: periodic.
    let s = Scenario::draw(Family::Sawtooth, 2);
    let Params::Sawtooth { period_s, .. } = s.params else {
        unreachable!()
    };
    let t = s.trace();
    assert_eq!(t.rps[10], t.rps[10 + period_s as usize]);
}

#[test]
fn model_imperfections_are_drawn_in_range_without_changing_traces() {
    for family in Family::ALL {
        for seed in 0..100 {
            let s = Scenario::draw(family, seed);
            assert!((0.0..=50.0).contains(&s.startup_jitter_pct), "{s:?}");
            assert!((0.0..=10.0).contains(&s.fail_start_pct), "{s:?}");
            assert!(s.cold_s <= 60, "{s:?}");
            assert!((30.0..=100.0).contains(&s.cold_capacity_pct), "{s:?}");
        }
    }
}

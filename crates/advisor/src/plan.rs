//! From a sweep to a priced decision: today's load and capacity (and where each figure
//! came from), the projection, and the decision's inputs. `scaleout advise` and the demo
//! both call [`plan`], so they read the same figures the same way.
//!
//! Today's load defaults to what the sweep measured at today's instance count (a sweep
//! measures capacity, so the default assumes today's traffic fills today's deployment).
//! It is never the largest level's figure: a sweep that goes past today's deployment
//! says nothing about today's traffic there.
//!
//! Must never: mix figures from different deployments silently (load at one instance
//! count, capacity at another), or print NaN or ∞.

use serde::{Deserialize, Serialize};

use crate::AdvisorError;
use crate::cost::PriceTable;
use crate::decision::{self, DecisionInput, Recommendation};
use crate::scaling::{Shape, levels};
use crate::sweep::{Analysis, Sweep, SweepKind, level_words};
use crate::usl::{MAX_THROUGHPUT, Peak};

/// What the user said about today.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanOptions {
    /// Today's load, req/s; `None` takes the sweep's figure at `current_instances`.
    pub current_rps: Option<f64>,
    /// App instances running today (≥ 1).
    pub current_instances: u32,
    /// Growth factor to plan for (projected = today's load × growth), > 0.
    pub growth: f64,
    /// App size today (a name in the price table).
    pub app_size: String,
    /// Run each tier at most at this utilisation, (0, 1].
    pub target_utilisation: f64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            current_rps: None,
            current_instances: 1,
            growth: 3.0,
            app_size: "app.large".into(),
            target_utilisation: 0.7,
        }
    }
}

/// Where a figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Source {
    /// Given on the command line (`--current-rps`).
    Given,
    /// Measured by the sweep at exactly this level (mean of repeats).
    Measured {
        /// The level.
        n: f64,
    },
    /// Interpolated linearly between the two measured levels around today's.
    Interpolated {
        /// Measured level below.
        lo: f64,
        /// Measured level above.
        hi: f64,
    },
    /// Predicted by the USL fit (today's level lies outside the measured range).
    Predicted {
        /// The level.
        n: f64,
    },
    /// A concurrency or workers sweep measures today's deployment as a whole: its highest
    /// measured throughput, at this level.
    SweepPeak {
        /// The level with the highest throughput.
        n: f64,
    },
    /// The USL fit's X(1), for want of a measurement at one instance.
    FitAtOne,
    /// The lowest measured level's throughput divided by its instance count (no
    /// one-instance measurement and no fit).
    PerInstanceOfLowest {
        /// The lowest measured level.
        n: f64,
    },
}

/// A figure and where it came from, in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// req/s.
    pub rps: f64,
    /// Where it came from.
    pub source: Source,
    /// The provenance in words, for the report.
    pub text: String,
}

/// Everything between the analysis and the decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Today's instance count.
    pub current_instances: u32,
    /// Today's load, or why it is unknown.
    pub current_load: Result<Figure, String>,
    /// Today's capacity as the sweep measured (or predicted) it, when it can tell.
    pub current_capacity: Option<Figure>,
    /// One instance's capacity, as the decision uses it.
    pub instance_capacity: Option<Figure>,
    /// Growth factor.
    pub growth: f64,
    /// Today's load × growth, req/s (0 when today's load is unknown).
    pub projected_rps: f64,
    /// The decision's inputs (absent when a figure it needs is unknown).
    pub input: Option<DecisionInput>,
    /// The decision, or why there is none.
    pub recommendation: Result<Recommendation, String>,
    /// Caveats about the figures (e.g. a given load above the measured capacity).
    pub notes: Vec<String>,
}

/// The throughput at level `n` from the measured points (exact, else interpolated inside
/// the measured range, else the fit's prediction).
fn at_level(sweep: &Sweep, analysis: &Analysis, n: f64) -> Option<Figure> {
    let pts = sweep.usl_points();
    let (lv, _) = levels(&pts);
    let words = |m: f64| level_words(sweep.kind, m);
    if let Some(&(m, x)) = lv.iter().find(|p| p.0 == n) {
        return Some(Figure {
            rps: x,
            source: Source::Measured { n: m },
            text: format!("measured by the sweep at {}", words(m)),
        });
    }
    if let Some(w) = lv.windows(2).find(|w| w[0].0 < n && n < w[1].0) {
        let ((a, xa), (b, xb)) = (w[0], w[1]);
        let x = xa + (xb - xa) * (n - a) / (b - a);
        return Some(Figure {
            rps: x,
            source: Source::Interpolated { lo: a, hi: b },
            text: format!(
                "interpolated between the sweep's {} ({xa:.0} req/s) and {} ({xb:.0} req/s)",
                words(a),
                words(b)
            ),
        });
    }
    let fit = analysis.usl.as_ref().ok()?;
    let p = fit.predict(n);
    Some(Figure {
        rps: p.x,
        source: Source::Predicted { n },
        text: format!(
            "predicted by the USL fit at {} (outside the measured range {}..{}: low confidence)",
            words(n),
            lv.first().map_or(0.0, |p| p.0),
            lv.last().map_or(0.0, |p| p.0)
        ),
    })
}

/// Today's capacity as the sweep can tell it.
fn current_capacity(sweep: &Sweep, analysis: &Analysis, instances: u32) -> Option<Figure> {
    match sweep.kind {
        SweepKind::Instances => at_level(sweep, analysis, instances as f64),
        SweepKind::Concurrency | SweepKind::Workers => {
            let best = analysis.scaling.best?;
            Some(Figure {
                rps: best.1,
                source: Source::SweepPeak { n: best.0 },
                text: format!(
                    "the sweep's highest throughput, at {} (the sweep is taken as measuring today's {instances} instance{})",
                    level_words(sweep.kind, best.0),
                    if instances == 1 { "" } else { "s" }
                ),
            })
        }
    }
}

/// One instance's capacity.
fn instance_capacity(sweep: &Sweep, analysis: &Analysis, instances: u32) -> Option<Figure> {
    match sweep.kind {
        SweepKind::Instances => {
            let measured = at_level(sweep, analysis, 1.0)
                .filter(|f| matches!(f.source, Source::Measured { .. }));
            if measured.is_some() {
                return measured;
            }
            if let Ok(f) = &analysis.usl {
                return Some(Figure {
                    rps: f.lambda,
                    source: Source::FitAtOne,
                    text: "the USL fit's X(1) (the sweep has no one-instance level)".into(),
                });
            }
            let (n, x) = analysis.scaling.first?;
            Some(Figure {
                rps: x / n,
                source: Source::PerInstanceOfLowest { n },
                text: format!(
                    "{x:.0} req/s at {n} instances divided by {n} (no one-instance level, no fit)"
                ),
            })
        }
        SweepKind::Concurrency | SweepKind::Workers => {
            let c = current_capacity(sweep, analysis, instances)?;
            Some(Figure {
                rps: c.rps / instances as f64,
                text: if instances == 1 {
                    c.text.clone()
                } else {
                    format!("{} divided by {instances} instances", c.text)
                },
                source: c.source,
            })
        }
    }
}

/// Contention and coherency across instances for the decision. From an instance sweep:
/// the fit, unless the measured points show no gain (then flat, σ 1, whatever a noisy fit
/// says); without a fit, Amdahl's σ through the first and best levels. Otherwise (a
/// concurrency or workers sweep says nothing about instances) the documented assumption
/// σ 0.02, κ 0, noted.
fn instance_curve(sweep: &Sweep, analysis: &Analysis, notes: &mut Vec<String>) -> (f64, f64) {
    if sweep.kind != SweepKind::Instances {
        notes.push(
            "scale-out capacities assume contention sigma 0.02 and coherency kappa 0 across instances (not measured: an instance sweep measures them)".into(),
        );
        return (0.02, 0.0);
    }
    let sc = &analysis.scaling;
    if sc.shape != Shape::Unknown && !sc.adds_capacity {
        if analysis
            .usl
            .as_ref()
            .is_ok_and(|f| !matches!(f.peak, Peak::NoRise { .. }))
        {
            notes.push("the USL fit rises but the measured points do not: the decision follows the measurements (no gain from more instances)".into());
        }
        return (1.0, 0.0);
    }
    if let Ok(f) = &analysis.usl {
        return (f.sigma, f.kappa);
    }
    match (sc.first, sc.best) {
        (Some((n1, x1)), Some((n2, x2))) if n2 > n1 && x1 > 0.0 => {
            // X(n) = λn / (1 + σ(n − 1)) through both points.
            let den = n2 * x1 * (n1 - 1.0) - n1 * x2 * (n2 - 1.0);
            let sigma = if den != 0.0 {
                ((n1 * x2 - n2 * x1) / den).clamp(0.0, 1.0)
            } else {
                0.0
            };
            notes.push(format!(
                "no USL fit (too few levels): the instance curve is Amdahl's law through {n1} and {n2} instances, sigma {sigma:.3}, kappa 0 (no retrograde term can be measured this way)"
            ));
            (sigma, 0.0)
        }
        _ => {
            notes.push("one instance level measured: scale-out capacities assume contention sigma 0.02 and coherency kappa 0 (not measured)".into());
            (0.02, 0.0)
        }
    }
}

fn check(opts: &PlanOptions) -> Result<(), AdvisorError> {
    let bad = |m: String| Err(AdvisorError::BadInput(m));
    if let Some(c) = opts.current_rps
        && !(c.is_finite() && (0.0..=MAX_THROUGHPUT).contains(&c))
    {
        return bad(format!(
            "current_rps must be >= 0 and <= {MAX_THROUGHPUT:e}, got {c}"
        ));
    }
    if !(1..=decision::MAX_INSTANCES).contains(&opts.current_instances) {
        return bad(format!(
            "current_instances must be within 1..={}, got {}",
            decision::MAX_INSTANCES,
            opts.current_instances
        ));
    }
    if !(opts.growth.is_finite() && opts.growth > 0.0 && opts.growth <= 1e6) {
        return bad(format!(
            "growth must be > 0 and <= 1e6, got {}",
            opts.growth
        ));
    }
    if !(opts.target_utilisation > 0.0 && opts.target_utilisation <= 1.0) {
        return bad(format!(
            "target_utilisation must be within (0, 1], got {}",
            opts.target_utilisation
        ));
    }
    Ok(())
}

/// Joins the sweep, its analysis and today's figures into a priced decision.
///
/// Bad options are an error (the field named); a figure the sweep cannot give (today's
/// level outside the measured range with no fit, a sweep with no throughput) leaves the
/// recommendation as `Err` with the reason.
pub fn plan(
    sweep: &Sweep,
    analysis: &Analysis,
    opts: &PlanOptions,
    prices: &PriceTable,
) -> Result<Plan, AdvisorError> {
    check(opts)?;
    let n = opts.current_instances;
    let capacity = current_capacity(sweep, analysis, n);
    let mut notes = Vec::new();
    let current_load = match (opts.current_rps, &capacity) {
        (Some(rps), _) => Ok(Figure {
            rps,
            source: Source::Given,
            text: "given (--current-rps)".into(),
        }),
        (None, Some(c)) => Ok(Figure {
            rps: c.rps,
            source: c.source,
            text: format!(
                "{}; no --current-rps given, and a sweep measures capacity, so this assumes today's traffic fills today's {}",
                c.text,
                level_words(SweepKind::Instances, n as f64)
            ),
        }),
        (None, None) => Err(format!(
            "today's load is unknown: the sweep has no figure for {} and no fit to predict one; give --current-rps",
            level_words(SweepKind::Instances, n as f64)
        )),
    };
    if let (Ok(load), Some(c)) = (&current_load, &capacity)
        && load.source == Source::Given
        && load.rps > c.rps * 1.05
    {
        notes.push(format!(
            "today's load {:.0} req/s is above the {:.0} req/s capacity {}: check --current-instances (today's instance count) or the sweep",
            load.rps, c.rps, c.text
        ));
    }
    if let Some(c) = &capacity
        && opts.current_rps.is_some()
        && matches!(c.source, Source::Predicted { .. })
    {
        notes.push(format!("today's capacity is {}", c.text));
    }
    let per_instance = instance_capacity(sweep, analysis, n);
    let projected_rps = current_load.as_ref().map_or(0.0, |l| l.rps * opts.growth);
    let (out_sigma, out_kappa) = instance_curve(sweep, analysis, &mut notes);
    if let (Some(first), Some(room)) = (
        analysis.host_limited.first(),
        analysis.scaling.last.map(|l| l.0),
    ) && sweep.kind == SweepKind::Instances
    {
        notes.push(format!(
            "scale-out capacities past {} come from the fit over the levels where the host had room: this host ran out of cores at {}, so it cannot measure more; measure there with the instances on cores of their own",
            level_words(sweep.kind, room),
            level_words(sweep.kind, first.n)
        ));
    }
    let (up_sigma, up_kappa) = match (&analysis.usl, sweep.kind) {
        (Ok(f), SweepKind::Workers) => (f.sigma, f.kappa),
        _ => (0.05, 0.0),
    };
    if sweep.kind != SweepKind::Workers {
        notes.push(format!(
            "scale-up capacities assume contention sigma {up_sigma} and coherency kappa {up_kappa} across the cores of one instance (not measured: a workers sweep measures them)"
        ));
    }
    let input = match (&current_load, &per_instance) {
        (Ok(load), Some(inst)) => Some(DecisionInput {
            current_rps: load.rps,
            projected_rps,
            app_size: opts.app_size.clone(),
            instances: n,
            instance_capacity_rps: inst.rps,
            up_sigma,
            up_kappa,
            out_sigma,
            out_kappa,
            stateless: sweep.stateless,
            bottleneck: analysis.diagnosis.bottleneck,
            target_utilisation: opts.target_utilisation,
            current_capacity_rps: capacity.as_ref().map(|c| c.rps),
            ..Default::default()
        }),
        _ => None,
    };
    let recommendation = match (&input, &current_load) {
        (_, Err(e)) => Err(e.clone()),
        (None, Ok(_)) => {
            Err("one instance's capacity is unknown: the sweep has no usable level".into())
        }
        (Some(i), Ok(_)) => decision::decide(i, prices).map_err(|e| match e {
            AdvisorError::BadInput(m) if m.starts_with("instance_capacity_rps") => format!(
                "the sweep measured no throughput for one instance ({})",
                per_instance
                    .as_ref()
                    .map_or(String::new(), |f| f.text.clone())
            ),
            AdvisorError::BadInput(m) => m,
        }),
    };
    Ok(Plan {
        current_instances: n,
        current_load,
        current_capacity: capacity,
        instance_capacity: per_instance,
        growth: opts.growth,
        projected_rps,
        input,
        recommendation,
        notes,
    })
}

/// The plan and decision as text (after [`crate::sweep::render_text`]). No NaN or ∞.
pub fn render_text(p: &Plan) -> String {
    let mut s = String::new();
    match &p.current_load {
        Ok(l) => s.push_str(&format!("today: {:.0} req/s, {}\n", l.rps, l.text)),
        Err(e) => s.push_str(&format!("today: {e}\n")),
    }
    if let Some(c) = &p.current_capacity
        && p.current_load
            .as_ref()
            .is_ok_and(|l| l.source == Source::Given)
    {
        s.push_str(&format!(
            "  today's capacity: {:.0} req/s, {}\n",
            c.rps, c.text
        ));
    }
    if let Some(i) = &p.instance_capacity {
        s.push_str(&format!("  one instance: {:.0} req/s, {}\n", i.rps, i.text));
    }
    for n in &p.notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    match (&p.recommendation, &p.current_load) {
        (Ok(rec), Ok(load)) => {
            s.push_str(&format!(
                "decision: {:?} for {:.0} → {:.0} req/s (growth {}x; capacity needed {:.0} at {:.0}% utilisation, today's capacity {:.0})\n  {}\n",
                rec.action,
                load.rps,
                p.projected_rps,
                p.growth,
                rec.required_rps,
                p.input.as_ref().map_or(0.0, |i| i.target_utilisation * 100.0),
                rec.current_capacity_rps,
                rec.reason
            ));
            for o in &rec.options {
                s.push_str(&format!(
                    "  option {:<38} {:>9.0} {}/month  capacity {:>8.0} req/s  {}{}\n",
                    o.name,
                    o.monthly,
                    rec.currency,
                    o.capacity_rps,
                    o.detail,
                    if o.feasible { "" } else { "  [not enough]" }
                ));
            }
        }
        (Err(e), _) => s.push_str(&format!("decision: none: {e}\n")),
        (Ok(_), Err(e)) => s.push_str(&format!("decision: none: {e}\n")),
    }
    s
}

#[cfg(test)]
mod tests;

//! The closing advice: act 3's instance sweep (with the host's and the generator's CPU
//! as tier readings, and act 4's stateless verdict) through the same planner
//! `scaleout advise` uses ([`advisor::plan::plan`]), so the demo and the command read the
//! same figures the same way. Today is one instance (act 1's deployment): today's load
//! is what the sweep measured at one instance, and the report says so.

use advisor::plan::{self, PlanOptions};
use advisor::sweep::{self, Sweep};

use crate::report::{Advice, DemoReport};

/// Growth the demo plans for.
pub const GROWTH: f64 = 3.0;
/// Instances running "today" (act 1's deployment).
pub const CURRENT_INSTANCES: u32 = 1;
/// The app size today, from the bundled price table (one vCPU).
pub const APP_SIZE: &str = "app.medium";

/// The closing advice from what the acts measured, or `None` when no sweep ran.
pub fn advise(r: &DemoReport) -> Option<Advice> {
    let stateless = r.act4.as_ref().map(|a| {
        a.rows
            .iter()
            .any(|row| row.sessions.starts_with("jwt") && row.lost_login == 0 && row.lost_cart == 0)
    });
    let (mut sweep, from): (Sweep, &str) = match (&r.act3, &r.act1) {
        (Some(a), _) => (a.sweep.clone(), "act 3's instance sweep"),
        (None, Some(a)) => (
            crate::acts::knee::sweep_of(a, r.generator_threads),
            "act 1's concurrency sweep (act 3 did not run)",
        ),
        (None, None) => return None,
    };
    sweep.stateless = stateless;
    let analysis = sweep::analyse(&sweep);
    let opts = PlanOptions {
        current_rps: None,
        current_instances: CURRENT_INSTANCES,
        growth: GROWTH,
        app_size: APP_SIZE.into(),
        ..PlanOptions::default()
    };
    let p = plan::plan(
        &sweep,
        &analysis,
        &opts,
        &advisor::cost::PriceTable::bundled(),
    )
    .ok()?;
    let peak_text = match &analysis.usl {
        Ok(f) => f.peak_text(sweep::unit(sweep.kind)),
        Err(e) => format!("no USL fit: {e}"),
    };
    let advice = Advice {
        sweep_from: from.to_string(),
        growth: GROWTH,
        current_instances: CURRENT_INSTANCES,
        scaling_text: analysis.scaling.text.clone(),
        peak_text,
        plan_text: plan::render_text(&p),
        plan: p,
    };
    // The report must never carry NaN or ∞: serde_json would write them as null.
    match advisor::finite::check(&advice) {
        Ok(()) => Some(advice),
        Err(e) => {
            tracing::warn!("advice dropped: {e}");
            None
        }
    }
}

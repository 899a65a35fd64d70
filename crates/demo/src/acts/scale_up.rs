//! Act 2, scale up: one instance in a bigger and bigger envelope (1, 2 and 4 units: 0.25,
//! 0.5 and 1.0 cpu on 2 cores), the same closed-loop load against each. Without
//! envelopes: one worker pinned by nothing versus every core, as before envelopes.

use fleet::envelope::Envelope;

use super::{Ctx, closed, measure, product_reads};
use crate::DemoError;
use crate::report::Act2;
use crate::scope::scoped;

/// Closed-loop connections in acts 2 and 3 (the same load for every size).
pub const CONNECTIONS: usize = 32;

/// The envelope sizes act 2 compares, in units.
pub const UNITS: [u32; 3] = [1, 2, 4];

/// Runs act 2.
pub async fn run(ctx: &Ctx) -> Result<Act2, DemoError> {
    ctx.say("act 2: scale up: one instance in a bigger envelope");
    let mut runs = Vec::new();
    for units in UNITS {
        let envelope = ctx.unit().map(|u| Envelope {
            cpu: u.cpu * units as f64,
            ..u
        });
        let label = match envelope {
            Some(e) => format!("1 instance × {} cpu", e.cpu),
            None => format!("1 instance, {units} worker(s), no envelope"),
        };
        let run = scoped(async |s| {
            let mut spec = ctx.shop(&format!("up-{units}"), "act2.db", envelope, &[]);
            if envelope.is_none() {
                spec.workers = units as usize;
            }
            let inst = ctx.start(s, &spec, None).await?;
            // A short warm-up so the cache is filled before the measurement.
            closed(ctx, inst.addr, 4, ctx.secs() / 4, product_reads()).await?;
            let m = measure(
                ctx,
                &[&inst],
                false,
                closed(ctx, inst.addr, CONNECTIONS, ctx.secs(), product_reads()),
            )
            .await?;
            Ok(m.run(label.clone(), units as usize, envelope))
        })
        .await?;
        ctx.say(&format!(
            "  {label}: {:.0} req/s, p99 {:.2} ms; {}",
            run.throughput_rps, run.p99_ms, run.limit_text
        ));
        runs.push(run);
    }
    let first = runs[0].throughput_rps.max(1e-9);
    let speedup = runs.last().map_or(0.0, |r| r.throughput_rps / first);
    Ok(Act2 { runs, speedup })
}

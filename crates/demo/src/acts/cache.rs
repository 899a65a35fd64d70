//! Act 5: catalog reads on one instance (the largest envelope of act 2) with and without
//! cache-aside: hit rate, database queries per request, and throughput.

use fleet::envelope::Envelope;

use super::{Ctx, catalog_reads, closed, measure, metrics};
use crate::report::{Act5, Act5Row};
use crate::scope::scoped;
use crate::{DemoError, http};

/// Runs act 5.
pub async fn run(ctx: &Ctx) -> Result<Act5, DemoError> {
    ctx.say("act 5: catalog reads without and with cache-aside");
    let envelope = ctx.unit().map(|u| Envelope {
        cpu: u.cpu * 4.0,
        ..u
    });
    let mut rows = Vec::new();
    for (i, (label, flags)) in [
        ("no cache", vec!["--cache", "none"]),
        ("cache-aside", vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let row = scoped(async |s| {
            let inst = ctx
                .start(
                    s,
                    &ctx.shop(&format!("cache-{i}"), "act5.db", envelope, &flags),
                    None,
                )
                .await?;
            // Warm up briefly so the figures are steady state, not the first misses.
            closed(
                ctx,
                inst.addr,
                4,
                std::time::Duration::from_millis(300),
                catalog_reads(),
            )
            .await?;
            let m0 = metrics(inst.metrics_addr).await;
            let m = measure(
                ctx,
                &[&inst],
                false,
                closed(ctx, inst.addr, 16, ctx.secs(), catalog_reads()),
            )
            .await?;
            let m1 = metrics(inst.metrics_addr).await;
            let d =
                |needles: &[&str]| http::scrape_sum(&m1, needles) - http::scrape_sum(&m0, needles);
            let (hits, misses) = (
                d(&["shop_cache_hits_total"]),
                d(&["shop_cache_misses_total"]),
            );
            let queries = d(&["shop_db_queries_total"]);
            let requests = m.report.completed.max(1) as f64;
            Ok(Act5Row {
                label: label.to_string(),
                throughput_rps: m.report.achieved_rps,
                p99_ms: m.report.p99_ms,
                hit_rate: if hits + misses > 0.0 {
                    Some(hits / (hits + misses))
                } else {
                    None
                },
                db_queries_per_request: queries / requests,
                envelope,
                limit_text: m.limit.text(&m.cpu),
                cpu: m.cpu,
            })
        })
        .await?;
        ctx.say(&format!(
            "  {label}: {:.0} req/s, {:.3} DB queries/request; {}",
            row.throughput_rps, row.db_queries_per_request, row.limit_text
        ));
        rows.push(row);
    }
    let ratio = rows[1].throughput_rps / rows[0].throughput_rps.max(1e-9);
    Ok(Act5 {
        rows,
        throughput_ratio: ratio,
    })
}

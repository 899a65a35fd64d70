//! Act 8 (with PostgreSQL): product reads on a pool-limited primary alone versus with
//! read replicas, and read-your-writes: every user reads their cart right after writing
//! it. The databases run outside the demo (scripts/services), so only the shop is in an
//! envelope (the largest of act 2).

use fleet::envelope::Envelope;

use super::{Ctx, closed, measure, metrics, product_reads};
use crate::report::{Act8, Act8Row};
use crate::scope::scoped;
use crate::{DemoError, http};

/// Runs act 8 against `primary` and its streaming `replicas`.
pub async fn run(ctx: &Ctx, primary: &str, replicas: &[String]) -> Result<Act8, DemoError> {
    ctx.say("act 8: read replicas and read-your-writes");
    let envelope = ctx.unit().map(|u| Envelope {
        cpu: u.cpu * 4.0,
        ..u
    });
    let with_replicas: Vec<String> = replicas
        .iter()
        .flat_map(|r| ["--replica".to_string(), r.clone()])
        .collect();
    scoped(async |s| {
        let mut rows = Vec::new();
        let mut last = None;
        for (i, (label, extra)) in [
            ("primary only", Vec::new()),
            ("primary + replicas", with_replicas),
        ]
        .into_iter()
        .enumerate()
        {
            let mut spec = ctx.shop(&format!("pg-{i}"), "unused", envelope, &[]);
            spec.db = primary.to_string();
            spec.extra = ["--pool-size", "2", "--cache", "none"]
                .iter()
                .map(|s| s.to_string())
                .chain(extra)
                .collect();
            let inst = ctx.start(s, &spec, None).await?;
            closed(ctx, inst.addr, 4, std::time::Duration::from_millis(300), product_reads())
                .await?;
            let m0 = metrics(inst.metrics_addr).await;
            let m = measure(
                ctx,
                &[&inst],
                false,
                closed(ctx, inst.addr, 32, ctx.secs(), product_reads()),
            )
            .await?;
            let m1 = metrics(inst.metrics_addr).await;
            let d = |role: &str| {
                http::scrape_sum(&m1, &["shop_db_queries_total", role])
                    - http::scrape_sum(&m0, &["shop_db_queries_total", role])
            };
            let (p, r) = (d("primary"), d("replica"));
            ctx.say(&format!(
                "  {label}: {:.0} req/s, {:.0}% of queries on replicas",
                m.report.achieved_rps,
                100.0 * r / (p + r).max(1.0)
            ));
            rows.push(Act8Row {
                label: label.to_string(),
                throughput_rps: m.report.achieved_rps,
                p99_ms: m.report.p99_ms,
                replica_query_share: r / (p + r).max(1.0),
                envelope,
                limit_text: m.limit.text(&m.cpu),
                cpu: m.cpu,
            });
            if i == 0 {
                // Only the instance with replicas is needed for read-your-writes.
                s.stop(&inst.id).await?;
            } else {
                last = Some(inst);
            }
        }
        // Read-your-writes through the instance with replicas.
        let inst = last.ok_or_else(|| DemoError::Step("act 8 started no instance".into()))?;
        let users = if ctx.cfg.quick { 10 } else { 50 };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let m0 = metrics(inst.metrics_addr).await;
        let mut stale = 0;
        for u in 0..users {
            let creds = format!(r#"{{"username":"ryw{u}-{stamp}","password":"demo-password-1"}}"#);
            http::request(inst.addr, "POST", "/signup", &[], Some(&creds)).await?;
            let r = http::request(inst.addr, "POST", "/login", &[], Some(&creds)).await?;
            let token = r
                .json()
                .and_then(|j| j["token"].as_str().map(str::to_string))
                .ok_or_else(|| DemoError::Step(format!("login: HTTP {} {}", r.status, r.body)))?;
            let auth = format!("Bearer {token}");
            let q = 1 + u % 5;
            let body = format!(r#"{{"product_id":{},"quantity":{q}}}"#, 1 + u % 50);
            http::request(
                inst.addr,
                "POST",
                "/cart",
                &[("Authorization", &auth)],
                Some(&body),
            )
            .await?;
            let c =
                http::request(inst.addr, "GET", "/cart", &[("Authorization", &auth)], None).await?;
            let seen = c.json().and_then(|j| {
                j["items"]
                    .as_array()
                    .and_then(|a| a.first().and_then(|i| i["quantity"].as_u64()))
            });
            if seen != Some(q as u64) {
                stale += 1;
            }
        }
        let m1 = metrics(inst.metrics_addr).await;
        let fallbacks = http::scrape_sum(&m1, &["shop_ryw_primary_fallbacks_total"])
            - http::scrape_sum(&m0, &["shop_ryw_primary_fallbacks_total"]);
        ctx.say(&format!("  read-your-writes: {stale} stale reads of {users}; {fallbacks:.0} reads sent to the primary to stay fresh"));
        let ratio = rows[1].throughput_rps / rows[0].throughput_rps.max(1e-9);
        Ok(Act8 {
            rows,
            throughput_ratio: ratio,
            ryw_users: users,
            ryw_stale: stale,
            ryw_primary_fallbacks: fallbacks as u64,
        })
    })
    .await
}

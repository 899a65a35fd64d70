//! Act 4: two instances behind a round-robin balancer, in-memory sessions versus JWT:
//! users scripted through sign-up, login and their cart lose them only when the state
//! lives in one instance.

use std::net::SocketAddr;

use proxy::StrategyKind;

use super::{Ctx, admit, measure, start_balancer};
use crate::report::{Act4, Act4Row};
use crate::scope::scoped;
use crate::{DemoError, http};

/// Runs act 4.
pub async fn run(ctx: &Ctx) -> Result<Act4, DemoError> {
    ctx.say("act 4: stateless proof: in-memory sessions vs shared (JWT)");
    let users = if ctx.cfg.quick { 6 } else { 20 };
    let unit = ctx.unit();
    let mut rows = Vec::new();
    for (label, flags) in [
        ("memory (anti-pattern)", ["--sessions", "memory"]),
        ("jwt (stateless)", ["--sessions", "jwt"]),
    ] {
        let row = scoped(async |s| {
            let db = format!("act4-{}.db", flags[1]);
            let h = start_balancer(ctx, s, StrategyKind::RoundRobin, |_| {}).await?;
            let specs: Vec<_> = ["a", "b"]
                .iter()
                .map(|x| ctx.shop(&format!("s-{}-{x}", flags[1]), &db, unit, &flags))
                .collect();
            let insts = ctx.start_all(s, &specs).await?;
            let refs: Vec<_> = insts.iter().collect();
            admit(&h, &refs).await?;
            let (mut lost_login, mut lost_cart) = (0, 0);
            let m = measure(ctx, &refs, true, async {
                for u in 0..users {
                    let (login, cart) =
                        user_journey(h.listen_addr(), &format!("user{u}-{}", flags[1]), 4).await?;
                    lost_login += usize::from(!login);
                    lost_cart += usize::from(!cart);
                }
                // Not a load run: an empty report keeps the CPU bookkeeping uniform.
                Ok(load::Report::default())
            })
            .await?;
            Ok(Act4Row {
                sessions: label.to_string(),
                users,
                lost_login,
                lost_cart,
                envelope: unit,
                cpu: m.cpu,
            })
        })
        .await?;
        ctx.say(&format!(
            "  {label}: {}/{users} users lost their login, {}/{users} their cart",
            row.lost_login, row.lost_cart
        ));
        rows.push(row);
    }
    Ok(Act4 {
        rows,
        limit_text: "a correctness check with scripted users, one request at a time: latency sets the pace, not a resource".into(),
    })
}

async fn user_journey(
    addr: SocketAddr,
    name: &str,
    reads: usize,
) -> Result<(bool, bool), DemoError> {
    let creds = format!(r#"{{"username":"{name}","password":"demo-password-1"}}"#);
    let r = http::request(addr, "POST", "/signup", &[], Some(&creds)).await?;
    if !(200..300).contains(&r.status) {
        return Err(DemoError::Step(format!(
            "signup {name}: HTTP {} {}",
            r.status, r.body
        )));
    }
    let r = http::request(addr, "POST", "/login", &[], Some(&creds)).await?;
    let token = r
        .json()
        .and_then(|j| j["token"].as_str().map(str::to_string))
        .ok_or_else(|| DemoError::Step(format!("login {name}: HTTP {} {}", r.status, r.body)))?;
    let auth = format!("Bearer {token}");
    let cookie = r
        .header("set-cookie")
        .map(|c| c.split(';').next().unwrap_or("").to_string());
    let mut hdrs: Vec<(&str, &str)> = vec![("Authorization", auth.as_str())];
    if let Some(c) = &cookie {
        hdrs.push(("Cookie", c.as_str()));
    }
    let mut login_kept = true;
    let add = http::request(
        addr,
        "POST",
        "/cart",
        &hdrs,
        Some(r#"{"product_id":1,"quantity":2}"#),
    )
    .await?;
    if add.status == 401 {
        login_kept = false;
    }
    let mut cart_kept = add.status < 300;
    for _ in 0..reads {
        let c = http::request(addr, "GET", "/cart", &hdrs, None).await?;
        if c.status == 401 {
            login_kept = false;
            cart_kept = false;
            continue;
        }
        let items = c
            .json()
            .and_then(|j| j["items"].as_array().map(|a| a.len()))
            .unwrap_or(0);
        if items == 0 {
            cart_kept = false;
        }
    }
    Ok((login_kept, cart_kept))
}

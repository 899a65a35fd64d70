//! The acts of the demo, each a real measurement with real processes.
//!
//! On one 2-core machine the load generator, the balancer and the instances share the
//! same cores; every act reports the generator's own CPU share so the reader can see it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use advisor::bottleneck::TierReadings;
use advisor::sweep::{self, Sweep, SweepKind, SweepPoint};
use load::RequestSpec;
use proxy::{BackendSpec, ProxyHandle, StrategyKind};
use tokio_util::sync::CancellationToken;

use crate::procs::{self, Instance, ShopSpec};
use crate::report::*;
use crate::{DemoConfig, DemoError, http};

/// Shared by the acts.
#[derive(Debug)]
pub struct Ctx {
    /// The run's configuration.
    pub cfg: DemoConfig,
    /// Scratch space (SQLite files).
    pub work: PathBuf,
    /// Instance logs.
    pub logs: PathBuf,
}

impl Ctx {
    fn say(&self, msg: &str) {
        if self.cfg.verbose {
            eprintln!("demo: {msg}");
        }
    }

    fn shop(
        &self,
        id: &str,
        db_file: &str,
        workers: usize,
        extra: &[&str],
        cpus: Option<Vec<usize>>,
    ) -> ShopSpec {
        ShopSpec {
            exe: self.cfg.exe.clone(),
            id: id.to_string(),
            db: format!("sqlite:{}", self.work.join(db_file).display()),
            workers,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cpus,
        }
    }

    fn secs(&self) -> Duration {
        Duration::from_secs(self.cfg.measure_s())
    }
}

/// The read mix most acts drive: product pages by Zipf popularity.
fn product_reads() -> Vec<RequestSpec> {
    vec![RequestSpec::get("/products/{product_id}")]
}

/// Catalog pages by category, the most popular categories most often.
fn catalog_reads() -> Vec<RequestSpec> {
    const CATS: [&str; 10] = [
        "books", "music", "garden", "toys", "kitchen", "sports", "tools", "games", "office", "pets",
    ];
    CATS.iter()
        .enumerate()
        .map(|(i, c)| RequestSpec {
            weight: (100 / (i as u32 + 1)).max(1),
            ..RequestSpec::get(&format!("/catalog?category={c}"))
        })
        .collect()
}

/// One closed-loop measurement against `addr`.
async fn closed(
    addr: SocketAddr,
    conns: usize,
    dur: Duration,
    reqs: Vec<RequestSpec>,
) -> Result<load::Report, DemoError> {
    let mut cfg = load::RunConfig::closed_loop(&format!("http://{addr}/"), conns, dur);
    cfg.requests = reqs;
    cfg.threads = 1;
    cfg.timeout = Duration::from_secs(5);
    Ok(load::run(cfg, CancellationToken::new()).await?)
}

/// CPU shares over an interval: (instance cores used, generator cores used).
struct CpuWatch {
    t0: Instant,
    inst0: Vec<f64>,
    own0: f64,
}

impl CpuWatch {
    fn start(insts: &[&Instance]) -> CpuWatch {
        CpuWatch {
            t0: Instant::now(),
            inst0: insts
                .iter()
                .map(|i| i.cpu_seconds().unwrap_or(0.0))
                .collect(),
            own0: procs::own_cpu_seconds().unwrap_or(0.0),
        }
    }

    /// Cores used on average by the instances together, and by this process.
    fn stop(&self, insts: &[&Instance]) -> (f64, f64) {
        let dt = self.t0.elapsed().as_secs_f64().max(1e-3);
        let inst: f64 = insts
            .iter()
            .zip(&self.inst0)
            .map(|(i, c0)| i.cpu_seconds().unwrap_or(*c0) - c0)
            .sum();
        let own = procs::own_cpu_seconds().unwrap_or(self.own0) - self.own0;
        (inst / dt, own / dt)
    }
}

async fn metrics(addr: SocketAddr) -> String {
    http::request(addr, "GET", "/metrics", &[], None)
        .await
        .map(|r| r.body)
        .unwrap_or_default()
}

/// Starts the in-process balancer (one worker thread) with `tweak` applied to its config.
async fn start_balancer(
    strategy: StrategyKind,
    tweak: impl FnOnce(&mut proxy::Config),
) -> Result<
    (
        ProxyHandle,
        CancellationToken,
        tokio::task::JoinHandle<Result<(), proxy::ProxyError>>,
    ),
    DemoError,
> {
    let mut c = proxy::Config {
        listen: "127.0.0.1:0".parse().expect("literal"),
        workers: 1,
        strategy,
        ..Default::default()
    };
    c.slow_start.window_ms = 0;
    tweak(&mut c);
    let p = proxy::Proxy::bind(c).await?;
    let h = p.handle();
    let stop = CancellationToken::new();
    let task = tokio::spawn(p.run(stop.clone()));
    Ok((h, stop, task))
}

async fn admit(h: &ProxyHandle, insts: &[&Instance]) -> Result<(), DemoError> {
    for i in insts {
        h.add_backend(BackendSpec {
            name: i.id.clone(),
            addr: i.addr.to_string(),
            weight: 1,
        })?;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let b = h.backends();
        if insts
            .iter()
            .all(|i| b.iter().any(|s| s.name == i.id && s.eligible))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DemoError::Step(
                "instances not admitted by the balancer within 15 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Act 1: one instance, a closed-loop concurrency sweep to its knee, with per-tier readings.
pub async fn act1_knee(ctx: &Ctx) -> Result<Act1, DemoError> {
    ctx.say("act 1: one instance, sweeping concurrency to the knee");
    let inst = procs::start_shop(
        &ctx.shop("one", "act1.db", procs::cores(), &[], None),
        &ctx.logs,
    )
    .await?;
    let levels: &[usize] = if ctx.cfg.quick {
        &[1, 2, 4, 8, 16, 32]
    } else {
        &[1, 2, 4, 8, 16, 32, 64, 128]
    };
    let cores = procs::cores() as f64;
    // Warm the cache and the connection pool first: the sweep measures steady state.
    closed(
        inst.addr,
        4,
        Duration::from_millis(if ctx.cfg.quick { 500 } else { 2000 }),
        product_reads(),
    )
    .await?;
    let mut points = Vec::new();
    for &c in levels {
        let m0 = metrics(inst.metrics_addr).await;
        let w = CpuWatch::start(&[&inst]);
        let rep = closed(inst.addr, c, ctx.secs(), product_reads()).await?;
        let (app_cores, gen_cores) = w.stop(&[&inst]);
        let m1 = metrics(inst.metrics_addr).await;
        let hits = http::scrape_sum(&m1, &["shop_cache_hits_total"])
            - http::scrape_sum(&m0, &["shop_cache_hits_total"]);
        let misses = http::scrape_sum(&m1, &["shop_cache_misses_total"])
            - http::scrape_sum(&m0, &["shop_cache_misses_total"]);
        let in_use = http::scrape_sum(&m1, &["shop_db_pool_connections", "in_use"]);
        let max = http::scrape_sum(&m1, &["shop_db_pool_connections", "max"]).max(1.0);
        // The generator shares the machine: the app is saturated when it uses every core
        // the generator leaves it.
        let app_cpu = (app_cores / (cores - gen_cores).max(0.25)).min(1.0);
        points.push(Act1Point {
            concurrency: c,
            throughput_rps: rep.achieved_rps,
            p50_ms: rep.p50_ms,
            p99_ms: rep.p99_ms,
            errors: rep.errors.total,
            app_cores,
            generator_cores: gen_cores,
            app_cpu_share: app_cpu,
            db_pool_in_use_share: in_use / max,
            cache_hit_rate: if hits + misses > 0.0 {
                Some(hits / (hits + misses))
            } else {
                None
            },
        });
        ctx.say(&format!("  concurrency {c:>3}: {:>8.0} req/s, p99 {:>7.2} ms, app {app_cores:.2} cores, generator {gen_cores:.2} cores", rep.achieved_rps, rep.p99_ms));
    }
    let sweep = Sweep {
        kind: SweepKind::Concurrency,
        points: points
            .iter()
            .map(|p| SweepPoint {
                n: p.concurrency as f64,
                throughput_rps: p.throughput_rps,
                p99_ms: Some(p.p99_ms),
                errors_pct: None,
                tiers: Some(TierReadings {
                    load: p.concurrency as f64,
                    app_cpu: Some(p.app_cpu_share),
                    db_connections: Some(p.db_pool_in_use_share),
                    cache_hit_rate: p.cache_hit_rate,
                    ..Default::default()
                }),
            })
            .collect(),
        p99_bound_ms: Some(50.0),
        // Act 1 knows nothing about per-instance state; act 4 and `scaleout audit` do.
        stateless: None,
    };
    let analysis = sweep::analyse(&sweep);
    Ok(Act1 {
        points,
        analysis_text: sweep::render_text(&analysis),
        analysis,
    })
}

/// Act 2: the same instance with 1 worker on 1 core vs all workers on all cores.
pub async fn act2_scale_up(ctx: &Ctx) -> Result<Act2, DemoError> {
    ctx.say("act 2: scale up: 1 core vs all cores");
    let cores = procs::cores();
    let mut runs = Vec::new();
    let first_core = procs::allowed_cpus()[0];
    for (workers, cpus) in [(1usize, Some(vec![first_core])), (cores, None)] {
        let inst = procs::start_shop(
            &ctx.shop(&format!("up-{workers}"), "act2.db", workers, &[], cpus),
            &ctx.logs,
        )
        .await?;
        let w = CpuWatch::start(&[&inst]);
        let rep = closed(inst.addr, 32, ctx.secs(), product_reads()).await?;
        let (app, gen_cores) = w.stop(&[&inst]);
        ctx.say(&format!(
            "  {workers} core(s): {:.0} req/s, p99 {:.2} ms",
            rep.achieved_rps, rep.p99_ms
        ));
        runs.push(Run::measured(
            format!(
                "{workers} worker(s) on {} core(s)",
                if workers == 1 { 1 } else { cores }
            ),
            workers,
            &rep,
            (app, gen_cores),
        ));
    }
    let speedup = runs[1].throughput_rps / runs[0].throughput_rps.max(1e-9);
    Ok(Act2 { runs, speedup })
}

/// Act 3: 1..=4 single-worker instances (pinned round the cores) behind the balancer, a USL
/// fit on them, and (full mode) 6 and 8 instances to check the fit's predictions.
pub async fn act3_scale_out(ctx: &Ctx) -> Result<Act3, DemoError> {
    ctx.say("act 3: scale out behind the balancer");
    let cores = procs::cores();
    let allowed = procs::allowed_cpus();
    // The fit uses up to 4 instances; in full mode 6 and 8 are measured too, to check
    // the fit's prediction beyond its range.
    let counts: &[usize] = if ctx.cfg.quick {
        &[1, 2, 3]
    } else {
        &[1, 2, 3, 4, 6, 8]
    };
    let mut runs = Vec::new();
    for &n in counts {
        let (h, stop, task) = start_balancer(StrategyKind::LeastConnections, |_| {}).await?;
        let mut insts = Vec::new();
        for i in 0..n {
            insts.push(
                procs::start_shop(
                    &ctx.shop(
                        &format!("out-{n}-{i}"),
                        "act3.db",
                        1,
                        &[],
                        Some(vec![allowed[i % allowed.len()]]),
                    ),
                    &ctx.logs,
                )
                .await?,
            );
        }
        let refs: Vec<&Instance> = insts.iter().collect();
        admit(&h, &refs).await?;
        let w = CpuWatch::start(&refs);
        let rep = closed(h.listen_addr(), 32, ctx.secs(), product_reads()).await?;
        let (app, gen_cores) = w.stop(&refs);
        ctx.say(&format!(
            "  {n} instance(s): {:.0} req/s, p99 {:.2} ms",
            rep.achieved_rps, rep.p99_ms
        ));
        runs.push(Run::measured(
            format!("{n} instance(s)"),
            n,
            &rep,
            (app, gen_cores),
        ));
        stop.cancel();
        let _ = task.await;
    }
    let fitted: Vec<&Run> = runs.iter().filter(|r| r.n <= 4).collect();
    let pts: Vec<advisor::usl::Point> = fitted
        .iter()
        .map(|r| advisor::usl::Point {
            n: r.n as f64,
            x: r.throughput_rps,
        })
        .collect();
    let usl = advisor::usl::fit(&pts).map_err(|e| e.to_string());
    let predictions = match &usl {
        Ok(f) => runs
            .iter()
            .filter(|r| r.n > 4)
            .map(|r| {
                let p = f.predict(r.n as f64).x;
                Prediction {
                    instances: r.n,
                    predicted_rps: p,
                    measured_rps: r.throughput_rps,
                    error_pct: 100.0 * (p - r.throughput_rps) / r.throughput_rps.max(1e-9),
                }
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    for p in &predictions {
        ctx.say(&format!(
            "  USL fit on 1..4 predicts {:.0} req/s at {} instances; measured {:.0} ({:+.1}%)",
            p.predicted_rps, p.instances, p.measured_rps, p.error_pct
        ));
    }
    Ok(Act3 {
        runs,
        usl,
        predictions,
        cores,
    })
}

/// A scripted user: sign up, log in, add to cart, then read the cart `reads` times
/// through `addr`; returns (login kept on every request, cart kept on every read).
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

/// Act 4: two instances behind a round-robin balancer, in-memory sessions vs JWT.
pub async fn act4_stateless(ctx: &Ctx) -> Result<Act4, DemoError> {
    ctx.say("act 4: stateless proof: in-memory sessions vs shared (JWT)");
    let users = if ctx.cfg.quick { 6 } else { 20 };
    let mut rows = Vec::new();
    for (label, flags) in [
        ("memory (anti-pattern)", vec!["--sessions", "memory"]),
        ("jwt (stateless)", vec!["--sessions", "jwt"]),
    ] {
        let db = format!("act4-{}.db", flags[1]);
        let (h, stop, task) = start_balancer(StrategyKind::RoundRobin, |_| {}).await?;
        let a = procs::start_shop(
            &ctx.shop(&format!("s-{}-a", flags[1]), &db, 1, &flags, None),
            &ctx.logs,
        )
        .await?;
        let b = procs::start_shop(
            &ctx.shop(&format!("s-{}-b", flags[1]), &db, 1, &flags, None),
            &ctx.logs,
        )
        .await?;
        admit(&h, &[&a, &b]).await?;
        let (mut lost_login, mut lost_cart) = (0, 0);
        for u in 0..users {
            let (login, cart) =
                user_journey(h.listen_addr(), &format!("user{u}-{}", flags[1]), 4).await?;
            lost_login += usize::from(!login);
            lost_cart += usize::from(!cart);
        }
        ctx.say(&format!(
            "  {label}: {lost_login}/{users} users lost their login, {lost_cart}/{users} their cart"
        ));
        rows.push(Act4Row {
            sessions: label.to_string(),
            users,
            lost_login,
            lost_cart,
        });
        stop.cancel();
        let _ = task.await;
    }
    Ok(Act4 { rows })
}

/// Act 5: catalog reads with and without cache-aside.
pub async fn act5_cache(ctx: &Ctx) -> Result<Act5, DemoError> {
    ctx.say("act 5: catalog reads without and with cache-aside");
    let mut rows = Vec::new();
    for (label, flags) in [
        ("no cache", vec!["--cache", "none"]),
        ("cache-aside", vec![]),
    ] {
        let inst = procs::start_shop(
            &ctx.shop(
                &format!("cache-{}", rows.len()),
                "act5.db",
                procs::cores(),
                &flags,
                None,
            ),
            &ctx.logs,
        )
        .await?;
        // Warm up briefly so the figures are steady state, not the first misses.
        closed(inst.addr, 4, Duration::from_millis(300), catalog_reads()).await?;
        let m0 = metrics(inst.metrics_addr).await;
        let rep = closed(inst.addr, 16, ctx.secs(), catalog_reads()).await?;
        let m1 = metrics(inst.metrics_addr).await;
        let d = |needles: &[&str]| http::scrape_sum(&m1, needles) - http::scrape_sum(&m0, needles);
        let (hits, misses) = (
            d(&["shop_cache_hits_total"]),
            d(&["shop_cache_misses_total"]),
        );
        let queries = d(&["shop_db_queries_total"]);
        let requests = rep.completed.max(1) as f64;
        ctx.say(&format!(
            "  {label}: {:.0} req/s, {:.3} DB queries/request",
            rep.achieved_rps,
            queries / requests
        ));
        rows.push(Act5Row {
            label: label.to_string(),
            throughput_rps: rep.achieved_rps,
            p99_ms: rep.p99_ms,
            hit_rate: if hits + misses > 0.0 {
                Some(hits / (hits + misses))
            } else {
                None
            },
            db_queries_per_request: queries / requests,
        });
    }
    let ratio = rows[1].throughput_rps / rows[0].throughput_rps.max(1e-9);
    Ok(Act5 {
        rows,
        throughput_ratio: ratio,
    })
}

/// Act 6: SIGKILL one of three instances under open-loop load; then bring it back.
pub async fn act6_failure(ctx: &Ctx) -> Result<Act6, DemoError> {
    ctx.say("act 6: SIGKILL one of three instances under load");
    let health_interval_ms = 500;
    let (h, stop, task) = start_balancer(StrategyKind::RoundRobin, |c| {
        c.health.interval_ms = health_interval_ms;
        c.health.timeout_ms = 250;
        c.health.fall = 2;
        c.health.rise = 2;
        c.health.path = "/readyz".into();
        c.outlier.consecutive_failures = 3;
        c.outlier.base_ejection_ms = 2_000;
    })
    .await?;
    let specs: Vec<ShopSpec> = (0..3)
        .map(|i| ctx.shop(&format!("f-{i}"), "act6.db", 1, &[], None))
        .collect();
    let mut insts = Vec::new();
    for s in &specs {
        insts.push(procs::start_shop(s, &ctx.logs).await?);
    }
    admit(&h, &insts.iter().collect::<Vec<_>>()).await?;
    let total = if ctx.cfg.quick {
        Duration::from_secs(6)
    } else {
        Duration::from_secs(12)
    };
    let rate = 300.0;
    let mut cfg = load::RunConfig::open_loop(&format!("http://{}/", h.listen_addr()), rate, total)?;
    cfg.requests = product_reads();
    cfg.min_rate_ratio = None;
    let load_task = tokio::spawn(load::run(cfg, CancellationToken::new()));
    let t0 = Instant::now();
    tokio::time::sleep(total / 3).await;
    let victim = insts[1].id.clone();
    let victim_addr = insts[1].addr;
    insts[1].kill().await;
    let killed_at = t0.elapsed();
    ctx.say(&format!(
        "  killed {victim} at {:.1} s",
        killed_at.as_secs_f64()
    ));
    let eligible = |h: &ProxyHandle| h.backends().iter().any(|b| b.name == victim && b.eligible);
    let mut ejected_after = None;
    while t0.elapsed() < total * 2 / 3 {
        if ejected_after.is_none() && !eligible(&h) {
            ejected_after = Some(t0.elapsed() - killed_at);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restarted = procs::start_shop_at(&specs[1], victim_addr, &ctx.logs).await?;
    let restarted_at = t0.elapsed();
    let mut readmitted_after = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if eligible(&h) {
            readmitted_after = Some(t0.elapsed() - restarted_at);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rep = load_task
        .await
        .map_err(|e| DemoError::Step(format!("load task: {e}")))??;
    let metrics = h.metrics();
    ctx.say(&format!(
        "  {} of {} requests failed; ejected after {:?}, re-admitted {:?} after restart",
        rep.errors.total, rep.sent, ejected_after, readmitted_after
    ));
    stop.cancel();
    let _ = task.await;
    drop(restarted);
    Ok(Act6 {
        requests: rep.sent,
        failed: rep.errors.total,
        errors: rep.errors.clone(),
        retries: metrics.retries_total,
        killed_at_s: killed_at.as_secs_f64(),
        ejected_after_ms: ejected_after.map(|d| d.as_secs_f64() * 1000.0),
        readmitted_after_ms: readmitted_after.map(|d| d.as_secs_f64() * 1000.0),
        health_interval_ms,
        p99_ms: rep.p99_ms,
        // Slices past the schedule hold only the drain of the last requests: left out.
        slices: rep
            .slices
            .iter()
            .filter(|s| s.t_s < total.as_secs_f64())
            .map(|s| (s.t_s, s.rps, s.errors as f64, s.p99_ms))
            .collect(),
    })
}

/// The closing advice from what the acts measured.
pub fn advise(r: &DemoReport) -> Option<Advice> {
    let per_instance = r
        .act3
        .as_ref()
        .and_then(|a| a.runs.first())
        .map(|x| x.throughput_rps)
        .or_else(|| r.act2.as_ref().map(|a| a.runs[0].throughput_rps))?;
    let stateless = r.act4.as_ref().map(|a| {
        a.rows
            .iter()
            .any(|row| row.sessions.starts_with("jwt") && row.lost_login == 0 && row.lost_cart == 0)
    });
    let (out_sigma, out_kappa) = match r.act3.as_ref().map(|a| &a.usl) {
        Some(Ok(f)) => (f.sigma, f.kappa),
        _ => (0.02, 0.0),
    };
    let current = per_instance * 0.5;
    let input = advisor::decision::DecisionInput {
        current_rps: current,
        projected_rps: current * 3.0,
        app_size: "app.medium".into(),
        instances: 1,
        instance_capacity_rps: per_instance,
        out_sigma,
        out_kappa,
        stateless,
        bottleneck: r
            .act1
            .as_ref()
            .and_then(|a| a.analysis.diagnosis.bottleneck),
        ..Default::default()
    };
    let rec = advisor::decision::decide(&input, &advisor::cost::PriceTable::bundled()).ok()?;
    Some(Advice {
        growth: 3.0,
        current_rps: current,
        recommendation: rec,
    })
}

/// Act 7: a 10x step of open-loop load against a fleet that starts with one instance and
/// is sized by our default autoscaling policy on requests per second per instance.
pub async fn act7_spike(ctx: &Ctx) -> Result<Act7, DemoError> {
    ctx.say("act 7: a 10x spike with the autoscaler on");
    let target_rps: f64 = 100.0;
    let (base, spike): (f64, f64) = (40.0, 400.0);
    let needed = (spike / target_rps).ceil() as u32;
    let (h, stop, task) = start_balancer(StrategyKind::LeastConnections, |c| {
        c.health.interval_ms = 500;
        c.health.path = "/readyz".into();
    })
    .await?;
    let mut command = fleet::config::default_command();
    command.extend(["--workers".to_string(), "1".to_string()]);
    let fcfg = fleet::Config {
        instances: 1,
        command,
        data_dir: ctx.work.join("act7"),
        ..fleet::Config::default()
    };
    let (fl, fh) = fleet::Fleet::new(fcfg, ctx.cfg.exe.clone(), h.clone())
        .map_err(|e| DemoError::Step(format!("fleet: {e}")))?;
    let fstop = CancellationToken::new();
    let frun = tokio::spawn(fl.run(fstop.clone()));
    fh.wait_for(Duration::from_secs(30), |s| s.ready() == 1)
        .await
        .map_err(|s| DemoError::Step(format!("fleet: first instance not ready: {s:?}")))?;
    // Our default policy, with the demo's target: 100 req/s per instance, 1..=4 instances.
    let acfg: autoscale::Config = toml::from_str(&format!(
        "policy = \"default\"\nmin_instances = 1\nmax_instances = {needed}\ntarget_rps = {target_rps:.1}\ntick_ms = 250\n"
    ))
    .map_err(|e| DemoError::Step(format!("autoscale config: {e}")))?;
    let (scaler, status) = fleet::Autoscaler::new(acfg, fh.clone(), h.clone())
        .map_err(|e| DemoError::Step(format!("autoscaler: {e}")))?;
    let sstop = CancellationToken::new();
    let stask = tokio::spawn(scaler.run(sstop.clone()));

    let (before, hold, after) = if ctx.cfg.quick {
        (4, 10, 3)
    } else {
        (8, 25, 8)
    };
    let profile = load::RateProfile::spike(
        base,
        spike,
        Duration::from_secs(before),
        Duration::from_secs(hold),
        Duration::from_secs(after),
    )
    .map_err(|e| DemoError::Step(format!("profile: {e}")))?;
    let mut cfg = load::RunConfig::with_profile(&format!("http://{}/", h.listen_addr()), profile);
    cfg.requests = product_reads();
    cfg.min_rate_ratio = None;
    let total = cfg.duration();
    let load_task = tokio::spawn(load::run(cfg, CancellationToken::new()));
    let t0 = Instant::now();
    let step_at = Duration::from_secs(before);
    let mut ready_over_time = Vec::new();
    let mut decisions = Vec::new();
    let mut last_desired = 1;
    let mut time_to_capacity = None;
    while t0.elapsed() < total {
        let t = t0.elapsed();
        let ready = fh.status().ready();
        ready_over_time.push((t.as_secs_f64(), ready as f64));
        if time_to_capacity.is_none() && t >= step_at && ready as u32 >= needed {
            time_to_capacity = Some((t - step_at).as_secs_f64());
        }
        if let Some(d) = status.borrow().decision.clone()
            && d.desired != last_desired
        {
            decisions.push(format!(
                "t={:.1}s desired {} -> {}: {}",
                t.as_secs_f64(),
                last_desired,
                d.desired,
                d.reason
            ));
            last_desired = d.desired;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rep = load_task
        .await
        .map_err(|e| DemoError::Step(format!("load task: {e}")))??;
    ctx.say(&format!(
        "  {base} -> {spike} req/s: {needed} instances ready after {}; {} of {} requests failed",
        time_to_capacity
            .map(|t| format!("{t:.1} s"))
            .unwrap_or_else(|| "never".into()),
        rep.errors.total,
        rep.sent
    ));
    sstop.cancel();
    let _ = stask.await;
    fstop.cancel();
    let _ = frun.await;
    stop.cancel();
    let _ = task.await;
    // One row per load slice, with the instances ready during that second.
    let timeline = rep
        .slices
        .iter()
        .filter(|s| s.t_s < total.as_secs_f64())
        .map(|s| {
            let ready = ready_over_time
                .iter()
                .filter(|(t, _)| *t >= s.t_s && *t < s.t_s + 1.0)
                .map(|(_, r)| *r)
                .fold(0.0, f64::max);
            (s.t_s, ready, s.rps, s.p99_ms)
        })
        .collect();
    Ok(Act7 {
        step_at_s: step_at.as_secs_f64(),
        base_rps: base,
        spike_rps: spike,
        needed_instances: needed,
        time_to_capacity_s: time_to_capacity,
        failed: rep.errors.total,
        timeline,
        decisions,
    })
}

/// Act 8 (with PostgreSQL): product reads on a pool-limited primary alone vs with read
/// replicas, and read-your-writes: every user reads their cart right after writing it.
pub async fn act8_replicas(
    ctx: &Ctx,
    primary: &str,
    replicas: &[String],
) -> Result<Act8, DemoError> {
    ctx.say("act 8: read replicas and read-your-writes");
    let mut rows = Vec::new();
    let with_replicas: Vec<String> = replicas
        .iter()
        .flat_map(|r| ["--replica".to_string(), r.clone()])
        .collect();
    let mut last = None;
    for (label, extra) in [
        ("primary only", Vec::new()),
        ("primary + replicas", with_replicas),
    ] {
        let mut flags: Vec<String> = vec![
            "--pool-size".into(),
            "2".into(),
            "--cache".into(),
            "none".into(),
        ];
        flags.extend(extra);
        let spec = ShopSpec {
            db: primary.to_string(),
            ..ctx.shop(
                &format!("pg-{}", rows.len()),
                "unused",
                procs::cores(),
                &[],
                None,
            )
        };
        let spec = ShopSpec {
            extra: flags,
            ..spec
        };
        let inst = procs::start_shop(&spec, &ctx.logs).await?;
        closed(inst.addr, 4, Duration::from_millis(300), product_reads()).await?;
        let m0 = metrics(inst.metrics_addr).await;
        let rep = closed(inst.addr, 32, ctx.secs(), product_reads()).await?;
        let m1 = metrics(inst.metrics_addr).await;
        let d = |role: &str| {
            http::scrape_sum(&m1, &["shop_db_queries_total", role])
                - http::scrape_sum(&m0, &["shop_db_queries_total", role])
        };
        let (p, r) = (d("primary"), d("replica"));
        ctx.say(&format!(
            "  {label}: {:.0} req/s, {:.0}% of queries on replicas",
            rep.achieved_rps,
            100.0 * r / (p + r).max(1.0)
        ));
        rows.push(Act8Row {
            label: label.to_string(),
            throughput_rps: rep.achieved_rps,
            p99_ms: rep.p99_ms,
            replica_query_share: r / (p + r).max(1.0),
        });
        last = Some(inst);
    }
    // Read-your-writes through the instance with replicas.
    let inst = last.expect("two rows ran");
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
        let c = http::request(inst.addr, "GET", "/cart", &[("Authorization", &auth)], None).await?;
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
}

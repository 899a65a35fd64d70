//! A quick local performance check without building the whole `scaleout` binary:
//! `lb_quick backend ADDR` runs the fixed-response backend (one thread), and
//! `lb_quick lb LISTEN BACKEND [WORKERS] [STRATEGY]` runs the balancer in front of it.
//! Drive both with wrk; see BENCHMARKS.md for the side-by-side bench (bench/lb.sh).

use std::net::SocketAddr;

use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    rt.spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s2.cancel();
    });
    match args.get(1).map(String::as_str) {
        Some("backend") => {
            let addr: SocketAddr = args.get(2).ok_or("ADDR")?.parse()?;
            let opts = proxy::testing_backend::BackendOptions {
                id: "bench".into(),
                body: "hello world\n".into(),
                delay_ms: 0,
            };
            rt.block_on(proxy::testing_backend::bind_and_serve(addr, opts, stop))?;
        }
        Some("lb") => {
            let mut cfg = proxy::Config {
                listen: args.get(2).ok_or("LISTEN")?.parse()?,
                ..proxy::Config::default()
            };
            cfg.backends = vec![proxy::config::BackendConfig {
                name: "b".into(),
                addr: args.get(3).ok_or("BACKEND")?.clone(),
                weight: 1,
            }];
            cfg.workers = args.get(4).map(|w| w.parse()).transpose()?.unwrap_or(1);
            if let Some(s) = args.get(5) {
                cfg.strategy = s.parse()?;
            }
            rt.block_on(async move {
                let p = proxy::Proxy::bind(cfg).await?;
                p.run(stop).await
            })?;
        }
        _ => {
            return Err(
                "usage: lb_quick backend ADDR | lb LISTEN BACKEND [WORKERS] [STRATEGY]".into(),
            );
        }
    }
    Ok(())
}

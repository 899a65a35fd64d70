//! Seeded discrete-event simulation: a pool with one slow backend under Poisson arrivals.
//!
//! Each backend is a single FIFO server (fixed service time); requests arrive at a steady
//! rate and are picked by the strategy under test, with in-flight counts and latencies
//! reported through `BackendLoad` exactly as the proxy does. Load-aware strategies (P2C
//! over peak EWMA, least connections) must steer traffic away from the slow backend that
//! round robin keeps feeding. Replay a run with `BALANCE_SIM_SEED=<seed>`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use balance::{
    BackendSpec, BalanceConfig, InFlightGuard, Outcome, PickRequest, Pool, StrategyKind,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

struct Outcomes {
    slow_share: f64,
    mean_latency_ms: f64,
}

fn simulate(strategy: StrategyKind, seed: u64) -> Outcomes {
    let t0 = Instant::now();
    let mut config = BalanceConfig {
        strategy,
        ..BalanceConfig::default()
    };
    config.ewma.decay_ms = 1000;
    let mut pool = Pool::new(config);
    let service = [
        Duration::from_millis(40),
        Duration::from_millis(4),
        Duration::from_millis(4),
        Duration::from_millis(4),
    ];
    let ids: Vec<_> = (0..service.len())
        .map(|i| {
            pool.add_initial(
                BackendSpec::from_addr(format!("127.0.0.1:{}", 9100 + i)),
                t0,
            )
            .unwrap()
        })
        .collect();
    let selector = pool.selector(t0);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut free_at = vec![t0; service.len()];
    // Finish times in a min-heap; the guard and latency of each request by sequence number.
    let mut finishing: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::new();
    let mut in_flight: HashMap<u32, (InFlightGuard, Duration)> = HashMap::new();
    let (mut now, mut total_latency, mut picks_slow, n) = (t0, Duration::ZERO, 0u32, 20_000u32);
    let rate_per_s = 400.0;
    for seq in 0..n {
        let gap: f64 = -(1.0 - rng.random::<f64>()).ln() / rate_per_s;
        now += Duration::from_secs_f64(gap);
        // Complete everything that finished by now, reporting as the proxy does.
        while let Some(&Reverse((done, k))) = finishing.peek().filter(|r| r.0.0 <= now) {
            finishing.pop();
            let (guard, latency) = in_flight.remove(&k).expect("tracked");
            guard.load().record(Outcome::Success, latency, done);
        }
        let pick = selector
            .pick(&PickRequest::new(rng.random()), &[], now)
            .expect("a backend");
        let b = ids.iter().position(|&id| id == pick.backend.id).unwrap();
        let guard = pick.backend.load.start();
        let start = now.max(free_at[b]);
        let done = start + service[b];
        free_at[b] = done;
        let latency = done - now;
        total_latency += latency;
        picks_slow += (b == 0) as u32;
        finishing.push(Reverse((done, seq)));
        in_flight.insert(seq, (guard, latency));
    }
    Outcomes {
        slow_share: picks_slow as f64 / n as f64,
        mean_latency_ms: total_latency.as_secs_f64() * 1000.0 / n as f64,
    }
}

fn seed() -> u64 {
    let seed = std::env::var("BALANCE_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("BALANCE_SIM_SEED={seed}");
    seed
}

#[test]
fn load_aware_strategies_avoid_a_slow_backend_that_round_robin_overloads() {
    let seed = seed();
    let rr = simulate(StrategyKind::RoundRobin, seed);
    let p2c = simulate(StrategyKind::P2cPeakEwma, seed);
    let lc = simulate(StrategyKind::LeastConnections, seed);
    println!(
        "round robin: slow share {:.3}, mean {:.1} ms",
        rr.slow_share, rr.mean_latency_ms
    );
    println!(
        "p2c ewma:    slow share {:.3}, mean {:.1} ms",
        p2c.slow_share, p2c.mean_latency_ms
    );
    println!(
        "least conn:  slow share {:.3}, mean {:.1} ms",
        lc.slow_share, lc.mean_latency_ms
    );
    // Round robin gives the slow backend its quarter whatever it costs (it can serve 25/s
    // of the 100/s it gets, so its queue grows without bound).
    assert!((rr.slow_share - 0.25).abs() < 0.001);
    // The slow backend can serve 25 of 400 req/s (6%); load-aware picks stay near that.
    assert!(
        p2c.slow_share < 0.1,
        "p2c sent {:.3} to the slow backend",
        p2c.slow_share
    );
    assert!(
        lc.slow_share < 0.1,
        "least conn sent {:.3} to the slow backend",
        lc.slow_share
    );
    assert!(p2c.mean_latency_ms * 10.0 < rr.mean_latency_ms);
    assert!(lc.mean_latency_ms * 10.0 < rr.mean_latency_ms);
}

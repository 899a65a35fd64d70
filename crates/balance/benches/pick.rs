//! ns per `Selector::pick` for every strategy at 3, 30 and 300 backends.
//!
//! Single-threaded, uncontended: this measures the algorithm, not atomics under contention.
//! Run: `cargo bench -p balance --bench pick -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use balance::hash::mix64;
use balance::{BackendSpec, BalanceConfig, PickRequest, Pool, StrategyKind};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn pool(strategy: StrategyKind, n: u16, now: Instant) -> Pool {
    let mut pool = Pool::new(BalanceConfig {
        strategy,
        ..BalanceConfig::default()
    });
    for i in 0..n {
        let spec = BackendSpec {
            name: format!("b{i}"),
            addr: format!("127.0.0.1:{}", 10_000 + i),
            weight: 1 + (i as u32 % 3),
        };
        pool.add_initial(spec, now).expect("valid backend");
    }
    pool
}

fn bench_pick(c: &mut Criterion) {
    let now = Instant::now();
    let mut group = c.benchmark_group("pick");
    for strategy in StrategyKind::ALL {
        for n in [3u16, 30, 300] {
            let selector = pool(strategy, n, now).selector(now);
            let sticky = format!("b{}", n / 2);
            let mut counter = 0u64;
            group.bench_with_input(BenchmarkId::new(strategy.name(), n), &n, |b, _| {
                b.iter(|| {
                    counter = counter.wrapping_add(1);
                    let random = mix64(counter);
                    let key = random.to_le_bytes();
                    let req = PickRequest {
                        client_ip: Some(IpAddr::from((random as u32).to_be_bytes())),
                        hash_key: Some(&key),
                        sticky: Some(&sticky),
                        random,
                    };
                    black_box(
                        selector
                            .pick(black_box(&req), &[], now)
                            .map(|p| p.backend.id),
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);

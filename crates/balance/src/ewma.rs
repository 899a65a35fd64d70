//! Peak-sensitive exponentially weighted moving average of response latency.
//!
//! As in linkerd's balancer: a sample above the current estimate replaces it at once (a
//! backend that turns slow is avoided immediately); a sample below it is blended in with
//! weight `1 - exp(-elapsed / decay)`, so the estimate comes down again over about one
//! decay time constant. Every function takes `now`; nothing here reads the clock.
//!
//! [`PeakEwma`] is the plain value type (easy to test); [`AtomicPeakEwma`] packs the same
//! state into one `AtomicU64` (the estimate as `f32` nanoseconds and the update time as
//! milliseconds since an origin `Instant`) so the request path updates it without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A peak-EWMA latency estimate (plain value).
#[derive(Debug, Clone, Copy)]
pub struct PeakEwma {
    estimate_ns: f64,
    updated_at: Instant,
    decay_ns: f64,
}

impl PeakEwma {
    /// A fresh estimate starting at `initial` (the default RTT), with time constant `decay`.
    pub fn new(initial: Duration, decay: Duration, now: Instant) -> Self {
        PeakEwma {
            estimate_ns: initial.as_nanos() as f64,
            updated_at: now,
            decay_ns: decay.as_nanos().max(1) as f64,
        }
    }

    /// Folds in one observed latency at `now`.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        self.estimate_ns = blend(
            self.estimate_ns,
            rtt.as_nanos() as f64,
            now.saturating_duration_since(self.updated_at).as_nanos() as f64,
            self.decay_ns,
        );
        if now > self.updated_at {
            self.updated_at = now;
        }
    }

    /// The estimate in nanoseconds as of `now` (between samples the estimate holds).
    pub fn get_at(&self, _now: Instant) -> f64 {
        self.estimate_ns
    }
}

/// The peak-EWMA update rule: peaks win at once, lower samples decay in.
fn blend(estimate_ns: f64, sample_ns: f64, elapsed_ns: f64, decay_ns: f64) -> f64 {
    if sample_ns > estimate_ns {
        sample_ns
    } else {
        let w = (-elapsed_ns / decay_ns).exp();
        estimate_ns * w + sample_ns * (1.0 - w)
    }
}

/// A peak-EWMA latency estimate shared between request tasks, updated lock-free.
#[derive(Debug)]
pub struct AtomicPeakEwma {
    /// High 32 bits: estimate (f32 ns). Low 32 bits: update time, ms since `origin`.
    state: AtomicU64,
    origin: Instant,
    decay_ns: f64,
}

fn pack(estimate_ns: f64, at_ms: u32) -> u64 {
    ((estimate_ns as f32).to_bits() as u64) << 32 | at_ms as u64
}

fn unpack(state: u64) -> (f64, u32) {
    (f32::from_bits((state >> 32) as u32) as f64, state as u32)
}

impl AtomicPeakEwma {
    /// A fresh estimate starting at `initial`, with time constant `decay`; `now` is the origin
    /// for the packed timestamps (which last about 49 days, then saturate).
    pub fn new(initial: Duration, decay: Duration, now: Instant) -> Self {
        AtomicPeakEwma {
            state: AtomicU64::new(pack(initial.as_nanos() as f64, 0)),
            origin: now,
            decay_ns: decay.as_nanos().max(1) as f64,
        }
    }

    fn ms_since_origin(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.origin)
            .as_millis()
            .min(u32::MAX as u128) as u32
    }

    /// Folds in one observed latency at `now` (a compare-and-swap loop, no lock).
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let now_ms = self.ms_since_origin(now);
        let sample = rtt.as_nanos() as f64;
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (est, at_ms) = unpack(cur);
            let elapsed_ns = now_ms.saturating_sub(at_ms) as f64 * 1e6;
            let next = pack(
                blend(est, sample, elapsed_ns, self.decay_ns),
                now_ms.max(at_ms),
            );
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The estimate in nanoseconds as of `now`.
    pub fn get_at(&self, _now: Instant) -> f64 {
        unpack(self.state.load(Ordering::Relaxed)).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_slow_sample_raises_the_estimate_at_once() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(10 * MS, 1000 * MS, t0);
        e.observe(10 * MS, t0 + 10 * MS);
        e.observe(500 * MS, t0 + 20 * MS);
        assert_eq!(e.get_at(t0 + 20 * MS), 500e6);
    }

    #[test]
    fn fast_samples_decay_the_peak_by_elapsed_time() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(500 * MS, 1000 * MS, t0);
        // One decay constant later, a 0 ms sample leaves 1/e of the peak.
        e.observe(Duration::ZERO, t0 + 1000 * MS);
        let v = e.get_at(t0 + 1000 * MS);
        assert!((v - 500e6 / std::f64::consts::E).abs() < 1e3, "{v}");
        // A sample right after barely moves it.
        e.observe(Duration::ZERO, t0 + 1000 * MS + Duration::from_micros(1));
        assert!(e.get_at(t0 + 1001 * MS) > v * 0.99);
    }

    #[test]
    fn shorter_decay_forgets_faster() {
        let t0 = Instant::now();
        let mut fast = PeakEwma::new(500 * MS, 100 * MS, t0);
        let mut slow = PeakEwma::new(500 * MS, 10_000 * MS, t0);
        fast.observe(10 * MS, t0 + 200 * MS);
        slow.observe(10 * MS, t0 + 200 * MS);
        assert!(fast.get_at(t0) < 100e6);
        assert!(slow.get_at(t0) > 400e6);
    }

    #[test]
    fn atomic_version_follows_the_same_rule() {
        let t0 = Instant::now();
        let a = AtomicPeakEwma::new(30 * MS, 1000 * MS, t0);
        let mut p = PeakEwma::new(30 * MS, 1000 * MS, t0);
        for (i, rtt) in [5u64, 80, 2, 2, 300, 1, 1, 1].into_iter().enumerate() {
            let at = t0 + (i as u32 + 1) * 250 * MS;
            a.observe(Duration::from_millis(rtt), at);
            p.observe(Duration::from_millis(rtt), at);
            let (x, y) = (a.get_at(at), p.get_at(at));
            assert!((x - y).abs() / y < 1e-5, "step {i}: {x} vs {y}");
        }
    }

    #[test]
    fn atomic_version_is_consistent_under_concurrent_updates() {
        let t0 = Instant::now();
        let a = std::sync::Arc::new(AtomicPeakEwma::new(Duration::ZERO, 1000 * MS, t0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let a = a.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u32 {
                        a.observe(Duration::from_micros((t * 1000 + i) as u64), t0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // All samples at the same instant: only peaks count, so the max sample wins.
        assert!((a.get_at(t0) - 3_999_000.0).abs() < 1.0, "{}", a.get_at(t0));
    }
}

//! Slow start: the weight factor of a newly added backend ramps up over a window.
//!
//! Envoy's curve: `factor = max(min_weight, (elapsed / window)^(1 / aggression))`, so with
//! `aggression = 1` the ramp is linear and larger values give more traffic early. A cold
//! backend (empty caches, unwarmed JIT or pool) gets a small share first instead of its
//! full share of a busy pool at once. The factor only depends on `now` and the time the
//! backend was added; nothing here reads the clock.

use std::time::{Duration, Instant};

use crate::config::SlowStartConfig;

/// The weight factor in `[min_weight_percent / 100, 1]` for a backend added at `added_at`.
pub fn weight_factor(config: &SlowStartConfig, added_at: Instant, now: Instant) -> f64 {
    if config.window_ms == 0 {
        return 1.0;
    }
    let window = Duration::from_millis(config.window_ms).as_secs_f64();
    let elapsed = now.saturating_duration_since(added_at).as_secs_f64();
    if elapsed >= window {
        return 1.0;
    }
    let min = (config.min_weight_percent as f64 / 100.0).clamp(0.0, 1.0);
    let ramp = (elapsed / window).powf(1.0 / config.aggression.max(f64::MIN_POSITIVE));
    ramp.clamp(min, 1.0)
}

/// Whether a backend added at `added_at` is still ramping at `now`.
pub fn in_slow_start(config: &SlowStartConfig, added_at: Instant, now: Instant) -> bool {
    config.window_ms > 0
        && now.saturating_duration_since(added_at) < Duration::from_millis(config.window_ms)
}

/// When a snapshot built at `now` should be rebuilt to follow the ramp of a backend added
/// at `added_at`: twenty steps over the window (at least 50 ms apart), or `None` when the
/// backend is not ramping.
pub fn next_step(config: &SlowStartConfig, added_at: Instant, now: Instant) -> Option<Instant> {
    if !in_slow_start(config, added_at, now) {
        return None;
    }
    let end = added_at + Duration::from_millis(config.window_ms);
    let step = Duration::from_millis((config.window_ms / 20).max(50));
    Some((now + step).min(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(window_ms: u64, min: u32, aggression: f64) -> SlowStartConfig {
        SlowStartConfig {
            window_ms,
            min_weight_percent: min,
            aggression,
        }
    }

    #[test]
    fn linear_ramp_from_minimum_to_full() {
        let c = cfg(10_000, 10, 1.0);
        let t0 = Instant::now();
        let at = |ms| weight_factor(&c, t0, t0 + Duration::from_millis(ms));
        assert_eq!(at(0), 0.1);
        assert_eq!(at(500), 0.1);
        assert!((at(5000) - 0.5).abs() < 1e-9);
        assert!((at(9000) - 0.9).abs() < 1e-9);
        assert_eq!(at(10_000), 1.0);
        assert_eq!(at(60_000), 1.0);
    }

    #[test]
    fn aggression_front_loads_the_ramp() {
        let t0 = Instant::now();
        let mid = t0 + Duration::from_millis(2500);
        let linear = weight_factor(&cfg(10_000, 1, 1.0), t0, mid);
        let aggressive = weight_factor(&cfg(10_000, 1, 2.0), t0, mid);
        assert!((linear - 0.25).abs() < 1e-9);
        assert!((aggressive - 0.5).abs() < 1e-9);
    }

    #[test]
    fn zero_window_disables() {
        let t0 = Instant::now();
        assert_eq!(weight_factor(&cfg(0, 10, 1.0), t0, t0), 1.0);
        assert!(!in_slow_start(&cfg(0, 10, 1.0), t0, t0));
        assert_eq!(next_step(&cfg(0, 10, 1.0), t0, t0), None);
    }

    #[test]
    fn steps_until_the_window_ends() {
        let c = cfg(1000, 10, 1.0);
        let t0 = Instant::now();
        assert_eq!(next_step(&c, t0, t0), Some(t0 + Duration::from_millis(50)));
        assert_eq!(
            next_step(&c, t0, t0 + Duration::from_millis(980)),
            Some(t0 + Duration::from_millis(1000))
        );
        assert_eq!(next_step(&c, t0, t0 + Duration::from_millis(1000)), None);
    }
}

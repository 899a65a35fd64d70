//! The retry decision: pure, no clock and no RNG (the jitter arrives as a number).

/// Retry settings (from [`crate::QueueConfig::retry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries before dead-lettering.
    pub max_attempts: u32,
    /// Back-off after the first failure.
    pub base_ms: u64,
    /// Back-off cap.
    pub max_ms: u64,
}

/// What to do with a failed delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NackDecision {
    /// Deliver again after this many ms.
    Retry(u64),
    /// Give up: move to the dead letters.
    DeadLetter,
}

impl RetryPolicy {
    /// After delivery number `attempt` failed: dead-letter at `max_attempts`, else back off
    /// `min(max, base * 2^(attempt-1))` with "equal jitter": half of it fixed, the other
    /// half drawn from `jitter` (any `u64`), so retries of a burst spread out but never
    /// come back sooner than half the nominal delay.
    pub fn decide(&self, attempt: u32, jitter: u64) -> NackDecision {
        if attempt >= self.max_attempts {
            return NackDecision::DeadLetter;
        }
        let exp = attempt.saturating_sub(1).min(40);
        let nominal = self
            .base_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_ms)
            .max(1);
        let half = nominal / 2;
        NackDecision::Retry(nominal - half + jitter % (half + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        base_ms: 100,
        max_ms: 1_000,
    };

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        for (attempt, nominal) in [(1u32, 100u64), (2, 200), (3, 400), (4, 800)] {
            for jitter in [0u64, 1, 7, 12345, u64::MAX] {
                let NackDecision::Retry(d) = P.decide(attempt, jitter) else {
                    panic!("attempt {attempt} should retry");
                };
                assert!(d >= nominal / 2 && d <= nominal, "{attempt}: {d}");
            }
        }
        let capped = RetryPolicy {
            max_attempts: 100,
            ..P
        };
        for j in [0, 999, u64::MAX] {
            let NackDecision::Retry(d) = capped.decide(60, j) else {
                panic!()
            };
            assert!((500..=1_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let ds: std::collections::BTreeSet<_> = (0..50u64).map(|j| P.decide(3, j)).collect();
        assert!(ds.len() > 10, "{ds:?}");
    }

    #[test]
    fn dead_letter_at_max_attempts() {
        assert_eq!(P.decide(5, 0), NackDecision::DeadLetter);
        assert_eq!(P.decide(6, 0), NackDecision::DeadLetter);
        assert!(matches!(P.decide(4, 0), NackDecision::Retry(_)));
    }
}

//! The cadence every reactive policy shares: evaluate at most once per period, and in
//! between repeat the last decision with `evaluated: false` while still letting the
//! policy record its samples.
//!
//! Why one wrapper: the HPA (15 s sync), the KPA (2 s tick), step scaling and `default`
//! each wrote the same "not due yet" branch; one copy means one place to get the edge
//! cases right (the first call always evaluates; `now` equal to the due time evaluates).
//! Pure: the caller passes `now`.

use std::time::Duration;

use crate::{Policy, ScalingDecision, ScalingInput};

/// The part of a policy that decides; [`Throttled`] decides when.
pub trait Evaluate: Send {
    /// Called on every tick, due or not, before any evaluation: record samples here.
    fn observe(&mut self, now: Duration, input: &ScalingInput) {
        let _ = (now, input);
    }
    /// Called when an evaluation is due; returns the new decision.
    fn evaluate(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision;
    /// Short name for logs and reports.
    fn name(&self) -> &str;
}

/// A policy that evaluates `E` at most once every `period`.
#[derive(Debug, Clone)]
pub struct Throttled<E> {
    inner: E,
    period: Duration,
    next: Option<Duration>,
    last: Option<ScalingDecision>,
}

impl<E: Evaluate> Throttled<E> {
    /// Wraps `inner`, evaluating every `period` (a zero period evaluates every call).
    pub fn wrap(inner: E, period: Duration) -> Self {
        Self {
            inner,
            period,
            next: None,
            last: None,
        }
    }

    /// The wrapped evaluator.
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

impl<E: Evaluate> Policy for Throttled<E> {
    fn decide(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision {
        self.inner.observe(now, input);
        if let (Some(next), Some(last)) = (self.next, &self.last)
            && now < next
        {
            return ScalingDecision {
                evaluated: false,
                ..last.clone()
            };
        }
        self.next = Some(now + self.period);
        let d = self.inner.evaluate(now, input);
        self.last = Some(d.clone());
        d
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts evaluations and observations; decides `observed` so far.
    struct Counter {
        observed: u32,
        evaluated: u32,
    }

    impl Evaluate for Counter {
        fn observe(&mut self, _now: Duration, _input: &ScalingInput) {
            self.observed += 1;
        }
        fn evaluate(&mut self, _now: Duration, _input: &ScalingInput) -> ScalingDecision {
            self.evaluated += 1;
            ScalingDecision::hold(self.observed, "counted")
        }
        fn name(&self) -> &str {
            "counter"
        }
    }

    #[test]
    fn evaluates_once_per_period_and_observes_every_call() {
        let mut p = Throttled::wrap(
            Counter {
                observed: 0,
                evaluated: 0,
            },
            Duration::from_secs(15),
        );
        let input = ScalingInput::default();
        let mut evaluated_at = Vec::new();
        for t in 0..46 {
            let d = p.decide(Duration::from_secs(t), &input);
            if d.evaluated {
                evaluated_at.push(t);
            } else {
                // Repeats the previous decision.
                assert_eq!(d.desired, (evaluated_at.last().unwrap() + 1) as u32);
            }
        }
        assert_eq!(evaluated_at, vec![0, 15, 30, 45]);
        assert_eq!(p.inner().observed, 46);
        assert_eq!(p.inner().evaluated, 4);
        assert_eq!(p.name(), "counter");
    }

    #[test]
    fn a_zero_period_evaluates_every_call() {
        let mut p = Throttled::wrap(
            Counter {
                observed: 0,
                evaluated: 0,
            },
            Duration::ZERO,
        );
        for t in 0..5 {
            assert!(
                p.decide(Duration::from_secs(t), &ScalingInput::default())
                    .evaluated
            );
        }
    }
}

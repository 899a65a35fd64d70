//! The pure core of the fleet: desired state `diff` observed state gives actions.
//!
//! [`plan`] takes `now`, what we want (a count and a template generation) and what we see
//! (each instance's phase), and returns the [`Action`]s that move one towards the other.
//! It never reads the clock, spawns, signals or touches the balancer: the supervisor
//! (`supervisor.rs`) applies the actions and feeds the results back as a new observation.

use std::time::{Duration, Instant};

/// What we want running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desired {
    /// Instances wanted (the handle clamps: at least 1, or 0 for a fleet made able to
    /// scale to zero).
    pub count: u32,
    /// Template generation: instances of an older generation are replaced one at a time
    /// (rolling restart, surge of one).
    pub generation: u64,
}

/// Where an instance is in its life, as the supervisor observes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Spawned, not yet ready (not in the balancer).
    Starting,
    /// Ready and registered with the balancer.
    Ready,
    /// Crashed (or never became ready); to be restarted at `restart_at`.
    Backoff {
        /// When the restart is due.
        restart_at: Instant,
    },
    /// Being drained and stopped; no longer counts towards the desired count.
    Retiring,
}

/// One instance as seen by the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// Stable id, passed to the instance.
    pub id: String,
    /// Order of creation (higher = newer); newest instances are retired first.
    pub seq: u64,
    /// Template generation it was started from.
    pub generation: u64,
    /// Its phase.
    pub phase: Phase,
}

/// What the supervisor should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a brand-new instance of `generation`.
    Spawn {
        /// Generation to start it from.
        generation: u64,
    },
    /// Restart the crashed instance `id` (same id, fresh process and port).
    Restart {
        /// Which instance.
        id: String,
    },
    /// Drain from the balancer, then stop (SIGTERM, SIGKILL after grace).
    Retire {
        /// Which instance.
        id: String,
    },
    /// Drop a crashed instance that is no longer wanted (there is no process to stop).
    Forget {
        /// Which instance.
        id: String,
    },
}

/// Computes the actions that move `observed` towards `desired` at `now`.
///
/// Rules, in order:
/// 1. Instances count towards the desired count unless `Retiring`.
/// 2. Too many: drop crashed ones first, then retire those still starting, then ready
///    ones; older-generation before current, newest before oldest within a class.
/// 3. Too few: spawn the difference from the current generation.
/// 4. A crashed instance still wanted is restarted once its back-off has passed.
/// 5. Rolling restart: while an older-generation instance is active and the count is
///    right, start one current-generation instance (surge of one); once it is ready,
///    retire one old instance. Never more than one surge instance starts at a time.
pub fn plan(now: Instant, desired: Desired, observed: &[InstanceView]) -> Vec<Action> {
    let want = desired.count as usize;
    let mut active: Vec<&InstanceView> = observed
        .iter()
        .filter(|i| i.phase != Phase::Retiring)
        .collect();
    let mut actions = Vec::new();

    let old_active = active
        .iter()
        .filter(|i| i.generation < desired.generation)
        .count();
    let new_not_ready = active
        .iter()
        .any(|i| i.generation >= desired.generation && !matches!(i.phase, Phase::Ready));
    // During a rollout one extra current-generation instance is allowed (the surge)
    // until it is ready; then an old one is retired.
    let rolling = old_active > 0;

    let surplus = if active.len() < want {
        for _ in active.len()..want {
            actions.push(Action::Spawn {
                generation: desired.generation,
            });
        }
        0
    } else if rolling && new_not_ready {
        // The surge instance is on its way: keep every old one serving until it is ready.
        active.len().saturating_sub(want + 1)
    } else if rolling && active.len() == want {
        actions.push(Action::Spawn {
            generation: desired.generation,
        });
        0
    } else {
        active.len() - want
    };
    if surplus > 0 {
        active.sort_by_key(|i| retire_rank(i, desired.generation));
        for inst in active.drain(..surplus) {
            actions.push(match inst.phase {
                Phase::Backoff { .. } => Action::Forget {
                    id: inst.id.clone(),
                },
                _ => Action::Retire {
                    id: inst.id.clone(),
                },
            });
        }
    }

    for inst in &active {
        if let Phase::Backoff { restart_at } = inst.phase
            && restart_at <= now
        {
            actions.push(Action::Restart {
                id: inst.id.clone(),
            });
        }
    }
    actions
}

/// Sort key: lower is retired first.
fn retire_rank(i: &InstanceView, generation: u64) -> (u8, u8, std::cmp::Reverse<u64>) {
    let class = match i.phase {
        Phase::Backoff { .. } => 0,
        Phase::Starting => 1,
        Phase::Ready => 2,
        Phase::Retiring => 3,
    };
    let current = u8::from(i.generation >= generation);
    // Old generation first; among them crashed, starting, then ready; newest first.
    (current, class, std::cmp::Reverse(i.seq))
}

/// Exponential back-off: `initial * 2^(failures-1)`, capped at `max`. `failures` counts
/// consecutive failures including the one just seen (0 is treated as 1).
pub fn restart_delay(failures: u32, initial: Duration, max: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(32);
    initial
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests;

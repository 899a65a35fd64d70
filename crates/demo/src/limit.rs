//! What limited a measurement, from the CPU each part used: the instances' envelopes, the
//! balancer, the load generator, or the host's cores (which every process shares), and
//! where a scale-out curve bends. Pure: the acts pass in what they measured.
//!
//! Must never: name a limit without a reading past its threshold; when nothing is
//! saturated it says so (latency and concurrency then set the pace).

use serde::Serialize;

use crate::cpu::CpuUse;

/// A part counts as saturated at this share of what it may use.
pub const SATURATED: f64 = 0.85;

/// The resource that set the pace of one measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Limit {
    /// The instances used (nearly) all the CPU their envelopes allow.
    Envelopes {
        /// Cores they used.
        used: f64,
        /// Cores their envelopes allow.
        allotted: f64,
    },
    /// The balancer's worker threads were busy.
    Balancer {
        /// Cores used.
        used: f64,
        /// Worker threads.
        threads: usize,
    },
    /// The load generator's threads were busy.
    Generator {
        /// Cores used.
        used: f64,
        /// Generator threads.
        threads: usize,
    },
    /// The host's cores were all busy (instances + balancer + generator + others).
    Host {
        /// Cores busy.
        busy: f64,
        /// Cores on the host.
        cores: usize,
        /// Of which other processes (not the demo).
        others: f64,
    },
    /// Nothing saturated: the offered load (open loop) or the client's concurrency
    /// (closed loop) and latency set the pace.
    Nothing,
}

/// Names the limit from the CPU readings. `allotted` is the sum of the instances'
/// envelopes (`None` without envelopes).
pub fn limit(
    cpu: &CpuUse,
    allotted: Option<f64>,
    balancer_threads: usize,
    generator_threads: usize,
) -> Limit {
    if let Some(a) = allotted
        && a > 0.0
        && cpu.instances >= SATURATED * a
    {
        return Limit::Envelopes {
            used: cpu.instances,
            allotted: a,
        };
    }
    if balancer_threads > 0 && cpu.balancer >= SATURATED * balancer_threads as f64 {
        return Limit::Balancer {
            used: cpu.balancer,
            threads: balancer_threads,
        };
    }
    if generator_threads > 0 && cpu.generator >= SATURATED * generator_threads as f64 {
        return Limit::Generator {
            used: cpu.generator,
            threads: generator_threads,
        };
    }
    if let Some(busy) = cpu.host_busy
        && cpu.host_cores > 0
        && busy >= SATURATED * cpu.host_cores as f64
    {
        return Limit::Host {
            busy,
            cores: cpu.host_cores,
            others: cpu.others.unwrap_or(0.0),
        };
    }
    Limit::Nothing
}

impl Limit {
    /// One sentence for the report.
    pub fn text(&self, cpu: &CpuUse) -> String {
        let parts = format!(
            "instances {:.2}, balancer {:.2}, generator {:.2}, demo {:.2}{} cores",
            cpu.instances,
            cpu.balancer,
            cpu.generator,
            cpu.demo_other,
            cpu.others
                .map(|o| format!(", other processes {o:.2}"))
                .unwrap_or_default()
        );
        match self {
            Limit::Envelopes { used, allotted } => format!(
                "limited by the instances' CPU envelopes ({used:.2} of {allotted:.2} cores used; {parts})"
            ),
            Limit::Balancer { used, threads } => format!(
                "limited by the balancer ({used:.2} cores on {threads} worker thread{}; {parts})",
                if *threads == 1 { "" } else { "s" }
            ),
            Limit::Generator { used, threads } => format!(
                "limited by the load generator ({used:.2} cores on {threads} thread{}; {parts})",
                if *threads == 1 { "" } else { "s" }
            ),
            Limit::Host {
                busy,
                cores,
                others,
            } => format!(
                "limited by the host's CPU ({busy:.2} of {cores} cores busy, {others:.2} of them other processes; {parts})"
            ),
            Limit::Nothing => format!(
                "nothing saturated: the offered load or the client's concurrency and latency set the pace ({parts})"
            ),
        }
    }
}

/// Where a scale-out curve bends: the first level whose efficiency
/// `X(n) / (n × X(first) / first)` falls below `floor`. `points` is (n, throughput) in
/// increasing `n`; `None` when it stays above the floor (or has under two points).
pub fn bend(points: &[(f64, f64)], floor: f64) -> Option<usize> {
    let &(n0, x0) = points.first()?;
    if n0 <= 0.0 || x0 <= 0.0 {
        return None;
    }
    let per_unit = x0 / n0;
    points
        .iter()
        .position(|&(n, x)| n > n0 && x / (n * per_unit) < floor)
}

/// Efficiency of level `n` against linear scaling from the first point, 0..
pub fn efficiency(points: &[(f64, f64)], n: f64, x: f64) -> f64 {
    match points.first() {
        Some(&(n0, x0)) if n0 > 0.0 && x0 > 0.0 && n > 0.0 => x / (n * x0 / n0),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(instances: f64, balancer: f64, generator: f64, host: f64) -> CpuUse {
        CpuUse {
            instances,
            balancer,
            generator,
            host_busy: Some(host),
            others: Some(0.1),
            host_cores: 2,
            ..Default::default()
        }
    }

    #[test]
    fn envelopes_first_when_instances_use_their_allotment() {
        assert!(matches!(
            limit(&cpu(0.98, 0.5, 0.4, 1.95), Some(1.0), 1, 1),
            Limit::Envelopes { .. }
        ));
    }

    #[test]
    fn host_when_every_core_is_busy_and_envelopes_have_room() {
        let l = limit(&cpu(1.2, 0.5, 0.4, 1.95), Some(2.0), 1, 1);
        assert!(matches!(l, Limit::Host { cores: 2, .. }), "{l:?}");
        assert!(l.text(&cpu(1.2, 0.5, 0.4, 1.95)).contains("host's CPU"));
    }

    #[test]
    fn a_busy_single_thread_balancer_or_generator_is_named() {
        assert!(matches!(
            limit(&cpu(0.5, 0.95, 0.2, 1.7), Some(2.0), 1, 1),
            Limit::Balancer { .. }
        ));
        assert!(matches!(
            limit(&cpu(0.5, 0.3, 0.9, 1.7), Some(2.0), 1, 1),
            Limit::Generator { .. }
        ));
        assert_eq!(
            limit(&cpu(0.2, 0.1, 0.1, 0.4), Some(1.0), 1, 1),
            Limit::Nothing
        );
    }

    #[test]
    fn bend_is_the_first_level_below_the_floor() {
        let linear = [(1.0, 100.0), (2.0, 198.0), (4.0, 390.0)];
        assert_eq!(bend(&linear, 0.8), None);
        let bent = [
            (1.0, 100.0),
            (2.0, 190.0),
            (4.0, 360.0),
            (6.0, 420.0),
            (8.0, 430.0),
        ];
        assert_eq!(bend(&bent, 0.8), Some(3));
        assert!((efficiency(&bent, 4.0, 360.0) - 0.9).abs() < 1e-9);
        assert_eq!(bend(&[], 0.8), None);
    }
}

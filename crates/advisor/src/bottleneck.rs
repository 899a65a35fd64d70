//! Bottleneck diagnosis: which tier saturates first, and the standard fix for it.
//!
//! Input is per-tier saturation readings taken at increasing load (a sweep); the tier
//! whose saturation crosses the threshold at the lowest load is the bottleneck. Each
//! reading is a share in [0, 1] (CPU utilisation, connections in use / pool, cache miss
//! rate, balancer queueing share, replica lag / bound).
//!
//! Must never: blame a tier without a reading that crossed the threshold; when nothing
//! saturated it says so (the load generator or the network may be the limit).

use serde::{Deserialize, Serialize};

/// The tiers of a web system, front to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The load balancer (queueing, shed requests).
    Balancer,
    /// The application instances (CPU).
    App,
    /// The cache (hit rate; a low hit rate pushes load to the database).
    Cache,
    /// The primary database (CPU, time, connections).
    Database,
    /// Read replicas (lag).
    Replicas,
    /// The host every process shares (its CPU): on one machine, instances, balancer and
    /// load generator compete for the same cores.
    Host,
    /// The load generator itself: when it saturates, the sweep measured the generator.
    LoadGenerator,
}

impl Tier {
    /// The tier as a noun phrase for sentences ("the database").
    pub fn label(self) -> &'static str {
        match self {
            Tier::Balancer => "the balancer",
            Tier::App => "the app tier",
            Tier::Cache => "the cache",
            Tier::Database => "the database",
            Tier::Replicas => "the read replicas",
            Tier::Host => "the host's CPU",
            Tier::LoadGenerator => "the load generator",
        }
    }
}

/// Saturation readings at one load level. Absent readings are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierReadings {
    /// Offered load (req/s, concurrency or instances) at which these were taken.
    pub load: f64,
    /// Mean CPU utilisation of the app instances, 0..1 of their allotted cores.
    pub app_cpu: Option<f64>,
    /// Database CPU utilisation, 0..1.
    pub db_cpu: Option<f64>,
    /// Share of request time spent waiting on the database, 0..1.
    pub db_time_share: Option<f64>,
    /// Database connections in use / pool size (or / max_connections), 0..1.
    pub db_connections: Option<f64>,
    /// Cache hit rate, 0..1 (saturation reading is the miss rate).
    pub cache_hit_rate: Option<f64>,
    /// Replica lag / the configured bound, 0..∞ (≥ 1 means replicas are skipped).
    pub replica_lag_share: Option<f64>,
    /// Share of requests queued or shed at the balancer, 0..1.
    pub balancer_queueing: Option<f64>,
    /// Share of all the host's cores busy (every process on the machine), 0..1.
    pub host_cpu: Option<f64>,
    /// The load generator's CPU as a share of the cores it may use, 0..1.
    pub load_generator_cpu: Option<f64>,
}

impl TierReadings {
    /// Saturation per tier at this load, where a reading exists.
    pub fn saturation(&self) -> Vec<(Tier, f64)> {
        let mut v = Vec::new();
        if let Some(q) = self.balancer_queueing {
            // Any sustained queueing at the balancer is saturation: scale its threshold up.
            v.push((Tier::Balancer, (q * 10.0).min(1.0)));
        }
        if let Some(c) = self.app_cpu {
            v.push((Tier::App, c));
        }
        if let Some(h) = self.cache_hit_rate {
            // The playbook wants 80-95% of reads from cache: below 80% the cache counts as
            // saturated (at or past 0.8), above it the reading stays under 0.8.
            let sat = if h < 0.8 {
                (0.8 + (0.8 - h)).min(1.0)
            } else {
                (1.0 - h) / 0.2 * 0.79
            };
            v.push((Tier::Cache, sat));
        }
        let db = [self.db_cpu, self.db_time_share, self.db_connections]
            .into_iter()
            .flatten()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        if let Some(d) = db {
            v.push((Tier::Database, d));
        }
        if let Some(l) = self.replica_lag_share {
            v.push((Tier::Replicas, l.min(1.0)));
        }
        if let Some(h) = self.host_cpu {
            v.push((Tier::Host, h));
        }
        if let Some(g) = self.load_generator_cpu {
            v.push((Tier::LoadGenerator, g));
        }
        // A reading that is not a number says nothing; a share past 1 is saturation.
        v.retain(|(_, s)| s.is_finite());
        for (_, s) in &mut v {
            *s = s.clamp(0.0, 1.0);
        }
        v
    }
}

/// The diagnosis's reason when the sweep carries no per-tier readings at all.
pub const NO_READINGS: &str =
    "no per-tier readings in this sweep: the bottleneck tier cannot be named";

/// The verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The tier that saturates first, if any did.
    pub bottleneck: Option<Tier>,
    /// Load at which it crossed the threshold.
    pub at_load: Option<f64>,
    /// Its saturation there.
    pub saturation: Option<f64>,
    /// Why, in one sentence with the numbers.
    pub reason: String,
    /// The standard fixes, in the order to try them.
    pub fixes: Vec<String>,
    /// Per tier, the first load at which it crossed (for the report).
    pub crossings: Vec<(Tier, f64)>,
}

/// Names the tier that saturates first across `sweep` (any order) at `threshold` (e.g. 0.8).
///
/// `stateless` is the audit's verdict; it decides the fix when the app tier saturates.
pub fn diagnose(sweep: &[TierReadings], threshold: f64, stateless: Option<bool>) -> Diagnosis {
    let mut s: Vec<&TierReadings> = sweep.iter().collect();
    s.sort_by(|a, b| a.load.total_cmp(&b.load));
    let mut crossings: Vec<(Tier, f64, f64)> = Vec::new();
    for r in &s {
        for (tier, sat) in r.saturation() {
            if sat >= threshold && !crossings.iter().any(|c| c.0 == tier) {
                crossings.push((tier, r.load, sat));
            }
        }
    }
    // Earliest load first; at equal load the more saturated tier; then back-to-front
    // (a saturated database explains a busy app, not the other way round).
    crossings.sort_by(|a, b| {
        a.1.total_cmp(&b.1)
            .then(b.2.total_cmp(&a.2))
            .then(b.0.cmp(&a.0))
    });
    let Some(&(tier, load, sat)) = crossings.first() else {
        if s.iter().all(|r| r.saturation().is_empty()) {
            return Diagnosis {
                bottleneck: None,
                at_load: None,
                saturation: None,
                reason: NO_READINGS.into(),
                fixes: vec!["re-run with tier readings (app CPU, DB CPU/connections, cache hit rate), as `scaleout demo` records them".into()],
                crossings: vec![],
            };
        }
        let peak = s
            .iter()
            .flat_map(|r| r.saturation())
            .map(|x| x.1)
            .fold(0.0, f64::max);
        return Diagnosis {
            bottleneck: None,
            at_load: None,
            saturation: None,
            reason: format!(
                "no tier reached {:.0}% saturation (highest reading {:.0}%): the load generator, the network or an unmeasured resource limits throughput",
                threshold * 100.0,
                peak * 100.0
            ),
            fixes: vec!["measure with more load, from a second machine, or add readings for the missing tiers".into()],
            crossings: vec![],
        };
    };
    let app_idle = s
        .iter()
        .find(|r| r.load >= load)
        .and_then(|r| r.app_cpu)
        .map(|c| c < 0.5);
    let db_idle = s
        .iter()
        .find(|r| r.load >= load)
        .and_then(|r| r.db_cpu.or(r.db_time_share))
        .map(|c| c < 0.5);
    let (reason, fixes) = match tier {
        Tier::Database => (
            format!(
                "the database saturates first ({:.0}% at load {load}){}: more app instances would add nothing",
                sat * 100.0,
                if app_idle == Some(true) { " while the app is mostly idle" } else { "" }
            ),
            vec![
                "cache-aside for hot reads (target 80-95% hit rate), invalidate on write".into(),
                "route stale-tolerant SELECTs to read replicas, with read-your-writes".into(),
                "connection pooling sized so instances × pool < max_connections".into(),
                "indexes for the slowest queries".into(),
                "only then: a bigger database (scale up), and shard as the last resort".into(),
            ],
        ),
        Tier::App => {
            let idle = if db_idle == Some(true) { " while the database is idle" } else { "" };
            match stateless {
                Some(false) => (
                    format!("the app tier saturates first ({:.0}% CPU at load {load}){idle}, but it keeps per-instance state", sat * 100.0),
                    vec![
                        "refactor first: move sessions, caches, uploads and queues to shared stores (see `scaleout audit`)".into(),
                        "meanwhile scale up (more cores for the one instance)".into(),
                        "then scale out behind the balancer".into(),
                    ],
                ),
                _ => (
                    format!("the app tier saturates first ({:.0}% CPU at load {load}){idle}", sat * 100.0),
                    vec![
                        "scale out: more stateless instances behind the balancer (autoscale on concurrency)".into(),
                        "or scale up while vertical headroom is cheap".into(),
                        "profile the hot path".into(),
                    ],
                ),
            }
        }
        Tier::Cache => (
            format!("the cache absorbs too little (hit rate below 80% at load {load})"),
            vec![
                "cache more read paths, longer TTLs for reference data, stampede protection".into(),
                "check invalidation is not deleting more than it must".into(),
            ],
        ),
        Tier::Replicas => (
            format!("replicas lag past the bound at load {load}: reads fall back to the primary"),
            vec!["add replicas or faster replica disks; reduce write volume; relax the lag bound for tolerant reads".into()],
        ),
        Tier::Balancer => (
            format!("the balancer queues or sheds at load {load}"),
            vec!["raise connection limits, add balancer workers, or run more balancer instances".into()],
        ),
        Tier::Host => (
            format!(
                "the host's CPU saturates first ({:.0}% of all cores busy at load {load}): instances, balancer and load generator share one machine, so more instances add contention, not capacity",
                sat * 100.0
            ),
            vec![
                "give each instance its own CPU envelope (cgroup cpu limit) sized to fit the host, or its own machine".into(),
                "run the load generator on another machine".into(),
                "then measure again: the sweep shows the system only when the host has room".into(),
            ],
        ),
        Tier::LoadGenerator => (
            format!(
                "the load generator saturates first ({:.0}% of its CPU at load {load}): the sweep measured the generator, not the system",
                sat * 100.0
            ),
            vec!["give the generator more threads or cores, or run it from another machine, and measure again".into()],
        ),
    };
    Diagnosis {
        bottleneck: Some(tier),
        at_load: Some(load),
        saturation: Some(sat),
        reason,
        fixes,
        crossings: crossings.iter().map(|c| (c.0, c.1)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(load: f64, app: f64, db: f64) -> TierReadings {
        TierReadings {
            load,
            app_cpu: Some(app),
            db_cpu: Some(db),
            ..Default::default()
        }
    }

    #[test]
    fn database_saturated_and_app_idle_prescribes_cache_and_replicas() {
        let sweep = [r(100.0, 0.1, 0.4), r(200.0, 0.2, 0.85), r(400.0, 0.3, 0.99)];
        let d = diagnose(&sweep, 0.8, Some(true));
        assert_eq!(d.bottleneck, Some(Tier::Database));
        assert_eq!(d.at_load, Some(200.0));
        assert!(d.reason.contains("mostly idle"), "{}", d.reason);
        assert!(d.fixes[0].contains("cache"));
        assert!(d.fixes.iter().any(|f| f.contains("replicas")));
    }

    #[test]
    fn app_saturated_scales_out_when_stateless_and_refactors_when_not() {
        let sweep = [r(100.0, 0.5, 0.1), r(200.0, 0.95, 0.2)];
        let d = diagnose(&sweep, 0.8, Some(true));
        assert_eq!(d.bottleneck, Some(Tier::App));
        assert!(d.fixes[0].starts_with("scale out"));
        let d = diagnose(&sweep, 0.8, Some(false));
        assert!(d.fixes[0].starts_with("refactor first"));
    }

    #[test]
    fn the_tier_that_crosses_at_the_lowest_load_wins() {
        let sweep = [r(100.0, 0.5, 0.5), r(200.0, 0.9, 0.7), r(300.0, 0.95, 0.95)];
        assert_eq!(diagnose(&sweep, 0.8, None).bottleneck, Some(Tier::App));
        let d = diagnose(&sweep, 0.8, None);
        assert_eq!(
            d.crossings,
            vec![(Tier::App, 200.0), (Tier::Database, 300.0)]
        );
    }

    #[test]
    fn nothing_saturated_says_so() {
        let d = diagnose(&[r(100.0, 0.2, 0.1)], 0.8, None);
        assert_eq!(d.bottleneck, None);
        assert!(d.reason.contains("no tier"));
    }

    #[test]
    fn a_poor_cache_is_named() {
        let sweep = [TierReadings {
            load: 50.0,
            cache_hit_rate: Some(0.5),
            app_cpu: Some(0.3),
            ..Default::default()
        }];
        assert_eq!(diagnose(&sweep, 0.8, None).bottleneck, Some(Tier::Cache));
        let good = [TierReadings {
            load: 50.0,
            cache_hit_rate: Some(0.95),
            ..Default::default()
        }];
        assert_eq!(diagnose(&good, 0.8, None).bottleneck, None);
    }
}

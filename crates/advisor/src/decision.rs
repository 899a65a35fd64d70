//! The decision: given today's load, the projected load and what was measured, should
//! the system scale up, scale out, or be refactored first — and what does each cost?
//!
//! The order follows the mission: scale up first while vertical headroom is cheap, then
//! out once the service is stateless, and relieve the data tier (cache, replicas) before
//! adding app instances when the database is the bottleneck. Every option is priced,
//! including the ones not chosen, so the reader can disagree with numbers in hand.

use serde::{Deserialize, Serialize};

use crate::AdvisorError;
use crate::bottleneck::Tier;
use crate::cost::PriceTable;
use crate::usl::model;

/// Largest instance count the scale-out option considers.
pub const MAX_INSTANCES: u32 = 1000;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Today's capacity already covers the projection with headroom.
    NoChange,
    /// A bigger machine for the bottleneck tier.
    ScaleUp,
    /// More instances (of the app tier, or replicas + cache for the data tier).
    ScaleOut,
    /// Remove per-instance state (or the coherency cost) before scaling out.
    RefactorFirst,
}

/// Inputs, in units a reader can check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionInput {
    /// Requests per second today.
    pub current_rps: f64,
    /// Projected requests per second (current × growth factor).
    pub projected_rps: f64,
    /// The app size running today (a name in the price table).
    pub app_size: String,
    /// App instances running today.
    pub instances: u32,
    /// Measured maximum throughput of one instance of `app_size`, req/s.
    pub instance_capacity_rps: f64,
    /// Contention and coherency across cores inside one instance (from a workers sweep);
    /// default σ 0.05, κ 0 (a documented assumption when not measured).
    pub up_sigma: f64,
    /// See `up_sigma`.
    pub up_kappa: f64,
    /// Contention and coherency across instances (from an instance sweep); default 0.02 / 0.
    pub out_sigma: f64,
    /// See `out_sigma`.
    pub out_kappa: f64,
    /// The audit's verdict: false when per-instance state was found.
    pub stateless: Option<bool>,
    /// The tier that saturates first, from the diagnosis.
    pub bottleneck: Option<Tier>,
    /// Run each tier at most at this utilisation (headroom for spikes), 0..1.
    pub target_utilisation: f64,
    /// Database size today (price table name), for the hybrid option.
    pub db_size: String,
    /// Measured throughput at which the database saturates with no cache and no replicas.
    pub db_capacity_rps: Option<f64>,
    /// Share of requests that are reads, 0..1.
    pub read_share: f64,
    /// Cache hit rate the hybrid option assumes for reads, 0..1.
    pub cache_hit_rate: f64,
    /// Today's capacity as measured (e.g. the sweep's throughput at today's instance
    /// count). When absent it is modelled: `instance_capacity_rps` scaled by the USL over
    /// `instances`.
    pub current_capacity_rps: Option<f64>,
}

impl Default for DecisionInput {
    fn default() -> Self {
        DecisionInput {
            current_rps: 0.0,
            projected_rps: 0.0,
            app_size: "app.large".into(),
            instances: 1,
            instance_capacity_rps: 0.0,
            up_sigma: 0.05,
            up_kappa: 0.0,
            out_sigma: 0.02,
            out_kappa: 0.0,
            stateless: None,
            bottleneck: None,
            target_utilisation: 0.7,
            db_size: "db.large".into(),
            db_capacity_rps: None,
            read_share: 0.9,
            cache_hit_rate: 0.9,
            current_capacity_rps: None,
        }
    }
}

/// One priced option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Option_ {
    /// `scale up`, `scale out`, `hybrid (primary + replicas + cache)`.
    pub name: String,
    /// Whether it reaches the required capacity at all.
    pub feasible: bool,
    /// What it means concretely (sizes, counts).
    pub detail: String,
    /// Instances (app) or database nodes it uses.
    pub instances: u32,
    /// Predicted capacity, req/s.
    pub capacity_rps: f64,
    /// Monthly cost in the table's currency.
    pub monthly: f64,
}

/// The recommendation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// What to do.
    pub action: Action,
    /// Why, with the numbers.
    pub reason: String,
    /// Capacity needed: projected load / target utilisation.
    pub required_rps: f64,
    /// Capacity today.
    pub current_capacity_rps: f64,
    /// Every option with its cost (chosen or not).
    pub options: Vec<Option_>,
    /// Currency of `monthly`.
    pub currency: String,
}

/// Decides, pricing every option from `prices`.
pub fn decide(input: &DecisionInput, prices: &PriceTable) -> Result<Recommendation, AdvisorError> {
    let bad = |f: &str, m: &str| Err(AdvisorError::BadInput(format!("{f} {m}")));
    let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
    if !(input.instance_capacity_rps.is_finite() && input.instance_capacity_rps > 0.0) {
        return bad(
            "instance_capacity_rps",
            "must be > 0 (measure one instance first)",
        );
    }
    if !finite_nonneg(input.current_rps) {
        return bad("current_rps", "must be >= 0");
    }
    if !finite_nonneg(input.projected_rps) {
        return bad("projected_rps", "must be >= 0");
    }
    for (name, v) in [
        ("up_sigma", input.up_sigma),
        ("up_kappa", input.up_kappa),
        ("out_sigma", input.out_sigma),
        ("out_kappa", input.out_kappa),
    ] {
        if !finite_nonneg(v) {
            return bad(name, "must be >= 0");
        }
    }
    if let Some(c) = input.current_capacity_rps
        && !finite_nonneg(c)
    {
        return bad("current_capacity_rps", "must be >= 0");
    }
    if let Some(c) = input.db_capacity_rps
        && !(c.is_finite() && c > 0.0)
    {
        return bad("db_capacity_rps", "must be > 0");
    }
    if !((0.0..=1.0).contains(&input.read_share) && (0.0..=1.0).contains(&input.cache_hit_rate)) {
        return bad("read_share and cache_hit_rate", "must be within 0..=1");
    }
    if !(input.target_utilisation > 0.0 && input.target_utilisation <= 1.0) {
        return bad("target_utilisation", "must be in (0, 1]");
    }
    if input.instances == 0 {
        return bad("instances", "must be >= 1");
    }
    let Some(cur) = prices.app_size(&input.app_size) else {
        return bad(
            "app_size",
            &format!("'{}' is not in the price table", input.app_size),
        );
    };
    let required = input.projected_rps / input.target_utilisation;
    // Capacity of n instances of one size: per-instance capacity scaled by the USL over
    // instances, normalised so that one instance is exactly what was measured.
    let out_factor = |n: u32| model(n as f64, 1.0, input.out_sigma, input.out_kappa);
    let up_factor = |vcpu: u32| model(vcpu as f64, 1.0, input.up_sigma, input.up_kappa);
    let per_cpu_unit = input.instance_capacity_rps / up_factor(cur.vcpu);
    let current_capacity = input
        .current_capacity_rps
        .unwrap_or(input.instance_capacity_rps * out_factor(input.instances));
    // Where the instance curve peaks, read off the curve itself over 1..=MAX_INSTANCES
    // (robust where N* is < 1 or infinite): the first count with the highest capacity.
    let out_peak = (1..=MAX_INSTANCES).fold(1, |best, n| {
        if out_factor(n) > out_factor(best) * (1.0 + 1e-9) {
            n
        } else {
            best
        }
    });
    let bottleneck_words = match input.bottleneck {
        Some(t) => format!("{} is the bottleneck", t.label()),
        None => "the measurement cannot tell which resource is the bottleneck".to_string(),
    };

    let mut options = Vec::new();
    // Scale up: the smallest size of the family that carries the load with the same
    // instance count.
    let up = prices
        .app
        .iter()
        .find(|s| per_cpu_unit * up_factor(s.vcpu) * out_factor(input.instances) >= required);
    let biggest = prices.app.last().expect("validated non-empty");
    options.push(match up {
        Some(s) => Option_ {
            name: "scale up".into(),
            feasible: true,
            detail: format!(
                "{} × {} ({} vCPU) instead of {}",
                input.instances, s.name, s.vcpu, cur.name
            ),
            instances: input.instances,
            capacity_rps: per_cpu_unit * up_factor(s.vcpu) * out_factor(input.instances),
            monthly: s.monthly * input.instances as f64
                + if input.instances > 1 {
                    prices.balancer_monthly
                } else {
                    0.0
                },
        },
        None => Option_ {
            name: "scale up".into(),
            feasible: false,
            detail: format!("even {} ({} vCPU) falls short", biggest.name, biggest.vcpu),
            instances: input.instances,
            capacity_rps: per_cpu_unit * up_factor(biggest.vcpu) * out_factor(input.instances),
            monthly: biggest.monthly * input.instances as f64
                + if input.instances > 1 {
                    prices.balancer_monthly
                } else {
                    0.0
                },
        },
    });
    // Scale out: more instances of today's size, up to where the instance curve peaks.
    let n_out = (1..=out_peak).find(|&n| input.instance_capacity_rps * out_factor(n) >= required);
    let out_peak_capacity = input.instance_capacity_rps * out_factor(out_peak);
    let out_shortfall = if out_peak == 1 {
        format!(
            "scaling out this way does not add capacity: {bottleneck_words}; throughput is highest at 1 instance ({out_peak_capacity:.0} req/s)"
        )
    } else if out_peak == MAX_INSTANCES {
        format!(
            "even {MAX_INSTANCES} instances reach only {out_peak_capacity:.0} req/s (contention caps the instance curve), below the {required:.0} req/s needed"
        )
    } else {
        format!(
            "throughput peaks at {out_peak} instances ({out_peak_capacity:.0} req/s, USL N*), below the {required:.0} req/s needed"
        )
    };
    options.push(match n_out {
        Some(n) => Option_ {
            name: "scale out".into(),
            feasible: true,
            detail: format!(
                "{n} × {} behind the balancer{}",
                cur.name,
                if input.stateless == Some(false) {
                    " (after removing per-instance state)"
                } else {
                    ""
                }
            ),
            instances: n,
            capacity_rps: input.instance_capacity_rps * out_factor(n),
            monthly: cur.monthly * n as f64 + prices.balancer_monthly,
        },
        None => Option_ {
            name: "scale out".into(),
            feasible: false,
            detail: out_shortfall.clone(),
            instances: out_peak,
            capacity_rps: out_peak_capacity,
            monthly: cur.monthly * out_peak as f64
                + if out_peak > 1 {
                    prices.balancer_monthly
                } else {
                    0.0
                },
        },
    });
    // Hybrid: keep the primary, add a cache and read replicas until the data tier carries
    // the load. Database work per request falls from 1 to w + r(1 − h); reads spread over
    // the replicas and the primary.
    if let (Some(db_cap), Some(db)) = (input.db_capacity_rps, prices.db_size(&input.db_size)) {
        let (r, w, h) = (
            input.read_share,
            1.0 - input.read_share,
            input.cache_hit_rate,
        );
        let capacity = |replicas: u32| {
            // Primary takes all writes and its share of reads; the busiest node limits.
            let nodes = 1.0 + replicas as f64;
            let per_req_primary = w + r * (1.0 - h) / nodes;
            db_cap / per_req_primary.max(1e-9)
        };
        let app_n = n_out.unwrap_or(input.instances);
        let reps = (0..=15).find(|&k| capacity(k) >= required);
        let replicas = reps.unwrap_or(15);
        options.push(Option_ {
            name: "hybrid (primary + replicas + cache)".into(),
            feasible: reps.is_some(),
            detail: format!(
                "{} primary + {replicas} replica(s) + 1 cache node, {app_n} × {} app instances; assumes {:.0}% reads, {:.0}% cache hits",
                db.name,
                cur.name,
                r * 100.0,
                h * 100.0
            ),
            instances: 1 + replicas,
            capacity_rps: capacity(replicas).min(input.instance_capacity_rps * out_factor(app_n)),
            monthly: db.monthly * (1 + replicas) as f64
                + prices.cache_node_monthly
                + cur.monthly * app_n as f64
                + prices.balancer_monthly,
        });
    }

    let opt = |name: &str| options.iter().find(|o| o.name.starts_with(name));
    let (action, reason) = if required <= current_capacity {
        (
            Action::NoChange,
            format!(
                "today's capacity {current_capacity:.0} req/s covers the projected {:.0} req/s at {:.0}% target utilisation{}",
                input.projected_rps,
                input.target_utilisation * 100.0,
                match input.bottleneck {
                    Some(t) if t != Tier::App =>
                        format!("; {} saturates first, so watch it as load grows", t.label()),
                    _ => String::new(),
                }
            ),
        )
    } else if matches!(
        input.bottleneck,
        Some(Tier::Database | Tier::Cache | Tier::Replicas)
    ) {
        let h = opt("hybrid");
        (
            Action::ScaleOut,
            match h {
                Some(h) if h.feasible => format!(
                    "the data tier is the bottleneck: scale it out with a cache and read replicas ({}) for {:.0} {}/month; more app instances would add nothing",
                    h.detail, h.monthly, prices.currency
                ),
                _ => "the data tier is the bottleneck: cache and replicas first; measure the database's capacity (db_capacity_rps) to size them".to_string(),
            },
        )
    } else {
        let up = opt("scale up").expect("always priced");
        let out = opt("scale out").expect("always priced");
        match (up.feasible, out.feasible, input.stateless) {
            (true, _, Some(false)) => (
                Action::ScaleUp,
                format!(
                    "per-instance state blocks scaling out; scale up to {} for {:.0} {}/month now, and refactor before the next step",
                    up.detail, up.monthly, prices.currency
                ),
            ),
            (false, _, Some(false)) => (
                Action::RefactorFirst,
                format!(
                    "no single machine carries the {required:.0} req/s needed (the largest reaches {:.0}) and the service keeps per-instance state: move it to shared stores, then scale out",
                    up.capacity_rps
                ),
            ),
            (true, true, _) if up.monthly <= out.monthly * 1.1 => (
                Action::ScaleUp,
                format!(
                    "scale up first: {} costs {:.0} vs {:.0} {}/month to scale out, with fewer moving parts",
                    up.detail, up.monthly, out.monthly, prices.currency
                ),
            ),
            (_, true, _) => (
                Action::ScaleOut,
                format!(
                    "scale out: {} for {:.0} {}/month{}",
                    out.detail,
                    out.monthly,
                    prices.currency,
                    if up.feasible {
                        format!(
                            " (scaling up would cost {:.0}: vertical prices grow super-linearly at the top)",
                            up.monthly
                        )
                    } else {
                        " (no single machine is big enough)".to_string()
                    }
                ),
            ),
            (true, false, _) => (
                Action::ScaleUp,
                format!(
                    "{out_shortfall}; scale up to {} for {:.0} {}/month",
                    up.detail, up.monthly, prices.currency
                ),
            ),
            (false, false, _) => (
                Action::RefactorFirst,
                format!(
                    "neither the largest machine ({:.0} req/s) nor more instances reach the {required:.0} req/s needed ({out_shortfall}): {} first",
                    up.capacity_rps,
                    if out_peak == 1 {
                        "find and remove the shared bottleneck"
                    } else {
                        "bring the contention/coherency cost down"
                    }
                ),
            ),
        }
    };
    Ok(Recommendation {
        action,
        reason,
        required_rps: required,
        current_capacity_rps: current_capacity,
        options,
        currency: prices.currency.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(projected: f64) -> DecisionInput {
        DecisionInput {
            current_rps: 500.0,
            projected_rps: projected,
            app_size: "app.large".into(),
            instances: 1,
            instance_capacity_rps: 1000.0,
            stateless: Some(true),
            bottleneck: Some(Tier::App),
            ..Default::default()
        }
    }

    #[test]
    fn small_growth_needs_nothing() {
        let r = decide(&input(600.0), &PriceTable::bundled()).unwrap();
        assert_eq!(r.action, Action::NoChange, "{}", r.reason);
    }

    #[test]
    fn moderate_growth_scales_up_first() {
        let r = decide(&input(1200.0), &PriceTable::bundled()).unwrap();
        assert_eq!(r.action, Action::ScaleUp, "{}", r.reason);
        assert!(r.options.iter().all(|o| o.monthly > 0.0));
    }

    #[test]
    fn large_growth_scales_out_when_the_top_of_the_family_is_dear() {
        let r = decide(&input(30_000.0), &PriceTable::bundled()).unwrap();
        assert_eq!(r.action, Action::ScaleOut, "{}", r.reason);
        let out = r.options.iter().find(|o| o.name == "scale out").unwrap();
        assert!(out.capacity_rps >= r.required_rps);
    }

    #[test]
    fn stateful_service_refactors_first_when_no_machine_is_big_enough() {
        let mut i = input(500_000.0);
        i.stateless = Some(false);
        let r = decide(&i, &PriceTable::bundled()).unwrap();
        assert_eq!(r.action, Action::RefactorFirst, "{}", r.reason);
    }

    #[test]
    fn database_bottleneck_prices_the_hybrid_and_chooses_it() {
        let mut i = input(3000.0);
        i.bottleneck = Some(Tier::Database);
        i.db_capacity_rps = Some(800.0);
        let r = decide(&i, &PriceTable::bundled()).unwrap();
        assert_eq!(r.action, Action::ScaleOut);
        let h = r
            .options
            .iter()
            .find(|o| o.name.starts_with("hybrid"))
            .unwrap();
        assert!(h.feasible, "{h:?}");
        assert!(r.reason.contains("data tier"));
    }

    #[test]
    fn coherency_limit_makes_scale_out_infeasible() {
        let mut i = input(30_000.0);
        i.out_sigma = 0.1;
        i.out_kappa = 0.01; // N* ≈ 9.5, peak ≈ 3.1× one instance
        let r = decide(&i, &PriceTable::bundled()).unwrap();
        assert!(
            !r.options
                .iter()
                .find(|o| o.name == "scale out")
                .unwrap()
                .feasible
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        let mut i = input(1.0);
        i.instance_capacity_rps = 0.0;
        assert!(
            decide(&i, &PriceTable::bundled())
                .unwrap_err()
                .to_string()
                .contains("instance_capacity_rps")
        );
        let mut i = input(1.0);
        i.app_size = "nope".into();
        assert!(
            decide(&i, &PriceTable::bundled())
                .unwrap_err()
                .to_string()
                .contains("app_size")
        );
    }
}

//! Text and CSV renderings of a simulation, beside the data they render (the binary only
//! prints them). The text explains every metric in words and says what good looks like,
//! optionally side by side with a reference run (the HPA clone on the same trace), so a
//! bare `accuracy_over_pct 368.66` never reaches a reader without its meaning.
//!
//! Pure: no I/O.

use crate::sim::{SimReport, SimRun};

/// The header of [`SimRun::timeline_csv`].
pub const TIMELINE_CSV_HEADER: &str =
    "t,arrivals_rps,demand,ready,instances,desired,backlog,p99_ms,slo_violated,panic";

impl SimRun {
    /// The per-second timeline as CSV ([`TIMELINE_CSV_HEADER`] then one row a second).
    pub fn timeline_csv(&self) -> String {
        let mut out = format!("{TIMELINE_CSV_HEADER}\n");
        for k in &self.timeline {
            out.push_str(&format!(
                "{},{:.1},{},{},{},{},{:.1},{:.1},{},{}\n",
                k.t,
                k.arrivals_rps,
                k.demand,
                k.ready,
                k.instances,
                k.desired,
                k.backlog,
                k.p99_ms,
                u8::from(k.slo_violated),
                u8::from(k.panic)
            ));
        }
        out
    }
}

/// One metric row: name, value, and what it means / what good looks like.
struct Row {
    name: &'static str,
    value: String,
    reference: Option<String>,
    meaning: String,
}

impl SimReport {
    /// The human report: one line per metric with its value, the reference run's value
    /// when given (same trace, model and seed), and what the metric means and what good
    /// looks like. `trace` names the trace in the title.
    pub fn render_text(&self, trace: &str, reference: Option<&SimReport>) -> String {
        let r = self;
        let secs = r.duration_s.max(1) as f64;
        let mean_instances = r.instance_seconds as f64 / secs;
        let f0 = |v: u64| v.to_string();
        let f2 = |v: f64| format!("{v:.2}");
        let rows = |x: &SimReport| -> Vec<(&'static str, String)> {
            vec![
                ("slo_violation_s", f0(x.slo_violation_s)),
                ("dropped_requests", f0(x.dropped_requests)),
                ("instance_seconds", f0(x.instance_seconds)),
                ("peak_instances", x.peak_instances.to_string()),
                ("accuracy_under_pct", f2(x.accuracy_under_pct)),
                ("accuracy_over_pct", f2(x.accuracy_over_pct)),
                ("timeshare_under_pct", f2(x.timeshare_under_pct)),
                ("timeshare_over_pct", f2(x.timeshare_over_pct)),
                ("instability_pct", f2(x.instability_pct)),
                ("jitter_per_min", f2(x.jitter_per_min)),
                ("flaps", f0(x.flaps)),
                ("scale_ups", f0(x.scale_ups)),
                ("scale_downs", f0(x.scale_downs)),
                ("panic_s", f0(x.panic_s)),
            ]
        };
        let meanings = [
            format!(
                "seconds (of {}) with fewer ready instances than the demand, or p99 above the \
                 {} ms SLO; good: 0",
                r.duration_s, r.model.slo_p99_ms
            ),
            format!(
                "requests dropped after waiting {} s in the queue (of {} arrived); good: 0",
                r.model.max_queue_s, r.arrived_requests
            ),
            format!(
                "the bill: instances x seconds, starting ones included ({mean_instances:.1} \
                 instances on average); lower is cheaper, at equal SLO"
            ),
            "most instances at once".to_string(),
            "mean shortfall per second, % of the instances needed; 0 = never short".to_string(),
            "mean surplus per second, % of the instances needed (100 = twice what was needed); \
             0 is exact, some surplus is the headroom that absorbs start-up time"
                .to_string(),
            "% of seconds short of the demand; good: near 0".to_string(),
            "% of seconds above the demand; high with a low accuracy_over_pct is a thin, \
             cheap margin"
                .to_string(),
            "% of seconds in which supply and demand moved in opposite directions; good: \
             near 0"
                .to_string(),
            "(supply changes - demand changes) per minute; near 0 is good, negative = \
             sluggish, positive = oscillating"
                .to_string(),
            "reversals of the instance count within the flap window; good: 0".to_string(),
            "decisions that raised the count".to_string(),
            "decisions that lowered the count".to_string(),
            "seconds the policy spent in panic mode (KPA)".to_string(),
        ];
        let own = rows(r);
        let refs = reference.map(rows);
        let table: Vec<Row> = own
            .into_iter()
            .zip(meanings)
            .enumerate()
            .map(|(i, ((name, value), meaning))| Row {
                name,
                value,
                reference: refs.as_ref().map(|v| v[i].1.clone()),
                meaning,
            })
            .collect();
        let mut out = format!(
            "policy {} trace {} seed {}: {} s\n",
            r.policy, trace, r.seed, r.duration_s
        );
        let name_w = table.iter().map(|t| t.name.len()).max().unwrap_or(0);
        let val_w = table
            .iter()
            .map(|t| t.value.len())
            .max()
            .unwrap_or(0)
            .max(r.policy.len());
        if let Some(rf) = reference {
            let ref_w = table
                .iter()
                .filter_map(|t| t.reference.as_ref().map(String::len))
                .max()
                .unwrap_or(0)
                .max(rf.policy.len());
            out.push_str(&format!(
                "  {:<name_w$}  {:>val_w$}  {:>ref_w$}\n",
                "metric", r.policy, rf.policy
            ));
            for t in &table {
                out.push_str(&format!(
                    "  {:<name_w$}  {:>val_w$}  {:>ref_w$}  {}\n",
                    t.name,
                    t.value,
                    t.reference.as_deref().unwrap_or(""),
                    t.meaning
                ));
            }
            out.push_str(&format!(
                "  ({} is the reference: the HPA clone on the same trace, model and seed; a \
                 good policy has no more slo_violation_s and dropped_requests than it, for \
                 fewer instance_seconds)\n",
                rf.policy
            ));
        } else {
            for t in &table {
                out.push_str(&format!(
                    "  {:<name_w$}  {:>val_w$}  {}\n",
                    t.name, t.value, t.meaning
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::sim::{CapacityModel, named_policy, simulate};
    use crate::trace::Trace;

    #[test]
    fn every_metric_is_explained_and_the_reference_is_shown() {
        let trace = Trace::parse("rps\n50\n50\n400\n400\n400\n50\n").unwrap();
        let model = CapacityModel::default();
        let run = simulate(&trace, &named_policy("default").unwrap(), &model, 1).unwrap();
        let hpa = simulate(&trace, &named_policy("hpa").unwrap(), &model, 1).unwrap();
        let text = run.report.render_text("t.csv", Some(&hpa.report));
        for metric in [
            "slo_violation_s",
            "instance_seconds",
            "accuracy_under_pct",
            "accuracy_over_pct",
            "timeshare_over_pct",
            "instability_pct",
            "jitter_per_min",
        ] {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(metric))
                .unwrap_or_else(|| panic!("{metric} missing:\n{text}"));
            // The value, the reference value and words: never a bare number.
            assert!(line.split_whitespace().count() > 4, "{line}");
        }
        assert!(text.contains("good"), "{text}");
        assert!(text.contains("HPA clone"), "{text}");
        let csv = run.timeline_csv();
        assert_eq!(csv.lines().count(), 1 + trace.rps.len());
        assert!(csv.starts_with(super::TIMELINE_CSV_HEADER));
    }
}

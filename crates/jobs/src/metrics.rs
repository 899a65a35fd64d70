//! Prometheus text for one queue's backlog and one worker's counters: what a backlog
//! autoscaler (ours, or KEDA through an external metric) reads. Labels come from a closed
//! set: the queue name, which [`crate::QueueConfig::validate`] restricts to `[a-z0-9_]`.

use std::fmt::Write;

use crate::{QueueStats, WorkerCounters};

/// Renders `stats` and `counters` for queue `queue` in the Prometheus text format.
pub fn render_prometheus(queue: &str, stats: &QueueStats, counters: &WorkerCounters) -> String {
    let mut out = String::with_capacity(1024);
    let gauges: [(&str, &str, u64); 7] = [
        (
            "jobs_ready",
            "Jobs a consumer could reserve now.",
            stats.ready,
        ),
        (
            "jobs_delayed",
            "Jobs waiting for their retry back-off.",
            stats.delayed,
        ),
        ("jobs_leased", "Jobs leased to a consumer.", stats.leased),
        (
            "jobs_depth",
            "Jobs not yet done (ready + delayed + leased).",
            stats.depth(),
        ),
        ("jobs_dead", "Dead letters kept.", stats.dead),
        (
            "jobs_in_flight",
            "Jobs this worker is handling now.",
            counters.in_flight,
        ),
        (
            "jobs_oldest_age_ms",
            "Age of the oldest ready or leased job in ms (0 when none).",
            stats.oldest_age_ms.unwrap_or(0),
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP scaleout_{name} {help}");
        let _ = writeln!(out, "# TYPE scaleout_{name} gauge");
        let _ = writeln!(out, "scaleout_{name}{{queue=\"{queue}\"}} {v}");
    }
    let totals: [(&str, &str, u64); 5] = [
        (
            "jobs_processed_total",
            "Jobs handled successfully by this worker.",
            counters.processed,
        ),
        (
            "jobs_failed_total",
            "Handler failures (nacks) in this worker.",
            counters.failed,
        ),
        (
            "jobs_dead_lettered_total",
            "Jobs this worker dead-lettered.",
            counters.dead_lettered,
        ),
        (
            "jobs_stale_total",
            "Acks or nacks that found the lease taken over.",
            counters.stale,
        ),
        (
            "jobs_store_errors_total",
            "Failed store calls in this worker.",
            counters.store_errors,
        ),
    ];
    for (name, help, v) in totals {
        let _ = writeln!(out, "# HELP scaleout_{name} {help}");
        let _ = writeln!(out, "# TYPE scaleout_{name} counter");
        let _ = writeln!(out, "scaleout_{name}{{queue=\"{queue}\"}} {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_the_queue_label() {
        let stats = QueueStats {
            ready: 7,
            delayed: 2,
            leased: 3,
            dead: 1,
            oldest_age_ms: Some(1500),
        };
        let counters = WorkerCounters {
            in_flight: 3,
            processed: 40,
            failed: 5,
            dead_lettered: 1,
            stale: 0,
            store_errors: 2,
        };
        let text = render_prometheus("orders", &stats, &counters);
        for line in [
            "scaleout_jobs_depth{queue=\"orders\"} 12",
            "scaleout_jobs_ready{queue=\"orders\"} 7",
            "scaleout_jobs_oldest_age_ms{queue=\"orders\"} 1500",
            "scaleout_jobs_processed_total{queue=\"orders\"} 40",
            "scaleout_jobs_store_errors_total{queue=\"orders\"} 2",
            "# TYPE scaleout_jobs_failed_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample line is `name{queue="orders"} <integer>`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, v) = l.rsplit_once(' ').unwrap();
            assert!(series.ends_with("{queue=\"orders\"}"), "{l}");
            v.parse::<u64>().unwrap();
        }
        let empty = render_prometheus("q", &QueueStats::default(), &WorkerCounters::default());
        assert!(empty.contains("scaleout_jobs_oldest_age_ms{queue=\"q\"} 0"));
    }
}

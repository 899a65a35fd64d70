//! Reading an instance group's usage counters, v1 or v2. Missing files read as zero:
//! stats are for display and metrics, never for a decision that must be exact.

use std::path::Path;

use super::{EnvelopeStats, Hierarchy};

/// `key value` lines (cpu.stat, memory.events, memory.oom_control) -> the value of `key`.
pub(super) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A single number; `max` (v2 for "no limit") reads as `u64::MAX`.
fn number(path: &Path) -> u64 {
    let s = read(path);
    let s = s.trim();
    if s == "max" {
        u64::MAX
    } else {
        s.parse().unwrap_or(0)
    }
}

pub(super) fn read_stats(h: &Hierarchy) -> EnvelopeStats {
    match h {
        Hierarchy::V2 { parent } => {
            let cpu = read(&parent.join("cpu.stat"));
            EnvelopeStats {
                cpu_usage_ns: keyed(&cpu, "usage_usec").unwrap_or(0) * 1000,
                nr_periods: keyed(&cpu, "nr_periods").unwrap_or(0),
                nr_throttled: keyed(&cpu, "nr_throttled").unwrap_or(0),
                throttled_ns: keyed(&cpu, "throttled_usec").unwrap_or(0) * 1000,
                memory_bytes: number(&parent.join("memory.current")),
                memory_max_bytes: number(&parent.join("memory.peak")),
                memory_limit_bytes: number(&parent.join("memory.max")),
                oom_kills: keyed(&read(&parent.join("memory.events")), "oom_kill").unwrap_or(0),
            }
        }
        Hierarchy::V1 {
            cpu,
            cpuacct,
            memory,
        } => {
            let stat = read(&cpu.join("cpu.stat"));
            EnvelopeStats {
                cpu_usage_ns: number(&cpuacct.join("cpuacct.usage")),
                nr_periods: keyed(&stat, "nr_periods").unwrap_or(0),
                nr_throttled: keyed(&stat, "nr_throttled").unwrap_or(0),
                throttled_ns: keyed(&stat, "throttled_time").unwrap_or(0),
                memory_bytes: number(&memory.join("memory.usage_in_bytes")),
                memory_max_bytes: number(&memory.join("memory.max_usage_in_bytes")),
                memory_limit_bytes: number(&memory.join("memory.limit_in_bytes")),
                oom_kills: keyed(&read(&memory.join("memory.oom_control")), "oom_kill")
                    .unwrap_or(0),
            }
        }
    }
}

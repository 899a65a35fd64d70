//! Who used the CPU during a measurement: each instance (its process), the balancer (the
//! demo's `lb-worker-*` threads), the load generator (the `load-*` threads), the demo's own
//! bookkeeping, and the whole host (`/proc/stat`, which also shows other processes).
//!
//! The parsing and the arithmetic are pure ([`parse_host`], [`CpuSample::since`]); only
//! [`sample`] reads /proc. Load threads exit when a run ends, and a dead thread's time is
//! folded into its process's total, so the generator's share is the process's delta minus
//! the threads still alive that are not load threads.
//!
//! Must never: report a share it did not read (a missing reading is `None`/0 with the
//! reason in the report, never a guess).

use std::time::Instant;

use serde::Serialize;

use crate::procs::Instance;

/// Counters at one instant (clock ticks, seconds for the host).
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    at: Option<Instant>,
    /// Per instance: (pid, CPU seconds so far, seconds its envelope throttled it so far).
    instances: Vec<(u32, f64, f64)>,
    /// This process: CPU seconds so far (every thread, dead ones included).
    own_s: f64,
    /// Live threads of this process: (tid, name, CPU seconds).
    threads: Vec<(u32, String, f64)>,
    /// Host: (busy seconds, total seconds) over every core.
    host: Option<(f64, f64)>,
}

/// CPU used over an interval, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CpuUse {
    /// Cores each instance used, in the order given.
    pub per_instance: Vec<f64>,
    /// Their sum.
    pub instances: f64,
    /// Per instance, the share of the interval its envelope throttled it (0..1; 0
    /// without an envelope).
    pub throttled: Vec<f64>,
    /// The balancer's worker threads.
    pub balancer: f64,
    /// The load generator's threads.
    pub generator: f64,
    /// The demo's own runtime (orchestration, metrics scrapes, the fleet supervisor).
    pub demo_other: f64,
    /// Every process on the host, when /proc/stat was readable.
    pub host_busy: Option<f64>,
    /// Host busy minus the demo and its instances: other processes (compilers, ...).
    pub others: Option<f64>,
    /// Cores on the host.
    pub host_cores: usize,
}

fn secs(ticks: u64) -> f64 {
    ticks as f64 / fleet::cpu::ticks_per_second() as f64
}

/// The thread's name (between the first '(' and the last ')') and its CPU ticks.
fn parse_thread(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    Some((name, fleet::cpu::parse_stat_ticks(stat)?))
}

/// (busy, total) seconds from the first line of /proc/stat.
pub fn parse_host(proc_stat: &str, ticks_per_s: u64) -> Option<(f64, f64)> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user].
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let t = ticks_per_s.max(1) as f64;
    Some(((total - idle) as f64 / t, total as f64 / t))
}

/// Reads the counters now, for `insts`: from their envelope's group when they have one
/// (nanosecond usage, throttling), else from /proc/<pid>/stat.
pub fn sample(insts: &[&Instance]) -> CpuSample {
    let own = std::process::id();
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let tid: u32 = e.file_name().to_str()?.parse().ok()?;
                let (name, ticks) =
                    parse_thread(&std::fs::read_to_string(e.path().join("stat")).ok()?)?;
                Some((tid, name, secs(ticks)))
            })
            .collect()
        })
        .unwrap_or_default();
    CpuSample {
        at: Some(Instant::now()),
        instances: insts
            .iter()
            .map(|i| match i.stats() {
                Some(st) => (
                    i.pid,
                    st.cpu_usage_ns as f64 / 1e9,
                    st.throttled_ns as f64 / 1e9,
                ),
                None => (
                    i.pid,
                    fleet::cpu::read_ticks(i.pid).map(secs).unwrap_or(0.0),
                    0.0,
                ),
            })
            .collect(),
        own_s: fleet::cpu::read_ticks(own).map(secs).unwrap_or(0.0),
        threads,
        host: std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_host(&s, fleet::cpu::ticks_per_second())),
    }
}

impl CpuSample {
    /// What was used between `before` and this sample.
    pub fn since(&self, before: &CpuSample, host_cores: usize) -> CpuUse {
        let dt = match (self.at, before.at) {
            (Some(a), Some(b)) => a.duration_since(b).as_secs_f64().max(1e-3),
            _ => return CpuUse::default(),
        };
        // An instance missing from `before` started during the interval: all its time counts.
        let delta = |pid: u32, now: f64, pick: fn(&(u32, f64, f64)) -> f64| {
            let then = before
                .instances
                .iter()
                .find(|x| x.0 == pid)
                .map_or(0.0, pick);
            (now - then).max(0.0) / dt
        };
        let per_instance: Vec<f64> = self
            .instances
            .iter()
            .map(|x| delta(x.0, x.1, |y| y.1))
            .collect();
        let throttled: Vec<f64> = self
            .instances
            .iter()
            .map(|x| delta(x.0, x.2, |y| y.2).min(1.0))
            .collect();
        let instances: f64 = per_instance.iter().sum();
        // Threads alive at both ends, by kind; load threads that came and went are in
        // the process total only.
        let (mut balancer, mut other) = (0.0, 0.0);
        for (tid, name, s) in &self.threads {
            let s0 = before
                .threads
                .iter()
                .find(|t| t.0 == *tid)
                .map_or(0.0, |t| t.2);
            let d = (s - s0).max(0.0);
            if name.starts_with("lb-worker") {
                balancer += d;
            } else if !name.starts_with("load-") {
                other += d;
            }
        }
        let own = (self.own_s - before.own_s).max(0.0);
        let generator = (own - balancer - other).max(0.0);
        let host_busy = match (self.host, before.host) {
            (Some((b1, t1)), Some((b0, t0))) if t1 > t0 => {
                // Busy share of all cores over the interval, as cores.
                Some((b1 - b0) / (t1 - t0) * host_cores as f64)
            }
            _ => None,
        };
        CpuUse {
            instances,
            per_instance,
            throttled,
            balancer: balancer / dt,
            generator: generator / dt,
            demo_other: other / dt,
            others: host_busy.map(|h| (h - instances - own / dt).max(0.0)),
            host_busy,
            host_cores,
        }
    }
}

/// Cores on this host (the affinity mask of this process).
pub fn host_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The 1-minute load average, from /proc/loadavg.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_busy_excludes_idle_and_iowait() {
        let s = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n";
        let (busy, total) = parse_host(s, 100).unwrap();
        assert!((busy - 1.5).abs() < 1e-9, "{busy}");
        assert!((total - 10.0).abs() < 1e-9, "{total}");
        assert_eq!(parse_host("intr 1 2", 100), None);
    }

    #[test]
    fn thread_name_may_hold_spaces_and_parentheses() {
        let line = "77 (lb-worker-0) S 1 1 1 0 -1 0 0 0 0 0 30 12 0 0 20 0 1 0 9 0 0";
        assert_eq!(parse_thread(line), Some(("lb-worker-0".into(), 42)));
        let odd = "78 (a (b) c) R 1 1 1 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 9 0 0";
        assert_eq!(parse_thread(odd).map(|x| x.0), Some("a (b) c".into()));
    }

    #[test]
    fn generator_is_the_process_minus_live_non_load_threads() {
        let t0 = Instant::now();
        let before = CpuSample {
            at: Some(t0),
            instances: vec![(10, 1.0, 0.5)],
            own_s: 5.0,
            threads: vec![(1, "main".into(), 1.0), (2, "lb-worker-0".into(), 2.0)],
            host: Some((100.0, 400.0)),
        };
        let after = CpuSample {
            at: Some(t0 + std::time::Duration::from_secs(2)),
            instances: vec![(10, 2.0, 1.1)],
            // +3 s: main +0.2, balancer +1.0, a load thread that exited +1.8.
            own_s: 8.0,
            threads: vec![(1, "main".into(), 1.2), (2, "lb-worker-0".into(), 3.0)],
            host: Some((108.0, 408.0)),
        };
        let u = after.since(&before, 2);
        assert!((u.instances - 0.5).abs() < 1e-9);
        assert!((u.throttled[0] - 0.3).abs() < 1e-9, "{:?}", u.throttled);
        assert!((u.balancer - 0.5).abs() < 1e-9);
        assert!((u.demo_other - 0.1).abs() < 1e-9);
        assert!((u.generator - 0.9).abs() < 1e-9, "{}", u.generator);
        // 8 of 8 host seconds busy on 2 cores: 2 cores; others = 2 - 0.5 - 1.5.
        assert!((u.host_busy.unwrap() - 2.0).abs() < 1e-9);
        assert!((u.others.unwrap() - 0.0).abs() < 1e-9);
    }
}

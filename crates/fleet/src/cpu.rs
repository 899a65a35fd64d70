//! CPU usage per instance from `/proc/<pid>/stat` (utime + stime deltas).
//!
//! The parse is pure ([`parse_stat_ticks`], [`utilisation`]); only [`read_ticks`] reads
//! the file. It must never be used as a liveness check: a missing file means "no sample".

use std::time::Duration;

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux almost always).
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .map(|t| t as u64)
        .unwrap_or(100)
}

/// utime + stime (in clock ticks) from the contents of `/proc/<pid>/stat`.
///
/// The second field (the command name) may contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 (index 0 here); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Reads the CPU ticks used so far by `pid` (all its threads); `None` if it is gone.
pub fn read_ticks(pid: u32) -> Option<u64> {
    parse_stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU utilisation over an interval, in cores (1.0 = one core fully busy).
pub fn utilisation(ticks_before: u64, ticks_after: u64, elapsed: Duration, tck: u64) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || tck == 0 {
        return 0.0;
    }
    ticks_after.saturating_sub(ticks_before) as f64 / tck as f64 / secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utime_and_stime_after_a_name_with_spaces() {
        let line =
            "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 4 0 99 0 0";
        assert_eq!(parse_stat_ticks(line), Some(42));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn utilisation_is_ticks_per_second_over_elapsed() {
        let u = utilisation(100, 250, Duration::from_secs(1), 100);
        assert!((u - 1.5).abs() < 1e-9);
        assert_eq!(utilisation(5, 1, Duration::from_secs(1), 100), 0.0);
        assert_eq!(utilisation(0, 10, Duration::ZERO, 100), 0.0);
    }

    #[test]
    fn own_process_has_a_sample_that_grows_with_work() {
        let me = std::process::id();
        let before = read_ticks(me).expect("own stat readable");
        // Burn a bounded amount of CPU (about 50 ms) to move the counter.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = read_ticks(me).unwrap();
        assert!(after > before, "{before} -> {after}");
    }
}

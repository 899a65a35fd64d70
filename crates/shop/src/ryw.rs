//! Pure replica-selection logic: WAL positions, replica lag, and which replica may serve
//! a read, including read-your-writes.
//!
//! A user's "mark" is the primary's `pg_current_wal_lsn()` taken just after their last
//! commit. A replica may serve that user only when its replay position has reached the
//! mark; a replica whose replay lags the primary by more than the bound serves nobody.
//! Nothing here does I/O or reads the clock: `now_ms` and observations come in as
//! arguments, so every rule is unit-tested.

use std::collections::VecDeque;

/// Parses PostgreSQL's textual LSN `X/Y` (hex) into a comparable number.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some((hi << 32) | lo)
}

/// Formats a number as PostgreSQL's `X/Y` LSN text.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Remembers recent primary WAL positions with the time they were seen, so a replica's
/// lag in milliseconds follows from its replay position: the replica is as old as the
/// oldest primary position it has not replayed yet.
#[derive(Debug, Clone, Default)]
pub struct LagTracker {
    samples: VecDeque<(u64, u64)>, // (now_ms, primary lsn), both increasing
}

/// Samples kept at most (with a 50 ms poll, a bit under a minute of history).
pub const LAG_SAMPLES_MAX: usize = 1024;

impl LagTracker {
    /// Records the primary's position at `now_ms`.
    pub fn observe_primary(&mut self, now_ms: u64, lsn: u64) {
        if let Some(&(_, last)) = self.samples.back()
            && lsn <= last
        {
            return; // no new WAL: the older sample keeps the earliest time for this lsn
        }
        self.samples.push_back((now_ms, lsn));
        while self.samples.len() > LAG_SAMPLES_MAX {
            self.samples.pop_front();
        }
    }

    /// The lag of a replica that has replayed up to `replay_lsn`, at `now_ms`: the age of
    /// the oldest primary position it has not reached (0 when it has reached them all).
    /// When even the oldest kept sample is unreplayed, the lag is at least that old.
    pub fn lag_ms(&self, now_ms: u64, replay_lsn: u64) -> u64 {
        self.samples
            .iter()
            .find(|(_, lsn)| *lsn > replay_lsn)
            .map(|(t, _)| now_ms.saturating_sub(*t))
            .unwrap_or(0)
    }
}

/// What the poller last saw of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaStatus {
    /// Answered the last poll and is in recovery (a real standby).
    pub healthy: bool,
    /// `pg_last_wal_replay_lsn()` at the last poll.
    pub replay_lsn: u64,
    /// Lag behind the primary at the last poll, in milliseconds.
    pub lag_ms: u64,
}

/// Why a read went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRoute {
    /// Replica `i` may serve.
    Replica(usize),
    /// A replica within the lag bound exists, but the snapshot does not show it past the
    /// user's mark: ask replica `i` live, else use the primary.
    CheckReplica(usize),
    /// Only the primary can serve.
    Primary,
}

/// Chooses where a stale-tolerant read goes. Among healthy replicas within `max_lag_ms`,
/// picks the least outstanding requests; with a `mark`, only replicas whose replay has
/// reached it qualify outright, and otherwise the least loaded in-bound replica is
/// proposed for a live check.
pub fn route_read(
    statuses: &[ReplicaStatus],
    outstanding: &[usize],
    mark: Option<u64>,
    max_lag_ms: u64,
) -> ReadRoute {
    let in_bound = |i: &usize| {
        let s = &statuses[*i];
        s.healthy && s.lag_ms <= max_lag_ms
    };
    let least = |it: &mut dyn Iterator<Item = usize>| {
        it.min_by_key(|i| (outstanding.get(*i).copied().unwrap_or(0), *i))
    };
    let caught_up = |i: &usize| mark.is_none_or(|m| statuses[*i].replay_lsn >= m);
    if let Some(i) = least(&mut (0..statuses.len()).filter(in_bound).filter(caught_up)) {
        return ReadRoute::Replica(i);
    }
    if mark.is_some()
        && let Some(i) = least(&mut (0..statuses.len()).filter(in_bound))
    {
        return ReadRoute::CheckReplica(i);
    }
    ReadRoute::Primary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip_and_order() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert!(parse_lsn("1/0").unwrap() > parse_lsn("0/FFFFFFFF").unwrap());
        assert_eq!(format_lsn(parse_lsn("A/1F").unwrap()), "A/1F");
        assert_eq!(parse_lsn("garbage"), None);
    }

    #[test]
    fn lag_is_age_of_oldest_unreplayed_position() {
        let mut t = LagTracker::default();
        t.observe_primary(1000, 10);
        t.observe_primary(1050, 10); // no new WAL: ignored
        t.observe_primary(1100, 20);
        t.observe_primary(1200, 30);
        assert_eq!(t.lag_ms(1300, 30), 0);
        assert_eq!(t.lag_ms(1300, 20), 100); // missing the 30 seen at 1200
        assert_eq!(t.lag_ms(1300, 5), 300); // missing everything since 1000
        // An idle primary does not make a caught-up replica look old.
        assert_eq!(t.lag_ms(999_999, 30), 0);
    }

    #[test]
    fn routing_respects_marks_lag_and_load() {
        let ok = |lsn, lag| ReplicaStatus {
            healthy: true,
            replay_lsn: lsn,
            lag_ms: lag,
        };
        let st = [ok(100, 0), ok(200, 0), ok(300, 5000)];
        // No mark: least outstanding within the lag bound; the laggard is skipped.
        assert_eq!(
            route_read(&st, &[3, 1, 0], None, 1000),
            ReadRoute::Replica(1)
        );
        assert_eq!(
            route_read(&st, &[0, 1, 0], None, 1000),
            ReadRoute::Replica(0)
        );
        // Mark 150: only replica 1 has replayed it (replica 2 has, but lags too much).
        assert_eq!(
            route_read(&st, &[0, 9, 0], Some(150), 1000),
            ReadRoute::Replica(1)
        );
        // Mark 250: nobody in bound has it: check the least loaded in-bound replica live.
        assert_eq!(
            route_read(&st, &[5, 1, 0], Some(250), 1000),
            ReadRoute::CheckReplica(1)
        );
        // Unhealthy replicas are never chosen.
        let down = [ReplicaStatus::default()];
        assert_eq!(route_read(&down, &[0], None, 1000), ReadRoute::Primary);
        assert_eq!(route_read(&down, &[0], Some(1), 1000), ReadRoute::Primary);
        assert_eq!(route_read(&[], &[], None, 1000), ReadRoute::Primary);
    }
}

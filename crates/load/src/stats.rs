//! Recording: HDR histograms per request kind and per time slice, counters by outcome.
//!
//! Each generator thread owns a [`ThreadRecorder`] (no locks on the request path). When a
//! thread moves into a new time slice it hands the finished slice to the shared
//! [`Aggregator`], which merges slices from all threads and reduces each to a
//! [`SliceReport`] once every thread has moved past it. Memory is bounded by the number of
//! kinds plus a few open slices plus one small summary per slice: it never grows with the
//! number of samples. Latency is recorded in microseconds.
//!
//! This module must never read the clock itself: callers pass `now`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::report::{ErrorCounts, KindReport, SliceReport};

/// Highest latency a histogram holds (10 minutes, in µs); longer values saturate.
const MAX_US: u64 = 600_000_000;

/// Highest schedule lag a histogram holds (1 minute, in ns); longer values saturate.
const MAX_LAG_NS: u64 = 60_000_000_000;

/// A schedule-lag histogram in nanoseconds (0 is recordable).
pub(crate) fn new_lag_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LAG_NS, 3).expect("static histogram bounds are valid")
}

/// A latency histogram in microseconds.
pub(crate) fn new_hist(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, sigfig).expect("static histogram bounds are valid")
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A complete response with this status.
    Status(u16),
    /// The connection could not be made.
    Connect,
    /// No complete response within the timeout.
    Timeout,
    /// Anything else (closed mid-request, protocol error, failed session step).
    Other,
}

/// Event counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counts {
    pub scheduled: u64,
    pub sent: u64,
    pub completed: u64,
    pub dropped: u64,
    pub late: u64,
    pub errors: ErrorCounts,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.scheduled += o.scheduled;
        self.sent += o.sent;
        self.completed += o.completed;
        self.dropped += o.dropped;
        self.late += o.late;
        let (e, f) = (&mut self.errors, &o.errors);
        e.connect += f.connect;
        e.timeout += f.timeout;
        e.status_4xx += f.status_4xx;
        e.status_5xx += f.status_5xx;
        e.other += f.other;
        e.total += f.total;
    }

    fn outcome(&mut self, o: Outcome) {
        let e = &mut self.errors;
        match o {
            Outcome::Status(s) => {
                self.completed += 1;
                if (400..500).contains(&s) {
                    e.status_4xx += 1;
                    e.total += 1;
                } else if s >= 500 {
                    e.status_5xx += 1;
                    e.total += 1;
                }
            }
            Outcome::Connect => {
                e.connect += 1;
                e.total += 1;
            }
            Outcome::Timeout => {
                e.timeout += 1;
                e.total += 1;
            }
            Outcome::Other => {
                e.other += 1;
                e.total += 1;
            }
        }
    }
}

/// Counters plus a latency histogram.
#[derive(Debug, Clone)]
pub(crate) struct Acc {
    pub counts: Counts,
    pub hist: Histogram<u64>,
}

impl Acc {
    pub fn new(sigfig: u8) -> Acc {
        Acc {
            counts: Counts::default(),
            hist: new_hist(sigfig),
        }
    }

    pub fn merge(&mut self, o: &Acc) {
        self.counts.add(&o.counts);
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.hist.add(&o.hist);
    }

    fn reset(&mut self) {
        self.counts = Counts::default();
        self.hist.reset();
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

/// Percentile of a histogram in ms (0 when empty).
pub(crate) fn pct_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        ms(h.value_at_quantile(q))
    }
}

impl Acc {
    pub fn kind_report(&self, name: &str) -> KindReport {
        KindReport {
            name: name.to_string(),
            sent: self.counts.sent,
            completed: self.counts.completed,
            p50_ms: pct_ms(&self.hist, 0.5),
            p90_ms: pct_ms(&self.hist, 0.9),
            p99_ms: pct_ms(&self.hist, 0.99),
            p999_ms: pct_ms(&self.hist, 0.999),
            max_ms: if self.hist.is_empty() {
                0.0
            } else {
                ms(self.hist.max())
            },
            errors: self.counts.errors.clone(),
        }
    }
}

/// Per-thread recorder. Not shared: one per generator thread.
pub(crate) struct ThreadRecorder {
    thread: usize,
    start: Instant,
    slice: Duration,
    late_after: Duration,
    /// Per kind (index = kind id).
    pub kinds: Vec<Acc>,
    /// Per target (index = target id).
    pub targets: Vec<Acc>,
    /// All kinds together.
    pub total: Acc,
    cur_slice: u64,
    /// End of the current slice (events before it need no slice arithmetic).
    slice_end: Instant,
    slice_acc: Acc,
    agg: Arc<Aggregator>,
    /// Connections opened by this thread.
    pub connections_opened: u64,
    /// Connections opened by a worker after its previous one ended.
    pub reconnects: u64,
    /// How far behind schedule requests left, in nanoseconds.
    pub lag: Histogram<u64>,
}

impl ThreadRecorder {
    pub fn new(
        thread: usize,
        kinds: usize,
        targets: usize,
        start: Instant,
        slice: Duration,
        late_after: Duration,
        agg: Arc<Aggregator>,
    ) -> ThreadRecorder {
        ThreadRecorder {
            thread,
            start,
            slice,
            late_after,
            kinds: (0..kinds.max(1)).map(|_| Acc::new(3)).collect(),
            targets: (0..targets.max(1)).map(|_| Acc::new(3)).collect(),
            total: Acc::new(3),
            cur_slice: 0,
            slice_end: start + slice,
            slice_acc: Acc::new(2),
            agg,
            connections_opened: 0,
            reconnects: 0,
            lag: new_lag_hist(),
        }
    }

    fn slice_index(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / self.slice.as_nanos().max(1)) as u64
    }

    /// Moves to the slice of `now`, handing finished slices to the aggregator.
    #[inline]
    pub fn roll(&mut self, now: Instant) {
        // Fast path: still inside the current slice (no division per request).
        if now < self.slice_end {
            return;
        }
        self.roll_slow(now);
    }

    fn roll_slow(&mut self, now: Instant) {
        let idx = self.slice_index(now);
        self.slice_end = self.start + self.slice * (idx as u32 + 1);
        if idx > self.cur_slice {
            self.agg
                .flush(self.thread, self.cur_slice, &self.slice_acc, idx);
            self.slice_acc.reset();
            self.cur_slice = idx;
        }
    }

    /// A request became due (open loop).
    pub fn scheduled(&mut self, now: Instant) {
        self.roll(now);
        self.total.counts.scheduled += 1;
        self.slice_acc.counts.scheduled += 1;
    }

    /// A due request was never sent.
    pub fn dropped(&mut self, now: Instant) {
        self.roll(now);
        self.total.counts.dropped += 1;
        self.slice_acc.counts.dropped += 1;
    }

    /// A request left at `sent_at`, due at `intended`.
    pub fn sent(&mut self, kind: usize, target: usize, intended: Instant, sent_at: Instant) {
        self.roll(sent_at);
        let behind = sent_at.saturating_duration_since(intended);
        let late = behind > self.late_after;
        self.lag.saturating_record(behind.as_nanos() as u64);
        for c in [
            &mut self.total.counts,
            &mut self.slice_acc.counts,
            &mut self.kinds[kind].counts,
            &mut self.targets[target].counts,
        ] {
            c.sent += 1;
            if late {
                c.late += 1;
            }
        }
    }

    /// A request ended at `now`; latency is `now - from` when it got a response.
    pub fn done(
        &mut self,
        kind: usize,
        target: usize,
        from: Instant,
        now: Instant,
        outcome: Outcome,
    ) {
        self.roll(now);
        let t = &mut self.targets[target];
        t.counts.outcome(outcome);
        let k = &mut self.kinds[kind];
        k.counts.outcome(outcome);
        self.total.counts.outcome(outcome);
        self.slice_acc.counts.outcome(outcome);
        if let Outcome::Status(_) = outcome {
            let us = now.saturating_duration_since(from).as_micros() as u64;
            let us = us.max(1);
            k.hist.saturating_record(us);
            t.hist.saturating_record(us);
            self.total.hist.saturating_record(us);
            self.slice_acc.hist.saturating_record(us);
        }
    }

    /// A connection attempt fails before any request is charged (counted per request by
    /// the caller; this only exists for symmetry with `connection_opened`).
    pub fn connection_opened(&mut self) {
        self.connections_opened += 1;
    }

    /// A worker opened a new connection after its previous one ended (the server closed
    /// it, asked to close it, or it broke).
    pub fn reconnected(&mut self) {
        self.reconnects += 1;
    }

    /// Final flush at the end of the run.
    pub fn finish(&mut self) {
        self.agg
            .flush(self.thread, self.cur_slice, &self.slice_acc, u64::MAX);
        self.slice_acc.reset();
    }
}

/// Live figures for progress output.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Requests sent so far (finished slices).
    pub sent: u64,
    /// Responses so far.
    pub completed: u64,
    /// Errors so far.
    pub errors: u64,
    /// Scheduled so far.
    pub scheduled: u64,
    /// Late sends so far.
    pub late: u64,
    /// Completed per second in the last finished slice.
    pub last_rps: f64,
    /// p99 over everything finished so far, ms.
    pub p99_ms: f64,
    /// Index of the last finished slice (None before the first).
    pub last_slice: Option<u64>,
    /// End of the last finished slice, seconds from the start of the run: the counts
    /// above are everything that happened before it (0 before the first).
    pub through_s: f64,
}

struct AggState {
    slice: Duration,
    /// Per thread: the first slice it may still add to.
    positions: Vec<u64>,
    open: BTreeMap<u64, Acc>,
    done: BTreeMap<u64, SliceReport>,
    running: Acc,
    last_rps: f64,
    last_slice: Option<u64>,
}

/// Merges finished slices from all threads. Locked about once per slice per thread.
pub struct Aggregator {
    state: Mutex<AggState>,
    /// Woken when a slice finishes (progress waits on it).
    pub(crate) finished: tokio::sync::Notify,
}

impl Aggregator {
    pub(crate) fn new(threads: usize, slice: Duration) -> Aggregator {
        Aggregator {
            state: Mutex::new(AggState {
                slice,
                positions: vec![0; threads],
                open: BTreeMap::new(),
                done: BTreeMap::new(),
                running: Acc::new(2),
                last_rps: 0.0,
                last_slice: None,
            }),
            finished: tokio::sync::Notify::new(),
        }
    }

    fn flush(&self, thread: usize, idx: u64, acc: &Acc, next: u64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.open.entry(idx).or_insert_with(|| Acc::new(2)).merge(acc);
        st.positions[thread] = next;
        let low = st.positions.iter().copied().min().unwrap_or(0);
        let ready: Vec<u64> = st.open.range(..low).map(|(k, _)| *k).collect();
        let finished_any = !ready.is_empty();
        let secs = st.slice.as_secs_f64();
        for k in ready {
            let Some(a) = st.open.remove(&k) else {
                continue;
            };
            let rep = SliceReport {
                t_s: k as f64 * secs,
                scheduled: a.counts.scheduled,
                sent: a.counts.sent,
                completed: a.counts.completed,
                errors: a.counts.errors.total,
                error_kinds: a.counts.errors.clone(),
                late_sends: a.counts.late,
                rps: a.counts.completed as f64 / secs,
                p50_ms: pct_ms(&a.hist, 0.5),
                p99_ms: pct_ms(&a.hist, 0.99),
                max_ms: if a.hist.is_empty() {
                    0.0
                } else {
                    ms(a.hist.max())
                },
            };
            st.last_rps = rep.rps;
            st.last_slice = Some(k);
            st.running.merge(&a);
            st.done.insert(k, rep);
        }
        if finished_any {
            drop(st);
            self.finished.notify_waiters();
        }
    }

    /// Figures over the slices finished so far.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let c = &st.running.counts;
        Snapshot {
            sent: c.sent,
            completed: c.completed,
            errors: c.errors.total,
            scheduled: c.scheduled,
            late: c.late,
            last_rps: st.last_rps,
            p99_ms: pct_ms(&st.running.hist, 0.99),
            last_slice: st.last_slice,
            through_s: st
                .last_slice
                .map(|k| (k + 1) as f64 * st.slice.as_secs_f64())
                .unwrap_or(0.0),
        }
    }

    /// All slices, gaps filled with empty slices, once every thread has finished.
    pub(crate) fn slices(&self) -> Vec<SliceReport> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(last) = st.done.keys().next_back().copied() else {
            return Vec::new();
        };
        let secs = st.slice.as_secs_f64();
        (0..=last)
            .map(|i| {
                st.done.get(&i).cloned().unwrap_or(SliceReport {
                    t_s: i as f64 * secs,
                    ..SliceReport::default()
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_finish_only_when_every_thread_moved_past_them() {
        let agg = Arc::new(Aggregator::new(2, Duration::from_secs(1)));
        let t0 = Instant::now();
        let mut a = ThreadRecorder::new(
            0,
            1,
            1,
            t0,
            Duration::from_secs(1),
            Duration::from_millis(10),
            agg.clone(),
        );
        let mut b = ThreadRecorder::new(
            1,
            1,
            1,
            t0,
            Duration::from_secs(1),
            Duration::from_millis(10),
            agg.clone(),
        );
        a.sent(0, 0, t0, t0);
        a.done(
            0,
            0,
            t0,
            t0 + Duration::from_millis(5),
            Outcome::Status(200),
        );
        b.sent(0, 0, t0, t0 + Duration::from_millis(50));
        b.done(
            0,
            0,
            t0,
            t0 + Duration::from_millis(300),
            Outcome::Status(503),
        );
        a.roll(t0 + Duration::from_millis(1500));
        assert_eq!(
            agg.snapshot().last_slice,
            None,
            "thread b is still in slice 0"
        );
        b.roll(t0 + Duration::from_millis(1200));
        let s = agg.snapshot();
        assert_eq!((s.sent, s.completed, s.errors, s.late), (2, 2, 1, 1));
        a.finish();
        b.finish();
        let slices = agg.slices();
        assert_eq!(
            slices.len(),
            2,
            "slice 0 and the empty slice 1 thread a was in"
        );
        assert_eq!(slices[1].completed, 0);
        assert!((slices[0].max_ms - 300.0).abs() < 3.0, "{:?}", slices[0]);
        assert_eq!(b.total.counts.errors.status_5xx, 1);
    }

    #[test]
    fn errors_are_counted_apart_and_only_responses_have_latency() {
        let agg = Arc::new(Aggregator::new(1, Duration::from_secs(1)));
        let t0 = Instant::now();
        let mut r = ThreadRecorder::new(
            0,
            2,
            1,
            t0,
            Duration::from_secs(1),
            Duration::from_millis(10),
            agg,
        );
        let later = t0 + Duration::from_millis(20);
        r.done(0, 0, t0, later, Outcome::Connect);
        r.done(0, 0, t0, later, Outcome::Timeout);
        r.done(1, 0, t0, later, Outcome::Status(404));
        r.done(1, 0, t0, later, Outcome::Other);
        let e = &r.total.counts.errors;
        assert_eq!(
            (e.connect, e.timeout, e.status_4xx, e.other, e.total),
            (1, 1, 1, 1, 4)
        );
        assert_eq!(r.total.hist.len(), 1);
        assert_eq!(r.kinds[1].counts.completed, 1);
    }
}

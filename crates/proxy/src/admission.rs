//! Connection admission: a bound on open client connections that keeps the slots for
//! clients that make progress.
//!
//! A connection is *pending* from accept until its first request head is complete, then
//! *established*. An established connection with no request in flight is *idle* (a
//! keep-alive connection waiting for its next request). At most `max_pending` connections
//! may be pending; a new connection that finds the pending share full, or every slot
//! taken, evicts the oldest pending connection (it has sent nothing useful for the longest
//! time) instead of being refused. When every slot is taken and none is pending, it evicts
//! the least recently active idle keep-alive connections, up to [`IDLE_EVICT_BATCH`] at
//! once (nginx does the same when it runs out of connections: it closes up to 32 reusable
//! keep-alive connections, oldest first; HAProxy likewise kills idle keep-alive
//! connections before refusing). So neither silent connections nor keep-alive
//! connections that sent one request and then sit idle can lock clients out: only when
//! every slot holds a connection with a request in flight is a new connection refused
//! (503).
//!
//! Closing an idle keep-alive connection is always allowed by HTTP/1.1 (RFC 9112 9.3.1:
//! a client must be ready to retry an idempotent request on a closed persistent
//! connection), so eviction loses nothing.
//!
//! "Least recently active" uses a logical clock, not the wall clock: the admission
//! counter is bumped on every admission and a connection stamps its value on every read or
//! write that moved bytes (two relaxed atomic operations, no clock read per I/O). The
//! order only matters at admission time, which is exactly when the clock ticks.
//!
//! The state is one short `std::sync::Mutex` section per accept, first request and close;
//! never held across an `.await`, and not taken per request. Looking for idle connections
//! scans the established ones (only when every slot is full and nothing is pending), and a
//! scan frees up to [`IDLE_EVICT_BATCH`] slots, so it runs at most once per that many
//! admissions. Eviction is signalled through the slot's cancellation token; the evicted
//! connection's slot is freed at once (not when its task notices).

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// Most idle keep-alive connections closed by one admission that finds every slot taken
/// (nginx's `ngx_drain_connections` closes up to 32).
pub(crate) const IDLE_EVICT_BATCH: usize = 32;

/// The slots of one listener group (all workers of the public listener, or the admin
/// listener).
pub(crate) struct Admission {
    max_total: usize,
    max_pending: usize,
    /// Logical clock: admissions so far. Connections stamp it on I/O.
    clock: Arc<AtomicU64>,
    state: Mutex<State>,
}

struct State {
    /// Open connections counted against `max_total` (evicted ones excluded).
    total: usize,
    /// Pending connections by admission order, with their eviction signals.
    pending: BTreeMap<u64, CancellationToken>,
    /// Established connections (candidates for idle eviction).
    established: HashMap<u64, Arc<Conn>>,
    next_seq: u64,
}

/// What the connection's task and the admission share about one connection.
pub(crate) struct Conn {
    /// Cancelled when the connection is evicted; its task must then close it.
    pub evict: CancellationToken,
    /// Requests in flight on the connection (0 and no `streaming`: idle).
    pub active: Arc<AtomicUsize>,
    /// Responses whose bodies are still being sent (a request's handler may return before
    /// its response body has been streamed to the client).
    pub streaming: AtomicUsize,
    /// The admission clock at the connection's last read or write.
    last_io: AtomicU64,
    clock: Arc<AtomicU64>,
}

impl Conn {
    /// Records that the connection moved bytes now (called by its I/O wrapper).
    pub(crate) fn touch(&self) {
        self.last_io
            .store(self.clock.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn is_idle(&self) -> bool {
        self.active.load(Ordering::Relaxed) == 0 && self.streaming.load(Ordering::Relaxed) == 0
    }
}

/// What [`Admission::admit`] decided.
pub(crate) struct Admitted {
    /// The new connection's slot, or `None` when it must be refused.
    pub slot: Option<Slot>,
    /// Connections evicted to make room (pending or idle).
    pub evicted: u64,
}

impl Admission {
    /// `max_total` slots, of which at most `pending_percent`% (at least one) may be pending.
    pub(crate) fn new(max_total: usize, pending_percent: u32) -> Arc<Admission> {
        let max_total = max_total.max(1);
        let max_pending = (max_total * pending_percent.min(100) as usize / 100).max(1);
        Arc::new(Admission {
            max_total,
            max_pending,
            clock: Arc::new(AtomicU64::new(0)),
            state: Mutex::new(State {
                total: 0,
                pending: BTreeMap::new(),
                established: HashMap::new(),
                next_seq: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection, evicting the oldest pending one when the pending share or
    /// all slots are full, or else the least recently active idle ones when all slots are.
    pub(crate) fn admit(self: &Arc<Self>) -> Admitted {
        let mut st = self.lock();
        let mut evicted = 0;
        while st.pending.len() >= self.max_pending || st.total >= self.max_total {
            if let Some((_, token)) = st.pending.pop_first() {
                token.cancel();
                st.total -= 1;
                evicted += 1;
                continue;
            }
            let n = evict_idle(&mut st);
            if n == 0 {
                return Admitted {
                    slot: None,
                    evicted,
                };
            }
            evicted += n as u64;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.total += 1;
        let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = Arc::new(Conn {
            evict: CancellationToken::new(),
            active: Arc::new(AtomicUsize::new(0)),
            streaming: AtomicUsize::new(0),
            last_io: AtomicU64::new(now),
            clock: self.clock.clone(),
        });
        st.pending.insert(seq, conn.evict.clone());
        Admitted {
            slot: Some(Slot {
                admission: self.clone(),
                seq,
                conn,
                established: AtomicBool::new(false),
            }),
            evicted,
        }
    }

    /// Open connections and pending ones now.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.total, st.pending.len())
    }
}

/// Evicts up to [`IDLE_EVICT_BATCH`] idle established connections, least recently active
/// first; returns how many.
fn evict_idle(st: &mut State) -> usize {
    // A max-heap on last I/O keeps the batch's oldest entries.
    let mut oldest: BinaryHeap<(u64, u64)> = BinaryHeap::with_capacity(IDLE_EVICT_BATCH + 1);
    for (&seq, c) in &st.established {
        if !c.is_idle() {
            continue;
        }
        let at = c.last_io.load(Ordering::Relaxed);
        if oldest.len() < IDLE_EVICT_BATCH {
            oldest.push((at, seq));
        } else if oldest.peek().is_some_and(|&(top, _)| at < top) {
            oldest.pop();
            oldest.push((at, seq));
        }
    }
    let mut n = 0;
    for (_, seq) in oldest {
        if let Some(c) = st.established.remove(&seq) {
            c.evict.cancel();
            st.total -= 1;
            n += 1;
        }
    }
    n
}

/// One admitted connection's slot; freed on drop.
pub(crate) struct Slot {
    admission: Arc<Admission>,
    seq: u64,
    conn: Arc<Conn>,
    established: AtomicBool,
}

impl Slot {
    /// What the connection's task and I/O wrapper share with the admission.
    pub(crate) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Cancelled when the connection is evicted; its task must then close it.
    pub(crate) fn evict(&self) -> &CancellationToken {
        &self.conn.evict
    }

    /// The connection completed a request head: it no longer counts as pending; from now
    /// on it can be evicted only while idle. Cheap after the first call.
    pub(crate) fn establish(&self) {
        if self.established.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut st = self.admission.lock();
        if self.conn.evict.is_cancelled() {
            return;
        }
        st.pending.remove(&self.seq);
        st.established.insert(self.seq, self.conn.clone());
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.admission.lock();
        // An evicted slot was already released by the eviction (under this lock).
        if !self.conn.evict.is_cancelled() {
            st.pending.remove(&self.seq);
            st.established.remove(&self.seq);
            st.total -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_connections_are_evicted_oldest_first_and_never_take_every_slot() {
        let a = Admission::new(10, 50);
        let silent: Vec<Slot> = (0..5).map(|_| a.admit().slot.unwrap()).collect();
        assert_eq!(a.counts(), (5, 5));
        // A sixth pending connection evicts the oldest one.
        let sixth = a.admit();
        assert_eq!(sixth.evicted, 1);
        assert!(silent[0].evict().is_cancelled());
        assert!(!silent[1].evict().is_cancelled());
        assert_eq!(a.counts(), (5, 5));
        // A client that sends its request is established and keeps its slot.
        let good = sixth.slot.unwrap();
        good.conn().active.fetch_add(1, Ordering::Relaxed);
        good.establish();
        assert_eq!(a.counts(), (5, 4));
        drop(silent);
        assert_eq!(a.counts(), (1, 0));
        assert!(!good.evict().is_cancelled());
    }

    #[test]
    fn refuses_only_when_every_slot_has_a_request_in_flight() {
        let a = Admission::new(3, 50);
        let busy = |a: &Arc<Admission>| {
            let s = a.admit().slot.unwrap();
            s.conn().active.fetch_add(1, Ordering::Relaxed);
            s.establish();
            s
        };
        let est: Vec<Slot> = (0..3).map(|_| busy(&a)).collect();
        let r = a.admit();
        assert!(r.slot.is_none());
        assert_eq!(r.evicted, 0);
        drop(est);
        assert_eq!(a.counts(), (0, 0));
        // With two busy and one pending, a new one evicts the pending one.
        let _e1 = busy(&a);
        let _e2 = busy(&a);
        let p = a.admit().slot.unwrap();
        let r = a.admit();
        assert_eq!(r.evicted, 1);
        assert!(p.evict().is_cancelled());
        assert!(r.slot.is_some());
        drop(p);
        assert_eq!(a.counts(), (3, 1));
    }

    #[test]
    fn idle_keep_alive_connections_make_room_least_recently_active_first() {
        let a = Admission::new(100, 50);
        // 100 keep-alive connections that sent one request each and are now idle.
        let idle: Vec<Slot> = (0..100)
            .map(|_| {
                let s = a.admit().slot.unwrap();
                s.establish();
                s
            })
            .collect();
        assert_eq!(a.counts(), (100, 0));
        // The oldest one was active most recently; one in the middle is busy.
        idle[0].conn().touch();
        idle[1].conn().active.fetch_add(1, Ordering::Relaxed);
        let r = a.admit();
        assert!(r.slot.is_some(), "a new client is admitted");
        assert_eq!(r.evicted, IDLE_EVICT_BATCH as u64);
        assert!(!idle[0].evict().is_cancelled(), "recently active kept");
        assert!(!idle[1].evict().is_cancelled(), "busy never evicted");
        for s in &idle[2..2 + IDLE_EVICT_BATCH] {
            assert!(s.evict().is_cancelled());
        }
        assert!(!idle[2 + IDLE_EVICT_BATCH].evict().is_cancelled());
        assert_eq!(a.counts(), (100 - IDLE_EVICT_BATCH + 1, 1));
        // The next admissions use the freed slots without evicting.
        let more: Vec<Slot> = (0..IDLE_EVICT_BATCH - 1)
            .map(|_| {
                let r = a.admit();
                assert_eq!(r.evicted, 0);
                r.slot.unwrap()
            })
            .collect();
        drop(more);
        drop(r);
        drop(idle);
        assert_eq!(a.counts(), (0, 0));
    }
}

//! Connection admission: a bound on open client connections that keeps a share of the
//! slots for clients that make progress.
//!
//! A connection is *pending* from accept until its first request head is complete, then
//! *established*. At most `max_pending` connections may be pending; a new connection that
//! finds the pending share full, or every slot taken, evicts the oldest pending connection
//! (it has sent nothing useful for the longest time) instead of being refused. So silent
//! or slowloris connections can hold at most `max_pending` slots, and only until newer
//! connections push them out or `timeouts.header_read_ms` (counted from accept) closes
//! them; a client that sends its request promptly is always admitted. Only when every slot
//! is held by established connections is a new connection refused (503).
//!
//! The state is one short `std::sync::Mutex` section per accept, first request and close;
//! never held across an `.await`. Eviction is signalled through the slot's cancellation
//! token; the evicted connection's slot is freed at once (not when its task notices).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The slots of one listener group (all workers of the public listener, or the admin
/// listener).
pub(crate) struct Admission {
    max_total: usize,
    max_pending: usize,
    state: Mutex<State>,
}

struct State {
    /// Open connections counted against `max_total` (evicted ones excluded).
    total: usize,
    /// Pending connections by admission order, with their eviction signals.
    pending: BTreeMap<u64, CancellationToken>,
    next_seq: u64,
}

/// What [`Admission::admit`] decided.
pub(crate) struct Admitted {
    /// The new connection's slot, or `None` when it must be refused.
    pub slot: Option<Slot>,
    /// Pending connections evicted to make room.
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
            state: Mutex::new(State {
                total: 0,
                pending: BTreeMap::new(),
                next_seq: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection, evicting the oldest pending one when the pending share or
    /// all slots are full.
    pub(crate) fn admit(self: &Arc<Self>) -> Admitted {
        let mut st = self.lock();
        let mut evicted = 0;
        while st.pending.len() >= self.max_pending || st.total >= self.max_total {
            let Some((_, token)) = st.pending.pop_first() else {
                return Admitted {
                    slot: None,
                    evicted,
                };
            };
            token.cancel();
            st.total -= 1;
            evicted += 1;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.total += 1;
        let evict = CancellationToken::new();
        st.pending.insert(seq, evict.clone());
        Admitted {
            slot: Some(Slot {
                admission: self.clone(),
                seq,
                evict,
                established: AtomicBool::new(false),
            }),
            evicted,
        }
    }

    /// Open connections counted now.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.total, st.pending.len())
    }
}

/// One admitted connection's slot; freed on drop.
pub(crate) struct Slot {
    admission: Arc<Admission>,
    seq: u64,
    /// Cancelled when the connection is evicted; its task must then close it.
    pub evict: CancellationToken,
    established: AtomicBool,
}

impl Slot {
    /// The connection completed a request head: it no longer counts as pending and can no
    /// longer be evicted. Cheap after the first call.
    pub(crate) fn establish(&self) {
        if self.established.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut st = self.admission.lock();
        st.pending.remove(&self.seq);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.admission.lock();
        // An evicted slot was already released by the eviction (under this lock).
        if !self.evict.is_cancelled() {
            st.pending.remove(&self.seq);
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
        assert!(silent[0].evict.is_cancelled());
        assert!(!silent[1].evict.is_cancelled());
        assert_eq!(a.counts(), (5, 5));
        // A client that sends its request is established and keeps its slot.
        let good = sixth.slot.unwrap();
        good.establish();
        assert_eq!(a.counts(), (5, 4));
        drop(silent);
        assert_eq!(a.counts(), (1, 0));
        assert!(!good.evict.is_cancelled());
    }

    #[test]
    fn refuses_only_when_established_connections_hold_every_slot() {
        let a = Admission::new(3, 50);
        let est: Vec<Slot> = (0..3)
            .map(|_| {
                let s = a.admit().slot.unwrap();
                s.establish();
                s
            })
            .collect();
        let r = a.admit();
        assert!(r.slot.is_none());
        assert_eq!(r.evicted, 0);
        drop(est);
        assert_eq!(a.counts(), (0, 0));
        // With two established and one pending, a new one evicts the pending one.
        let e1 = a.admit().slot.unwrap();
        e1.establish();
        let e2 = a.admit().slot.unwrap();
        e2.establish();
        let p = a.admit().slot.unwrap();
        let r = a.admit();
        assert_eq!(r.evicted, 1);
        assert!(p.evict.is_cancelled());
        assert!(r.slot.is_some());
        drop(p);
        assert_eq!(a.counts(), (3, 1));
    }
}

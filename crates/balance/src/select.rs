//! The immutable selection snapshot and every strategy's pick.
//!
//! A [`Selector`] is built off the request path (by [`Pool::selector`](crate::Pool::selector)
//! or [`Selector::build`]) from the backends' eligibility and effective weights, with every
//! per-strategy structure precomputed: the smooth weighted round-robin sequence, the
//! cumulative weights for weighted random, the Maglev table. The proxy publishes it through
//! `ArcSwap`; [`Selector::pick`] then only reads it, plus a few atomics (a round-robin
//! counter and each backend's [`BackendLoad`]). No lock, no allocation, no clock read, no
//! RNG: the caller passes `now` and a random `u64` in the [`PickRequest`].
//!
//! A pick also skips a backend that has `max_in_flight_per_backend` requests in flight
//! (read from its live [`BackendLoad`]), as it skips an excluded one; when that leaves
//! nothing, [`Selector::try_pick`] says so ([`NoPick::AllFull`]) so the proxy can shed.
//!
//! Architecture invariant: a pick never returns a backend that was not eligible when the
//! snapshot was built (healthy, not ejected, admin-active), except in fail-open mode, when
//! no backend was eligible and the policy says to ignore health; then [`Pick::fail_open`]
//! is set. Even then, fail-open picks only among backends that answer (unhealthy but
//! reachable); backends that refuse connections or are passively ejected are picked only
//! when no backend answers at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::backend::{BackendId, BackendLoad};
use crate::config::{AllDownPolicy, BalanceConfig, StrategyKind};
use crate::hash::{MaglevTable, hash_bytes, mix64};

/// Longest precomputed smooth weighted round-robin sequence; longer weight sums are scaled
/// down (approximately preserving ratios) to bound memory and build time.
const MAX_SEQUENCE: u64 = 1 << 16;

/// Whether a backend may be picked, as decided when the snapshot is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Eligibility {
    /// Active, healthy and not ejected.
    Eligible,
    /// Active, answering, but failing its health check; pickable only in fail-open mode.
    Unavailable,
    /// Active but passively ejected, or its last check could not connect; in fail-open
    /// mode pickable only when no `Unavailable` backend exists.
    Unreachable,
    /// Draining or removed; never picked for new requests.
    Draining,
}

/// One backend as the snapshot sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Stable id.
    pub id: BackendId,
    /// Unique name (the sticky cookie's value).
    pub name: Arc<str>,
    /// `host:port`.
    pub addr: Arc<str>,
    /// Live shared counters; start a request with `load.start()`.
    pub load: Arc<BackendLoad>,
    /// Effective weight at build time (configured weight x slow-start factor), > 0.
    pub weight: f64,
    /// Whether it may be picked.
    pub eligibility: Eligibility,
}

/// What the proxy knows about a request that matters for picking.
#[derive(Debug, Clone, Copy)]
pub struct PickRequest<'a> {
    /// The client's address (for `ip_hash`).
    pub client_ip: Option<IpAddr>,
    /// The consistent-hash key, extracted by the proxy per `hash.key`.
    pub hash_key: Option<&'a [u8]>,
    /// The pinned backend's name from the sticky cookie.
    pub sticky: Option<&'a str>,
    /// A random number drawn by the caller (per request; a new one per retry).
    pub random: u64,
}

impl<'a> PickRequest<'a> {
    /// A request that carries only its random number.
    pub fn new(random: u64) -> Self {
        PickRequest {
            client_ip: None,
            hash_key: None,
            sticky: None,
            random,
        }
    }
}

/// The chosen backend.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// The backend (clone its `addr` and `load` to keep them past the snapshot).
    pub backend: &'a Candidate,
    /// Sticky strategy only: the request was not pinned to this backend, so the proxy
    /// should set the cookie to `backend.name`.
    pub repin: bool,
    /// No backend was eligible and the all-down policy is fail-open: this pick ignored
    /// health and ejection.
    pub fail_open: bool,
}

/// Why [`Selector::try_pick`] found no backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPick {
    /// Nothing pickable is left: the pool is empty or all down (`reject503`), or every
    /// pickable backend was excluded.
    NoneLeft,
    /// Every pickable backend that is not excluded is at `max_in_flight_per_backend`.
    AllFull,
}

#[derive(Debug)]
enum Algo {
    RoundRobin,
    Smooth { sequence: Vec<u32> },
    LeastConnections,
    P2c,
    Random,
    Maglev { table: MaglevTable },
}

#[derive(Debug)]
struct Slot {
    id: BackendId,
    load: Arc<BackendLoad>,
    inv_weight: f64,
}

/// An immutable snapshot of the pool for picking, with precomputed strategy state.
#[derive(Debug)]
pub struct Selector {
    strategy: StrategyKind,
    all: Vec<Candidate>,
    /// Indexes into `all` of the backends picks choose from.
    pickable: Vec<usize>,
    /// Position in `pickable` for each entry of `all` (usize::MAX when not pickable).
    pickable_pos: Vec<usize>,
    /// Per pickable position: id, load and 1/weight, contiguous for the scans.
    slots: Vec<Slot>,
    cumulative: Vec<f64>,
    algo: Algo,
    by_name: Option<HashMap<Arc<str>, usize>>,
    hash_by_ip: bool,
    fail_open: bool,
    /// `max_in_flight_per_backend` (0 = unlimited).
    cap: u64,
    counter: AtomicUsize,
    rebuild_at: Option<Instant>,
}

/// Integer weights for the sequence and Maglev: x100 for slow-start precision, reduced by
/// their gcd, then scaled down if the sum exceeds `cap`.
fn integer_weights(weights: &[f64], cap: u64) -> Vec<u32> {
    let mut ints: Vec<u64> = weights
        .iter()
        .map(|w| ((w * 100.0).round() as u64).max(1))
        .collect();
    let g = ints.iter().copied().fold(0, gcd);
    if g > 1 {
        ints.iter_mut().for_each(|w| *w /= g);
    }
    let sum: u64 = ints.iter().sum();
    if sum > cap {
        let scale = cap as f64 / sum as f64;
        ints.iter_mut()
            .for_each(|w| *w = ((*w as f64 * scale).floor() as u64).max(1));
    }
    ints.into_iter()
        .map(|w| w.min(u32::MAX as u64) as u32)
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// nginx's smooth weighted round robin, run once over a full cycle.
fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&w| w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best as u32);
    }
    seq
}

/// Maps a random `u64` uniformly onto `0..n` (Lemire's multiply-shift).
fn below(random: u64, n: usize) -> usize {
    ((random as u128 * n as u128) >> 64) as usize
}

impl Selector {
    /// Builds a snapshot with `config.strategy` over `candidates`. `rebuild_at` is when
    /// the caller must build a new one (the next slow-start step or ejection end).
    pub fn build(
        config: &BalanceConfig,
        candidates: Vec<Candidate>,
        rebuild_at: Option<Instant>,
    ) -> Selector {
        let mut pickable: Vec<usize> = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.eligibility == Eligibility::Eligible)
            .map(|(i, _)| i)
            .collect();
        let mut fail_open = false;
        if pickable.is_empty() && config.all_down == AllDownPolicy::FailOpen {
            // Prefer backends that answer; the unreachable and ejected ones only when no
            // backend answers at all (then a pick may still find one that came back).
            for tier in [Eligibility::Unavailable, Eligibility::Unreachable] {
                pickable = candidates
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.eligibility == tier)
                    .map(|(i, _)| i)
                    .collect();
                if !pickable.is_empty() {
                    break;
                }
            }
            fail_open = !pickable.is_empty();
        }
        let mut pickable_pos = vec![usize::MAX; candidates.len()];
        for (pos, &i) in pickable.iter().enumerate() {
            pickable_pos[i] = pos;
        }
        let weights: Vec<f64> = pickable
            .iter()
            .map(|&i| candidates[i].weight.max(f64::MIN_POSITIVE))
            .collect();
        let slots = pickable
            .iter()
            .zip(&weights)
            .map(|(&i, w)| Slot {
                id: candidates[i].id,
                load: Arc::clone(&candidates[i].load),
                inv_weight: 1.0 / w,
            })
            .collect();
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w;
                acc
            })
            .collect();
        let algo_kind = match config.strategy {
            StrategyKind::Sticky => config.sticky.fallback,
            other => other,
        };
        let algo = match algo_kind {
            StrategyKind::RoundRobin => Algo::RoundRobin,
            StrategyKind::WeightedRoundRobin => Algo::Smooth {
                sequence: smooth_sequence(&integer_weights(&weights, MAX_SEQUENCE)),
            },
            StrategyKind::LeastConnections => Algo::LeastConnections,
            StrategyKind::P2cPeakEwma => Algo::P2c,
            StrategyKind::Random => Algo::Random,
            StrategyKind::IpHash | StrategyKind::ConsistentHash => {
                let names: Vec<&str> = pickable.iter().map(|&i| &*candidates[i].name).collect();
                // Keep ~100 slots per backend at least for balance; the table raises a
                // size that is not prime.
                let size = config.hash.table_size.max(100 * names.len() as u32 + 1);
                // The per-round credit scheme needs integer weights; 100 distinct levels
                // per backend are plenty for slow start and keep filling rounds few.
                let ints = integer_weights(&weights, 100 * names.len().max(1) as u64);
                Algo::Maglev {
                    table: MaglevTable::build(&names, &ints, size),
                }
            }
            // Unreachable: sticky's fallback is validated not to be sticky; treat as P2C.
            StrategyKind::Sticky => Algo::P2c,
        };
        let by_name = (config.strategy == StrategyKind::Sticky).then(|| {
            candidates
                .iter()
                .enumerate()
                .map(|(i, c)| (Arc::clone(&c.name), i))
                .collect()
        });
        Selector {
            strategy: config.strategy,
            pickable,
            pickable_pos,
            slots,
            cumulative,
            algo,
            by_name,
            hash_by_ip: algo_kind == StrategyKind::IpHash,
            fail_open,
            cap: u64::from(config.max_in_flight_per_backend),
            counter: AtomicUsize::new(0),
            rebuild_at,
            all: candidates,
        }
    }

    /// The configured strategy.
    pub fn strategy(&self) -> StrategyKind {
        self.strategy
    }

    /// Every backend in the snapshot, pickable or not.
    pub fn candidates(&self) -> &[Candidate] {
        &self.all
    }

    /// How many backends picks choose from (0: every pick fails, answer 503).
    pub fn pickable_len(&self) -> usize {
        self.pickable.len()
    }

    /// Whether the snapshot is in fail-open mode (no backend eligible, health ignored).
    pub fn is_fail_open(&self) -> bool {
        self.fail_open
    }

    /// When the caller should build a new snapshot (slow-start step, ejection end).
    pub fn rebuild_at(&self) -> Option<Instant> {
        self.rebuild_at
    }

    /// Whether the snapshot is stale at `now` (see [`Selector::rebuild_at`]).
    pub fn needs_rebuild(&self, now: Instant) -> bool {
        self.rebuild_at.is_some_and(|at| now >= at)
    }

    /// The backend named `name`, if in the snapshot.
    pub fn find(&self, name: &str) -> Option<&Candidate> {
        match &self.by_name {
            Some(map) => map.get(name).map(|&i| &self.all[i]),
            None => self.all.iter().find(|c| &*c.name == name),
        }
    }

    /// Picks a backend for `req`, never one whose id is in `exclude` (the backends a
    /// retried request already tried) nor one at `max_in_flight_per_backend`. `None` when
    /// nothing is left: the proxy answers 503. [`Selector::try_pick`] says why.
    pub fn pick(
        &self,
        req: &PickRequest<'_>,
        exclude: &[BackendId],
        now: Instant,
    ) -> Option<Pick<'_>> {
        self.try_pick(req, exclude, now).ok()
    }

    /// [`Selector::pick`], telling an empty or all-excluded pool ([`NoPick::NoneLeft`])
    /// from one whose backends are all at the in-flight cap ([`NoPick::AllFull`]).
    pub fn try_pick(
        &self,
        req: &PickRequest<'_>,
        exclude: &[BackendId],
        now: Instant,
    ) -> Result<Pick<'_>, NoPick> {
        let n = self.pickable.len();
        if n == 0 {
            return Err(NoPick::NoneLeft);
        }
        let mut repin = false;
        if let Some(map) = &self.by_name {
            if let Some(i) = req.sticky.and_then(|name| map.get(name)).copied()
                && self.pickable_pos[i] != usize::MAX
                && !self.skipped(self.pickable_pos[i], exclude)
            {
                return Ok(Pick {
                    backend: &self.all[i],
                    repin: false,
                    fail_open: self.fail_open,
                });
            }
            repin = true;
        }
        match self.pick_pos(req, exclude, now) {
            Some(pos) => Ok(Pick {
                backend: &self.all[self.pickable[pos]],
                repin,
                fail_open: self.fail_open,
            }),
            // Off the hot path: tell "all full" from "all excluded".
            None if self.cap > 0 && (0..n).any(|p| !self.excluded(p, exclude)) => {
                Err(NoPick::AllFull)
            }
            None => Err(NoPick::NoneLeft),
        }
    }

    fn excluded(&self, pos: usize, exclude: &[BackendId]) -> bool {
        !exclude.is_empty() && exclude.contains(&self.slots[pos].id)
    }

    fn full(&self, pos: usize) -> bool {
        self.cap > 0 && self.slots[pos].load.in_flight() >= self.cap
    }

    /// Excluded or full: a pick must pass over it.
    fn skipped(&self, pos: usize, exclude: &[BackendId]) -> bool {
        self.excluded(pos, exclude) || self.full(pos)
    }

    /// `pos` if not skipped, else the next pickable position that is not.
    fn first_allowed_from(&self, pos: usize, exclude: &[BackendId]) -> Option<usize> {
        let n = self.pickable.len();
        (0..n)
            .map(|k| (pos + k) % n)
            .find(|&p| !self.skipped(p, exclude))
    }

    fn weighted_random(&self, random: u64) -> usize {
        let total = *self.cumulative.last().unwrap_or(&0.0);
        let x = (random >> 11) as f64 / (1u64 << 53) as f64 * total;
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.pickable.len() - 1)
    }

    fn pick_pos(
        &self,
        req: &PickRequest<'_>,
        exclude: &[BackendId],
        now: Instant,
    ) -> Option<usize> {
        let n = self.pickable.len();
        let pos = match &self.algo {
            Algo::RoundRobin => self.counter.fetch_add(1, Ordering::Relaxed) % n,
            Algo::Smooth { sequence } => {
                let k = self.counter.fetch_add(1, Ordering::Relaxed) % sequence.len();
                sequence[k] as usize
            }
            Algo::Random => self.weighted_random(req.random),
            Algo::LeastConnections => {
                // Scan from a random start and keep the first strict minimum, so ties go
                // to each tied backend with equal probability.
                let start = below(req.random, n);
                let mut best: Option<(usize, f64)> = None;
                for p in (start..n).chain(0..start) {
                    let slot = &self.slots[p];
                    if self.skipped(p, exclude) {
                        continue;
                    }
                    let score = slot.load.in_flight() as f64 * slot.inv_weight;
                    if best.is_none_or(|(_, b)| score < b) {
                        best = Some((p, score));
                    }
                }
                return best.map(|(p, _)| p);
            }
            Algo::P2c => {
                if n == 1 {
                    0
                } else {
                    let a = below(req.random, n);
                    let mut b = below(mix64(req.random), n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let a = self.first_allowed_from(a, exclude)?;
                    let b = self.first_allowed_from(b, exclude)?;
                    let cost = |p: usize| {
                        let slot = &self.slots[p];
                        slot.load.cost(now) * slot.inv_weight
                    };
                    return Some(if cost(b) < cost(a) { b } else { a });
                }
            }
            Algo::Maglev { table } => {
                let key_hash = if self.hash_by_ip {
                    req.client_ip.map(|ip| match ip {
                        IpAddr::V4(v4) => hash_bytes(0, &v4.octets()),
                        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                            Some(v4) => hash_bytes(0, &v4.octets()),
                            None => hash_bytes(0, &v6.octets()),
                        },
                    })
                } else {
                    req.hash_key.map(|k| hash_bytes(0, k))
                };
                match key_hash.and_then(|h| table.lookup(h)) {
                    Some(p) => p,
                    None => self.weighted_random(req.random),
                }
            }
        };
        self.first_allowed_from(pos, exclude)
    }
}

#[cfg(test)]
mod tests;

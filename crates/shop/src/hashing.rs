//! Password hashing: argon2id with fixed parameters, behind a concurrency bound sized
//! from memory, and a dummy hash so a login for an unknown user costs what a real one
//! costs.
//!
//! Parameters (argon2id, version 0x13): memory [`M_COST_KIB`] KiB (19 MiB), [`T_COST`]
//! passes, [`P_COST`] lane; the OWASP password-storage recommendation, and the `argon2`
//! crate's defaults, written out so an upgrade of the crate cannot change them silently.
//! Stored hashes carry their own parameters (PHC string), so verification of an old hash
//! keeps working if these change.
//!
//! Why a bound: each hash holds 19 MiB for its duration. Without a bound, 200 concurrent
//! logins took 4.49 GB. The bound is
//! [`permits_for`]: `min(2 x cores, memory budget / 19 MiB)`, at least 1. A request
//! that finds no free permit is refused at once with 503 and `Retry-After` (never queued:
//! a queue would only turn a flood into latency for everybody and memory for the queue).
//! The permit is taken before the user is looked up and travels into the blocking task,
//! so a client that disconnects mid-hash cannot free it early and let more run.
//!
//! Why the memory is reused: a bound on concurrency alone was not enough. Letting the
//! `argon2` crate allocate 19 MiB per hash and free it again grew the heap to 590-670 MiB
//! under a login flood with only 4 hashes at once (glibc's dynamic mmap threshold moves
//! such blocks onto the heap, where they fragment between small live allocations; the
//! same with one arena). So each permit's holder borrows one of at most `permits`
//! 19 MiB buffers from a pool, allocated once and kept: hashing memory is
//! `permits x 19 MiB`, full stop. A stored hash with a larger memory cost than ours (an
//! older parameter set) is verified with a one-off allocation.
//!
//! Why per-client shares: a global bound alone let 8 threads from one address sending
//! wrong passwords hold all 4 permits, so every real login got 503. So a permit is also
//! counted against the client's address and against the username, in two fixed-size
//! tables of counters ([`FAIR_TABLE_SLOTS`] each, indexed by a keyed hash with a
//! per-process random key, so memory is constant and an attacker cannot aim collisions):
//! one address holds at most half the permits ([`ClientShares::ip_cap`]), one username
//! at most all but one ([`ClientShares::user_cap`]). A client over its share gets 429 with
//! `Retry-After` at once. So a flood from one address always leaves half the permits to
//! everybody else, and a flood against one account from many addresses leaves one permit
//! to the other accounts (and the per-address share keeps a single-address flood against
//! an account from locking its owner out). IPv6 clients are keyed by their /64 (one host
//! usually has a whole /64). The address is the TCP peer's, unless the peer is one of
//! `trusted_proxies` (the balancer): then it is the right-most `X-Forwarded-For` entry
//! not itself a trusted proxy.
//!
//! Must never: hash on an async worker thread, or hold a permit across anything but the
//! lookup and the hash.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{AppError, ShopError};

/// argon2id memory cost, KiB.
pub const M_COST_KIB: u32 = 19 * 1024;
/// argon2id passes.
pub const T_COST: u32 = 2;
/// argon2id lanes.
pub const P_COST: u32 = 1;
/// Memory one hash holds, MiB (rounded up).
pub const HASH_MEMORY_MIB: u64 = (M_COST_KIB as u64).div_ceil(1024);
/// `Retry-After` sent with a 503 when every permit is taken, seconds.
pub const RETRY_AFTER_S: u64 = 1;

/// How many hashes may run at once: `min(2 x cores, budget_mib / HASH_MEMORY_MIB)`, at
/// least 1.
pub fn permits_for(cores: usize, budget_mib: u64) -> usize {
    let by_memory = (budget_mib / HASH_MEMORY_MIB) as usize;
    cores.saturating_mul(2).min(by_memory).max(1)
}

fn params() -> Params {
    // The constants are valid argon2 parameters (checked by the unit test below).
    Params::new(M_COST_KIB, T_COST, P_COST, None).unwrap_or_default()
}

/// Working memory for one hash with our parameters (19 MiB).
fn new_memory() -> Vec<Block> {
    vec![Block::default(); params().block_count()]
}

/// Hashes a password with argon2id and a random salt into a PHC string, using `memory`
/// as the working memory (CPU-heavy: call off the runtime, holding a permit).
pub fn hash_password_with(password: &str, memory: &mut Vec<Block>) -> Result<String, ShopError> {
    use rand::RngCore;
    let internal = |e: &dyn std::fmt::Display| ShopError::Internal(format!("hashing: {e}"));
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt_b64 = SaltString::encode_b64(&salt).map_err(|e| internal(&e))?;
    let params = params();
    let n = params.block_count();
    if memory.len() < n {
        memory.resize(n, Block::default());
    }
    let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    a.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut memory[..n])
        .map_err(|e| internal(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| internal(&e))?,
        salt: Some(salt_b64.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| internal(&e))?),
    };
    Ok(phc.to_string())
}

/// Checks a password against a stored argon2 PHC string, using `memory` as the working
/// memory when it is large enough (CPU-heavy: call off the runtime). The comparison is
/// constant-time (`Output`'s `PartialEq`).
pub fn verify_password_with(password: &str, stored: &str, memory: &mut [Block]) -> bool {
    let mut check = || -> Option<bool> {
        let h = PasswordHash::new(stored).ok()?;
        let algorithm = Algorithm::try_from(h.algorithm).ok()?;
        let version = match h.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&h).ok()?;
        let expected = h.hash?;
        let mut salt_buf = [0u8; 64];
        let salt = h.salt?.decode_b64(&mut salt_buf).ok()?;
        let a = Argon2::new(algorithm, version, params.clone());
        let n = params.block_count();
        let mut one_off;
        let blocks: &mut [Block] = if memory.len() >= n {
            &mut memory[..n]
        } else {
            one_off = vec![Block::default(); n];
            &mut one_off
        };
        let computed = Output::init_with(expected.len(), |out| {
            a.hash_password_into_with_memory(password.as_bytes(), salt, out, &mut *blocks)
                .map_err(|_| argon2::password_hash::Error::Password)
        })
        .ok()?;
        Some(computed == expected)
    };
    check().unwrap_or(false)
}

/// [`hash_password_with`] on freshly allocated memory (tests, tools).
pub fn hash_password(password: &str) -> Result<String, ShopError> {
    hash_password_with(password, &mut new_memory())
}

/// [`verify_password_with`] on freshly allocated memory (tests, tools).
pub fn verify_password(password: &str, hash: &str) -> bool {
    verify_password_with(password, hash, &mut new_memory())
}

/// Counters per table of [`ClientShares`] (4 bytes each).
pub const FAIR_TABLE_SLOTS: usize = 4096;

/// Hash permits held per client address and per username, in fixed-size tables.
#[derive(Debug)]
pub struct ClientShares {
    by_ip: Box<[AtomicU32]>,
    by_user: Box<[AtomicU32]>,
    keys: std::collections::hash_map::RandomState,
    ip_cap: u32,
    user_cap: u32,
}

impl ClientShares {
    /// Shares of `permits`: half per address, all but one per username (at least 1).
    pub fn new(permits: usize) -> ClientShares {
        let table = || (0..FAIR_TABLE_SLOTS).map(|_| AtomicU32::new(0)).collect();
        let permits = permits.max(1) as u32;
        ClientShares {
            by_ip: table(),
            by_user: table(),
            keys: std::collections::hash_map::RandomState::new(),
            ip_cap: (permits / 2).max(1),
            user_cap: (permits - 1).max(1),
        }
    }

    /// Permits one address may hold.
    pub fn ip_cap(&self) -> u32 {
        self.ip_cap
    }

    /// Permits one username may hold.
    pub fn user_cap(&self) -> u32 {
        self.user_cap
    }

    fn ip_slot(&self, ip: IpAddr) -> usize {
        let key: u128 = match ip {
            IpAddr::V4(v4) => u32::from(v4) as u128,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => u32::from(v4) as u128,
                // The /64, tagged so it cannot equal an IPv4 key.
                None => (u128::from(v6) & !((1u128 << 64) - 1)) | 1,
            },
        };
        self.keys.hash_one(key) as usize % FAIR_TABLE_SLOTS
    }

    fn user_slot(&self, username: &str) -> usize {
        self.keys.hash_one(("user", username)) as usize % FAIR_TABLE_SLOTS
    }

    /// Counts one permit against `table[slot]` unless that would pass `cap`.
    fn take(table: &[AtomicU32], slot: usize, cap: u32) -> bool {
        if table[slot].fetch_add(1, Ordering::AcqRel) >= cap {
            table[slot].fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// One password-hash permit: the global one and the client's shares, all released on
/// drop (also when the hash task panics).
pub struct HashPermit {
    _global: OwnedSemaphorePermit,
    shares: Arc<ClientShares>,
    ip_slot: Option<usize>,
    user_slot: usize,
}

impl Drop for HashPermit {
    fn drop(&mut self) {
        if let Some(i) = self.ip_slot {
            self.shares.by_ip[i].fetch_sub(1, Ordering::AcqRel);
        }
        self.shares.by_user[self.user_slot].fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for HashPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashPermit")
    }
}

/// The bounded hasher of one instance.
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Permits held per client address and username.
    shares: Arc<ClientShares>,
    /// Requests refused with 429 because their client held its share.
    client_shed: AtomicU64,
    /// Working memory, one buffer per running hash, allocated once and reused. Never
    /// more than `size` buffers exist, because a buffer is taken only under a permit.
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    size: usize,
    /// A hash of a random password with the current parameters: unknown users are
    /// verified against it, so their login costs one hash too.
    dummy: String,
    shed: AtomicU64,
}

impl Hasher {
    /// A hasher allowing `permits` concurrent hashes (computes the dummy hash: one hash
    /// of start-up time).
    pub fn new(permits: usize) -> Result<Self, ShopError> {
        let permits = permits.max(1);
        let dummy = hash_password(&crate::secret::generate_key()?)?;
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(permits)),
            shares: Arc::new(ClientShares::new(permits)),
            client_shed: AtomicU64::new(0),
            memory: Arc::new(Mutex::new(Vec::with_capacity(permits))),
            size: permits,
            dummy,
            shed: AtomicU64::new(0),
        })
    }

    /// Configured concurrent hashes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Hashes running now.
    pub fn in_flight(&self) -> usize {
        self.size.saturating_sub(self.permits.available_permits())
    }

    /// Requests refused with 503 so far.
    pub fn shed_total(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Requests refused with 429 so far (their address or username held its share).
    pub fn client_shed_total(&self) -> u64 {
        self.client_shed.load(Ordering::Relaxed)
    }

    /// The per-client shares.
    pub fn shares(&self) -> &ClientShares {
        &self.shares
    }

    /// The hasher's lines of the Prometheus page.
    pub fn render_metrics(&self, instance: &str) -> String {
        let inst = crate::metrics::escape(instance);
        format!(
            "# HELP shop_password_hash_permits Concurrent password hashes: allowed and running.\n\
             # TYPE shop_password_hash_permits gauge\n\
             shop_password_hash_permits{{instance=\"{inst}\",state=\"max\"}} {}\n\
             shop_password_hash_permits{{instance=\"{inst}\",state=\"in_use\"}} {}\n\
             # HELP shop_password_hash_shed_total Signups and logins refused with 503 because every hash permit was taken.\n\
             # TYPE shop_password_hash_shed_total counter\n\
             shop_password_hash_shed_total{{instance=\"{inst}\"}} {}\n\
             # HELP shop_password_hash_client_shed_total Signups and logins refused with 429 because their address or username held its share of the permits.\n\
             # TYPE shop_password_hash_client_shed_total counter\n\
             shop_password_hash_client_shed_total{{instance=\"{inst}\"}} {}\n",
            self.size,
            self.in_flight(),
            self.shed_total(),
            self.client_shed_total()
        )
    }

    /// A permit for one hash for `client` (its address, when known) and `username`:
    /// [`AppError::ClientShare`] (429) at once when the address or the username holds its
    /// share, [`AppError::Overloaded`] (503) at once when every permit is taken.
    pub fn try_permit(
        &self,
        client: Option<IpAddr>,
        username: &str,
    ) -> Result<HashPermit, AppError> {
        let shares = &self.shares;
        let refuse_client = || {
            self.client_shed.fetch_add(1, Ordering::Relaxed);
            AppError::ClientShare {
                what: "password hashing",
                retry_after_s: RETRY_AFTER_S,
            }
        };
        let ip_slot = client.map(|ip| shares.ip_slot(ip));
        if let Some(i) = ip_slot
            && !ClientShares::take(&shares.by_ip, i, shares.ip_cap)
        {
            return Err(refuse_client());
        }
        let user_slot = shares.user_slot(username);
        let release_ip = || {
            if let Some(i) = ip_slot {
                shares.by_ip[i].fetch_sub(1, Ordering::AcqRel);
            }
        };
        if !ClientShares::take(&shares.by_user, user_slot, shares.user_cap) {
            release_ip();
            return Err(refuse_client());
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(global) => Ok(HashPermit {
                _global: global,
                shares: self.shares.clone(),
                ip_slot,
                user_slot,
            }),
            Err(_) => {
                release_ip();
                shares.by_user[user_slot].fetch_sub(1, Ordering::AcqRel);
                self.shed.fetch_add(1, Ordering::Relaxed);
                Err(AppError::Overloaded {
                    what: "password hashing",
                    retry_after_s: RETRY_AFTER_S,
                })
            }
        }
    }

    /// Hashes `password` on the blocking pool, holding `permit` until the hash is done.
    pub async fn hash(&self, permit: HashPermit, password: String) -> Result<String, AppError> {
        let pool = self.memory.clone();
        let h = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut mem = MemoryLoan::take(pool);
            hash_password_with(&password, &mut mem.0)
        })
        .await
        .map_err(|e| ShopError::Internal(format!("hash task: {e}")))??;
        Ok(h)
    }

    /// Verifies `password` against `stored`, or against the dummy hash when `stored` is
    /// `None` (then the answer is always `false`, after the same work).
    pub async fn verify(
        &self,
        permit: HashPermit,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, AppError> {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.clone());
        let pool = self.memory.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut mem = MemoryLoan::take(pool);
            verify_password_with(&password, &hash, &mut mem.0)
        })
        .await
        .map_err(|e| ShopError::Internal(format!("verify task: {e}")))?;
        Ok(ok && known)
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("size", &self.size)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// One working-memory buffer borrowed from the pool; returned on drop (also when the
/// hash panics), so the pool never loses or duplicates a buffer.
struct MemoryLoan(Vec<Block>, Arc<Mutex<Vec<Vec<Block>>>>);

impl MemoryLoan {
    fn take(pool: Arc<Mutex<Vec<Vec<Block>>>>) -> Self {
        let buf = pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(new_memory);
        MemoryLoan(buf, pool)
    }
}

impl Drop for MemoryLoan {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        self.1.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_valid_and_written_into_the_hash() {
        assert!(Params::new(M_COST_KIB, T_COST, P_COST, None).is_ok());
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_eq!(HASH_MEMORY_MIB, 19);
        // Reused memory gives the same answers; a hash made by the `argon2` crate's own
        // PHC code (other salt, same parameters) verifies with ours and vice versa.
        let mut mem = new_memory();
        let h2 = hash_password_with("correct horse", &mut mem).unwrap();
        assert!(verify_password_with("correct horse", &h2, &mut mem));
        assert!(!verify_password_with("correct horsE", &h2, &mut mem));
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password_with("pw", &theirs, &mut mem));
        let ours = PasswordHash::new(&h2).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &ours)
                .is_ok()
        );
        // A stored hash with a larger memory cost than our buffer still verifies.
        let big = Params::new(M_COST_KIB * 2, 1, 1, None).unwrap();
        let bigger = Argon2::new(Algorithm::Argon2id, Version::V0x13, big)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password_with("pw", &bigger, &mut mem));
    }

    #[test]
    fn permits_follow_cores_and_memory() {
        assert_eq!(permits_for(2, 128), 4);
        assert_eq!(permits_for(16, 128), 6);
        assert_eq!(permits_for(16, 19), 1);
        assert_eq!(permits_for(0, 0), 1);
    }

    #[tokio::test]
    async fn excess_is_refused_at_once_and_unknown_users_never_verify() {
        let h = Hasher::new(1).unwrap();
        let p = h.try_permit(None, "a").unwrap();
        let e = h.try_permit(None, "b").unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.shed_total(), 1);
        assert_eq!(h.in_flight(), 1);
        // The dummy hash's password is random: nothing verifies against it.
        assert!(!h.verify(p, "".into(), None).await.unwrap());
        assert_eq!(h.in_flight(), 0, "the permit is returned after the hash");
        let stored = hash_password("pw-123456").unwrap();
        let p = h.try_permit(None, "a").unwrap();
        assert!(h.verify(p, "pw-123456".into(), Some(stored)).await.unwrap());
    }

    #[test]
    fn one_address_or_username_holds_at_most_its_share() {
        let h = Hasher::new(4).unwrap();
        assert_eq!((h.shares().ip_cap(), h.shares().user_cap()), (2, 3));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = h.try_permit(Some(a), "x1").unwrap();
        let p2 = h.try_permit(Some(a), "x2").unwrap();
        let e = h.try_permit(Some(a), "x3").unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h.in_flight(), 2, "a refused share takes no global permit");
        // Another address still gets the other half.
        let p3 = h.try_permit(Some(b), "y").unwrap();
        drop(p1);
        let p4 = h.try_permit(Some(a), "x3").unwrap();
        drop((p2, p3, p4));
        assert_eq!(h.in_flight(), 0);
        // One username from many addresses: all but one permit.
        let held: Vec<HashPermit> = (1..=3)
            .map(|i| {
                h.try_permit(Some(IpAddr::from([10, 0, 0, i])), "victim")
                    .unwrap()
            })
            .collect();
        let e = h
            .try_permit(Some(IpAddr::from([10, 0, 0, 9])), "victim")
            .unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        let other = h
            .try_permit(Some(IpAddr::from([10, 0, 0, 9])), "other")
            .unwrap();
        assert_eq!(h.in_flight(), 4);
        let e = h
            .try_permit(Some(IpAddr::from([10, 0, 0, 10])), "third")
            .unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        drop((held, other));
        assert_eq!(h.in_flight(), 0);
        assert_eq!(h.client_shed_total(), 2);
        // Every counter is back to zero (no leak on refusal or release).
        let s = h.shares();
        assert!(
            s.by_ip
                .iter()
                .chain(s.by_user.iter())
                .all(|c| c.load(Ordering::Relaxed) == 0)
        );
        // An IPv6 /64 is one client.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(s.ip_slot(v6a), s.ip_slot(v6b));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(s.ip_slot(mapped), s.ip_slot(a));
    }
}

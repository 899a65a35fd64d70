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
//! Must never: hash on an async worker thread, or hold a permit across anything but the
//! lookup and the hash.

use std::sync::atomic::{AtomicU64, Ordering};
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

/// The bounded hasher of one instance.
pub struct Hasher {
    permits: Arc<Semaphore>,
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
             shop_password_hash_shed_total{{instance=\"{inst}\"}} {}\n",
            self.size,
            self.in_flight(),
            self.shed_total()
        )
    }

    /// A permit for one hash, or [`AppError::Overloaded`] at once when all are taken.
    pub fn try_permit(&self) -> Result<OwnedSemaphorePermit, AppError> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            self.shed.fetch_add(1, Ordering::Relaxed);
            AppError::Overloaded {
                what: "password hashing",
                retry_after_s: RETRY_AFTER_S,
            }
        })
    }

    /// Hashes `password` on the blocking pool, holding `permit` until the hash is done.
    pub async fn hash(
        &self,
        permit: OwnedSemaphorePermit,
        password: String,
    ) -> Result<String, AppError> {
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
        permit: OwnedSemaphorePermit,
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
        let p = h.try_permit().unwrap();
        let e = h.try_permit().unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.shed_total(), 1);
        assert_eq!(h.in_flight(), 1);
        // The dummy hash's password is random: nothing verifies against it.
        assert!(!h.verify(p, "".into(), None).await.unwrap());
        assert_eq!(h.in_flight(), 0, "the permit is returned after the hash");
        let stored = hash_password("pw-123456").unwrap();
        let p = h.try_permit().unwrap();
        assert!(h.verify(p, "pw-123456".into(), Some(stored)).await.unwrap());
    }
}

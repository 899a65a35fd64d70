//! Cache and session key names, in one place.
//!
//! Every key of one user carries the hash tag `{user:ID}` so that all of them live in the
//! same Redis Cluster slot (multi-key operations and locality work). Keys start with the
//! configured prefix so several shops can share one Redis. Never build a key elsewhere.

/// Key of a user's profile (`GET /me`).
pub fn profile(prefix: &str, user_id: i64) -> String {
    format!("{prefix}:{{user:{user_id}}}:profile")
}

/// Key of a stored session (`sid` is the random part of the token).
pub fn session(prefix: &str, user_id: i64, sid: &str) -> String {
    format!("{prefix}:{{user:{user_id}}}:session:{sid}")
}

/// Key of a user's read-your-writes mark (the primary's WAL position after their last write).
pub fn ryw_mark(prefix: &str, user_id: i64) -> String {
    format!("{prefix}:{{user:{user_id}}}:lsn")
}

/// Key of one product's description (catalog class).
pub fn product(prefix: &str, product_id: i64) -> String {
    format!("{prefix}:product:{product_id}")
}

/// Key of one product's stock (stock class).
pub fn stock(prefix: &str, product_id: i64) -> String {
    format!("{prefix}:stock:{product_id}")
}

/// Key of a catalog listing; `None` is the whole catalog.
pub fn catalog(prefix: &str, category: Option<&str>) -> String {
    match category {
        Some(c) => format!("{prefix}:catalog:cat:{c}"),
        None => format!("{prefix}:catalog:all"),
    }
}

/// Key of the stampede lock guarding `key`'s recomputation. Same hash tag as `key`.
pub fn lock(key: &str) -> String {
    format!("{key}:lock")
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of the hash tag, mod 16384).
pub fn cluster_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for b in tagged {
        crc ^= (*b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keys_share_a_slot() {
        let s = cluster_slot(&profile("shop", 42));
        assert_eq!(s, cluster_slot(&session("shop", 42, "abc")));
        assert_eq!(s, cluster_slot(&ryw_mark("other", 42)));
        assert_eq!(s, cluster_slot(&lock(&profile("shop", 42))));
        // Known value from the Redis docs' CRC16 test vector.
        assert_eq!(cluster_slot("123456789"), 0x31C3);
    }
}

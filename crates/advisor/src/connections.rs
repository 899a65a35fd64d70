//! Connection math: instances × pool size must stay under the database's
//! max_connections, with room for superuser and maintenance connections.

use serde::{Deserialize, Serialize};

/// The result of the check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionCheck {
    /// instances × pool_size.
    pub needed: u64,
    /// max_connections − reserved.
    pub available: u64,
    /// True when `needed` fits.
    pub ok: bool,
    /// Largest pool per instance that fits at this instance count.
    pub max_pool_per_instance: u64,
    /// Largest instance count that fits at this pool size.
    pub max_instances: u64,
    /// One sentence for the report.
    pub message: String,
}

/// Checks `instances × pool_size` against `max_connections − reserved`.
pub fn check(
    instances: u64,
    pool_size: u64,
    max_connections: u64,
    reserved: u64,
) -> ConnectionCheck {
    let needed = instances.saturating_mul(pool_size);
    let available = max_connections.saturating_sub(reserved);
    let ok = needed <= available;
    let max_pool_per_instance = available.checked_div(instances).unwrap_or(available);
    let max_instances = available.checked_div(pool_size).unwrap_or(u64::MAX);
    let message = if ok {
        format!(
            "{instances} instances × pool {pool_size} = {needed} connections of {available} available (max_connections {max_connections} − {reserved} reserved): fits; at most {max_instances} instances at this pool size"
        )
    } else {
        format!(
            "{instances} instances × pool {pool_size} = {needed} connections exceed {available} available (max_connections {max_connections} − {reserved} reserved): use a pool of at most {max_pool_per_instance} per instance, or put a pooler (PgBouncer, transaction mode) in front"
        )
    };
    ConnectionCheck {
        needed,
        available,
        ok,
        max_pool_per_instance,
        max_instances,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_limit_is_refused_with_the_fix() {
        let c = check(12, 10, 100, 3);
        assert!(!c.ok);
        assert_eq!(c.needed, 120);
        assert_eq!(c.max_pool_per_instance, 8);
        assert!(c.message.contains("PgBouncer"));
    }

    #[test]
    fn within_the_limit_fits() {
        let c = check(8, 10, 100, 3);
        assert!(c.ok);
        assert_eq!(c.max_instances, 9);
    }
}

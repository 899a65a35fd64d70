//! Price table: what each instance size costs per month, for the decision's options.
//!
//! The bundled table (`prices.toml`) is illustrative and editable; nothing in the
//! advisor hard-codes a price.

use serde::{Deserialize, Serialize};

use crate::AdvisorError;

/// The bundled price table.
pub const DEFAULT_PRICES: &str = include_str!("../prices.toml");

/// One instance size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// Size name, e.g. `app.xlarge`.
    pub name: String,
    /// Virtual CPUs.
    pub vcpu: u32,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Monthly price in the table's currency.
    pub monthly: f64,
}

/// A provider's prices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Currency label for output.
    pub currency: String,
    /// Monthly price of a load balancer.
    pub balancer_monthly: f64,
    /// Monthly price of one cache node (e.g. a small Redis).
    pub cache_node_monthly: f64,
    /// Application instance family, any order.
    pub app: Vec<Size>,
    /// Database instance family, any order.
    pub database: Vec<Size>,
}

impl PriceTable {
    /// Parses and validates a table, naming the offending field.
    pub fn parse(text: &str) -> Result<PriceTable, AdvisorError> {
        let mut t: PriceTable = toml::from_str(text)
            .map_err(|e| AdvisorError::BadInput(format!("price table: {e}")))?;
        for (fam, sizes) in [("app", &mut t.app), ("database", &mut t.database)] {
            if sizes.is_empty() {
                return Err(AdvisorError::BadInput(format!(
                    "price table: [[{fam}]] must list at least one size"
                )));
            }
            for (i, s) in sizes.iter().enumerate() {
                if s.vcpu == 0 {
                    return Err(AdvisorError::BadInput(format!(
                        "price table: {fam}[{i}].vcpu must be >= 1"
                    )));
                }
                if !(s.monthly.is_finite() && s.monthly > 0.0) {
                    return Err(AdvisorError::BadInput(format!(
                        "price table: {fam}[{i}].monthly must be > 0"
                    )));
                }
            }
            sizes.sort_by_key(|s| s.vcpu);
        }
        Ok(t)
    }

    /// The bundled table.
    pub fn bundled() -> PriceTable {
        PriceTable::parse(DEFAULT_PRICES).expect("bundled price table is valid")
    }

    /// An app size by name.
    pub fn app_size(&self, name: &str) -> Option<&Size> {
        self.app.iter().find(|s| s.name == name)
    }

    /// A database size by name.
    pub fn db_size(&self, name: &str) -> Option<&Size> {
        self.database.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_table_is_super_linear_at_the_top() {
        let t = PriceTable::bundled();
        let per_cpu: Vec<f64> = t.app.iter().map(|s| s.monthly / s.vcpu as f64).collect();
        assert!(per_cpu.last().unwrap() > &(per_cpu[1] * 1.2), "{per_cpu:?}");
        assert!(t.app.windows(2).all(|w| w[0].vcpu < w[1].vcpu));
    }

    #[test]
    fn invalid_table_names_the_field() {
        let e = PriceTable::parse(
            "currency='X'\nbalancer_monthly=1.0\ncache_node_monthly=1.0\n[[app]]\nname='a'\nvcpu=0\nmemory_gib=1.0\nmonthly=1.0\n[[database]]\nname='d'\nvcpu=1\nmemory_gib=1.0\nmonthly=1.0\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("app[0].vcpu"), "{e}");
        // A complete table plus one unknown key: only deny_unknown_fields can refuse it.
        let e = PriceTable::parse(&format!("bogus = 1\n{DEFAULT_PRICES}")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}

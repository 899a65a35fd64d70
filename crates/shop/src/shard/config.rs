//! The shard map: which databases hold per-user data and how users are routed to them.
//!
//! Parsed from TOML (`scaleout shop reshard --from FILE --to FILE`, or a `[shards]` section)
//! and validated once; every error names the field. This module never opens a connection:
//! [`super::ShardSet::connect`] does that from a validated map.
//!
//! ```toml
//! [[shards]]
//! name = "s0"                       # identity on the consistent-hash ring and in the directory
//! url = "sqlite:/var/lib/shop/s0.db" # or postgres://postgres@127.0.0.1:5432/shop_s0
//! [[shards]]
//! name = "s1"
//! url = "sqlite:/var/lib/shop/s1.db"
//!
//! [router]
//! kind = "consistent"               # hash | range | consistent | directory
//! virtual_nodes = 160               # consistent only
//! # kind = "range", upper_bounds = [100000]          (shards - 1 increasing bounds)
//! # kind = "directory", url = "sqlite:dir.db", default = { kind = "hash" }
//! ```

use serde::Deserialize;

use super::ShardError;
use super::router::{
    ConsistentRouter, DEFAULT_VIRTUAL_NODES, HashRouter, RangeRouter, ShardRouter,
};

/// One shard: a database holding the carts and orders of the users routed to it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSpec {
    /// Stable name of the shard (ring points and directory entries use it, so renaming a
    /// shard moves users; changing its url does not).
    pub name: String,
    /// `sqlite:PATH` or `postgres://...`. Two maps naming the same url mean the same
    /// physical database.
    pub url: String,
}

/// How users are routed to shards.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RouterSpec {
    /// `mix64(user_id) mod N`.
    Hash {},
    /// Contiguous id ranges.
    Range {
        /// Exclusive upper bounds, strictly increasing, one fewer than there are shards.
        upper_bounds: Vec<i64>,
    },
    /// Hash ring with virtual nodes placed by shard name.
    Consistent {
        /// Points per shard on the ring (default 160, at most 10,000).
        #[serde(default)]
        virtual_nodes: Option<u32>,
    },
    /// Explicit user → shard entries in a directory database, `default` for the rest.
    Directory {
        /// The directory database (`sqlite:PATH` or `postgres://...`); table
        /// `shard_directory(user_id BIGINT PRIMARY KEY, shard TEXT)` (created if missing).
        url: String,
        /// Router for users without an entry (any kind but `directory`).
        default: Box<RouterSpec>,
    },
}

/// Which databases hold per-user data and how users map onto them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardMap {
    /// The shards, in order (a router's `ShardId` indexes this list).
    pub shards: Vec<ShardSpec>,
    /// The routing rule.
    pub router: RouterSpec,
}

/// The most shards a map may list (a bound, not a design limit).
pub const MAX_SHARDS: usize = 1024;

impl ShardMap {
    /// Parses and validates a TOML shard map.
    pub fn from_toml(text: &str) -> Result<Self, ShardError> {
        let map: ShardMap = toml::from_str(text).map_err(|e| ShardError::Config {
            field: "shard map".into(),
            reason: e.to_string(),
        })?;
        map.validate()?;
        Ok(map)
    }

    /// Reads, parses and validates a TOML shard map file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ShardError> {
        let text = std::fs::read_to_string(path).map_err(|e| ShardError::Config {
            field: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ShardError::Config { field, reason } => ShardError::Config {
                field: format!("{}: {field}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// Checks the map; the error names the offending field.
    pub fn validate(&self) -> Result<(), ShardError> {
        let bad = |field: String, reason: &str| {
            Err(ShardError::Config {
                field,
                reason: reason.to_string(),
            })
        };
        if self.shards.is_empty() {
            return bad("shards".into(), "at least one shard is needed");
        }
        if self.shards.len() > MAX_SHARDS {
            return bad("shards".into(), "more than 1024 shards");
        }
        for (i, s) in self.shards.iter().enumerate() {
            if s.name.trim().is_empty() || s.name.contains(['{', '}', '#']) {
                return bad(
                    format!("shards[{i}].name"),
                    "must be non-empty without `{`, `}` or `#`",
                );
            }
            if !(s.url.starts_with("sqlite:")
                || s.url.starts_with("postgres://")
                || s.url.starts_with("postgresql://"))
            {
                return bad(
                    format!("shards[{i}].url"),
                    "must start with sqlite: or postgres://",
                );
            }
            if self.shards[..i].iter().any(|o| o.name == s.name) {
                return bad(format!("shards[{i}].name"), "duplicate shard name");
            }
            if self.shards[..i].iter().any(|o| o.url == s.url) {
                return bad(format!("shards[{i}].url"), "duplicate shard url");
            }
        }
        validate_router(&self.router, "router", self.shards.len(), true)
    }

    /// Builds the router of a map whose kind is not `directory` (a directory needs its
    /// database: use [`super::ShardSet::connect`] or [`super::ShardSet::router_for`]).
    pub fn static_router(&self) -> Result<Box<dyn ShardRouter>, ShardError> {
        build_static(&self.router, &self.shards)
    }

    /// Position of the shard named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.shards.iter().position(|s| s.name == name)
    }
}

fn validate_router(
    spec: &RouterSpec,
    field: &str,
    shards: usize,
    top: bool,
) -> Result<(), ShardError> {
    let bad = |f: String, reason: String| Err(ShardError::Config { field: f, reason });
    match spec {
        RouterSpec::Hash {} => Ok(()),
        RouterSpec::Range { upper_bounds } => {
            if upper_bounds.len() + 1 != shards {
                return bad(
                    format!("{field}.upper_bounds"),
                    format!(
                        "{} bounds for {shards} shards; need exactly shards - 1",
                        upper_bounds.len()
                    ),
                );
            }
            if upper_bounds.windows(2).any(|w| w[0] >= w[1]) {
                return bad(
                    format!("{field}.upper_bounds"),
                    "must be strictly increasing".into(),
                );
            }
            Ok(())
        }
        RouterSpec::Consistent { virtual_nodes } => match virtual_nodes {
            Some(0) | Some(10_001..) => bad(
                format!("{field}.virtual_nodes"),
                "must be between 1 and 10000".into(),
            ),
            _ => Ok(()),
        },
        RouterSpec::Directory { url, default } => {
            if !top {
                return bad(
                    format!("{field}.kind"),
                    "a directory's default cannot be another directory".into(),
                );
            }
            if !(url.starts_with("sqlite:") || url.starts_with("postgres")) {
                return bad(
                    format!("{field}.url"),
                    "must start with sqlite: or postgres://".into(),
                );
            }
            validate_router(default, &format!("{field}.default"), shards, false)
        }
    }
}

pub(super) fn build_static(
    spec: &RouterSpec,
    shards: &[ShardSpec],
) -> Result<Box<dyn ShardRouter>, ShardError> {
    Ok(match spec {
        RouterSpec::Hash {} => Box::new(HashRouter::new(shards.len())),
        RouterSpec::Range { upper_bounds } => Box::new(RangeRouter::new(upper_bounds.clone())),
        RouterSpec::Consistent { virtual_nodes } => {
            let names: Vec<&str> = shards.iter().map(|s| s.name.as_str()).collect();
            Box::new(ConsistentRouter::new(
                &names,
                virtual_nodes.unwrap_or(DEFAULT_VIRTUAL_NODES),
            ))
        }
        RouterSpec::Directory { .. } => {
            return Err(ShardError::Config {
                field: "router.kind".into(),
                reason: "a directory router needs its database (use ShardSet::connect)".into(),
            });
        }
    })
}

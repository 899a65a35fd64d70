//! The advisor: measure, fit the Universal Scalability Law, name the bottleneck tier,
//! and say scale up, scale out or refactor first — with the cost of each.
//!
//! Pure: every function takes measurements and returns conclusions. Running a sweep
//! (with the load generator) is the binary's job; this crate never does I/O beyond
//! parsing text it is given.

pub mod bottleneck;
pub mod connections;
pub mod cost;
pub mod csv;
pub mod decision;
pub mod finite;
pub mod knee;
pub mod plan;
pub mod scaling;
pub mod sweep;
pub mod usl;

/// Errors from the advisor: all are bad input, named.
#[derive(Debug, thiserror::Error)]
pub enum AdvisorError {
    /// Input that cannot be used, with the field or point named.
    #[error("{0}")]
    BadInput(String),
}

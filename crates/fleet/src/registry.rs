//! The fleet's view of the balancer: admit, drain and remove backends; read its metrics.
//!
//! A small trait so the supervisor does not depend on how the balancer is reached (in
//! process through `proxy::ProxyHandle` in `scaleout up`, or nowhere for a fleet run on
//! its own). It must never hide a failure: every call returns what the balancer said.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::FleetError;

/// Where instances are registered once ready and drained before they stop.
pub trait Registry: Clone + Send + Sync + 'static {
    /// Admits a ready instance (the balancer applies slow start to new backends).
    fn add(&self, name: &str, addr: SocketAddr, weight: u32) -> Result<(), FleetError>;
    /// Stops sending new requests to `name`, waits (at most `grace`) for its in-flight
    /// requests to finish, and removes it.
    fn drain(
        &self,
        name: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), FleetError>> + Send;
    /// Removes `name` at once (it crashed: there is nothing to drain).
    fn remove(&self, name: &str) -> Result<(), FleetError>;
}

/// No balancer: instances are supervised but not registered anywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBalancer;

impl Registry for NoBalancer {
    fn add(&self, _name: &str, _addr: SocketAddr, _weight: u32) -> Result<(), FleetError> {
        Ok(())
    }
    async fn drain(&self, _name: &str, _grace: Duration) -> Result<(), FleetError> {
        Ok(())
    }
    fn remove(&self, _name: &str) -> Result<(), FleetError> {
        Ok(())
    }
}

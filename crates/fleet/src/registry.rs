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

/// The in-process balancer of `scaleout up`.
impl Registry for proxy::ProxyHandle {
    fn add(&self, name: &str, addr: SocketAddr, weight: u32) -> Result<(), FleetError> {
        self.add_backend(proxy::BackendSpec {
            name: name.to_string(),
            addr: addr.to_string(),
            weight,
        })
        .map_err(|e| FleetError::Balancer(e.to_string()))
    }
    async fn drain(&self, name: &str, grace: Duration) -> Result<(), FleetError> {
        match self.drain_backend(name, grace).await {
            Ok(0) => Ok(()),
            Ok(left) => {
                tracing::warn!(
                    name,
                    left,
                    "drain grace passed with requests still in flight"
                );
                Ok(())
            }
            Err(e) => Err(FleetError::Balancer(e.to_string())),
        }
    }
    fn remove(&self, name: &str) -> Result<(), FleetError> {
        self.remove_backend(name)
            .map_err(|e| FleetError::Balancer(e.to_string()))
    }
}

/// Reads the in-process balancer's counters. Always available while the handle lives.
impl crate::scaler::MetricsSource for proxy::ProxyHandle {
    fn sample(&self) -> Option<crate::scaler::BalancerSample> {
        let m = self.metrics();
        let backends = self
            .backends()
            .into_iter()
            .map(|b| {
                (
                    b.name,
                    crate::scaler::BackendSample {
                        requests_total: b.requests_total,
                        in_flight: b.in_flight as f64,
                    },
                )
            })
            .collect();
        Some(crate::scaler::BalancerSample {
            requests_total: m.requests_total,
            in_flight: m.in_flight.max(0) as f64,
            latency: m.latency,
            backends,
        })
    }
}

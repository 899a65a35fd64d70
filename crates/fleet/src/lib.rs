//! Async fleet supervisor: spawns instances, readiness gating, draining, restarts, applies autoscale decisions.

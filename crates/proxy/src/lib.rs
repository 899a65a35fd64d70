//! Async HTTP load balancer shell around balance: listeners, forwarding, health checks, admin API, metrics, drain.

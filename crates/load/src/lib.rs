//! Open-loop HTTP load generator with coordinated-omission-free latency, scenarios, thresholds and reports.

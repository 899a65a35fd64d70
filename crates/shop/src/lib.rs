//! The reference stateless shop service (axum) and its state tier: SQLite, PostgreSQL + replicas, Redis, sharding.

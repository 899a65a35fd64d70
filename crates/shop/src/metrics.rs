//! Prometheus metrics of one instance, rendered as text at `GET /metrics`.
//!
//! Counters are atomics updated on the request path without locks. Every label comes
//! from a closed set, so no client can grow the page: methods are the standard ones
//! ([`method_label`]; anything else is `other`), routes are the matched route templates
//! (a request that matched none is `other`), statuses are the ones the handlers answer.
//! The page is served only on the separate `--metrics-listen` listener, never on the
//! public one. Exposed for benches:
//! `shop_cache_hits_total`, `shop_cache_misses_total`, `shop_db_queries_total{role}`;
//! for autoscalers (`scaleout k8s`): `shop_in_flight_requests`, `shop_requests_total`
//! and `shop_request_duration_seconds`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency histogram, in seconds.
pub const LATENCY_BUCKETS_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Which database server answered a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbRole {
    /// The primary (all writes, read-your-writes, cache fills).
    Primary,
    /// A streaming replica (stale-tolerant reads).
    Replica,
}

#[derive(Debug, Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: Vec<u64>,
    sum_s: f64,
    count: u64,
}

/// All metrics of one instance.
#[derive(Debug, Default)]
pub struct Metrics {
    // Per-route stats behind one short-held mutex (never held across an await).
    routes: Mutex<BTreeMap<(&'static str, String), RouteStats>>,
    cache_hits: Mutex<BTreeMap<&'static str, u64>>,
    cache_misses: Mutex<BTreeMap<&'static str, u64>>,
    db_primary: AtomicU64,
    db_replica: AtomicU64,
    ryw_primary_fallbacks: AtomicU64,
    reads_primary: AtomicU64,
    reads_replica: AtomicU64,
    stampede_waits: AtomicU64,
    // Requests inside the handlers now (the pod metric a Kubernetes HPA scales on).
    in_flight: AtomicU64,
    // With `--shard-map`: one counter per shard, in map order (named once at start).
    shard_queries: std::sync::OnceLock<Vec<(String, AtomicU64)>>,
}

/// A pool's size and idle connections at scrape time.
#[derive(Debug, Clone)]
pub struct PoolUsage {
    /// `primary` or `replica0`, ...
    pub name: String,
    /// Configured maximum.
    pub max: u32,
    /// Open connections.
    pub size: u32,
    /// Idle connections.
    pub idle: u32,
}

/// The label of an HTTP method: one of the standard methods, else `other`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .copied()
        .find(|m| *m == method)
        .unwrap_or("other")
}

impl Metrics {
    /// Records one served request. `route` must be a route template of the router or
    /// `other`; the method is reduced to [`method_label`].
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let s = routes.entry((method, route.to_string())).or_default();
        *s.by_status.entry(status).or_default() += 1;
        if s.buckets.is_empty() {
            s.buckets = vec![0; LATENCY_BUCKETS_S.len()];
        }
        for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
            if seconds <= *b {
                s.buckets[i] += 1;
            }
        }
        s.sum_s += seconds;
        s.count += 1;
    }

    /// Counts a request as in flight until the returned guard is dropped (also when the
    /// request's future is dropped mid-way).
    pub fn in_flight_guard(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(&self.in_flight)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records a cache hit for a class (`catalog`, `product`, `stock`, `profile`).
    pub fn cache_hit(&self, class: &'static str) {
        *self
            .cache_hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(class)
            .or_default() += 1;
    }

    /// Records a cache miss for a class.
    pub fn cache_miss(&self, class: &'static str) {
        *self
            .cache_misses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(class)
            .or_default() += 1;
    }

    /// Records one database operation (a read query or a whole write transaction) on a
    /// server of `role`.
    pub fn db_query(&self, role: DbRole) {
        match role {
            DbRole::Primary => self.db_primary.fetch_add(1, Ordering::Relaxed),
            DbRole::Replica => self.db_replica.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Names the shards (map order) whose operations [`Metrics::shard_query`] counts.
    /// Only the first call counts; later calls are ignored.
    pub fn init_shards(&self, names: &[String]) {
        let _ = self.shard_queries.set(
            names
                .iter()
                .map(|n| (n.clone(), AtomicU64::new(0)))
                .collect(),
        );
    }

    /// Records one operation (a read query or a whole write transaction) on shard `index`.
    pub fn shard_query(&self, index: usize) {
        if let Some((_, n)) = self.shard_queries.get().and_then(|v| v.get(index)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Operations counted on shard `index` so far.
    pub fn shard_queries(&self, index: usize) -> u64 {
        self.shard_queries
            .get()
            .and_then(|v| v.get(index))
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Records where a routed read (one that may use a replica) was sent.
    pub fn read_routed(&self, role: DbRole) {
        match role {
            DbRole::Primary => self.reads_primary.fetch_add(1, Ordering::Relaxed),
            DbRole::Replica => self.reads_replica.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Routed reads sent to servers of `role` so far.
    pub fn reads_routed(&self, role: DbRole) -> u64 {
        match role {
            DbRole::Primary => self.reads_primary.load(Ordering::Relaxed),
            DbRole::Replica => self.reads_replica.load(Ordering::Relaxed),
        }
    }

    /// Reads sent to the primary for read-your-writes so far.
    pub fn ryw_fallbacks(&self) -> u64 {
        self.ryw_primary_fallbacks.load(Ordering::Relaxed)
    }

    /// Records a read that wanted a replica but went to the primary for read-your-writes.
    pub fn ryw_fallback(&self) {
        self.ryw_primary_fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a request that waited on another's recomputation instead of querying.
    pub fn stampede_wait(&self) {
        self.stampede_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// Statements sent to servers of `role` so far.
    pub fn db_queries(&self, role: DbRole) -> u64 {
        match role {
            DbRole::Primary => self.db_primary.load(Ordering::Relaxed),
            DbRole::Replica => self.db_replica.load(Ordering::Relaxed),
        }
    }

    /// Cache (hits, misses) over all classes so far.
    pub fn cache_totals(&self) -> (u64, u64) {
        let h = self
            .cache_hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum();
        let m = self
            .cache_misses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum();
        (h, m)
    }

    /// The Prometheus text exposition.
    pub fn render(&self, instance: &str, pools: &[PoolUsage]) -> String {
        let mut out = String::with_capacity(4096);
        let inst = escape(instance);
        let _ = writeln!(out, "# HELP shop_requests_total HTTP requests served.");
        let _ = writeln!(out, "# TYPE shop_requests_total counter");
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route), s) in routes.iter() {
            for (status, n) in &s.by_status {
                let _ = writeln!(
                    out,
                    "shop_requests_total{{instance=\"{inst}\",method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        let _ = writeln!(out, "# HELP shop_request_duration_seconds Request latency.");
        let _ = writeln!(out, "# TYPE shop_request_duration_seconds histogram");
        for ((method, route), s) in routes.iter() {
            let labels = format!(
                "instance=\"{inst}\",method=\"{method}\",route=\"{}\"",
                escape(route)
            );
            for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "shop_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    s.buckets.get(i).copied().unwrap_or(0)
                );
            }
            let _ = writeln!(
                out,
                "shop_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "shop_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_s
            );
            let _ = writeln!(
                out,
                "shop_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        drop(routes);
        for (name, help, map) in [
            (
                "shop_cache_hits_total",
                "Cache-aside hits by class.",
                &self.cache_hits,
            ),
            (
                "shop_cache_misses_total",
                "Cache-aside misses by class.",
                &self.cache_misses,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (class, n) in map.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = writeln!(out, "{name}{{instance=\"{inst}\",class=\"{class}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP shop_db_queries_total Database operations by server role: one per read query or write transaction on the request path (SQL-cache and replica-poller statements excluded)."
        );
        let _ = writeln!(out, "# TYPE shop_db_queries_total counter");
        let _ = writeln!(
            out,
            "shop_db_queries_total{{instance=\"{inst}\",role=\"primary\"}} {}",
            self.db_primary.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "shop_db_queries_total{{instance=\"{inst}\",role=\"replica\"}} {}",
            self.db_replica.load(Ordering::Relaxed)
        );
        if let Some(shards) = self.shard_queries.get() {
            let _ = writeln!(
                out,
                "# HELP shop_shard_queries_total Operations on each shard of --shard-map: one per read query or write transaction of per-user data (carts, orders)."
            );
            let _ = writeln!(out, "# TYPE shop_shard_queries_total counter");
            for (name, n) in shards {
                let _ = writeln!(
                    out,
                    "shop_shard_queries_total{{instance=\"{inst}\",shard=\"{}\"}} {}",
                    escape(name),
                    n.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP shop_ryw_primary_fallbacks_total Reads sent to the primary because no replica had replayed the user's last write."
        );
        let _ = writeln!(out, "# TYPE shop_ryw_primary_fallbacks_total counter");
        let _ = writeln!(
            out,
            "shop_ryw_primary_fallbacks_total{{instance=\"{inst}\"}} {}",
            self.ryw_primary_fallbacks.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP shop_reads_routed_total Stale-tolerant reads by the server role they were routed to."
        );
        let _ = writeln!(out, "# TYPE shop_reads_routed_total counter");
        for (role, v) in [
            ("primary", &self.reads_primary),
            ("replica", &self.reads_replica),
        ] {
            let _ = writeln!(
                out,
                "shop_reads_routed_total{{instance=\"{inst}\",role=\"{role}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP shop_cache_stampede_waits_total Misses that waited for another request's recomputation."
        );
        let _ = writeln!(out, "# TYPE shop_cache_stampede_waits_total counter");
        let _ = writeln!(
            out,
            "shop_cache_stampede_waits_total{{instance=\"{inst}\"}} {}",
            self.stampede_waits.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP shop_in_flight_requests Requests being handled now (what an autoscaler targets per instance)."
        );
        let _ = writeln!(out, "# TYPE shop_in_flight_requests gauge");
        let _ = writeln!(
            out,
            "shop_in_flight_requests{{instance=\"{inst}\"}} {}",
            self.in_flight()
        );
        let _ = writeln!(
            out,
            "# HELP shop_db_pool_connections Pool connections by state."
        );
        let _ = writeln!(out, "# TYPE shop_db_pool_connections gauge");
        for p in pools {
            let n = escape(&p.name);
            let _ = writeln!(
                out,
                "shop_db_pool_connections{{instance=\"{inst}\",pool=\"{n}\",state=\"max\"}} {}",
                p.max
            );
            let _ = writeln!(
                out,
                "shop_db_pool_connections{{instance=\"{inst}\",pool=\"{n}\",state=\"open\"}} {}",
                p.size
            );
            let _ = writeln!(
                out,
                "shop_db_pool_connections{{instance=\"{inst}\",pool=\"{n}\",state=\"idle\"}} {}",
                p.idle
            );
            let _ = writeln!(
                out,
                "shop_db_pool_connections{{instance=\"{inst}\",pool=\"{n}\",state=\"in_use\"}} {}",
                p.size.saturating_sub(p.idle)
            );
        }
        out
    }
}

/// Decrements the in-flight gauge on drop (see [`Metrics::in_flight_guard`]).
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a AtomicU64);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Escapes a label value for the text exposition format.
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Reads one sample's value from a Prometheus text page: the first line whose name and
/// labels contain every `needle` (e.g. `["shop_db_queries_total", "role=\"replica\""]`).
pub fn scrape_value(page: &str, needles: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sums every sample of a Prometheus text page matching all `needles`.
pub fn scrape_sum(page: &str, needles: &[&str]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_and_scrape() {
        let m = Metrics::default();
        m.request("GET", "/catalog", 200, 0.003);
        m.request("GET", "/catalog", 200, 0.2);
        m.cache_hit("catalog");
        m.cache_miss("catalog");
        m.cache_hit("catalog");
        m.db_query(DbRole::Replica);
        let page = m.render("i1", &[]);
        assert_eq!(
            scrape_value(&page, &["shop_cache_hits_total", "catalog"]),
            Some(2.0)
        );
        assert_eq!(
            scrape_value(&page, &["shop_db_queries_total", "replica"]),
            Some(1.0)
        );
        assert_eq!(
            scrape_value(&page, &["shop_db_queries_total", "primary"]),
            Some(0.0)
        );
        assert_eq!(scrape_value(&page, &["_bucket", "le=\"0.005\""]), Some(1.0));
        assert_eq!(scrape_value(&page, &["_bucket", "le=\"+Inf\""]), Some(2.0));
        assert_eq!(scrape_sum(&page, &["shop_requests_total"]), 2.0);
    }

    #[test]
    fn in_flight_gauge_follows_the_guards() {
        let m = Metrics::default();
        let a = m.in_flight_guard();
        let b = m.in_flight_guard();
        assert_eq!(
            scrape_value(&m.render("i1", &[]), &["shop_in_flight_requests"]),
            Some(2.0)
        );
        drop(a);
        assert_eq!(m.in_flight(), 1);
        drop(b);
        assert_eq!(
            scrape_value(&m.render("i1", &[]), &["shop_in_flight_requests"]),
            Some(0.0)
        );
    }

    #[test]
    fn made_up_methods_share_one_series() {
        let m = Metrics::default();
        for i in 0..1000 {
            m.request(&format!("X{i}"), "/catalog", 405, 0.001);
        }
        m.request("GET", "/catalog", 200, 0.001);
        let page = m.render("i", &[]);
        assert_eq!(page.matches("shop_requests_total{").count(), 2, "{page}");
        assert_eq!(
            scrape_value(&page, &["shop_requests_total", "method=\"other\""]),
            Some(1000.0)
        );
    }
}

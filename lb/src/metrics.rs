//! Prometheus metrics (text exposition format 0.0.4): requests by route and status, request
//! latency histograms, upstream errors, routing updates. The request path touches only atomics;
//! the registry lock is taken when a snapshot is built and when `/_lb/metrics` is scraped.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Why an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    Connect,
    Proxy,
}

#[derive(Debug)]
pub struct RouteMetrics {
    /// Index = status code - 100 (100..=599); other codes land in the last slot.
    by_status: Vec<AtomicU64>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    connect_errors: AtomicU64,
    proxy_errors: AtomicU64,
    benched: AtomicU64,
}

impl Default for RouteMetrics {
    fn default() -> Self {
        RouteMetrics {
            by_status: (0..501).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            proxy_errors: AtomicU64::new(0),
            benched: AtomicU64::new(0),
        }
    }
}

impl RouteMetrics {
    pub fn request(&self, status: u16, took: Duration) {
        let slot = usize::from(status).checked_sub(100).filter(|i| *i < 500).unwrap_or(500);
        self.by_status[slot].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        match kind {
            UpstreamError::Connect => &self.connect_errors,
            UpstreamError::Proxy => &self.proxy_errors,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn benched(&self) {
        self.benched.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<String, Arc<RouteMetrics>>>,
    pub snapshot_updates: AtomicU64,
    pub discovery_errors: AtomicU64,
    /// Milliseconds from receiving a discovery answer to the new snapshot being live (last one).
    pub last_update_micros: AtomicU64,
}

impl Metrics {
    /// The metrics of a route by name; the same object across snapshots, so counters persist.
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        self.routes.lock().entry(name.to_string()).or_default().clone()
    }

    /// Renders every metric in Prometheus' text format.
    pub fn render(&self, instances: &[(String, usize)]) -> String {
        let routes: Vec<(String, Arc<RouteMetrics>)> =
            self.routes.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP lb_requests_total Requests answered, by route and status code.");
        let _ = writeln!(out, "# TYPE lb_requests_total counter");
        for (name, m) in &routes {
            for (i, c) in m.by_status.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let code = if i == 500 { "other".to_string() } else { (i + 100).to_string() };
                    let _ = writeln!(out, "lb_requests_total{{route=\"{}\",code=\"{code}\"}} {n}", esc(name));
                }
            }
        }
        let _ = writeln!(out, "# HELP lb_request_duration_seconds Time from request to the end of the response.");
        let _ = writeln!(out, "# TYPE lb_request_duration_seconds histogram");
        for (name, m) in &routes {
            let count = m.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let mut cum = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cum += m.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(out, "lb_request_duration_seconds_bucket{{route=\"{}\",le=\"{b}\"}} {cum}", esc(name));
            }
            let _ = writeln!(out, "lb_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}", esc(name));
            let sum = m.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "lb_request_duration_seconds_sum{{route=\"{}\"}} {sum}", esc(name));
            let _ = writeln!(out, "lb_request_duration_seconds_count{{route=\"{}\"}} {count}", esc(name));
        }
        let _ = writeln!(out, "# HELP lb_upstream_errors_total Failed upstream attempts, by route and kind.");
        let _ = writeln!(out, "# TYPE lb_upstream_errors_total counter");
        for (name, m) in &routes {
            for (kind, c) in [("connect", &m.connect_errors), ("proxy", &m.proxy_errors)] {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(out, "lb_upstream_errors_total{{route=\"{}\",kind=\"{kind}\"}} {n}", esc(name));
                }
            }
        }
        let _ = writeln!(out, "# HELP lb_instances_benched_total Instances benched after max_fails failures.");
        let _ = writeln!(out, "# TYPE lb_instances_benched_total counter");
        for (name, m) in &routes {
            let n = m.benched.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(out, "lb_instances_benched_total{{route=\"{}\"}} {n}", esc(name));
            }
        }
        let _ = writeln!(out, "# HELP lb_route_instances Healthy instances per route in the live routing table.");
        let _ = writeln!(out, "# TYPE lb_route_instances gauge");
        for (name, n) in instances {
            let _ = writeln!(out, "lb_route_instances{{route=\"{}\"}} {n}", esc(name));
        }
        let _ = writeln!(out, "# HELP lb_routing_updates_total Routing tables built from discovery.");
        let _ = writeln!(out, "# TYPE lb_routing_updates_total counter");
        let _ = writeln!(out, "lb_routing_updates_total {}", self.snapshot_updates.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP lb_discovery_errors_total Failed requests to agents by discovery.");
        let _ = writeln!(out, "# TYPE lb_discovery_errors_total counter");
        let _ = writeln!(out, "lb_discovery_errors_total {}", self.discovery_errors.load(Ordering::Relaxed));
        out
    }
}

/// Escapes a label value (`\`, `"`, newline).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        let web = m.route("service:web");
        web.request(200, Duration::from_micros(300));
        web.request(200, Duration::from_millis(20));
        web.request(503, Duration::from_millis(2));
        web.upstream_error(UpstreamError::Connect);
        assert!(Arc::ptr_eq(&web, &m.route("service:web")));
        let text = m.render(&[("service:web".into(), 2)]);
        for want in [
            "lb_requests_total{route=\"service:web\",code=\"200\"} 2",
            "lb_requests_total{route=\"service:web\",code=\"503\"} 1",
            "lb_request_duration_seconds_bucket{route=\"service:web\",le=\"0.0005\"} 1",
            "lb_request_duration_seconds_bucket{route=\"service:web\",le=\"0.0025\"} 2",
            "lb_request_duration_seconds_bucket{route=\"service:web\",le=\"+Inf\"} 3",
            "lb_request_duration_seconds_count{route=\"service:web\"} 3",
            "lb_upstream_errors_total{route=\"service:web\",kind=\"connect\"} 1",
            "lb_route_instances{route=\"service:web\"} 2",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}

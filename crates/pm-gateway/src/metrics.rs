//! Server metrics, rendered in the Prometheus text format at `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the request latency histogram, seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

/// Request kinds, as labelled.
pub const KINDS: [&str; 6] = [
    "command",
    "query",
    "batch",
    "subscribe",
    "unsubscribe",
    "refresh_token",
];
/// Request outcomes, as labelled: `ok` or a wire error code.
pub const OUTCOMES: [&str; 12] = [
    "ok",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "CONFLICT",
    "FAILED_PRECONDITION",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "RATE_LIMITED",
    "TOO_LARGE",
    "UNAVAILABLE",
    "RESYNC_REQUIRED",
    "INTERNAL",
];

/// All counters of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused by a limit.
    pub connections_refused: AtomicU64,
    /// Events queued for subscribers.
    pub events_delivered: AtomicU64,
    /// Subscribers cut off for not keeping up.
    pub slow_consumer_disconnects: AtomicU64,
    /// Requests answered with `RATE_LIMITED`.
    pub rate_limited: AtomicU64,
    requests: [[AtomicU64; OUTCOMES.len()]; KINDS.len()],
    latency: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, kind: &str, outcome: &str, latency: Duration) {
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        let o = OUTCOMES
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(OUTCOMES.len() - 1);
        self.requests[k][o].fetch_add(1, Relaxed);
        let seconds = latency.as_secs_f64();
        let mut h = self.latency.lock().expect("metrics lock is never poisoned");
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The Prometheus text exposition, with storage figures from `tenants`.
    pub fn render(&self, tenants: &TenantFigures) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            "pm_connections_open",
            "WebSocket connections open now.",
            "gauge",
            self.connections_open.load(Relaxed),
        );
        gauge(
            "pm_connections_total",
            "WebSocket connections accepted.",
            "counter",
            self.connections_total.load(Relaxed),
        );
        gauge(
            "pm_connections_refused_total",
            "Connections refused by a limit.",
            "counter",
            self.connections_refused.load(Relaxed),
        );
        gauge(
            "pm_events_delivered_total",
            "Events queued for subscribers.",
            "counter",
            self.events_delivered.load(Relaxed),
        );
        gauge(
            "pm_slow_consumer_disconnects_total",
            "Subscribers closed with 4008.",
            "counter",
            self.slow_consumer_disconnects.load(Relaxed),
        );
        gauge(
            "pm_rate_limited_total",
            "Requests answered RATE_LIMITED.",
            "counter",
            self.rate_limited.load(Relaxed),
        );
        gauge(
            "pm_open_tenants",
            "Tenant databases open now.",
            "gauge",
            tenants.open,
        );
        gauge(
            "pm_writer_groups_total",
            "Write transactions committed (open tenants).",
            "counter",
            tenants.groups,
        );
        gauge(
            "pm_writer_jobs_total",
            "Write jobs committed (open tenants).",
            "counter",
            tenants.jobs,
        );
        if let Some(rss) = resident_memory_bytes() {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory of the server process.",
                "gauge",
                rss,
            );
        }
        gauge(
            "pm_changelog_pruned_events_total",
            "Change-log events deleted by retention (open tenants).",
            "counter",
            tenants.pruned_events,
        );
        let schema = &tenants.schema;
        gauge(
            "pm_schema_target_version",
            "The newest migration tenants are brought to.",
            "gauge",
            u64::try_from(schema.target_version).unwrap_or(0),
        );
        gauge(
            "pm_schema_rollout_running",
            "1 while an online schema migration is being rolled out.",
            "gauge",
            u64::from(schema.rollout_running),
        );
        gauge(
            "pm_schema_migrations_applied_total",
            "Tenants migrated to a newer schema while serving.",
            "counter",
            schema.applied,
        );
        gauge(
            "pm_schema_migrations_failed_total",
            "Tenant migrations that failed and were rolled back (the tenant kept its schema).",
            "counter",
            schema.failed,
        );
        let _ = writeln!(
            out,
            "# HELP pm_schema_migration_pending_tenants Tenants below the target schema: open ones the running rollout has not reached, closed ones migrated when next opened.\n# TYPE pm_schema_migration_pending_tenants gauge\npm_schema_migration_pending_tenants{{state=\"open\"}} {}\npm_schema_migration_pending_tenants{{state=\"closed\"}} {}",
            schema.open_pending, schema.closed_pending
        );
        let _ = writeln!(out, "# HELP pm_requests_total Requests answered, by kind and outcome.\n# TYPE pm_requests_total counter");
        for (k, kind) in KINDS.iter().enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let n = self.requests[k][o].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "pm_requests_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
                    );
                }
            }
        }
        let h = self.latency.lock().expect("metrics lock is never poisoned");
        let _ = writeln!(
            out,
            "# HELP pm_request_seconds Request latency.\n# TYPE pm_request_seconds histogram"
        );
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "pm_request_seconds_bucket{{le=\"{bound}\"}} {}",
                h.buckets[i]
            );
        }
        let _ = writeln!(out, "pm_request_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(
            out,
            "pm_request_seconds_sum {}\npm_request_seconds_count {}",
            h.sum, h.count
        );
        out
    }
}

/// Storage figures gathered when metrics are rendered.
#[derive(Debug, Default)]
pub struct TenantFigures {
    /// Tenants open.
    pub open: u64,
    /// Committed write groups of the open tenants.
    pub groups: u64,
    /// Committed write jobs of the open tenants.
    pub jobs: u64,
    /// Change-log events pruned by the open tenants.
    pub pruned_events: u64,
    /// Schema migrations and rollouts.
    pub schema: pm_db::SchemaStatus,
}

/// The process's resident set size, from `VmRSS` in `/proc/self/status` (Linux; `None`
/// elsewhere).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

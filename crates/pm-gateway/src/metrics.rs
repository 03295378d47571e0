//! Server metrics, a `prometheus-client` registry encoded in the OpenMetrics text format at
//! `GET /metrics`.
//!
//! The process counters live in the registry and are bumped where things happen; the storage
//! figures and the resident memory are read by a [`Collector`] at each scrape, never cached.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

use pm_db::EngineFigures;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`Metrics::render`]'s OpenMetrics text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the request latency histograms, seconds.
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

/// The labels of `pm_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    outcome: &'static str,
}

/// The label of `pm_request_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// All metrics of the process.
#[derive(Debug)]
pub struct Metrics {
    /// Connections open now.
    pub connections_open: Gauge<u64, AtomicU64>,
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// Connections refused by a limit.
    pub connections_refused: Counter,
    /// Events queued for subscribers.
    pub events_delivered: Counter,
    /// Subscribers cut off for not keeping up.
    pub slow_consumer_disconnects: Counter,
    /// Requests answered with `RATE_LIMITED`.
    pub rate_limited: Counter,
    /// Resume replays served entirely from the hubs' rings of recent events.
    pub resumes_from_memory: Counter,
    /// Resume replays that read the change log (all of it, or the part older than the ring).
    pub resumes_from_log: Counter,
    /// Size of the events held in the hubs' rings, all tenants, bytes.
    pub ring_bytes: Gauge<u64, AtomicU64>,
    /// Events held in the hubs' rings, all tenants.
    pub ring_events: Gauge<u64, AtomicU64>,
    /// Committed groups this node published on the cluster's bus.
    pub bus_published: Counter,
    /// Committed groups this node could not publish (NATS down or slow): the other nodes
    /// read them from the change log at their next head check.
    pub bus_publish_failures: Counter,
    requests: Family<RequestLabels, Counter>,
    latency: Family<KindLabel, Histogram, fn() -> Histogram>,
    // Every request bumps one (kind, outcome) counter and one kind's histogram. Looking them up
    // in the families would hash the labels and take the family's lock each time, so each
    // handle is resolved once, on the first request that needs it, and kept here: after that
    // a request costs an atomic load, a relaxed `fetch_add` and the histogram's own
    // per-kind lock. Resolving lazily rather than up front keeps the exposition to the
    // series that happened, as before (72 request series are possible, a few are seen).
    request_handles: [[OnceLock<Counter>; OUTCOMES.len()]; KINDS.len()],
    latency_handles: [OnceLock<Histogram>; KINDS.len()],
    registry: Registry,
}

impl Metrics {
    /// The metrics, with `tenants` called at each scrape for the storage figures.
    pub fn new(tenants: impl Fn() -> EngineFigures + Send + Sync + 'static) -> Metrics {
        let mut metrics = Metrics {
            connections_open: Gauge::default(),
            connections_total: Counter::default(),
            connections_refused: Counter::default(),
            events_delivered: Counter::default(),
            slow_consumer_disconnects: Counter::default(),
            rate_limited: Counter::default(),
            resumes_from_memory: Counter::default(),
            resumes_from_log: Counter::default(),
            ring_bytes: Gauge::default(),
            ring_events: Gauge::default(),
            bus_published: Counter::default(),
            bus_publish_failures: Counter::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            request_handles: Default::default(),
            latency_handles: Default::default(),
            registry: Registry::default(),
        };
        // The registry appends the final "." to each help text, and `_total` to counters.
        let registry = &mut metrics.registry;
        registry.register(
            "pm_connections_open",
            "WebSocket connections open now",
            metrics.connections_open.clone(),
        );
        registry.register(
            "pm_connections",
            "WebSocket connections accepted",
            metrics.connections_total.clone(),
        );
        registry.register(
            "pm_connections_refused",
            "Connections refused by a limit",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "pm_events_delivered",
            "Events queued for subscribers",
            metrics.events_delivered.clone(),
        );
        registry.register(
            "pm_slow_consumer_disconnects",
            "Subscribers closed with 4008",
            metrics.slow_consumer_disconnects.clone(),
        );
        registry.register(
            "pm_rate_limited",
            "Requests answered RATE_LIMITED",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "pm_resumes_from_memory",
            "Resume replays served entirely from the recent events kept in memory",
            metrics.resumes_from_memory.clone(),
        );
        registry.register(
            "pm_resumes_from_log",
            "Resume replays that read the change log",
            metrics.resumes_from_log.clone(),
        );
        registry.register_with_unit(
            "pm_resume_ring",
            "Recent events kept in memory for resuming subscribers, all tenants",
            Unit::Bytes,
            metrics.ring_bytes.clone(),
        );
        registry.register(
            "pm_resume_ring_events",
            "Events kept in memory for resuming subscribers, all tenants",
            metrics.ring_events.clone(),
        );
        registry.register(
            "pm_bus_published",
            "Committed groups published on the cluster's bus",
            metrics.bus_published.clone(),
        );
        registry.register(
            "pm_bus_publish_failures",
            "Committed groups not published on the bus (other nodes read them from the log)",
            metrics.bus_publish_failures.clone(),
        );
        registry.register(
            "pm_requests",
            "Requests answered, by kind and outcome",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "pm_request",
            "Request latency, by kind",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        registry.register_collector(Box::new(ScrapeTime {
            tenants: Box::new(tenants),
        }));
        metrics
    }

    /// Counts one answered request.
    pub fn request(&self, kind: &str, outcome: &str, latency: Duration) {
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        let o = OUTCOMES
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(OUTCOMES.len() - 1);
        self.request_handles[k][o]
            .get_or_init(|| {
                self.requests.get_or_create_owned(&RequestLabels {
                    kind: KINDS[k],
                    outcome: OUTCOMES[o],
                })
            })
            .inc();
        self.latency_handles[k]
            .get_or_init(|| {
                self.latency
                    .get_or_create_owned(&KindLabel { kind: KINDS[k] })
            })
            .observe(latency.as_secs_f64());
    }

    /// The OpenMetrics text exposition (serve it as [`CONTENT_TYPE`]); storage figures and
    /// resident memory are read now.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The figures read when `/metrics` is scraped: storage ones from the function
/// [`Metrics::new`] was given, and the process's resident memory.
struct ScrapeTime {
    tenants: Box<dyn Fn() -> EngineFigures + Send + Sync>,
}

impl fmt::Debug for ScrapeTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScrapeTime").finish_non_exhaustive()
    }
}

impl Collector for ScrapeTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let tenants = (self.tenants)();
        let schema = &tenants.schema;
        put(
            &mut encoder,
            "pm_open_tenants",
            "Tenant databases open now.",
            None,
            &ConstGauge::new(tenants.open_tenants),
        )?;
        put(
            &mut encoder,
            "pm_writer_groups",
            "Write transactions committed (open tenants).",
            None,
            &ConstCounter::new(tenants.committed_groups),
        )?;
        put(
            &mut encoder,
            "pm_writer_jobs",
            "Write jobs committed (open tenants).",
            None,
            &ConstCounter::new(tenants.committed_jobs),
        )?;
        put(
            &mut encoder,
            "pm_storage_faults",
            "Write groups that failed on the storage (a full disk, an I/O error).",
            None,
            &ConstCounter::new(tenants.storage_faults),
        )?;
        put(
            &mut encoder,
            "pm_tenants_degraded",
            "Open tenants whose storage fails now: their writes are refused until it recovers.",
            None,
            &ConstGauge::new(tenants.degraded_tenants),
        )?;
        put(
            &mut encoder,
            "pm_tenants_quarantined",
            "Tenants out of service because their database is damaged (restore from a backup).",
            None,
            &ConstGauge::new(tenants.quarantined_tenants),
        )?;
        if let Some(rss) = resident_memory_bytes() {
            put(
                &mut encoder,
                "process_resident_memory",
                "Resident memory of the server process.",
                Some(&Unit::Bytes),
                &ConstGauge::new(rss),
            )?;
        }
        if let Some(cpu) = cpu_seconds() {
            put(
                &mut encoder,
                "process_cpu",
                "CPU time the server process has used, user and system.",
                Some(&Unit::Seconds),
                &ConstCounter::new(cpu),
            )?;
        }
        put(
            &mut encoder,
            "pm_changelog_pruned_events",
            "Change-log events deleted by retention (open tenants).",
            None,
            &ConstCounter::new(tenants.pruned_events),
        )?;
        put(
            &mut encoder,
            "pm_schema_target_version",
            "The newest migration tenants are brought to.",
            None,
            &ConstGauge::new(schema.target_version),
        )?;
        put(
            &mut encoder,
            "pm_schema_rollout_running",
            "1 while an online schema migration is being rolled out.",
            None,
            &ConstGauge::new(u64::from(schema.rollout_running)),
        )?;
        put(
            &mut encoder,
            "pm_schema_migrations_applied",
            "Tenants migrated to a newer schema while serving.",
            None,
            &ConstCounter::new(schema.applied),
        )?;
        put(
            &mut encoder,
            "pm_schema_migrations_failed",
            "Tenant migrations that failed and were rolled back (the tenant kept its schema).",
            None,
            &ConstCounter::new(schema.failed),
        )?;
        let mut pending = encoder.encode_descriptor(
            "pm_schema_migration_pending_tenants",
            "Tenants below the target schema: open ones the running rollout has not reached, closed ones migrated when next opened.",
            None,
            MetricType::Gauge,
        )?;
        for (state, tenants) in [
            ("open", schema.open_pending),
            ("closed", schema.closed_pending),
        ] {
            ConstGauge::new(tenants).encode(pending.encode_family(&[("state", state)])?)?;
        }
        Ok(())
    }
}

/// Encodes one metric with its descriptor; `help` is taken as it is.
fn put(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric: &dyn EncodeMetric,
) -> fmt::Result {
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
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

/// The process's CPU time, user and system, from `/proc/self/stat` (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_seconds_of(&stat)
}

/// Clock ticks per second of `/proc`'s times: `USER_HZ`, which Linux fixes at 100 for user
/// space on every architecture it runs this server on.
const USER_HZ: f64 = 100.0;

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds. The fields are counted after the
/// command name's closing parenthesis (the name itself may hold spaces and parentheses).
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_the_counters_the_labelled_series_and_the_scrape_time_figures() {
        let metrics = Metrics::new(|| EngineFigures {
            open_tenants: 2,
            committed_groups: 5,
            committed_jobs: 9,
            pruned_events: 7,
            storage_faults: 3,
            degraded_tenants: 1,
            quarantined_tenants: 2,
            schema: pm_db::SchemaStatus {
                target_version: 20270101000000,
                rollout_running: true,
                applied: 3,
                failed: 1,
                open_pending: 4,
                closed_pending: 6,
                last_failure: None,
            },
        });
        metrics.connections_total.inc();
        metrics.connections_total.inc();
        metrics.connections_open.inc();
        metrics.events_delivered.inc_by(40);
        metrics.request("subscribe", "RESYNC_REQUIRED", Duration::from_micros(300));
        metrics.request("subscribe", "RESYNC_REQUIRED", Duration::from_millis(3));
        metrics.request("command", "ok", Duration::from_millis(30));
        // Unknown names fall back to `command` and `INTERNAL`.
        metrics.request("nonsense", "NONSENSE", Duration::from_secs(10));

        let text = metrics.render();
        let lines: Vec<&str> = text.lines().collect();
        let has = |line: &str| assert!(lines.contains(&line), "{line:?} in\n{text}");
        // Plain counters and gauges.
        has("# TYPE pm_connections counter");
        has("pm_connections_total 2");
        has("pm_connections_open 1");
        has("pm_events_delivered_total 40");
        has("pm_slow_consumer_disconnects_total 0");
        has("pm_resumes_from_memory_total 0");
        has("pm_resumes_from_log_total 0");
        has("pm_resume_ring_bytes 0");
        has("pm_resume_ring_events 0");
        // Labelled counters: only the series that happened.
        has("pm_requests_total{kind=\"subscribe\",outcome=\"RESYNC_REQUIRED\"} 2");
        has("pm_requests_total{kind=\"command\",outcome=\"ok\"} 1");
        has("pm_requests_total{kind=\"command\",outcome=\"INTERNAL\"} 1");
        assert_eq!(text.matches("\npm_requests_total{").count(), 3, "{text}");
        // Histograms per kind (buckets are cumulative).
        has("# TYPE pm_request_seconds histogram");
        has("# UNIT pm_request_seconds seconds");
        has("pm_request_seconds_bucket{le=\"0.0005\",kind=\"subscribe\"} 1");
        has("pm_request_seconds_bucket{le=\"0.005\",kind=\"subscribe\"} 2");
        has("pm_request_seconds_bucket{le=\"0.02\",kind=\"command\"} 0");
        has("pm_request_seconds_bucket{le=\"0.05\",kind=\"command\"} 1");
        has("pm_request_seconds_bucket{le=\"5.0\",kind=\"command\"} 1");
        has("pm_request_seconds_bucket{le=\"+Inf\",kind=\"command\"} 2");
        has("pm_request_seconds_count{kind=\"subscribe\"} 2");
        assert!(!text.contains("kind=\"query\""), "{text}");
        // Read from the collector at this scrape.
        has("pm_open_tenants 2");
        has("pm_writer_groups_total 5");
        has("pm_writer_jobs_total 9");
        has("pm_changelog_pruned_events_total 7");
        has("pm_storage_faults_total 3");
        has("pm_tenants_degraded 1");
        has("pm_tenants_quarantined 2");
        has("pm_schema_target_version 20270101000000");
        has("pm_schema_rollout_running 1");
        has("pm_schema_migrations_applied_total 3");
        has("pm_schema_migrations_failed_total 1");
        has("pm_schema_migration_pending_tenants{state=\"open\"} 4");
        has("pm_schema_migration_pending_tenants{state=\"closed\"} 6");
        let rss = lines
            .iter()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .expect("the resident memory is read from /proc");
        assert!(rss.parse::<u64>().unwrap() > 1 << 20, "{rss}");
        has("# TYPE process_cpu_seconds counter");
        has("# UNIT process_cpu_seconds seconds");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("process_cpu_seconds_total ")),
            "the CPU time is read from /proc: {text}"
        );
        assert!(text.ends_with("\n# EOF\n"), "{text}");
    }

    #[test]
    fn cpu_time_is_user_plus_system_after_the_command_name() {
        // Fields 14 and 15 (utime, stime) of proc(5); the name holds a space and a ')'.
        let stat = "4242 (pm server) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    1234 566 0 0 20 0 9 0 100 200000 3000 18446744073709551615";
        assert_eq!(cpu_seconds_of(stat), Some(18.0));
        assert_eq!(cpu_seconds_of("4242 (pm-server) S 1"), None);
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn scrape_time_figures_are_read_at_each_scrape() {
        let calls = std::sync::Arc::new(AtomicU64::new(0));
        let seen = calls.clone();
        let metrics = Metrics::new(move || EngineFigures {
            open_tenants: 1 + seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..EngineFigures::default()
        });
        assert!(metrics.render().contains("\npm_open_tenants 1\n"));
        assert!(metrics.render().contains("\npm_open_tenants 2\n"));
    }
}

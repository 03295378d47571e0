//! What a scenario measured: figures, latency percentiles and checks, as a table or JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}

/// Records `micros` (clamped into the histogram's range).
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.max(1));
}

/// Percentiles of one latency, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// What was timed.
    pub name: String,
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl Latency {
    /// Percentiles of `histogram`.
    pub fn of(name: &str, histogram: &Histogram<u64>) -> Latency {
        Latency {
            name: name.into(),
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p95_us: histogram.value_at_quantile(0.95),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// One measured number.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What it is.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit (`cmd/s`, `KiB`, ...).
    pub unit: String,
}

/// One correctness check the run makes while it measures (every event once, in order...).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// The numbers behind it.
    pub detail: String,
}

/// Under which conditions the figures were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Conditions {
    /// The server's WebSocket URL.
    pub url: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// `release` or `debug` build of the load generator.
    pub profile: &'static str,
    /// pm-load's version.
    pub version: &'static str,
    /// When the run ended, Unix seconds.
    pub finished_at: u64,
}

/// The result of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `write`, `fanout`, `idle`, `storm`, `slow` or `tenants`.
    pub scenario: &'static str,
    /// The options the scenario ran with.
    pub options: serde_json::Value,
    /// Conditions of the run.
    pub conditions: Conditions,
    /// Wall time of the measured phase, seconds.
    pub elapsed_s: f64,
    /// Throughputs, counts, sizes.
    pub figures: Vec<Figure>,
    /// Latency percentiles.
    pub latencies: Vec<Latency>,
    /// Correctness checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// An empty report for `scenario` run against `url` with `options`.
    pub fn new(scenario: &'static str, url: &str, options: impl Serialize) -> Report {
        Report {
            scenario,
            options: serde_json::to_value(options).expect("options serialize"),
            conditions: Conditions {
                url: url.into(),
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                profile: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
                version: env!("CARGO_PKG_VERSION"),
                finished_at: 0,
            },
            elapsed_s: 0.0,
            figures: Vec::new(),
            latencies: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// Adds a figure.
    pub fn figure(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.push(Figure {
            name: name.into(),
            value,
            unit: unit.into(),
        });
    }

    /// Adds a latency.
    pub fn latency(&mut self, name: &str, histogram: &Histogram<u64>) {
        self.latencies.push(Latency::of(name, histogram));
    }

    /// Adds a check.
    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    /// The figure called `name`.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value)
    }

    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// Stamps the end time.
    pub(crate) fn finish(mut self, elapsed_s: f64) -> Report {
        self.elapsed_s = elapsed_s;
        self.conditions.finished_at = crate::target::unix_now().as_secs();
        self
    }

    /// The report as a human-readable table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let c = &self.conditions;
        let _ = writeln!(
            out,
            "pm-load {} — {} ({} build, {} CPUs, {:.1} s)\n  options: {}",
            self.scenario, c.url, c.profile, c.cpus, self.elapsed_s, self.options
        );
        for f in &self.figures {
            let _ = writeln!(out, "  {:<34} {:>14} {}", f.name, number(f.value), f.unit);
        }
        if !self.latencies.is_empty() {
            let _ = writeln!(
                out,
                "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "latency (ms)", "count", "p50", "p90", "p95", "p99", "p99.9", "max"
            );
            for l in &self.latencies {
                let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
                let _ = writeln!(
                    out,
                    "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    l.name,
                    l.count,
                    ms(l.p50_us),
                    ms(l.p90_us),
                    ms(l.p95_us),
                    ms(l.p99_us),
                    ms(l.p999_us),
                    ms(l.max_us)
                );
            }
        }
        for check in &self.checks {
            let mark = if check.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "  [{mark}] {}: {}", check.name, check.detail);
        }
        out
    }
}

/// Whole numbers as they are; others with one decimal, or three below 10 (a CPU time per
/// operation of half a microsecond, a fraction of a core).
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() < 10.0 {
        format!("{value:.3}")
    } else {
        format!("{value:.1}")
    }
}

//! A short run of each scenario against the real server (in-process, port 0, a fresh data
//! directory), checking that it completes, that its own correctness checks hold, and that the
//! figures are consistent with the run. No timing thresholds: these runs are seconds long on
//! a shared machine.

use std::time::Duration;

use pm_gateway::testing::{TestServer, SECRET};
use pm_gateway::Settings;
use pm_load::fanout::FanoutOptions;
use pm_load::idle::IdleOptions;
use pm_load::read::ReadOptions;
use pm_load::slow::SlowOptions;
use pm_load::storm::StormOptions;
use pm_load::tenants::TenantsOptions;
use pm_load::write::WriteOptions;
use pm_load::{Report, Target};

/// The gateway's test server, with the request rate limit out of the way of the load.
struct TestApp(TestServer);

impl TestApp {
    async fn spawn(configure: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp(
            TestServer::spawn_with(|settings| {
                settings.limits.requests_per_second = 100_000;
                settings.limits.request_burst = 100_000;
                configure(settings);
            })
            .await,
        )
    }

    fn target(&self) -> Target {
        Target::new(self.0.url(), SECRET).unwrap()
    }

    async fn shutdown(mut self) {
        self.0.shutdown().await;
    }
}

fn figure(report: &Report, name: &str) -> f64 {
    report
        .value(name)
        .unwrap_or_else(|| panic!("no figure {name:?} in {}", report.to_text()))
}

fn latency_count(report: &Report, name: &str) -> u64 {
    report
        .latencies
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no latency {name:?} in {}", report.to_text()))
        .count
}

fn assert_passed(report: &Report) {
    assert!(report.passed(), "a check failed:\n{}", report.to_text());
    // The JSON form carries the same report.
    let json: serde_json::Value = serde_json::to_value(report).unwrap();
    assert_eq!(json["scenario"], report.scenario);
    assert_eq!(
        json["checks"].as_array().unwrap().len(),
        report.checks.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_counts_every_acknowledged_command() {
    let app = TestApp::spawn(|_| {}).await;
    let options = WriteOptions {
        tenants: 2,
        connections: 2,
        pipeline: 4,
        rate: None,
        duration: Duration::from_secs(30),
        count: Some(400),
    };
    let report = pm_load::write::run(&app.target(), &options, false)
        .await
        .unwrap();
    assert_passed(&report);
    // The count bounds the run: exactly 400 commands, every one acknowledged and timed.
    assert_eq!(figure(&report, "acked commands"), 400.0);
    assert_eq!(figure(&report, "failed commands"), 0.0);
    assert_eq!(figure(&report, "connections"), 4.0);
    assert_eq!(latency_count(&report, "round trip (send to ack)"), 400);
    assert!(figure(&report, "acked commands/s") > 0.0);
    // CPU time from the server's /metrics (here the test process's own) and /proc/self.
    let server_cpu = figure(&report, "server CPU");
    assert!(server_cpu >= 0.0);
    assert_eq!(
        figure(&report, "server CPU per command"),
        server_cpu * 1e6 / 400.0
    );
    assert!(figure(&report, "pm-load CPU") >= 0.0);
    let l = &report.latencies[0];
    assert!(l.p50_us <= l.p90_us && l.p90_us <= l.p99_us && l.p99_us <= l.max_us);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_at_a_fixed_rate_stops_at_its_count() {
    let app = TestApp::spawn(|_| {}).await;
    let options = WriteOptions {
        tenants: 1,
        connections: 2,
        pipeline: 8,
        rate: Some(400.0),
        duration: Duration::from_secs(30),
        count: Some(200),
    };
    let report = pm_load::write::run(&app.target(), &options, false)
        .await
        .unwrap();
    assert_passed(&report);
    assert_eq!(figure(&report, "acked commands"), 200.0);
    assert_eq!(latency_count(&report, "round trip (send to ack)"), 200);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_event_to_every_subscriber() {
    let app = TestApp::spawn(|_| {}).await;
    let options = FanoutOptions {
        subscribers: 20,
        rate: Some(200.0),
        pipeline: 4,
        duration: Duration::from_millis(500),
    };
    let report = pm_load::fanout::run(&app.target(), &options, false)
        .await
        .unwrap();
    assert_passed(&report);
    let written = figure(&report, "events written");
    assert!(written > 0.0);
    assert_eq!(figure(&report, "deliveries"), written * 20.0);
    assert_eq!(
        latency_count(&report, "commit to subscriber") as f64,
        written * 20.0
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_connections_and_reads_server_memory() {
    let app = TestApp::spawn(|_| {}).await;
    let options = IdleOptions {
        connections: 200,
        hold: Duration::from_millis(200),
    };
    let report = pm_load::idle::run(&app.target(), &options, false)
        .await
        .unwrap();
    assert_passed(&report);
    assert_eq!(figure(&report, "connections open"), 200.0);
    assert_eq!(latency_count(&report, "connect + hello + subscribe"), 200);
    // Read from the server's /metrics (process_resident_memory_bytes).
    assert!(figure(&report, "server RSS before") > 1.0);
    assert!(figure(&report, "server RSS with all open") > 1.0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_clients_come_back_with_exactly_what_they_missed() {
    let app = TestApp::spawn(|_| {}).await;
    let options = StormOptions {
        clients: 150,
        missed: 5,
    };
    let report = pm_load::storm::run(&app.target(), &options, false)
        .await
        .unwrap();
    assert_passed(&report);
    assert_eq!(figure(&report, "clients"), 150.0);
    assert_eq!(latency_count(&report, "storm start to caught up"), 150);
    assert!(figure(&report, "resumed connections/s") > 0.0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_created_then_reopened_cold_round_robin() {
    // More tenants than the server keeps open: every touch of round 2 is a cold open.
    let app = TestApp::spawn(|s| s.limits.max_open_tenants = 8).await;
    let options = TenantsOptions {
        tenants: 30,
        rounds: 2,
        concurrency: 4,
    };
    let report = pm_load::tenants::run(&app.target(), &options, false)
        .await
        .unwrap();
    assert_passed(&report);
    assert_eq!(
        latency_count(&report, "open, new tenant (hello→welcome)"),
        30
    );
    assert_eq!(latency_count(&report, "first request, new tenant"), 30);
    assert_eq!(
        latency_count(&report, "open, closed tenant (hello→welcome)"),
        30
    );
    assert_eq!(latency_count(&report, "first request, closed tenant"), 30);
    assert!(figure(&report, "tenants open on the server at the end") <= 8.0);
    assert!(figure(&report, "round 2 (reopen) touches/s") > 0.0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscribers_are_cut_off_and_resume_without_loss() {
    // A short outgoing queue, so the stalled subscribers overflow within a second or two.
    let app = TestApp::spawn(|s| s.limits.outgoing_queue = 16).await;
    let options = SlowOptions {
        healthy: 3,
        stalled: 3,
        rate: 500.0,
        phase: Duration::from_millis(700),
        cut_off_limit: Duration::from_secs(30),
    };
    let report = pm_load::slow::run(&app.target(), &options, false)
        .await
        .unwrap();
    assert_passed(&report);
    assert_eq!(figure(&report, "stalled cut off (4008)"), 3.0);
    assert!(latency_count(&report, "healthy, alone (A)") > 0);
    assert!(latency_count(&report, "healthy, beside stalled (B)") > 0);
    app.shutdown().await;
}

/// The binary, as the README runs it: a JSON report on stdout, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_seeds_a_tenant_and_times_every_query_kind_beside_a_writer() {
    let app = TestApp::spawn(|_| {}).await;
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/agile-board-export.json");
    let options = ReadOptions {
        readers: 3,
        projects: 2,
        items: 60,
        corpus: Some(corpus),
        rate: None,
        write_rate: 50.0,
        duration: Duration::from_secs(2),
        only: Vec::new(),
    };
    let report = pm_load::read::run(&app.target(), &options, false)
        .await
        .unwrap();
    assert_passed(&report);
    assert_eq!(figure(&report, "projects"), 2.0);
    assert_eq!(figure(&report, "work items"), 60.0);
    // Per project: the project, 11 members, 8 role changes, 4 lanes, 4 sprints, 5 LLM
    // context, the sprint started, 30 items, 15 comments, 15 time entries, 3 dependencies.
    assert_eq!(figure(&report, "seeding commands"), 2.0 * 97.0);
    // Every answered query is in exactly one kind's row.
    let answered = figure(&report, "answered queries") as u64;
    assert!(answered > 0);
    assert_eq!(latency_count(&report, "every query"), answered);
    let by_kind: u64 = report
        .latencies
        .iter()
        .filter(|l| l.name != "every query" && l.name != "writer round trip")
        .map(|l| l.count)
        .sum();
    assert_eq!(by_kind, answered);
    assert!(latency_count(&report, "writer round trip") >= 95);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_prints_a_json_report() {
    let app = TestApp::spawn(|_| {}).await;
    let url = app.0.url();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pm-load"))
        .args([
            "--url",
            &url,
            "--json",
            "write",
            "--count",
            "50",
            "--connections",
            "2",
        ])
        .env("PM_JWT_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["scenario"], "write");
    let acked = report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "acked commands")
        .unwrap();
    assert_eq!(acked["value"], 50.0);

    // Without a secret it says where it looked, and exits 2.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pm-load"))
        .args(["--url", &url, "--secret-file", "no/such/file", "write"])
        .env_remove("PM_JWT_SECRET")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read the server's secret from no/such/file"),
        "{stderr}"
    );
    app.shutdown().await;
}

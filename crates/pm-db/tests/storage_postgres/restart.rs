//! PostgreSQL going away and coming back, on a private server of this test's own (`initdb`
//! and `pg_ctl` into a temporary directory, on a free port; never the shared server): while
//! it is down, commands fail with a clear, retryable `UNAVAILABLE` and store nothing; once it
//! is back, writing goes on at the head + 1, and every acknowledged change is in the log.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pm_db::postgres::{PostgresConfig, PostgresEngine};
use pm_db::{Error, EventFilter, Tenant as _};
use pm_proto::v1;
use pm_proto::v1::command::Kind as C;

use crate::support::*;

/// A PostgreSQL server in a temporary directory, stopped on drop.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("a bound port").port()
        };
        let server = PrivatePostgres { dir, port };
        // PostgreSQL refuses to run as root: as root, the server runs as `postgres`.
        if as_root() {
            chown_postgres(server.dir.path());
        }
        server.run(
            "initdb",
            &[
                "-D",
                &server.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        server.pg_ctl("start");
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl start|stop`, waiting until done; a fast stop ends every connection.
    fn pg_ctl(&self, action: &str) {
        let data = self.data().display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        match action {
            "start" => self.run(
                "pg_ctl",
                &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
            ),
            _ => self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]),
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let mut command = if as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", program]);
            command
        } else {
            Command::new(program)
        };
        let status = command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| {
                panic!("{program} runs (PostgreSQL's server binaries are installed): {e}")
            });
        assert!(status.success(), "{program} {args:?}: {status}");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let mut command = if as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", "pg_ctl"]);
            command
        } else {
            Command::new("pg_ctl")
        };
        let _ = command
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn chown_postgres(dir: &Path) {
    let status = Command::new("chown")
        .args(["postgres:", &dir.display().to_string()])
        .status()
        .expect("chown runs");
    assert!(
        status.success(),
        "the postgres user owns the test's directory"
    );
}

fn item(project: &str, title: &str) -> C {
    C::CreateWorkItem(v1::CreateWorkItem {
        project_id: project.into(),
        item_type: v1::WorkItemType::Task.into(),
        title: title.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_loses_no_acknowledged_write_and_seqs_go_on_at_head_plus_one() {
    let server = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .expect("the private server starts");
    let mut config = PostgresConfig::new(server.url());
    config.max_connections = 4;
    config.acquire_timeout = Duration::from_secs(1);
    let engine = PostgresEngine::connect(config).await.expect("connected");
    let tenant = engine.open_tenant(&acme()).await.expect("opens");
    let project = create_project(&tenant, &ALICE, "PM").await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let result = exec(&tenant, &ALICE, item(&project.id, &format!("before {i}"))).await;
        acked.push(result.expect("stored").seq);
    }
    let head = tenant.head_seq();
    assert_eq!(*acked.last().unwrap(), head);

    let stopped = tokio::task::spawn_blocking(move || {
        server.pg_ctl("stop");
        server
    });
    let server = stopped.await.expect("the server stops");
    for i in 0..3 {
        match exec(
            &tenant,
            &ALICE,
            item(&project.id, &format!("while down {i}")),
        )
        .await
        {
            Err(error @ Error::Unavailable(_)) => {
                let wire = error.to_wire();
                assert_eq!(wire.code, v1::ErrorCode::Unavailable as i32);
                assert!(!wire.message.contains("127.0.0.1"), "{}", wire.message);
            }
            other => panic!("expected UNAVAILABLE while the server is down, got {other:?}"),
        }
    }
    let query = tenant
        .read_events(0, None, 10, &EventFilter::default())
        .await;
    assert!(matches!(query, Err(Error::Unavailable(_))), "{query:?}");

    let started = tokio::task::spawn_blocking(move || {
        server.pg_ctl("start");
        server
    });
    let _server = started.await.expect("the server starts again");
    // The pool finds its connections gone and opens new ones: a client retries.
    let mut next = None;
    for _ in 0..20 {
        match exec(&tenant, &ALICE, item(&project.id, "after the restart")).await {
            Ok(result) => {
                next = Some(result.seq);
                break;
            }
            Err(Error::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(other) => panic!("only UNAVAILABLE while reconnecting, got {other:?}"),
        }
    }
    assert_eq!(next, Some(head + 1), "seq goes on at the head + 1");
    let events = tenant
        .read_events(0, None, 1_000, &EventFilter::default())
        .await
        .expect("the log reads");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=head + 1).collect::<Vec<u64>>(),
        "nothing lost, nothing from the outage"
    );
}

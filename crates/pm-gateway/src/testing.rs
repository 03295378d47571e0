//! A real server for tests (feature `test-util`): bound to port 0, on a fresh data directory
//! (or one the test names, to restart on the same data), with a known HS256 secret to mint
//! tokens with; or a cluster node on an engine and bus the test sets up. Every crate's tests
//! use this one; logs stay silent unless `TEST_LOG` is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pm_core::{TenantId, UserId};
use pm_db::{Engine, SqliteEngine};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::relay::Bus;
use crate::settings::Settings;

/// The HS256 secret every test server verifies tokens with.
pub const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

/// What test servers report as their build.
pub const TEST_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (test)");

/// A running server; dropping it starts its shutdown.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state (settings, storage, metrics).
    pub app: Arc<App>,
    /// Its storage, when it is a SQLite engine.
    sqlite: Option<Arc<SqliteEngine>>,
    data_dir: PathBuf,
    /// The data directory when the server made its own.
    _owned_dir: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// A server with default settings on a fresh data directory.
    pub async fn spawn() -> TestServer {
        Self::spawn_with(|_| {}).await
    }

    /// A server on a fresh data directory, with settings changed by `configure`.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let mut server = Self::spawn_in(dir.path(), configure).await;
        server._owned_dir = Some(dir);
        server
    }

    /// A server on `data_dir` (which outlives it), port 0.
    pub async fn spawn_in(data_dir: &Path, configure: impl FnOnce(&mut Settings)) -> TestServer {
        let listener = crate::server::listen(([127, 0, 0, 1], 0).into(), 1024)
            .expect("a free port on the loopback interface");
        Self::serve_on(listener, data_dir, configure)
    }

    /// A server on an already bound `listener`: a restart at the same address.
    pub fn serve_on(
        listener: TcpListener,
        data_dir: &Path,
        configure: impl FnOnce(&mut Settings),
    ) -> TestServer {
        let settings = test_settings(data_dir, configure);
        let sqlite = Arc::new(SqliteEngine::new(settings.sqlite_config()));
        let mut server = Self::start(listener, data_dir, settings, sqlite.clone(), None);
        server.sqlite = Some(sqlite);
        server
    }

    /// A node of a cluster: a server on port 0 on `engine` (which the test shares between
    /// nodes), with the `bus` to the other nodes (`None`: a single node on that engine).
    pub async fn spawn_node(
        engine: Arc<dyn Engine>,
        bus: Option<Bus>,
        configure: impl FnOnce(&mut Settings),
    ) -> TestServer {
        let listener = crate::server::listen(([127, 0, 0, 1], 0).into(), 1024)
            .expect("a free port on the loopback interface");
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let settings = test_settings(dir.path(), configure);
        let mut server = Self::start(listener, dir.path(), settings, engine, bus);
        server._owned_dir = Some(dir);
        server
    }

    fn start(
        listener: TcpListener,
        data_dir: &Path,
        settings: Settings,
        engine: Arc<dyn Engine>,
        bus: Option<Bus>,
    ) -> TestServer {
        let addr = listener.local_addr().expect("a bound listener");
        let app =
            App::with_parts(settings, engine, bus, TEST_VERSION).expect("test settings are valid");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::server::serve(listener, app.clone(), async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            app,
            sqlite: None,
            data_dir: data_dir.to_owned(),
            _owned_dir: None,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Its storage, as the SQLite engine it is: for tests that look inside a tenant.
    pub fn sqlite(&self) -> &Arc<SqliteEngine> {
        self.sqlite
            .as_ref()
            .expect("a server of TestServer::spawn* runs on SQLite")
    }

    /// The WebSocket URL, `ws://127.0.0.1:PORT/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A token for `user` of `tenant`, valid for an hour.
    pub fn token(&self, tenant: &str, user: &str) -> String {
        token(tenant, user)
    }

    /// Starts the shutdown and waits until the server has returned.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the server task did not panic")
                .expect("the server stopped cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Test settings on `data_dir`, changed by `configure`; turns logging on if `TEST_LOG` is set.
fn test_settings(data_dir: &Path, configure: impl FnOnce(&mut Settings)) -> Settings {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_test_writer()
            .try_init();
    }
    let mut settings = Settings::default();
    settings.server.data_dir = data_dir.to_owned();
    settings.auth.secret = SECRET.into();
    settings.server.drain_timeout_ms = 2_000;
    configure(&mut settings);
    settings
}

/// A token signed with [`SECRET`] for `user` of `tenant`, valid for an hour.
pub fn token(tenant: &str, user: &str) -> String {
    crate::auth::mint_hs256(
        SECRET,
        &TenantId::parse(tenant).expect("a valid tenant id"),
        &UserId::parse("sub", user).expect("a valid user id"),
        None,
        Duration::from_secs(3600),
    )
    .expect("the test secret is long enough")
}

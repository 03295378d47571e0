//! The state every connection shares: settings, storage, token verification, the hubs, the
//! limits and the metrics; and the operator actions on it (the online schema rollout that
//! SIGHUP starts).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pm_db::postgres::PostgresEngine;
use pm_db::{Engine, SqliteEngine};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::Verifier;
use crate::cluster::Cluster;
use crate::hub::Hubs;
use crate::limits::ConnectionCounts;
use crate::metrics::Metrics;
use crate::origin::Origins;
use crate::relay::Bus;
use crate::settings::{ConfigError, Settings, StorageEngine};

/// Everything connections share.
#[derive(Debug)]
pub struct App {
    /// The settings in force.
    pub settings: Settings,
    /// The storage engine: where tenants are opened.
    pub engine: Arc<dyn Engine>,
    /// Token verification.
    pub verifier: Verifier,
    /// Fan-out per tenant.
    pub(crate) hubs: Hubs,
    /// On a cluster node: the bus to the other nodes.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Connections per tenant and user.
    pub counts: Arc<ConnectionCounts>,
    /// What `Welcome.server_version` says: the build of the binary serving.
    pub server_version: String,
    /// The web origins allowed to open `/ws` besides the server's own.
    pub(crate) origins: Origins,
    connections: Arc<Semaphore>,
    ready: AtomicBool,
}

impl App {
    /// Builds the shared state from settings: the storage engine they name (PostgreSQL is
    /// reached at once, so that a wrong URL or a database that is down fails the start) and,
    /// with `bus.nats_url`, the bus to the other nodes. `server_version` identifies the build.
    pub async fn open(settings: Settings, server_version: &str) -> Result<Arc<App>, StartError> {
        let engine: Arc<dyn Engine> = match settings.storage.engine {
            StorageEngine::Sqlite => Arc::new(SqliteEngine::new(settings.sqlite_config())),
            StorageEngine::Postgres => Arc::new(
                PostgresEngine::connect(settings.postgres_config())
                    .await
                    .map_err(StartError::Storage)?,
            ),
        };
        let bus = match settings.bus_config() {
            // Connects in the background: a node starts with NATS down and delivers by
            // polling the change log until it is up.
            Some(config) => Some(Bus::connect(config).await.map_err(StartError::Bus)?),
            None => None,
        };
        Ok(Self::with_parts(settings, engine, bus, server_version)?)
    }

    /// Builds the shared state on `engine`, a single node.
    pub fn with_engine(
        settings: Settings,
        engine: Arc<dyn Engine>,
        server_version: &str,
    ) -> Result<Arc<App>, ConfigError> {
        Self::with_parts(settings, engine, None, server_version)
    }

    /// Builds the shared state on `engine`, and with a `bus` as a node of a cluster whose
    /// nodes share the engine's database.
    pub fn with_parts(
        settings: Settings,
        engine: Arc<dyn Engine>,
        bus: Option<Bus>,
        server_version: &str,
    ) -> Result<Arc<App>, ConfigError> {
        let verifier =
            Verifier::new(&settings.auth).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let origins =
            Origins::new(&settings.server.allowed_origins).map_err(ConfigError::Invalid)?;
        let storage = engine.clone();
        let metrics = Arc::new(Metrics::new(move || storage.figures()));
        let cluster = bus.map(|bus| Arc::new(Cluster::new(bus, metrics.clone())));
        Ok(Arc::new(App {
            engine,
            verifier,
            hubs: Hubs::new(settings.limits.resume_ring_bytes, cluster.clone()),
            cluster,
            metrics,
            counts: Arc::new(ConnectionCounts::default()),
            server_version: server_version.to_owned(),
            origins,
            connections: Arc::new(Semaphore::new(settings.limits.max_connections)),
            ready: AtomicBool::new(false),
            settings,
        }))
    }

    /// Test hook: while `suppressed`, this node commits but does not publish, as a node that
    /// dies between COMMIT and publish; the other nodes' head checks must still deliver.
    #[cfg(feature = "test-util")]
    pub fn suppress_publishing(&self, suppressed: bool) {
        if let Some(cluster) = &self.cluster {
            cluster.suppress_publishing(suppressed);
        }
    }

    /// The WebSocket settings of every connection.
    pub(crate) fn websocket_config(&self) -> WebSocketConfig {
        let max = self.settings.limits.max_frame_bytes;
        // A small read buffer keeps idle connections cheap (8 KiB instead of ~130 KiB): 512
        // bytes hold a request (a hello with its token, a command); larger frames are read in
        // several reads of that size. tungstenite only reads: the server writes its frames
        // itself (`crate::socket`), and what tungstenite would write goes nowhere at once.
        WebSocketConfig::default()
            .read_buffer_size(512)
            .write_buffer_size(0)
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
    }

    /// A place among `limits.max_connections`, if one is free.
    pub(crate) fn connection_place(&self) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }

    /// Whether new connections are taken (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Rolls out newly configured migrations to the open tenants (see
    /// [`Engine::migrate_online`]) and logs the outcome: what SIGHUP does.
    pub async fn migrate_online(&self) -> pm_db::Result<pm_db::RolloutReport> {
        let report = self.engine.migrate_online().await.inspect_err(|error| {
            tracing::error!(%error, "online schema migration refused; nothing was changed");
        })?;
        match &report.failed {
            None => tracing::info!(
                target_version = report.target_version,
                tenants = report.migrated.len(),
                closed_pending = report.closed_pending,
                "online schema migration done"
            ),
            Some((tenant, error)) => tracing::error!(
                target_version = report.target_version,
                %tenant,
                %error,
                migrated = report.migrated.len(),
                skipped = report.skipped.len(),
                "online schema migration FAILED; stopped the rollout"
            ),
        }
        Ok(report)
    }

    /// Runs [`App::migrate_online`] on every SIGHUP, until the returned future is dropped.
    pub async fn migrate_online_on_sighup(self: Arc<Self>) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangup = match signal(SignalKind::hangup()) {
                Ok(hangup) => hangup,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGHUP; online migrations are off");
                    return;
                }
            };
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the migrations directory");
                let _ = self.migrate_online().await;
            }
        }
        #[cfg(not(unix))]
        {
            std::future::pending::<()>().await;
        }
    }
}

/// Why a server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings do not hold together.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The storage cannot be reached.
    #[error("cannot open the storage: {0}")]
    Storage(pm_db::Error),
    /// The bus cannot be set up.
    #[error("cannot set up the bus: {0}")]
    Bus(crate::relay::BusError),
}

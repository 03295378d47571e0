//! Settings: a TOML file, overridden by `PM_*` environment variables, overridden by flags.
//!
//! Every setting `section.key` can be set from the environment as `PM_SECTION_KEY` (for
//! example `PM_LIMITS_MAX_CONNECTIONS=5000`), and from the command line as
//! `--set section.key=value`. The usual ones have short names too: `PM_LISTEN`,
//! `PM_DATA_DIR`, `PM_JWT_SECRET`, and the flags `--listen`, `--data-dir`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// All settings of the server.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Listener and storage location.
    pub server: ServerSettings,
    /// Token verification.
    pub auth: AuthSettings,
    /// Limits that protect the server.
    pub limits: Limits,
    /// Storage tuning.
    pub storage: StorageSettings,
    /// How much of the change log is kept.
    pub changelog: ChangelogSettings,
    /// The bus between the nodes of a cluster.
    pub bus: BusSettings,
}

/// Listener and storage location.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address of the one port serving `/ws`, `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    /// Root of the tenant databases.
    pub data_dir: PathBuf,
    /// How long shutdown waits for in-flight requests before closing connections, ms.
    pub drain_timeout_ms: u64,
    /// Connections the kernel may hold accepted but not yet taken by the server (the
    /// `listen(2)` backlog; the kernel caps it at `net.core.somaxconn`). When thousands of
    /// clients reconnect at once, a full queue drops their handshakes and each retries only
    /// after a second or more. A thread of its own takes them as they complete (see
    /// `server.rs`), so the queue fills only with a burst beyond it between two wake-ups.
    pub listen_backlog: u32,
    /// Web origins (`https://board.example.com`; `http://localhost:*` for any port) whose
    /// pages may open `/ws`, besides the server's own origin. A browser always sends its
    /// page's `Origin`; an upgrade from another origin is refused with 403, so that a page on
    /// another site cannot use a visitor's session (cross-site WebSocket hijacking). Requests
    /// without `Origin` (programs, not browsers) are not concerned. `serve --dev` adds the
    /// loopback origins. As text: comma-separated.
    pub allowed_origins: Vec<String>,
}

/// Which tokens are accepted. The algorithm is fixed here, never taken from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `HS256`, `RS256` or `EdDSA`.
    pub algorithm: String,
    /// HS256 shared secret, at least 32 bytes. Prefer `PM_JWT_SECRET` to writing it in a file.
    pub secret: String,
    /// PEM public key file for RS256 or EdDSA.
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
}

/// Limits. Each is enforced where named.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest WebSocket frame or message (close 1009 beyond), bytes.
    pub max_frame_bytes: usize,
    /// Connections in total (beyond: HTTP 503 before the upgrade).
    pub max_connections: usize,
    /// Connections per tenant (beyond: `Goodbye{TOO_MANY_CONNECTIONS}`).
    pub max_connections_per_tenant: usize,
    /// Connections per user of a tenant.
    pub max_connections_per_user: usize,
    /// Sustained requests per second per connection (token bucket rate).
    pub requests_per_second: u32,
    /// Requests a connection may send in a burst (token bucket size).
    pub request_burst: u32,
    /// Rate-limited requests after which the connection is closed (4029).
    pub rate_limit_strikes: u32,
    /// Frames queued for a connection before it counts as a slow consumer (4008).
    pub outgoing_queue: usize,
    /// Requests of one connection handled at once; more wait for a free slot.
    pub max_in_flight_requests: usize,
    /// Time allowed for `Hello` after the upgrade, ms.
    pub hello_timeout_ms: u64,
    /// Server ping interval; silence for three intervals closes the connection, ms.
    pub heartbeat_interval_ms: u64,
    /// Tenants open at once.
    pub max_open_tenants: usize,
    /// Recent events kept in memory per open tenant, from which resuming subscribers replay
    /// without reading the change log; older positions read the log. Bytes (0: none kept).
    pub resume_ring_bytes: usize,
}

/// Where tenants are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageEngine {
    /// One SQLite file per tenant under `server.data_dir`: a single node.
    #[default]
    Sqlite,
    /// One schema per tenant in the PostgreSQL database `storage.postgres_url`, which any
    /// number of nodes may share (with a `[bus]` for live fan-out between them).
    Postgres,
}

/// Storage: the engine and its tuning.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// `sqlite` (the default) or `postgres`.
    pub engine: StorageEngine,
    /// The PostgreSQL database of `engine = "postgres"`, as `postgres://user@host:port/db`.
    /// May carry a password: never logged. Prefer `PM_STORAGE_POSTGRES_URL` to a file.
    pub postgres_url: String,
    /// Connections to PostgreSQL this node keeps at most; its writers and reads share them.
    pub postgres_max_connections: u32,
    /// Read connections per open tenant.
    pub read_pool_size: u32,
    /// Write jobs queued per tenant before `UNAVAILABLE`.
    pub writer_queue: usize,
    /// Most jobs committed in one transaction.
    pub max_group: usize,
    /// Most commands in one batch.
    pub max_batch_commands: usize,
    /// Migrations directory: a superset of the embedded migrations plus newer ones. Tenants
    /// are brought to it when opened, and SIGHUP applies its new migrations to the open
    /// tenants while serving. Unset: the embedded migrations only.
    pub migrations_dir: Option<PathBuf>,
    /// Largest size of one tenant's database, bytes (0: no limit but the disk's). A write
    /// that would pass it is refused like one on a full disk (`UNAVAILABLE`, "storage is
    /// full"); reads go on.
    pub max_tenant_bytes: u64,
    /// Check each tenant's database (`PRAGMA quick_check`) when it opens and refuse a
    /// damaged one; opening reads the whole file.
    pub check_on_open: bool,
}

/// Change-log retention. An event is pruned once it is outside any limit set here; 0 means
/// no limit, and with no limit everything is kept. The newest event is always kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangelogSettings {
    /// Keep at most this many of the newest events (0: no count limit).
    pub retain_events: u64,
    /// Keep events younger than this many days (0: no age limit).
    pub retain_days: u64,
    /// How often each open tenant looks for events to prune, seconds.
    pub prune_interval_secs: u64,
}

/// The bus between cluster nodes: each node publishes its committed groups there and feeds
/// its subscribers from it (gaps filled from the change log). Unset: a single node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusSettings {
    /// The NATS server, e.g. `nats://127.0.0.1:4222` (empty: no bus). May carry credentials:
    /// never logged.
    pub nats_url: String,
    /// The first tokens of every subject: clusters sharing one NATS server use different ones.
    pub prefix: String,
    /// How often each followed tenant's change log is read past what was delivered, to catch
    /// a commit whose publish was lost (a node that died between COMMIT and publish), and to
    /// keep delivering while NATS is down, ms.
    pub head_check_interval_ms: u64,
}

impl Default for BusSettings {
    fn default() -> Self {
        let bus = crate::relay::BusConfig::default();
        BusSettings {
            nats_url: String::new(),
            prefix: bus.prefix,
            head_check_interval_ms: bus.head_check_interval.as_millis() as u64,
        }
    }
}

impl Default for ChangelogSettings {
    fn default() -> Self {
        ChangelogSettings {
            retain_events: 0,
            retain_days: 0,
            prune_interval_secs: 60,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            data_dir: PathBuf::from("./data"),
            drain_timeout_ms: 10_000,
            listen_backlog: 4096,
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            algorithm: "HS256".into(),
            secret: String::new(),
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1024 * 1024,
            max_connections: 18_000,
            max_connections_per_tenant: 10_000,
            max_connections_per_user: 64,
            requests_per_second: 500,
            request_burst: 1_000,
            rate_limit_strikes: 50,
            outgoing_queue: 1_024,
            max_in_flight_requests: 32,
            hello_timeout_ms: 10_000,
            heartbeat_interval_ms: 15_000,
            max_open_tenants: 256,
            resume_ring_bytes: 8 * 1024 * 1024,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        let writer = pm_db::sqlite::WriterConfig::default();
        StorageSettings {
            engine: StorageEngine::Sqlite,
            postgres_url: String::new(),
            postgres_max_connections: 16,
            read_pool_size: 4,
            writer_queue: writer.queue_capacity,
            max_group: writer.max_group,
            max_batch_commands: writer.max_batch_commands,
            migrations_dir: None,
            max_tenant_bytes: 0,
            check_on_open: false,
        }
    }
}

/// A setting could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A value is malformed, unknown or out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The longest age limit of the change log (a century).
const MAX_RETAIN_DAYS: u64 = 36_500;

/// Short environment names for common settings.
const ALIASES: &[(&str, &str, &str)] = &[
    ("PM_LISTEN", "server", "listen"),
    ("PM_DATA_DIR", "server", "data_dir"),
    ("PM_JWT_SECRET", "auth", "secret"),
    ("PM_JWT_ALGORITHM", "auth", "algorithm"),
    ("PM_JWT_PUBLIC_KEY_FILE", "auth", "public_key_file"),
];

impl Settings {
    /// Defaults, then `file` (if given), then the environment, then `overrides`
    /// (`section.key=value`).
    ///
    /// Each layer is a figment provider that names its source, so that a value of the wrong
    /// type or an unknown key in the file is reported with the file, variable or flag it came
    /// from.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        overrides: &[String],
    ) -> Result<Settings, ConfigError> {
        let defaults = Value::serialize(Settings::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        // Every known `section.key` with the kind of value it takes; unset optional settings
        // are there too, as empty values.
        let mut keys: Vec<(String, String, Kind)> = Vec::new();
        for (section, fields) in defaults.as_dict().into_iter().flatten() {
            for (key, value) in fields.as_dict().into_iter().flatten() {
                keys.push((section.clone(), key.clone(), Kind::of(value)));
            }
        }
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            // Parsed here so that a syntax error starts with the file, as the other errors
            // of this step do.
            let data = Toml::string(&text)
                .data()
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
            figment = figment.merge(SettingsFile { path, data });
        }
        let kind_of = |section: &str, key: &str| {
            keys.iter()
                .find(|(s, k, _)| s == section && k == key)
                .map(|(_, _, kind)| *kind)
        };
        for (section, key, kind) in &keys {
            let name = format!("PM_{}_{}", section.to_uppercase(), key.to_uppercase());
            if let Some(raw) = env(&name) {
                figment = Override::parse(section, key, *kind, &raw, name)?.onto(figment)?;
            }
        }
        for (name, section, key) in ALIASES {
            if let Some(raw) = env(name) {
                let kind = kind_of(section, key).expect("aliases name known settings");
                figment =
                    Override::parse(section, key, kind, &raw, name.to_string())?.onto(figment)?;
            }
        }
        for item in overrides {
            let (path, raw) = item.split_once('=').ok_or_else(|| {
                ConfigError::Invalid(format!("--set {item}: expected section.key=value"))
            })?;
            let (section, key) = path.split_once('.').ok_or_else(|| {
                ConfigError::Invalid(format!("--set {item}: expected section.key=value"))
            })?;
            let Some(kind) = kind_of(section, key) else {
                return Err(ConfigError::Invalid(format!(
                    "--set {item}: unknown setting {path}"
                )));
            };
            figment =
                Override::parse(section, key, kind, raw, format!("--set {path}"))?.onto(figment)?;
        }
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let l = &self.limits;
        for (name, value) in [
            ("limits.max_connections", l.max_connections),
            (
                "limits.max_connections_per_tenant",
                l.max_connections_per_tenant,
            ),
            (
                "limits.max_connections_per_user",
                l.max_connections_per_user,
            ),
            ("limits.outgoing_queue", l.outgoing_queue),
            ("limits.max_in_flight_requests", l.max_in_flight_requests),
            ("limits.max_open_tenants", l.max_open_tenants),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        if self.server.listen_backlog == 0 {
            return invalid("server.listen_backlog must be at least 1".into());
        }
        if l.max_frame_bytes < 1024 {
            return invalid("limits.max_frame_bytes must be at least 1024".into());
        }
        if l.requests_per_second == 0 || l.request_burst == 0 {
            return invalid(
                "limits.requests_per_second and request_burst must be at least 1".into(),
            );
        }
        if l.heartbeat_interval_ms < 100 || l.hello_timeout_ms < 100 {
            return invalid(
                "limits.heartbeat_interval_ms and hello_timeout_ms must be at least 100".into(),
            );
        }
        let c = &self.changelog;
        if c.prune_interval_secs == 0 {
            return invalid("changelog.prune_interval_secs must be at least 1".into());
        }
        if c.retain_days > MAX_RETAIN_DAYS {
            return invalid(format!(
                "changelog.retain_days must be at most {MAX_RETAIN_DAYS} (0 keeps everything)"
            ));
        }
        crate::origin::Origins::new(&self.server.allowed_origins).map_err(ConfigError::Invalid)?;
        let storage = &self.storage;
        if storage.engine == StorageEngine::Postgres {
            let url = &storage.postgres_url;
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid(
                    "storage.engine = \"postgres\" needs storage.postgres_url, \
                     as postgres://user@host:port/database"
                        .into(),
                );
            }
            if storage.postgres_max_connections < 2 {
                return invalid("storage.postgres_max_connections must be at least 2".into());
            }
            for (name, set) in [
                ("storage.migrations_dir", storage.migrations_dir.is_some()),
                ("storage.max_tenant_bytes", storage.max_tenant_bytes > 0),
                ("storage.check_on_open", storage.check_on_open),
            ] {
                if set {
                    return invalid(format!(
                        "{name} applies to SQLite tenants only, not to storage.engine = \"postgres\""
                    ));
                }
            }
        }
        let bus = &self.bus;
        if !bus.nats_url.is_empty() {
            if !(bus.nats_url.starts_with("nats://") || bus.nats_url.starts_with("tls://")) {
                return invalid("bus.nats_url must start with nats:// or tls://".into());
            }
            if storage.engine != StorageEngine::Postgres {
                return invalid(
                    "bus.nats_url joins a cluster, whose nodes share storage.engine = \"postgres\""
                        .into(),
                );
            }
            crate::relay::check_prefix(&bus.prefix)
                .map_err(|e| ConfigError::Invalid(format!("bus.prefix: {e}")))?;
            if bus.head_check_interval_ms < 10 {
                return invalid("bus.head_check_interval_ms must be at least 10".into());
            }
        }
        if let Some(dir) = &self.storage.migrations_dir {
            if let Err(e) = pm_db::sqlite::migrations::newest_version(Some(dir)) {
                return invalid(format!("storage.migrations_dir: {e}"));
            }
        }
        Ok(())
    }

    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.limits.heartbeat_interval_ms)
    }
}

/// What a setting given as text is read as: like its default value.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Integer,
    Boolean,
    Text,
    /// Comma-separated text.
    List,
}

impl Kind {
    fn of(value: &Value) -> Kind {
        match value {
            Value::Num(..) => Kind::Integer,
            Value::Bool(..) => Kind::Boolean,
            Value::Array(..) => Kind::List,
            _ => Kind::Text,
        }
    }
}

/// Names a key as `section.key`, without figment's profile.
fn plain_key(_: &Profile, keys: &[&str]) -> String {
    keys.join(".")
}

/// The settings file, named by its path in errors.
struct SettingsFile<'a> {
    path: &'a Path,
    data: Map<Profile, Dict>,
}

impl Provider for SettingsFile<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::from("settings file", self.path).interpolater(plain_key)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(self.data.clone())
    }
}

/// One setting given as text by an environment variable or a `--set` flag, named by it in
/// errors.
struct Override {
    source: String,
    section: String,
    key: String,
    value: Value,
}

impl Override {
    /// Reads `raw` as the kind of value the setting takes: numbers, booleans, text, lists
    /// (comma-separated). Text is taken as it is, never parsed, so a secret stays the exact
    /// bytes given.
    fn parse(
        section: &str,
        key: &str,
        kind: Kind,
        raw: &str,
        source: String,
    ) -> Result<Override, ConfigError> {
        let value =
            match kind {
                Kind::Integer => raw.trim().parse::<i64>().map(Value::from).map_err(|_| {
                    ConfigError::Invalid(format!("{source}: expected a whole number"))
                })?,
                Kind::Boolean => raw.trim().parse::<bool>().map(Value::from).map_err(|_| {
                    ConfigError::Invalid(format!("{source}: expected true or false"))
                })?,
                Kind::Text => Value::from(raw.to_owned()),
                Kind::List => Value::from(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                ),
            };
        Ok(Override {
            source,
            section: section.to_owned(),
            key: key.to_owned(),
            value,
        })
    }

    /// `figment` with this setting over it. The file may have made the section something
    /// else than a table: that is refused here rather than silently replaced.
    fn onto(self, figment: Figment) -> Result<Figment, ConfigError> {
        if let Ok(section) = figment.find_value(&self.section) {
            if section.as_dict().is_none() {
                return Err(ConfigError::Invalid(format!(
                    "{}: {} is not a section",
                    self.source, self.section
                )));
            }
        }
        Ok(figment.merge(self))
    }
}

impl Provider for Override {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.source.clone()).interpolater(plain_key)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let fields = Dict::from([(self.key.clone(), self.value.clone())]);
        let sections = Dict::from([(self.section.clone(), Value::from(fields))]);
        Ok(Profile::Default.collect(sections))
    }
}

mod engines;
#[cfg(test)]
mod tests;

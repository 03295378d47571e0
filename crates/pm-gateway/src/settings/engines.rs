//! What the storage and bus settings mean to the engines: their configurations.

use std::time::Duration;

use super::Settings;

impl Settings {
    /// The change-log retention these settings describe.
    pub fn retention(&self) -> pm_db::Retention {
        let c = &self.changelog;
        pm_db::Retention {
            max_events: (c.retain_events > 0).then_some(c.retain_events),
            max_age: (c.retain_days > 0).then(|| Duration::from_secs(c.retain_days * 86_400)),
            interval: Duration::from_secs(c.prune_interval_secs),
        }
    }

    /// The storage configuration these settings describe.
    pub fn sqlite_config(&self) -> pm_db::SqliteConfig {
        let mut config = pm_db::SqliteConfig::new(&self.server.data_dir);
        config.max_open_tenants = self.limits.max_open_tenants;
        config.read_pool_size = self.storage.read_pool_size;
        config.writer.queue_capacity = self.storage.writer_queue;
        config.writer.max_group = self.storage.max_group;
        config.writer.max_batch_commands = self.storage.max_batch_commands;
        config.writer.retention = self.retention();
        config.migrations_dir = self.storage.migrations_dir.clone();
        config.max_tenant_bytes = Some(self.storage.max_tenant_bytes).filter(|&b| b > 0);
        config.check_on_open = self.storage.check_on_open;
        config
    }

    /// The PostgreSQL configuration these settings describe (used when `storage.engine` is
    /// `postgres`).
    pub fn postgres_config(&self) -> pm_db::postgres::PostgresConfig {
        let mut config = pm_db::postgres::PostgresConfig::new(&self.storage.postgres_url);
        config.max_connections = self.storage.postgres_max_connections;
        config.max_open_tenants = self.limits.max_open_tenants;
        config.writer.queue_capacity = self.storage.writer_queue;
        config.writer.max_group = self.storage.max_group;
        config.writer.max_batch_commands = self.storage.max_batch_commands;
        config.writer.retention = self.retention();
        config
    }

    /// The bus these settings describe; `None` for a single node.
    pub fn bus_config(&self) -> Option<crate::relay::BusConfig> {
        (!self.bus.nats_url.is_empty()).then(|| crate::relay::BusConfig {
            url: self.bus.nats_url.clone(),
            prefix: self.bus.prefix.clone(),
            head_check_interval: Duration::from_millis(self.bus.head_check_interval_ms),
            ..crate::relay::BusConfig::default()
        })
    }
}

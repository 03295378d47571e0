//! The NATS connection of a node: subjects, publishing committed groups, and the signals
//! (reconnects, slow consumers) after which every relay checks the change log.

use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ConnectOptions, Event};
use pm_core::TenantId;
use pm_db::{CommittedEvent, Tenant};
use tokio::sync::watch;

use super::feed::{self, Commits, Inputs, Relay};
use super::wire::{self, WireError};

/// Messages a relay's NATS subscription holds before NATS drops newer ones (and reports a
/// slow consumer, after which the relay reads what it missed from the log).
const SUBSCRIPTION_CAPACITY: usize = 8_192;

/// How a node reaches the bus.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`. May carry credentials: never logged.
    pub url: String,
    /// The first tokens of every subject (`<prefix>.t.<tenant>`): clusters, or tests,
    /// sharing one NATS server use different prefixes.
    pub prefix: String,
    /// How often a relay reads the change log past what it delivered, to catch a commit whose
    /// publish was lost (and to keep delivering while NATS is down).
    pub head_check_interval: Duration,
    /// Groups a relay's output keeps for receivers that lag (then `Lagged`).
    pub feed_capacity: usize,
    /// How long a publish may wait for room in the client's queue before it is given up
    /// (receivers then read the group from the log): a committing node never stalls on NATS.
    pub publish_timeout: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "pm".into(),
            head_check_interval: Duration::from_secs(1),
            feed_capacity: 1_024,
            publish_timeout: Duration::from_millis(50),
        }
    }
}

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The subject prefix is not a run of plain NATS tokens.
    #[error("bus prefix {0:?} must be dot-separated tokens of letters, digits, '_' and '-'")]
    Prefix(String),
    /// The client could not be set up (a malformed URL or options). Not the server being
    /// down: the client connects in the background and keeps trying.
    #[error("cannot set up the bus connection: {0}")]
    Connect(String),
    /// NATS is not connected now: nothing was sent.
    #[error("the bus is not connected")]
    Down,
    /// Subscribing to a tenant's subject failed.
    #[error("cannot subscribe on the bus: {0}")]
    Subscribe(String),
    /// A publish failed or timed out; the rest of the group was not sent.
    #[error("cannot publish on the bus: {0}")]
    Publish(String),
    /// The group cannot be encoded.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// One node's connection to NATS.
#[derive(Debug, Clone)]
pub struct Bus {
    client: Client,
    config: Arc<BusConfig>,
    /// Bumped on every (re)connect and slow-consumer report.
    signals: watch::Receiver<u64>,
}

impl Bus {
    /// Sets up the connection. It is made in the background and remade after every loss, so
    /// this succeeds with the server down: publishing then fails fast and relays poll the log.
    pub async fn connect(config: BusConfig) -> Result<Bus, BusError> {
        check_prefix(&config.prefix)?;
        let (signal, signals) = watch::channel(0u64);
        let signal = Arc::new(signal);
        let options = ConnectOptions::new()
            .name("pm-server")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .event_callback(move |event| {
                let signal = signal.clone();
                async move {
                    match event {
                        Event::Connected | Event::SlowConsumer(_) => {
                            tracing::info!(%event, "bus: relays check the change log");
                            signal.send_modify(|n| *n += 1);
                        }
                        other => tracing::warn!(event = %other, "bus"),
                    }
                }
            });
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(|e| BusError::Connect(e.kind().to_string()))?;
        Ok(Bus {
            client,
            config: Arc::new(config),
            signals,
        })
    }

    /// The subject of `tenant`'s committed groups.
    pub fn subject(&self, tenant: &TenantId) -> String {
        subject(&self.config.prefix, tenant)
    }

    /// The settings the bus runs with.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// Whether NATS is connected now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Waits until NATS is connected, at most `timeout`; false if it was not by then.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut signals = self.signals.clone();
        loop {
            if self.is_connected() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            // The client reports a connection just before it records it as its state: look
            // again shortly after a signal, or now and then without one.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)),
                signals.changed(),
            )
            .await;
        }
    }

    /// Publishes a committed group (consecutive seqs, in order) on `tenant`'s subject, split
    /// into messages that fit the server's size limit. Best effort by design: an error means
    /// some of it did not go, and other nodes read that from the change log.
    pub async fn publish(
        &self,
        tenant: &TenantId,
        group: &[CommittedEvent],
    ) -> Result<(), BusError> {
        if !self.is_connected() {
            return Err(BusError::Down);
        }
        let subject = self.subject(tenant);
        for chunk in wire::encode_chunks(group, self.client.max_payload())? {
            let sent = tokio::time::timeout(self.config.publish_timeout, async {
                self.client.publish(subject.clone(), chunk).await
            })
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(BusError::Publish(e.kind().to_string())),
                Err(_) => return Err(BusError::Publish("timed out".into())),
            }
        }
        Ok(())
    }

    /// Starts `tenant`'s relay, having delivered everything up to `after`: it follows the
    /// tenant's subject, this node's commits (`local`, from [`Tenant::subscribe_commits`]: a
    /// node's own subscribers need not wait for the bus) and the change log, and emits every
    /// later group once, in seq order. The relay holds the tenant weakly and ends when it is
    /// closed.
    pub async fn relay(
        &self,
        tenant: &Arc<dyn Tenant>,
        after: u64,
        local: Option<Commits>,
    ) -> Result<Relay, BusError> {
        let subscription = self
            .client
            .subscribe(self.subject(tenant.id()))
            .await
            .map_err(|e| BusError::Subscribe(e.kind().to_string()))?;
        if self.is_connected() {
            // A round trip makes the subscription take effect at the server before this
            // returns, so that groups published from now on reach the relay. Best effort: what
            // it misses otherwise is read from the log.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
        }
        let mut signals = self.signals.clone();
        // Signals from before the relay existed are answered by its first head check.
        signals.borrow_and_update();
        let inputs = Inputs {
            subscription,
            signals,
            local,
        };
        Ok(feed::start(tenant, after, inputs, &self.config))
    }
}

/// `<prefix>.t.<tenant>`. Tenant ids are already plain tokens (`[a-z0-9_-]`), but the
/// subject must stay one token whatever a tenant id may become: any other byte is written as
/// `~` and two hex digits (and `~` itself too), so no id can add a token (`.`) or a wildcard
/// (`*`, `>`) and no two ids share a subject.
pub(crate) fn subject(prefix: &str, tenant: &TenantId) -> String {
    format!("{prefix}.t.{}", token(tenant.as_str()))
}

/// `raw` as one plain subject token: see [`subject`].
fn token(raw: &str) -> String {
    let mut token = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-' {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("~{byte:02x}"));
        }
    }
    token
}

/// A prefix is one or more dot-separated tokens of `[A-Za-z0-9_-]`: no wildcards, no
/// whitespace, no empty token.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), BusError> {
    let plain = |token: &str| {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if prefix.split('.').all(plain) {
        Ok(())
    } else {
        Err(BusError::Prefix(prefix.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_the_prefix_and_one_token_per_tenant() {
        let tenant = TenantId::parse("acme-corp_2").unwrap();
        assert_eq!(subject("pm.prod", &tenant), "pm.prod.t.acme-corp_2");
    }

    #[test]
    fn subject_escapes_anything_but_plain_token_bytes() {
        // TenantId::parse refuses these today; the subject must not rely on it.
        for (raw, token) in [
            ("a.b", "a~2eb"),
            ("a*", "a~2a"),
            (">", "~3e"),
            ("a b", "a~20b"),
            ("a~2eb", "a~7e2eb"),
        ] {
            assert_eq!(super::token(raw), token, "{raw:?}");
        }
        // Escaping keeps ids apart: `a.b` and the literal text `a~2eb` differ.
        assert_ne!(super::token("a.b"), super::token("a~2eb"));
    }

    #[test]
    fn every_valid_tenant_id_is_a_single_plain_token() {
        for raw in ["a", "0", "acme", "a-b_c", &"z".repeat(TenantId::MAX_LEN)] {
            let tenant = TenantId::parse(raw).unwrap();
            let subject = subject("p", &tenant);
            let token = subject.strip_prefix("p.t.").unwrap();
            assert_eq!(token, raw);
            assert!(!token.contains(['.', '*', '>', ' ', '\t', '\r', '\n']));
        }
    }

    #[test]
    fn prefixes_must_be_plain_tokens() {
        for ok in ["pm", "pm.prod", "test_1.a-b"] {
            assert!(check_prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", ".", "pm.", ".pm", "pm..x", "pm.*", "pm.>", "p m", "pm\n", "é",
        ] {
            assert!(
                matches!(check_prefix(bad), Err(BusError::Prefix(p)) if p == bad),
                "{bad:?}"
            );
        }
    }
}

//! One tenant's relay: the task that turns the tenant's bus subject, this node's own commits
//! and the change log into a gap-free, duplicate-free stream of committed groups, in seq
//! order.
//!
//! Groups from the bus and from this node's writer go through the [`Sequencer`]: duplicates
//! are dropped (a group of this node's arrives twice: from its writer at once, and back from
//! the bus), a group after a hole waits while the hole is read from the change log. The log is also read past the last
//! delivered seq every `head_check_interval` and after every bus (re)connect or slow-consumer
//! report: that catches a commit whose publish was lost (its node died between COMMIT and
//! publish) and keeps delivery going, by polling, while NATS is down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_nats::Subscriber;
use futures::StreamExt;
use pm_core::TenantId;
use pm_db::{CommittedEvent, EventFilter, StoredEvent, Tenant};
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::bus::BusConfig;
use super::sequencer::{Decision, Sequencer};
use super::wire;

/// Events read from the change log per query.
const PAGE: u32 = 1_000;

/// A running relay. Its output has the shape of [`Tenant::subscribe_commits`]; dropping the
/// relay (or [`Relay::shutdown`]) stops the task and unsubscribes from the bus.
#[derive(Debug)]
pub struct Relay {
    /// The receiver made before the task started, for the first subscriber: it misses
    /// nothing the relay emits.
    first: Mutex<Option<broadcast::Receiver<Arc<[CommittedEvent]>>>>,
    /// For later subscribers. The task owns the only strong sender, so receivers see
    /// `Closed` when it ends.
    feed: broadcast::WeakSender<Arc<[CommittedEvent]>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

/// What a relay has done so far: where its events came from (for metrics, and for tests to
/// tell delivery over the bus from delivery by reading the log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayFigures {
    /// Groups received from the bus and decoded.
    pub bus_groups: u64,
    /// Of those, groups that held nothing new (repeats, or already read from the log).
    pub duplicate_groups: u64,
    /// Messages on the bus that were not a group.
    pub bad_groups: u64,
    /// Events emitted as received from the bus.
    pub bus_events: u64,
    /// Events emitted as read from the change log (holes, head checks, polling).
    pub log_events: u64,
    /// Events emitted as this node's writer committed them (before the bus brought them back).
    pub local_events: u64,
}

#[derive(Debug, Default)]
struct Counters {
    bus_groups: AtomicU64,
    duplicate_groups: AtomicU64,
    bad_groups: AtomicU64,
    bus_events: AtomicU64,
    log_events: AtomicU64,
    local_events: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Relay {
    /// The groups the relay emits, in seq order: the first call gets every one since the
    /// relay started (after the `after` it was started with; a hub takes this one), later
    /// calls those from the time of the call. A receiver that lags behind gets
    /// `RecvError::Lagged` and catches up with [`Tenant::read_events`]; `Closed` means the
    /// relay ended (stopped, or the log no longer holds what it missed).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<[CommittedEvent]>> {
        let first = self
            .first
            .lock()
            .expect("relay lock is never poisoned")
            .take();
        if let Some(first) = first {
            return first;
        }
        match self.feed.upgrade() {
            Some(sender) => sender.subscribe(),
            // The task has ended: a receiver that says so.
            None => broadcast::channel(1).1,
        }
    }

    /// What the relay has done so far.
    pub fn figures(&self) -> RelayFigures {
        let c = &self.counters;
        RelayFigures {
            bus_groups: c.bus_groups.load(Ordering::Relaxed),
            duplicate_groups: c.duplicate_groups.load(Ordering::Relaxed),
            bad_groups: c.bad_groups.load(Ordering::Relaxed),
            bus_events: c.bus_events.load(Ordering::Relaxed),
            log_events: c.log_events.load(Ordering::Relaxed),
            local_events: c.local_events.load(Ordering::Relaxed),
        }
    }

    /// Stops the task and waits until it has ended.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Dropping `stop` ends the task at its next wake-up; nothing else holds it.
        self.stop.take();
    }
}

/// A tenant's committed groups as [`Tenant::subscribe_commits`] gives them.
pub type Commits = broadcast::Receiver<Arc<[CommittedEvent]>>;

/// Starts the task, with everything up to `after` delivered.
pub(super) fn start(
    tenant: &Arc<dyn Tenant>,
    after: u64,
    inputs: Inputs,
    config: &BusConfig,
) -> Relay {
    let (out, first) = broadcast::channel(config.feed_capacity);
    let feed = out.downgrade();
    let (stop, stopped) = oneshot::channel();
    let counters = Arc::new(Counters::default());
    let state = Feed {
        id: tenant.id().clone(),
        tenant: Arc::downgrade(tenant),
        sequencer: Sequencer::new(after),
        out,
        counters: counters.clone(),
    };
    let task = tokio::spawn(run(state, inputs, stopped, config.head_check_interval));
    Relay {
        first: Mutex::new(Some(first)),
        feed,
        stop: Some(stop),
        task: Some(task),
        counters,
    }
}

/// Where a relay's groups come from, besides the change log.
#[derive(Debug)]
pub(super) struct Inputs {
    /// The tenant's subject on the bus.
    pub(super) subscription: Subscriber,
    /// Bumped on every bus (re)connect and slow-consumer report.
    pub(super) signals: watch::Receiver<u64>,
    /// This node's commits, if the relay takes them straight from the writer.
    pub(super) local: Option<Commits>,
}

async fn run(
    mut feed: Feed,
    inputs: Inputs,
    mut stopped: oneshot::Receiver<()>,
    interval: std::time::Duration,
) {
    let mut subscription = Some(inputs.subscription);
    let mut signals = Some(inputs.signals);
    let mut local = inputs.local;
    // The first tick is at once: what was committed before the subscription took effect.
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Checks before messages: a steady stream of messages must not starve them.
        let step = tokio::select! {
            biased;
            _ = &mut stopped => return,
            changed = changed(&mut signals) => {
                if !changed {
                    signals = None;
                }
                feed.head_check().await
            }
            _ = ticker.tick() => feed.head_check().await,
            commit = next_commit(&mut local) => match commit {
                Ok(group) => feed.offer(group, Source::Local).await,
                Err(broadcast::error::RecvError::Lagged(_)) => feed.head_check().await,
                // The tenant was closed on this node: nobody here follows it any more.
                Err(broadcast::error::RecvError::Closed) => Step::End,
            },
            message = next_message(&mut subscription) => match message {
                Some(payload) => feed.receive(payload).await,
                None => {
                    // The client was closed: the log alone carries on.
                    subscription = None;
                    Step::Go
                }
            },
        };
        if step == Step::End {
            return;
        }
    }
}

async fn next_commit(
    local: &mut Option<Commits>,
) -> Result<Arc<[CommittedEvent]>, broadcast::error::RecvError> {
    match local {
        Some(local) => local.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_message(subscription: &mut Option<Subscriber>) -> Option<bytes::Bytes> {
    match subscription {
        Some(subscription) => subscription.next().await.map(|m| m.payload),
        None => std::future::pending().await,
    }
}

/// Waits for a bus signal; false when the bus is gone (no more signals).
async fn changed(signals: &mut Option<watch::Receiver<u64>>) -> bool {
    match signals {
        Some(signals) => signals.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Whether the relay goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Go,
    /// The log no longer holds events the relay has not delivered: its stream cannot be made
    /// whole, so it ends and its receivers (subscribers) resume from the log themselves. Also
    /// when the tenant was closed on this node.
    End,
}

/// A fill that did not complete.
#[derive(Debug)]
enum Unfilled {
    /// Not now (storage unavailable, log not showing the range yet): the next head check
    /// tries again.
    Later,
    /// Pruned, or the tenant closed: see [`Step::End`].
    Lost,
}

/// Where a group came from, for the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Bus,
    Local,
}

#[derive(Debug)]
struct Feed {
    id: TenantId,
    /// Weak: a relay must not keep an idle tenant open.
    tenant: Weak<dyn Tenant>,
    sequencer: Sequencer,
    out: broadcast::Sender<Arc<[CommittedEvent]>>,
    counters: Arc<Counters>,
}

impl Feed {
    /// A message from the bus.
    async fn receive(&mut self, payload: bytes::Bytes) -> Step {
        match wire::decode(payload) {
            Ok(group) => {
                Counters::add(&self.counters.bus_groups, 1);
                self.offer(group, Source::Bus).await
            }
            Err(error) => {
                Counters::add(&self.counters.bad_groups, 1);
                tracing::warn!(tenant = %self.id, %error, "relay: bad group on the bus");
                Step::Go
            }
        }
    }

    /// A committed group, from the bus or from this node's writer.
    async fn offer(&mut self, group: Arc<[CommittedEvent]>, source: Source) -> Step {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Step::Go;
        };
        let (first, last) = (first.seq, last.seq);
        loop {
            match self.sequencer.offer(first, last) {
                Decision::Duplicate => {
                    if source == Source::Bus {
                        Counters::add(&self.counters.duplicate_groups, 1);
                    }
                    return Step::Go;
                }
                Decision::Deliver { skip } => {
                    let counter = match source {
                        Source::Bus => &self.counters.bus_events,
                        Source::Local => &self.counters.local_events,
                    };
                    Counters::add(counter, (group.len() - skip) as u64);
                    let group = if skip == 0 {
                        group
                    } else {
                        group[skip..].into()
                    };
                    self.emit(group);
                    return Step::Go;
                }
                Decision::Fill { after, until } => match self.fill(after, Some(until)).await {
                    Ok(()) => {}
                    // The group is dropped: the next head check reads it from the log.
                    Err(Unfilled::Later) => return Step::Go,
                    Err(Unfilled::Lost) => return Step::End,
                },
            }
        }
    }

    /// Reads the log past the last delivered seq.
    async fn head_check(&mut self) -> Step {
        match self.fill(self.sequencer.last(), None).await {
            Ok(()) | Err(Unfilled::Later) => Step::Go,
            Err(Unfilled::Lost) => Step::End,
        }
    }

    /// Delivers `after + 1 ..= until` (`None`: up to the log's head) from the change log.
    async fn fill(&mut self, mut after: u64, until: Option<u64>) -> Result<(), Unfilled> {
        let id = self.id.clone();
        loop {
            if until.is_some_and(|until| after >= until) {
                return Ok(());
            }
            let Some(tenant) = self.tenant.upgrade() else {
                tracing::debug!(tenant = %id, "relay: the tenant was closed");
                return Err(Unfilled::Lost);
            };
            let read = tenant
                .read_events(after, until, PAGE, &EventFilter::default())
                .await;
            drop(tenant);
            let events = match read {
                Ok(events) => events,
                Err(pm_db::Error::ResyncRequired(_)) => {
                    tracing::error!(tenant = %id, after, "relay: missed events were pruned from the log");
                    return Err(Unfilled::Lost);
                }
                Err(error) => {
                    tracing::warn!(tenant = %id, %error, "relay: cannot read the log; retrying");
                    return Err(Unfilled::Later);
                }
            };
            let full_page = events.len() == PAGE as usize;
            let group = match to_group(&events, after) {
                Ok(Some(group)) => group,
                // Nothing there yet: for a head check that is the end; a bounded fill's range
                // was announced by the bus, so it is committed and shows on a later check.
                Ok(None) => {
                    return if until.is_none() {
                        Ok(())
                    } else {
                        Err(Unfilled::Later)
                    }
                }
                Err(error) => {
                    tracing::error!(tenant = %id, %error, "relay: unusable change log page");
                    return Err(Unfilled::Later);
                }
            };
            after = group.last().map_or(after, |e| e.seq);
            match self.sequencer.offer(after + 1 - group.len() as u64, after) {
                Decision::Deliver { skip: 0 } => {
                    Counters::add(&self.counters.log_events, group.len() as u64);
                    self.emit(group);
                }
                other => {
                    // `to_group` made the page continue the stream, so this cannot happen.
                    tracing::error!(tenant = %id, ?other, "relay: log page out of step");
                    return Err(Unfilled::Later);
                }
            }
            if until.is_none() && !full_page {
                return Ok(());
            }
        }
    }

    fn emit(&self, group: Arc<[CommittedEvent]>) {
        if let (Some(tenant), Some(last)) = (self.tenant.upgrade(), group.last()) {
            // Welcome and the like show other nodes' commits too.
            tenant.observe_head(last.seq);
        }
        // No receiver is not an error: a hub may not be listening yet.
        let _ = self.out.send(group);
    }
}

/// A page of the log as a group that continues the stream after `after`; `None` if empty.
fn to_group(events: &[StoredEvent], after: u64) -> Result<Option<Arc<[CommittedEvent]>>, String> {
    let mut group = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        if event.seq != after + 1 + i as u64 {
            return Err(format!(
                "seq {} where {} was expected: the log has a hole",
                event.seq,
                after + 1 + i as u64
            ));
        }
        group.push(event.to_committed().map_err(|e| e.to_string())?);
    }
    Ok((!group.is_empty()).then(|| group.into()))
}

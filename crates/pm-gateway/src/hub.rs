//! Fan-out: one hub per open tenant that has had subscribers, fed by the tenant's writer or,
//! on a cluster node, by the tenant's [`Relay`](crate::relay::Relay) (every node's commits).
//!
//! Each committed event arrives once, already encoded as a `ServerFrame` in shared `Bytes`,
//! and is queued (`try_send`) for every subscriber whose filter and permissions match. A
//! subscriber whose queue is full is cut off (`SLOW_CONSUMER`): the writer and the other
//! subscribers never wait for it, and it can resume from the log.
//!
//! A new subscriber starts catching up: every committed group is buffered for it as it is
//! (permissions are not known yet) until [`Hub::go_live`] hands over its memberships as of the
//! position it replayed the log to; the handshake around it is in [`resume`](crate::resume).
//! Events are processed under one lock, in seq order.
//!
//! The hub also keeps the tenant's recent events in a [`Ring`] (bounded by bytes) from which
//! resuming subscribers replay without querying the log. For that the hub outlives its
//! subscribers: [`Hubs`] keeps it as long as its tenant is open (a reconnect storm finds the
//! ring that was filled while everyone was away). It holds the tenant weakly, so that an idle
//! tenant can still be closed; the writer's feed then ends and so does the hub, whose ring is
//! emptied at once and whose entry goes at the next start of a hub. At most one hub per open
//! tenant, so the rings hold at most `limits.max_open_tenants` × `limits.resume_ring_bytes`.
//!
//! A hub whose feed ends while its tenant is open (a relay whose missed events were pruned
//! from the log) cuts its subscribers off, so that they resume from the log, and is replaced
//! by a new one at the next subscription.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};

use pm_core::kinds::{ChangeAction, EntityKind};
use pm_core::{TenantId, UserId};
use pm_db::{CommittedEvent, EventFilter, Tenant};
use tokio::sync::broadcast;

use crate::cluster::Cluster;
use crate::connection::{Close, CloseSignal, Outbound};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, Refused};
use crate::ring::{Page, Ring};
use crate::socket::Framed;

/// The hubs of the open tenants that have had subscribers.
#[derive(Debug)]
pub(crate) struct Hubs {
    hubs: Mutex<HashMap<TenantId, Arc<Hub>>>,
    /// The bound of each hub's ring of recent events, bytes.
    ring_bytes: usize,
    /// On a cluster node: where hubs' relays come from.
    cluster: Option<Arc<Cluster>>,
}

impl Hubs {
    /// No hubs yet; each will keep up to `ring_bytes` of recent events, and on a cluster
    /// node be fed by a relay.
    pub(crate) fn new(ring_bytes: usize, cluster: Option<Arc<Cluster>>) -> Hubs {
        Hubs {
            hubs: Mutex::default(),
            ring_bytes,
            cluster,
        }
    }

    /// The hub of `tenant` (this very instance: a tenant closed and opened again gets a new
    /// hub), started if it has none.
    pub(crate) fn get(&self, tenant: &Arc<dyn Tenant>, metrics: &Arc<Metrics>) -> Arc<Hub> {
        let mut hubs = self.hubs.lock().expect("hubs lock is never poisoned");
        if let Some(hub) = hubs
            .get(tenant.id())
            .filter(|hub| hub.serves(tenant) && !hub.ended())
        {
            return hub.clone();
        }
        hubs.retain(|_, hub| hub.tenant.strong_count() > 0);
        let hub = Hub::start(
            tenant,
            metrics.clone(),
            self.ring_bytes,
            self.cluster.clone(),
        );
        hubs.insert(tenant.id().clone(), hub.clone());
        hub
    }
}

/// One tenant's subscribers, and its recent events.
#[derive(Debug)]
pub(crate) struct Hub {
    id: TenantId,
    /// Weak: the hub must not keep an idle tenant open.
    tenant: Weak<dyn Tenant>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Filled by the hub's task only, read by resuming subscribers.
    ring: RwLock<Ring>,
}

#[derive(Debug)]
struct State {
    /// The last seq processed.
    last_seq: u64,
    next_id: u64,
    subscribers: HashMap<u64, Subscriber>,
    /// The feed ended: nothing more will be delivered.
    ended: bool,
}

/// What a subscriber asked for.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    /// Only these projects (`None`: every project the user may see).
    pub(crate) projects: Option<HashSet<String>>,
    /// Only these kinds (empty: all).
    pub(crate) kinds: Vec<EntityKind>,
}

#[derive(Debug)]
struct Subscriber {
    user: UserId,
    filter: Filter,
    /// Live projects the user is a member of; kept current from membership and project events
    /// once live.
    allowed: HashSet<String>,
    /// Deleted projects the user is a member of: allowed again once restored.
    deleted: HashSet<String>,
    /// Events at or below this seq were or will be sent from the log.
    skip_until: u64,
    out: Arc<Outbox>,
    close: Arc<CloseSignal>,
    /// `Some`: catching up; committed groups wait here unfiltered.
    buffer: Option<Vec<Arc<[CommittedEvent]>>>,
    /// Groups buffered while catching up before the subscriber counts as slow.
    capacity: usize,
}

impl Subscriber {
    /// Whether the subscriber may see, and asked for, the events of `project_id`.
    fn sees_project(&self, project_id: &str) -> bool {
        self.allowed.contains(project_id)
            && self
                .filter
                .projects
                .as_ref()
                .is_none_or(|p| p.contains(project_id))
    }

    fn wants_kind(&self, kind: EntityKind) -> bool {
        self.filter.kinds.is_empty() || self.filter.kinds.contains(&kind)
    }
}

/// A subscriber's place in the hub; leaving it (drop) unsubscribes.
#[derive(Debug)]
pub(crate) struct Registration {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub
            .state
            .lock()
            .expect("hub lock is never poisoned")
            .subscribers
            .remove(&self.id);
    }
}

/// How a subscriber is reached.
#[derive(Debug)]
pub(crate) struct Channels {
    /// Its connection's outgoing queue.
    pub(crate) out: Arc<Outbox>,
    /// Its connection's close requests.
    pub(crate) close: Arc<CloseSignal>,
    /// Groups buffered while catching up before it counts as slow.
    pub(crate) capacity: usize,
}

impl Hub {
    fn start(
        tenant: &Arc<dyn Tenant>,
        metrics: Arc<Metrics>,
        ring_bytes: usize,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<Hub> {
        // Subscribe before reading the head: anything committed later is in the receiver,
        // anything earlier is at or below the head (and skipped by seq if in both).
        let commits = tenant.subscribe_commits();
        let head = tenant.head_seq();
        let hub = Arc::new(Hub {
            state: Mutex::new(State {
                last_seq: head,
                next_id: 0,
                subscribers: HashMap::new(),
                ended: false,
            }),
            id: tenant.id().clone(),
            tenant: Arc::downgrade(tenant),
            ring: RwLock::new(Ring::new(ring_bytes, metrics.clone())),
            metrics,
        });
        let weak = Arc::downgrade(&hub);
        match cluster {
            None => {
                tokio::spawn(run(weak, commits));
            }
            Some(cluster) => {
                let tenant = Arc::downgrade(tenant);
                tokio::spawn(async move {
                    // The relay starts where the hub does, so its first receiver brings
                    // exactly what follows, whenever it is taken.
                    let relay = match tenant.upgrade() {
                        Some(tenant) => cluster.bus().relay(&tenant, head, Some(commits)).await,
                        None => return,
                    };
                    match relay {
                        Ok(relay) => run(weak, relay.subscribe()).await,
                        Err(error) => {
                            tracing::error!(%error, "hub: cannot follow the tenant on the bus");
                            if let Some(hub) = weak.upgrade() {
                                hub.end();
                            }
                        }
                    }
                });
            }
        }
        hub
    }

    /// Whether the feed has ended.
    fn ended(&self) -> bool {
        self.state.lock().expect("hub lock is never poisoned").ended
    }

    /// The feed ended: the ring is emptied (nobody will resume from it) and the subscribers
    /// are cut off, to resume from the log through a new hub.
    fn end(&self) {
        self.ring
            .write()
            .expect("ring lock is never poisoned")
            .clear();
        let mut state = self.state.lock().expect("hub lock is never poisoned");
        state.ended = true;
        for (_, sub) in state.subscribers.drain() {
            self.metrics.slow_consumer_disconnects.inc();
            sub.close.request(Close::SlowConsumer);
        }
    }

    /// Whether this hub is fed by `tenant` (the same open instance).
    fn serves(&self, tenant: &Arc<dyn Tenant>) -> bool {
        std::ptr::addr_eq(self.tenant.as_ptr(), Arc::as_ptr(tenant))
    }

    /// Up to `limit` recent events with `after < seq <= until` looked at, those `wants` keeps;
    /// `None` if the ring does not hold seq `after + 1` (see [`Ring::page`]).
    pub(crate) fn recent(
        &self,
        after: u64,
        until: u64,
        limit: usize,
        wants: impl FnMut(&CommittedEvent) -> bool,
    ) -> Option<Page> {
        self.ring
            .read()
            .expect("ring lock is never poisoned")
            .page(after, until, limit, wants)
    }

    /// Registers a subscriber in the catching-up state: from now on every committed group is
    /// kept for it until [`Hub::go_live`].
    pub(crate) fn register(
        self: &Arc<Self>,
        user: UserId,
        filter: Filter,
        channels: Channels,
    ) -> Registration {
        let mut state = self.state.lock().expect("hub lock is never poisoned");
        if state.ended {
            // Too late for this hub: the subscriber resumes and finds a new one.
            channels.close.request(Close::SlowConsumer);
        }
        let id = state.next_id;
        state.next_id += 1;
        state.subscribers.insert(
            id,
            Subscriber {
                user,
                filter,
                allowed: HashSet::new(),
                deleted: HashSet::new(),
                skip_until: 0,
                out: channels.out,
                close: channels.close,
                buffer: Some(Vec::new()),
                capacity: channels.capacity,
            },
        );
        Registration {
            hub: self.clone(),
            id,
        }
    }

    /// Ends catching up. `allowed` are the user's live projects and `deleted` the deleted ones
    /// they are a member of, as of change `replayed_until`, up to which the session sent the
    /// log: later buffered events are filtered (membership changes applied in order) and
    /// queued, and delivery is live from now on. False if the subscriber was cut off meanwhile.
    pub(crate) fn go_live(
        &self,
        registration: &Registration,
        allowed: HashSet<String>,
        deleted: HashSet<String>,
        replayed_until: u64,
    ) -> bool {
        let mut state = self.state.lock().expect("hub lock is never poisoned");
        let Some(sub) = state.subscribers.get_mut(&registration.id) else {
            return false;
        };
        sub.allowed = allowed;
        sub.deleted = deleted;
        sub.skip_until = replayed_until;
        let buffered = sub.buffer.take().unwrap_or_default();
        let kept = buffered.iter().all(|group| {
            let wanted: Vec<_> = select(sub, group.iter())
                .into_iter()
                .map(|at| (group[at].seq, group[at].frame.clone()))
                .collect();
            wanted.is_empty() || self.deliver(sub, wanted.len(), Outbound::Events(wanted))
        });
        if !kept {
            state.subscribers.remove(&registration.id);
        }
        kept
    }

    /// Queues `count` events as one item; false if the subscriber must go (cut off or gone).
    fn deliver(&self, sub: &mut Subscriber, count: usize, events: Outbound) -> bool {
        match sub.out.try_send(events) {
            Ok(()) => {
                self.metrics.events_delivered.inc_by(count as u64);
                true
            }
            Err(Refused::Full) => {
                self.metrics.slow_consumer_disconnects.inc();
                sub.close.request(Close::SlowConsumer);
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    /// Delivers committed groups, in seq order: live subscribers get the events they want
    /// from all of them as one queue item, framed once for all of them; catching-up ones keep
    /// each group for [`Hub::go_live`].
    ///
    /// The subscribers are served [`SERVE_AT_ONCE`] at a time, with a yield between. Each one
    /// served wakes its connection's writer, and the runtime runs woken tasks in turn: ten
    /// thousand subscribers served at once put ten thousand writers ahead of every command's
    /// next step, and a writer's commands waited behind each delivery. Served in pieces, a
    /// delivery's writers run while the rest wait their turn.
    ///
    /// Who is served is fixed when the delivery starts. A subscriber registered later is as
    /// one registered after the delivery: the groups are committed, so the head it reads
    /// includes them and it sends them from the ring or the log. One that went live or left
    /// in the meantime is served as it is when its turn comes.
    async fn publish(&self, groups: &[Arc<[CommittedEvent]>]) {
        // Before the subscribers: a resume that snapshots a head these groups reach finds it
        // here rather than in the log. The ring skips what it already has.
        {
            let mut ring = self.ring.write().expect("ring lock is never poisoned");
            for events in groups {
                ring.append(events);
            }
        }
        let (last_seq, ids) = {
            let mut state = self.state.lock().expect("hub lock is never poisoned");
            let last_seq = state.last_seq;
            let Some(newest) = groups
                .iter()
                .filter_map(|events| events.last())
                .map(|e| e.seq)
                .max()
                .filter(|seq| *seq > last_seq)
            else {
                return;
            };
            state.last_seq = newest;
            let ids: Vec<u64> = state.subscribers.keys().copied().collect();
            (last_seq, ids)
        };
        let new = || {
            groups
                .iter()
                .filter(move |events| events.last().is_some_and(|e| e.seq > last_seq))
        };
        let fresh: Vec<&CommittedEvent> = new()
            .flat_map(|events| events.iter())
            .filter(|e| e.seq > last_seq)
            .collect();
        // Framed when the first live subscriber wants something.
        let mut framed = None;
        for (turn, ids) in ids.chunks(SERVE_AT_ONCE).enumerate() {
            if turn > 0 {
                tokio::task::yield_now().await;
            }
            let mut state = self.state.lock().expect("hub lock is never poisoned");
            for id in ids {
                let Some(sub) = state.subscribers.get_mut(id) else {
                    continue;
                };
                let kept = match &mut sub.buffer {
                    Some(buffer) => {
                        let mut kept = true;
                        for events in new() {
                            if buffer.len() >= sub.capacity {
                                self.metrics.slow_consumer_disconnects.inc();
                                sub.close.request(Close::SlowConsumer);
                                kept = false;
                                break;
                            }
                            buffer.push(events.clone());
                        }
                        kept
                    }
                    None => {
                        let wanted = select(sub, fresh.iter().copied());
                        wanted.is_empty() || {
                            let framed = framed.get_or_insert_with(|| Framed::new(&fresh));
                            let chunks = framed.chunks(&fresh, &wanted);
                            self.deliver(sub, wanted.len(), Outbound::Framed(chunks))
                        }
                    }
                };
                if !kept {
                    state.subscribers.remove(id);
                }
            }
        }
    }

    /// After the feed lagged: reads what was missed from the log.
    async fn catch_up(&self) {
        let Some(tenant) = self.tenant.upgrade() else {
            return;
        };
        loop {
            let after = self
                .state
                .lock()
                .expect("hub lock is never poisoned")
                .last_seq;
            let events = match tenant
                .read_events(after, None, 1_000, &EventFilter::default())
                .await
            {
                Ok(events) => events,
                Err(error) => {
                    tracing::error!(tenant = %tenant.id(), %error, "hub catch-up failed");
                    return;
                }
            };
            if events.is_empty() {
                return;
            }
            let committed: Result<Arc<[CommittedEvent]>, _> =
                events.iter().map(|e| e.to_committed()).collect();
            match committed {
                Ok(committed) => self.publish(&[committed]).await,
                Err(error) => {
                    tracing::error!(tenant = %tenant.id(), %error, "hub catch-up failed");
                    return;
                }
            }
        }
    }
}

/// Groups taken from the feed at most, to be delivered together.
const MAX_GATHER: usize = 64;

/// Subscribers a delivery serves before the hub's task yields (see [`Hub::publish`]). A
/// worker's local run queue holds 256 tasks; more wake-ups than that at once spill to the
/// shared queue, and at 512 a writer's commands were held up as if there were no turns. 64
/// answered them faster than 128 under a 10,000-subscriber fan-out, at the same throughput
/// (BENCHMARKS.md, thirteenth session).
const SERVE_AT_ONCE: usize = 64;

async fn run(hub: Weak<Hub>, mut commits: broadcast::Receiver<Arc<[CommittedEvent]>>) {
    use broadcast::error::{RecvError, TryRecvError};
    let mut groups = Vec::new();
    loop {
        let mut failed = match commits.recv().await {
            Ok(events) => {
                groups.push(events);
                None
            }
            Err(error) => Some(error),
        };
        // Groups committed while the last ones were delivered go out together: one queue
        // item, one wake-up and one write per subscriber instead of one per group.
        while failed.is_none() && groups.len() < MAX_GATHER {
            match commits.try_recv() {
                Ok(events) => groups.push(events),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Lagged(missed)) => failed = Some(RecvError::Lagged(missed)),
                Err(TryRecvError::Closed) => failed = Some(RecvError::Closed),
            }
        }
        let Some(hub) = hub.upgrade() else { return };
        if !groups.is_empty() {
            hub.publish(&groups).await;
            groups.clear();
        }
        match failed {
            None => {}
            Some(RecvError::Lagged(missed)) => {
                tracing::warn!(tenant = %hub.id, missed, "hub lagged; catching up from the log");
                hub.catch_up().await;
            }
            Some(RecvError::Closed) => {
                // The tenant was closed (or its relay could not go on).
                hub.end();
                return;
            }
        }
    }
}

/// Where the events `sub` wants are among `events` (positions, ascending), keeping its
/// memberships current: a new member sees the event of their own addition; a removed member
/// (or any member, once the project is deleted) sees that event and nothing more of the
/// project; the members of a restored project see it again from its restoration on.
fn select<'a>(
    sub: &mut Subscriber,
    events: impl Iterator<Item = &'a CommittedEvent>,
) -> Vec<usize> {
    let mut wanted = Vec::new();
    // The verdict for the last project looked up: a group's events are mostly of one project,
    // and comparing its id is cheaper than hashing it into two sets for every event. Forgotten
    // whenever a membership changes.
    let mut last: Option<(&str, bool)> = None;
    for (at, event) in events.enumerate() {
        if event.seq <= sub.skip_until {
            continue;
        }
        let member_change = (event.kind == EntityKind::ProjectMember).then_some(event.action);
        let concerns_user = member_change.is_some() && sub.user.as_str() == event.entity_id;
        let project_change = (event.kind == EntityKind::Project).then_some(event.action);
        let added = concerns_user && member_change == Some(ChangeAction::Created);
        // A deleted project keeps its members: restored, it is theirs again.
        let restored =
            project_change == Some(ChangeAction::Restored) && sub.deleted.remove(&event.project_id);
        if added || restored {
            sub.allowed.insert(event.project_id.clone());
            last = None;
        }
        let sees = match last {
            Some((project, sees)) if project == event.project_id => sees,
            _ => {
                let sees = sub.sees_project(&event.project_id);
                last = Some((&event.project_id, sees));
                sees
            }
        };
        if sees && sub.wants_kind(event.kind) {
            wanted.push(at);
        }
        if concerns_user && member_change == Some(ChangeAction::Deleted) {
            sub.allowed.remove(&event.project_id);
            sub.deleted.remove(&event.project_id);
            last = None;
        } else if project_change == Some(ChangeAction::Deleted)
            && sub.allowed.remove(&event.project_id)
        {
            sub.deleted.insert(event.project_id.clone());
            last = None;
        }
    }
    wanted
}

#[cfg(test)]
mod tests;

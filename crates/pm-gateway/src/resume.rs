//! Subscribing from a position: the resume handshake, in one place.
//!
//! `Subscribe{from_seq: N}` must deliver every event after `N` the caller may see, then the
//! live ones, with no gap, no duplicate, and permissions as of the position each event is
//! sent at. The handshake:
//!
//! 1. **Register** with the tenant's hub. From then on the hub keeps every committed group for
//!    this subscriber, unfiltered (permissions are not known yet).
//! 2. **Snapshot**: the user's memberships, the head `D` and the oldest retained seq, read in
//!    one read transaction. The position is checked against them before anything is answered
//!    (older than the log: `RESYNC_REQUIRED`; past the head: `INVALID_ARGUMENT`), so that the
//!    request gets exactly one answer; then `SubscribeResult{head_seq: D}`.
//! 3. **Replay** `(N, D]` a page at a time, filtered by the memberships as of `D`: from the
//!    hub's ring of recent events while it holds the next position, from the change log
//!    otherwise (see below).
//! 4. **Go live**: the hub drops the buffered events up to `D` (sent by the replay), filters
//!    the rest (applying membership changes in order) and delivers live from then on.
//!
//! Taking the memberships in the same snapshot as `D` matters: reading them earlier once lost
//! a subscriber's own new project under load.
//!
//! # Where the replay reads
//! Each page is taken from the ring if it holds the event right after the position reached,
//! else from the log. Both hold the same committed events (the ring is filled from the
//! writer's groups, the log is where they were committed), with the same frames, and both
//! are read only up to `D`, so the choice changes nothing of what is sent. A position older
//! than the ring reads the log until it reaches the ring and goes on from memory; a ring that
//! has not yet received the groups up to `D` (the hub is a moment behind the commit) serves
//! what it has and the log the rest. Pages are copied out of the ring under its read lock and
//! sent after, one queued event at a time as from the log, so a slow client holds no lock and
//! pins at most one page, however far behind it is.

use std::collections::HashSet;
use std::sync::Arc;

use pm_core::kinds::EntityKind;
use pm_core::{EntityId, UserId};
use pm_db::{CommittedEvent, EventFilter, Tenant};
use pm_proto::convert;
use pm_proto::v1::{self, response::Result as Out};

use crate::connection::{self, Close, Outbound};
use crate::hub::{Channels, Filter, Hub, Registration};
use crate::metrics::Metrics;
use crate::ring::Page;

/// Events read from the log per replay query.
const PAGE: u32 = 1_000;

/// A checked `Subscribe`.
#[derive(Debug, Clone)]
pub(crate) struct Interest {
    /// Only these projects (`None`: all the user may see).
    projects: Option<HashSet<String>>,
    /// Only these kinds (empty: all).
    kinds: Vec<EntityKind>,
    /// Send what comes after this seq.
    from_seq: u64,
}

impl Interest {
    /// Checks the request's ids and entity types.
    pub(crate) fn parse(request: &v1::Subscribe) -> Result<Interest, v1::Error> {
        let invalid = |e: pm_core::Error| pm_db::Error::from(e).to_wire();
        let kinds = request
            .entity_types
            .iter()
            .map(|raw| {
                convert::required("entity_types", convert::entity_type("entity_types", *raw))
            })
            .collect::<Result<Vec<EntityKind>, _>>()
            .map_err(invalid)?;
        let projects = if request.project_ids.is_empty() {
            None
        } else {
            let ids = request
                .project_ids
                .iter()
                .map(|raw| EntityId::parse("project_ids", raw).map(|id| id.to_text()))
                .collect::<Result<HashSet<String>, _>>()
                .map_err(invalid)?;
            Some(ids)
        };
        Ok(Interest {
            projects,
            kinds,
            from_seq: request.from_seq,
        })
    }
}

/// What a replay sends: the change log's filter, as a test on a committed event.
struct Replay {
    /// The projects asked for, or all the user is a member of, as of the head.
    projects: HashSet<String>,
    /// Only these kinds (empty: all).
    kinds: Vec<EntityKind>,
}

impl Replay {
    /// Whether the log's `read_events` with this filter would return `event`.
    fn wants(&self, event: &CommittedEvent) -> bool {
        self.projects.contains(&event.project_id)
            && (self.kinds.is_empty() || self.kinds.contains(&event.kind))
    }
}

/// Runs the handshake for `user` of `tenant` on its `hub`, answering request `request_id`
/// through `channels.out`. `Ok(Some(_))`: the subscriber is live, and leaving it (drop) unsubscribes.
/// `Ok(None)`: answered, but the connection went away or was cut off meanwhile. `Err`: the
/// refusal to answer with (nothing was sent).
pub(crate) async fn subscribe(
    hub: &Arc<Hub>,
    tenant: &Arc<dyn Tenant>,
    user: &UserId,
    interest: Interest,
    request_id: u64,
    channels: Channels,
    metrics: &Metrics,
) -> Result<Option<Registration>, v1::Error> {
    let out = channels.out.clone();
    let close = channels.close.clone();
    // 1. Register.
    let registration = hub.register(
        user.clone(),
        Filter {
            projects: interest.projects.clone(),
            kinds: interest.kinds.clone(),
        },
        channels,
    );
    // 2. Snapshot, and the checks that come before the one answer.
    let snapshot = tenant
        .subscription_snapshot(user)
        .await
        .map_err(connection::storage_error)?;
    let from_seq = interest.from_seq;
    if from_seq > snapshot.head {
        return Err(v1::Error::new(
            v1::ErrorCode::InvalidArgument,
            "from_seq is after the latest change",
            "from_seq",
        ));
    }
    if snapshot
        .oldest
        .is_some_and(|oldest| oldest > from_seq.saturating_add(1))
    {
        return Err(v1::Error::new(
            v1::ErrorCode::ResyncRequired,
            "from_seq is older than the retained change log: take a fresh snapshot \
             (List*, which answers as_of_seq) and subscribe again from its as_of_seq",
            "from_seq",
        ));
    }
    let head = snapshot.head;
    let allowed: HashSet<String> = snapshot.memberships.into_iter().map(|(p, _)| p).collect();
    let deleted: HashSet<String> = snapshot.deleted.into_iter().collect();
    if let Some(projects) = &interest.projects {
        if !projects.iter().all(|p| allowed.contains(p)) {
            return Err(v1::Error::new(
                v1::ErrorCode::NotFound,
                "project not found",
                "project_ids",
            ));
        }
    }
    let ack = Out::SubscribeResult(v1::SubscribeResult { head_seq: head });
    let _ = out.send(connection::response(request_id, ack)).await;

    // 3. Replay (from_seq, head] with the permissions as of the head.
    let replay = Replay {
        projects: match interest.projects {
            Some(projects) => projects,
            None => allowed.clone(),
        },
        kinds: interest.kinds,
    };
    let filter = EventFilter {
        project_ids: replay.projects.iter().cloned().collect(),
        kinds: replay.kinds.clone(),
    };
    let mut after = from_seq;
    let mut read_log = false;
    let replaying = after < head && !replay.projects.is_empty();
    while replaying && after < head {
        let page = match hub.recent(after, head, PAGE as usize, |e| replay.wants(e)) {
            Some(page) => page,
            None => {
                read_log = true;
                match tenant.read_events(after, Some(head), PAGE, &filter).await {
                    Ok(events) => Page {
                        // A short page is the end of the range.
                        through: match events.last() {
                            Some(last) if events.len() == PAGE as usize => last.seq,
                            _ => head,
                        },
                        events: events.into_iter().map(|e| (e.seq, e.frame())).collect(),
                    },
                    Err(error) => {
                        // Already answered: the stream would have a hole, so end the
                        // connection; the client resumes from what it received.
                        connection::storage_error(error);
                        close.request(Close::Internal);
                        return Ok(None);
                    }
                }
            }
        };
        metrics.events_delivered.inc_by(page.events.len() as u64);
        for (seq, frame) in page.events {
            if out.send(Outbound::Event { seq, frame }).await.is_err() {
                return Ok(None);
            }
        }
        after = page.through;
    }
    if replaying && read_log {
        metrics.resumes_from_log.inc();
    } else if replaying {
        metrics.resumes_from_memory.inc();
    }
    // 4. Go live.
    Ok(hub
        .go_live(&registration, allowed, deleted, head)
        .then_some(registration))
}

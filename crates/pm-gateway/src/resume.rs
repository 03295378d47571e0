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
//! 3. **Replay** `(N, D]` from the change log, a page at a time, filtered by the memberships
//!    as of `D`.
//! 4. **Go live**: the hub drops the buffered events up to `D` (sent from the log), filters
//!    the rest (applying membership changes in order) and delivers live from then on.
//!
//! Taking the memberships in the same snapshot as `D` matters: reading them earlier once lost
//! a subscriber's own new project under load.

use std::collections::HashSet;
use std::sync::Arc;

use pm_core::kinds::EntityKind;
use pm_core::{EntityId, UserId};
use pm_db::EventFilter;
use pm_proto::convert;
use pm_proto::v1::{self, response::Result as Out};

use crate::connection::{self, Close, Outbound};
use crate::hub::{Channels, Filter, Hub, Registration};
use crate::metrics::Metrics;

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

/// Runs the handshake for `user` on `hub`, answering request `request_id` through
/// `channels.out`. `Ok(Some(_))`: the subscriber is live, and leaving it (drop) unsubscribes.
/// `Ok(None)`: answered, but the connection went away or was cut off meanwhile. `Err`: the
/// refusal to answer with (nothing was sent).
pub(crate) async fn subscribe(
    hub: &Arc<Hub>,
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
    let tenant = hub.tenant();
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
    let filter = EventFilter {
        project_ids: match &interest.projects {
            Some(projects) => projects.iter().cloned().collect(),
            None => allowed.iter().cloned().collect(),
        },
        kinds: interest.kinds,
    };
    let mut after = from_seq;
    while after < head && !filter.project_ids.is_empty() {
        let events = match tenant.read_events(after, Some(head), PAGE, &filter).await {
            Ok(events) => events,
            Err(error) => {
                // Already answered: the stream would have a hole, so end the connection; the
                // client resumes from what it received.
                connection::storage_error(error);
                close.request(Close::Internal);
                return Ok(None);
            }
        };
        let full_page = events.len() == PAGE as usize;
        metrics.events_delivered.inc_by(events.len() as u64);
        for event in events {
            after = event.seq;
            let item = Outbound::Event {
                seq: event.seq,
                frame: event.frame(),
            };
            if out.send(item).await.is_err() {
                return Ok(None);
            }
        }
        if !full_page {
            break;
        }
    }
    // 4. Go live.
    Ok(hub
        .go_live(&registration, allowed, head)
        .then_some(registration))
}

//! Change-log retention, for both engines: which prefix of the log the limits no longer
//! cover, deleted a bounded chunk at a time by the tenant's writer between groups.

use tokio::time::{Interval, MissedTickBehavior};

use super::changelog;
use super::dialect::Conn;
use crate::error::Result;
use crate::events::Retention;

/// The shortest pruning period, whatever the settings say.
const MIN_PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// A writer's pruning timer; none when `retention` keeps everything. The first pass comes one
/// period after the tenant opened, not at once: opening many tenants does not start as many
/// pruning passes.
pub(crate) fn timer(retention: &Retention) -> Option<Interval> {
    (!retention.keeps_everything()).then(|| {
        let period = retention.interval.max(MIN_PRUNE_INTERVAL);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick
    })
}

/// The next tick of a pruning timer; never, without one.
pub(crate) async fn next_tick(tick: &mut Option<Interval>) {
    match tick {
        Some(tick) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Most events deleted by one [`prune`] call: the writer runs it between groups, so one call
/// must stay short.
pub(crate) const PRUNE_CHUNK: u64 = 1_000;

/// Deletes up to `limit` of the oldest events that `retention` no longer covers, as of `now`
/// (Unix ms) with the log ending at `head`; returns how many were deleted.
///
/// Only a prefix of the log is ever deleted, and never the newest event: the head stays
/// `MAX(seq)` and the rest stays gapless. An event is kept while it is among the newest
/// `max_events` and younger than `max_age` (each only if set); the age scan stops at the first
/// young event, so a clock that went backwards never gets a younger event deleted behind an
/// older one.
pub(crate) async fn prune(
    conn: &mut Conn,
    retention: &Retention,
    head: u64,
    now: i64,
    limit: u64,
) -> Result<u64> {
    if retention.keeps_everything() || head <= 1 || limit == 0 {
        return Ok(0);
    }
    let Some(oldest) = changelog::oldest_seq(&mut *conn).await? else {
        return Ok(0);
    };
    // This call looks at most at `limit` events, and never at the newest one.
    let window_end = (head - 1).min(oldest.saturating_add(limit - 1));
    if window_end < oldest {
        return Ok(0);
    }
    // Everything up to `upper` is outside some limit.
    let mut upper = 0;
    if let Some(keep) = retention.max_events {
        upper = upper.max(head.saturating_sub(keep.max(1)));
    }
    if let Some(age) = retention.max_age {
        let cutoff = now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        let first_young: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(seq) FROM change_log WHERE seq BETWEEN $1 AND $2 AND at >= $3",
        )
        .bind(oldest as i64)
        .bind(window_end as i64)
        .bind(cutoff)
        .fetch_one(&mut *conn)
        .await?;
        let old_until = first_young.map_or(window_end, |young| (young as u64).saturating_sub(1));
        upper = upper.max(old_until);
    }
    let upper = upper.min(window_end);
    if upper < oldest {
        return Ok(0);
    }
    let deleted = sqlx::query("DELETE FROM change_log WHERE seq <= $1")
        .bind(upper as i64)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(deleted)
}

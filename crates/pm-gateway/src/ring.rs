//! The recent events of one tenant, kept in memory by its hub so that a resuming subscriber
//! is usually served without a query on the tenant's small read pool.
//!
//! The ring holds committed groups as the hub received them (the same shared `Arc`s, so a
//! group costs the ring no copy), oldest first, bounded by the events' size: when a new group
//! would pass the bound, the oldest groups go. It never holds a gap: it always holds every
//! event from its first seq to its last. A group that does not continue it (the hub lagged,
//! or the feed skipped) starts it over; a group larger than the whole bound empties it.
//!
//! Reading is by page, like the change log: [`Ring::page`] returns the wanted events after a
//! position, or `None` when the ring does not hold the event right after it (older than the
//! ring, or newer than what the hub has seen so far), and the caller reads the log instead.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use pm_db::CommittedEvent;

use crate::metrics::Metrics;

/// Committed groups of one tenant, contiguous by seq, within a byte bound.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Groups, oldest first, each with its size.
    groups: VecDeque<(Arc<[CommittedEvent]>, usize)>,
    /// The sum of the groups' sizes.
    bytes: usize,
    /// The number of events held.
    events: usize,
    /// The bound on `bytes` (0: the ring keeps nothing).
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

/// Events read from the ring: those wanted, and how far the reading went.
#[derive(Debug)]
pub(crate) struct Page {
    /// The wanted events, in seq order.
    pub(crate) events: Vec<(u64, Bytes)>,
    /// Every event up to this seq was looked at: the next page starts after it.
    pub(crate) through: u64,
}

impl Ring {
    /// An empty ring bounded by `max_bytes`.
    pub(crate) fn new(max_bytes: usize, metrics: Arc<Metrics>) -> Ring {
        Ring {
            groups: VecDeque::new(),
            bytes: 0,
            events: 0,
            max_bytes,
            metrics,
        }
    }

    /// The oldest seq held.
    pub(crate) fn first_seq(&self) -> Option<u64> {
        self.groups.front().map(|(group, _)| group[0].seq)
    }

    /// The newest seq held.
    pub(crate) fn last_seq(&self) -> Option<u64> {
        self.groups
            .back()
            .map(|(group, _)| group[group.len() - 1].seq)
    }

    /// Adds a committed group (in seq order). What the ring already holds is skipped; a group
    /// that does not continue the ring starts it over, so that it never holds a gap.
    pub(crate) fn append(&mut self, group: &Arc<[CommittedEvent]>) {
        if self.max_bytes == 0 {
            return;
        }
        let skip = match self.last_seq() {
            Some(last) => group.partition_point(|e| e.seq <= last),
            None => 0,
        };
        let mut tail = &group[skip..];
        let Some(first) = tail.first() else { return };
        if self.last_seq().is_some_and(|last| first.seq != last + 1) {
            self.clear();
        }
        // A group is contiguous in itself; should one not be, only its last run is kept.
        if let Some(at) = tail.windows(2).rposition(|w| w[1].seq != w[0].seq + 1) {
            self.clear();
            tail = &tail[at + 1..];
        }
        let size: usize = tail.iter().map(size_of_event).sum();
        if size > self.max_bytes {
            // Keeping older events without this group would leave a gap after them.
            self.clear();
            return;
        }
        let kept: Arc<[CommittedEvent]> = if tail.len() == group.len() {
            group.clone()
        } else {
            tail.iter().cloned().collect()
        };
        self.events += kept.len();
        self.bytes += size;
        self.metrics.ring_events.inc_by(kept.len() as u64);
        self.metrics.ring_bytes.inc_by(size as u64);
        self.groups.push_back((kept, size));
        while self.bytes > self.max_bytes {
            self.evict_oldest();
        }
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) {
        while !self.groups.is_empty() {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((group, size)) = self.groups.pop_front() {
            self.events -= group.len();
            self.bytes -= size;
            self.metrics.ring_events.dec_by(group.len() as u64);
            self.metrics.ring_bytes.dec_by(size as u64);
        }
    }

    /// The events `wants` keeps among those with `after < seq <= until`, looking at no more
    /// than `limit` events; `None` if the ring does not hold seq `after + 1`.
    pub(crate) fn page(
        &self,
        after: u64,
        until: u64,
        limit: usize,
        mut wants: impl FnMut(&CommittedEvent) -> bool,
    ) -> Option<Page> {
        let (first, last) = (self.first_seq()?, self.last_seq()?);
        if after.checked_add(1)? < first || after >= last {
            return None;
        }
        let end = until.min(last);
        let mut page = Page {
            events: Vec::new(),
            through: after,
        };
        let start = self
            .groups
            .partition_point(|(group, _)| group[group.len() - 1].seq <= after);
        let mut looked = 0;
        for (group, _) in self.groups.range(start..) {
            let skip = group.partition_point(|e| e.seq <= after);
            for event in &group[skip..] {
                if event.seq > end || looked == limit {
                    return Some(page);
                }
                looked += 1;
                page.through = event.seq;
                if wants(event) {
                    page.events.push((event.seq, event.frame.clone()));
                }
            }
        }
        Some(page)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.clear();
    }
}

/// What an event costs the ring: its frame, its ids and the record itself.
fn size_of_event(event: &CommittedEvent) -> usize {
    event.frame.len()
        + event.project_id.len()
        + event.entity_id.len()
        + std::mem::size_of::<CommittedEvent>()
}

#[cfg(test)]
mod tests;

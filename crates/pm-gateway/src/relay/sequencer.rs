//! Turning what the bus delivers (at most once: lost, repeated, reordered) into the tenant's
//! events exactly once, in seq order. Pure and synchronous: the relay task does the I/O.
//!
//! A group is a contiguous run of seqs (one committed transaction, or a part of one). Given
//! the last seq delivered, a group is either old news (drop it), or continues the stream
//! (deliver the part after the last seq), or starts past a hole that the change log must fill
//! first. Filled events and then the group are offered again, and continue the stream.

/// What to do with a group covering `first..=last`: see [`Sequencer::offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every seq of the group was delivered already.
    Duplicate,
    /// Deliver the group's events from index `skip` on (the ones before were delivered); the
    /// sequencer counts them as delivered.
    Deliver {
        /// How many leading events of the group to leave out.
        skip: usize,
    },
    /// Seqs `after + 1 ..= until` are missing: read them from the change log, offer them, then
    /// offer the group again.
    Fill {
        /// The last seq delivered.
        after: u64,
        /// The last missing seq (the group's first minus one).
        until: u64,
    },
}

/// The last seq delivered for one tenant, and the rule for what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequencer {
    last: u64,
}

impl Sequencer {
    /// A sequencer that has delivered everything up to `last` (0: nothing yet).
    pub fn new(last: u64) -> Sequencer {
        Sequencer { last }
    }

    /// The last seq delivered.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Decides about a group covering `first..=last` (`first <= last`); on `Deliver` the
    /// group's seqs count as delivered from then on. A group with `first > last` (empty or
    /// malformed) is a `Duplicate`: there is nothing in it to deliver.
    pub fn offer(&mut self, first: u64, last: u64) -> Decision {
        if first > last || last <= self.last {
            return Decision::Duplicate;
        }
        let next = self.last + 1;
        if first > next {
            return Decision::Fill {
                after: self.last,
                until: first - 1,
            };
        }
        let skip = usize::try_from(next - first).expect("a group's overlap fits in memory");
        self.last = last;
        Decision::Deliver { skip }
    }

    /// Whether the change log is ahead of what was delivered: `Some((after, head))` is the
    /// range `after + 1 ..= head` to read and offer.
    pub fn behind(&self, head: u64) -> Option<(u64, u64)> {
        (head > self.last).then_some((self.last, head))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn next_group_is_delivered_whole() {
        let mut seq = Sequencer::new(0);
        assert_eq!(seq.offer(1, 3), Decision::Deliver { skip: 0 });
        assert_eq!(seq.last(), 3);
        assert_eq!(seq.offer(4, 4), Decision::Deliver { skip: 0 });
        assert_eq!(seq.last(), 4);
    }

    #[test]
    fn repeated_group_is_dropped() {
        let mut seq = Sequencer::new(0);
        assert_eq!(seq.offer(1, 3), Decision::Deliver { skip: 0 });
        assert_eq!(seq.offer(1, 3), Decision::Duplicate);
        assert_eq!(seq.offer(2, 3), Decision::Duplicate);
        assert_eq!(seq.offer(3, 3), Decision::Duplicate);
        assert_eq!(seq.last(), 3);
    }

    #[test]
    fn overlapping_group_delivers_only_its_new_part() {
        let mut seq = Sequencer::new(5);
        assert_eq!(seq.offer(3, 8), Decision::Deliver { skip: 3 });
        assert_eq!(seq.last(), 8);
    }

    #[test]
    fn group_after_a_hole_asks_for_the_hole_and_keeps_its_place() {
        let mut seq = Sequencer::new(2);
        assert_eq!(seq.offer(6, 7), Decision::Fill { after: 2, until: 5 });
        // Nothing counted as delivered until the fill is offered.
        assert_eq!(seq.last(), 2);
        assert_eq!(seq.offer(3, 5), Decision::Deliver { skip: 0 });
        assert_eq!(seq.offer(6, 7), Decision::Deliver { skip: 0 });
        assert_eq!(seq.last(), 7);
    }

    #[test]
    fn malformed_range_delivers_nothing() {
        let mut seq = Sequencer::new(0);
        assert_eq!(seq.offer(5, 4), Decision::Duplicate);
        assert_eq!(seq.last(), 0);
    }

    #[test]
    fn behind_names_the_range_to_read() {
        let seq = Sequencer::new(4);
        assert_eq!(seq.behind(4), None);
        assert_eq!(seq.behind(3), None);
        assert_eq!(seq.behind(9), Some((4, 9)));
    }

    /// Offers `first..=last` as the relay does, answering fills from `truth` (seqs 1..=head)
    /// a page at a time, and appends what is delivered to `out`.
    fn drive(seq: &mut Sequencer, first: u64, last: u64, page: u64, out: &mut Vec<u64>) {
        loop {
            match seq.offer(first, last) {
                Decision::Duplicate => return,
                Decision::Deliver { skip } => {
                    out.extend((first..=last).skip(skip));
                    return;
                }
                Decision::Fill { after, until } => {
                    // A log read returns at most a page; the rest is asked for again.
                    let end = until.min(after + page);
                    drive(seq, after + 1, end, page, out);
                }
            }
        }
    }

    /// Groups covering 1..=n (sizes from `sizes`), then a delivery schedule: each group sent
    /// 0 to 3 times, in an order shuffled within a window.
    fn scenario() -> impl Strategy<Value = (u64, Vec<(u64, u64)>, u64)> {
        (prop::collection::vec(1u64..6, 1..60), 1u64..8)
            .prop_flat_map(|(sizes, page)| {
                let mut groups = Vec::new();
                let mut next = 1;
                for size in sizes {
                    groups.push((next, next + size - 1));
                    next += size;
                }
                let n = next - 1;
                let copies = prop::collection::vec(0usize..4, groups.len());
                (Just(groups), copies, Just(n), Just(page))
            })
            .prop_flat_map(|(groups, copies, n, page)| {
                let sent: Vec<(u64, u64)> = groups
                    .iter()
                    .zip(copies)
                    .flat_map(|(group, count)| std::iter::repeat_n(*group, count))
                    .collect();
                let len = sent.len();
                (
                    Just(sent),
                    prop::collection::vec(0usize..8, len),
                    Just(n),
                    Just(page),
                )
            })
            .prop_map(|(sent, delays, n, page)| {
                // Each copy arrives up to 7 places late: reorders stay local, like a network's.
                let mut keyed: Vec<(usize, (u64, u64))> = sent
                    .into_iter()
                    .enumerate()
                    .zip(delays)
                    .map(|((i, group), delay)| (i + delay, group))
                    .collect();
                keyed.sort_by_key(|(key, _)| *key);
                (n, keyed.into_iter().map(|(_, g)| g).collect(), page)
            })
    }

    proptest! {
        #[test]
        fn any_schedule_delivers_every_seq_once_in_order((n, arrivals, page) in scenario()) {
            let mut seq = Sequencer::new(0);
            let mut out = Vec::new();
            for (first, last) in arrivals {
                drive(&mut seq, first, last, page, &mut out);
                // Never a gap or a repeat, at any moment.
                prop_assert_eq!(&out, &(1..=seq.last()).collect::<Vec<u64>>());
            }
            // The periodic head check brings the tail that was never (or not yet) received.
            while let Some((after, head)) = seq.behind(n) {
                drive(&mut seq, after + 1, head.min(after + page), page, &mut out);
            }
            prop_assert_eq!(out, (1..=n).collect::<Vec<u64>>());
        }
    }
}

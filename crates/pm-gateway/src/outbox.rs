//! A connection's outgoing queue: bounded, many senders (the session's requests, the hub), one
//! writer ([`crate::connection::write_loop`]).
//!
//! A `VecDeque` under a mutex with two `Notify`s rather than a tokio channel: an idle
//! connection (most of them) keeps only this struct, where a channel keeps its first block of
//! 32 slots and its bookkeeping (about 2 KiB measured). The queue's storage grows with what is
//! queued and is given back once a large backlog has drained.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::connection::Outbound;

/// Slots kept allocated once the queue has drained; beyond this they are given back.
const KEEP_SLOTS: usize = 16;

/// The queue.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer when something is queued.
    queued: Notify,
    /// Wakes senders waiting for room (and all of them once the writer has gone).
    room: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Outbound>,
    /// The writer has gone: nothing will be taken any more.
    closed: bool,
}

/// Why an item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue holds `capacity` items.
    Full,
    /// The writer has gone.
    Closed,
}

impl Outbox {
    /// A queue of at most `capacity` items (at least one).
    pub(crate) fn new(capacity: usize) -> Outbox {
        Outbox {
            state: Mutex::default(),
            queued: Notify::new(),
            room: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("outbox lock is never poisoned")
    }

    fn push(&self, item: Outbound) -> Result<(), (Refused, Outbound)> {
        let mut state = self.state();
        if state.closed {
            return Err((Refused::Closed, item));
        }
        if state.items.len() >= self.capacity {
            return Err((Refused::Full, item));
        }
        state.items.push_back(item);
        drop(state);
        // Stores a wake-up if the writer is not waiting yet, so none is lost.
        self.queued.notify_one();
        Ok(())
    }

    /// Queues `item` now, or says why not.
    pub(crate) fn try_send(&self, item: Outbound) -> Result<(), Refused> {
        self.push(item).map_err(|(refused, _)| refused)
    }

    /// Queues `item`, waiting for room; `Err` once the writer has gone.
    pub(crate) async fn send(&self, mut item: Outbound) -> Result<(), Refused> {
        loop {
            // Registered before trying, so that room made in between is not missed.
            let mut room = pin!(self.room.notified());
            room.as_mut().enable();
            match self.push(item) {
                Ok(()) => return Ok(()),
                Err((Refused::Closed, _)) => return Err(Refused::Closed),
                Err((Refused::Full, back)) => {
                    item = back;
                    room.await;
                }
            }
        }
    }

    /// The writer's side: the next item, waiting until there is one.
    pub(crate) async fn recv(&self) -> Outbound {
        loop {
            let queued = self.queued.notified();
            if let Some(item) = self.try_recv() {
                return item;
            }
            queued.await;
        }
    }

    /// The writer's side: the next item if one is queued.
    pub(crate) fn try_recv(&self) -> Option<Outbound> {
        let mut state = self.state();
        let item = state.items.pop_front()?;
        let was_full = state.items.len() + 1 == self.capacity;
        if state.items.is_empty() && state.items.capacity() > KEEP_SLOTS {
            state.items.shrink_to(KEEP_SLOTS);
        }
        drop(state);
        if was_full {
            self.room.notify_waiters();
        }
        Some(item)
    }

    /// The writer's side: nothing will be taken any more; queued items are dropped and every
    /// sender, waiting or not, is refused from now on.
    pub(crate) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.items = VecDeque::new();
        drop(state);
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn frame(n: u8) -> Outbound {
        Outbound::Frame(Bytes::from(vec![n]))
    }

    fn byte(item: Outbound) -> u8 {
        match item {
            Outbound::Frame(bytes) => bytes[0],
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn items_come_out_in_order_and_a_full_queue_refuses() {
        let outbox = Outbox::new(2);
        outbox.try_send(frame(1)).unwrap();
        outbox.send(frame(2)).await.unwrap();
        assert_eq!(outbox.try_send(frame(3)), Err(Refused::Full));
        assert_eq!(byte(outbox.recv().await), 1);
        outbox.try_send(frame(3)).unwrap();
        assert_eq!(byte(outbox.try_recv().unwrap()), 2);
        assert_eq!(byte(outbox.try_recv().unwrap()), 3);
        assert!(outbox.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_sender_waits_for_room_and_the_writer_for_items() {
        let outbox = Arc::new(Outbox::new(1));
        outbox.try_send(frame(1)).unwrap();
        let sender = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(frame(2)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sender.is_finished(), "no room yet");
        assert_eq!(byte(outbox.recv().await), 1);
        sender.await.unwrap().unwrap();
        assert_eq!(byte(outbox.recv().await), 2);

        let writer = tokio::spawn({
            let outbox = outbox.clone();
            async move { byte(outbox.recv().await) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!writer.is_finished(), "nothing queued yet");
        outbox.try_send(frame(3)).unwrap();
        assert_eq!(writer.await.unwrap(), 3);
    }

    #[tokio::test]
    async fn once_the_writer_has_gone_every_sender_is_refused() {
        let outbox = Arc::new(Outbox::new(1));
        outbox.try_send(frame(1)).unwrap();
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send(frame(2)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        outbox.close();
        assert_eq!(waiting.await.unwrap(), Err(Refused::Closed));
        assert_eq!(outbox.try_send(frame(3)), Err(Refused::Closed));
        assert!(outbox.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_drained_backlog_gives_its_storage_back() {
        let outbox = Outbox::new(1024);
        for n in 0..200 {
            outbox.try_send(frame(n as u8)).unwrap();
        }
        while outbox.try_recv().is_some() {}
        assert!(outbox.state().items.capacity() <= KEEP_SLOTS);
    }
}

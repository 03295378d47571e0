//! Subscription snapshots read together, by both engines: one read for every subscribe of a
//! tenant that arrives while another is being read.
//!
//! A subscribe's snapshot is a single statement, but on SQLite each statement is a hand-over
//! to a read connection's thread and back (in a reconnect storm, about a seventh of the
//! server's CPU), and on PostgreSQL a read is three round trips to the server (`BEGIN`, the
//! statement, `ROLLBACK`). So at most one snapshot read per tenant is in flight: a
//! caller that finds one running waits in the queue, and the caller whose read ends hands the
//! next turn to the first one waiting, who reads for everyone queued by then (up to
//! [`MAX_USERS`]). Alone, a subscribe reads at once as before; under load, the reads of a
//! whole queue cost one hand-over. Every snapshot is still one read transaction, of the head
//! when it was read.

use std::future::Future;
use std::sync::Mutex;

use pm_core::UserId;
use tokio::sync::oneshot;

use crate::engine::SubscriptionSnapshot;
use crate::error::{Error, Result};

/// Users read in one statement at most.
pub(crate) const MAX_USERS: usize = 256;

/// A tenant's queue of subscription snapshots to read.
#[derive(Debug, Default)]
pub(crate) struct Snapshots {
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    /// A caller is reading (or has been handed the turn to).
    reading: bool,
    /// Callers waiting for their snapshot or for the turn, first come first.
    waiting: std::collections::VecDeque<(UserId, oneshot::Sender<Turn>)>,
}

#[derive(Debug)]
enum Turn {
    /// Read, for yourself and those waiting.
    Read,
    /// Your snapshot, read by another caller (or why it could not be).
    Answer(Result<SubscriptionSnapshot>),
}

impl Snapshots {
    /// The snapshot of `user`, read with `read` (which answers for several users at once, in
    /// their order) by this caller or by the one reading when it came.
    pub(crate) async fn read<F, Fut>(&self, user: &UserId, read: F) -> Result<SubscriptionSnapshot>
    where
        F: Fn(Vec<UserId>) -> Fut,
        Fut: Future<Output = Result<Vec<SubscriptionSnapshot>>>,
    {
        loop {
            let waiting = {
                let mut queue = self.lock();
                if queue.reading {
                    let (turn, wait) = oneshot::channel();
                    queue.waiting.push_back((user.clone(), turn));
                    Some(Waiting {
                        turn: wait,
                        snapshots: self,
                    })
                } else {
                    queue.reading = true;
                    None
                }
            };
            if let Some(mut waiting) = waiting {
                match (&mut waiting.turn).await {
                    Ok(Turn::Answer(answer)) => return answer,
                    Ok(Turn::Read) => {}
                    // The reader was dropped (its caller gave up) before it answered: the
                    // turn went on; queue again.
                    Err(_) => continue,
                }
            }
            return self.read_for_all(user, &read).await;
        }
    }

    /// Holding the turn: reads for `user` and those waiting, answers them, and hands the turn
    /// on (also if this future is dropped half way).
    async fn read_for_all<F, Fut>(&self, user: &UserId, read: &F) -> Result<SubscriptionSnapshot>
    where
        F: Fn(Vec<UserId>) -> Fut,
        Fut: Future<Output = Result<Vec<SubscriptionSnapshot>>>,
    {
        let _turn = Held(self);
        let others: Vec<_> = {
            let mut queue = self.lock();
            let take = queue.waiting.len().min(MAX_USERS - 1);
            queue.waiting.drain(..take).collect()
        };
        let users = std::iter::once(user.clone())
            .chain(others.iter().map(|(user, _)| user.clone()))
            .collect();
        let read = match read(users).await {
            Ok(snapshots) if snapshots.len() != others.len() + 1 => Err(Error::Corrupt(
                "a snapshot read answered for other users".into(),
            )),
            read => read,
        };
        // A caller that stopped waiting has nothing to be told.
        match read {
            Ok(snapshots) => {
                let mut snapshots = snapshots.into_iter();
                let own = snapshots.next().expect("one snapshot per user");
                for ((_, answer), snapshot) in others.into_iter().zip(snapshots) {
                    let _ = answer.send(Turn::Answer(Ok(snapshot)));
                }
                Ok(own)
            }
            Err(error) => {
                for (_, answer) in others {
                    let _ = answer.send(Turn::Answer(Err(for_the_others(&error))));
                }
                Err(error)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .expect("snapshot queue lock is never poisoned")
    }
}

/// What the others a failed read was for are told: the storage's condition as it is, anything
/// else as a read to retry.
fn for_the_others(error: &Error) -> Error {
    match error {
        Error::Damaged { .. }
        | Error::StorageIo(_)
        | Error::StorageFull
        | Error::Unavailable(_) => error.for_another_caller(),
        _ => Error::Unavailable("the subscription could not be read; retry".into()),
    }
}

/// A caller waiting in the queue. Dropped (its caller gave up) after the turn was handed to it
/// and before it took it, it hands the turn on: otherwise nobody would read again.
struct Waiting<'a> {
    turn: oneshot::Receiver<Turn>,
    snapshots: &'a Snapshots,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(Turn::Read) = self.turn.try_recv() {
            drop(Held(self.snapshots));
        }
    }
}

/// The turn held by a reader: handed to the first caller still waiting when dropped, or given
/// up if none is.
struct Held<'a>(&'a Snapshots);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.lock();
        while let Some((_, turn)) = queue.waiting.pop_front() {
            if turn.send(Turn::Read).is_ok() {
                return;
            }
        }
        queue.reading = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn user(name: &str) -> UserId {
        UserId::parse("user", name).unwrap()
    }

    /// A snapshot that names its user (as its only deleted project) and the read it came from.
    fn snapshot(user: &UserId, read: usize) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            memberships: Vec::new(),
            deleted: vec![user.as_str().to_owned()],
            head: read as u64,
            oldest: None,
        }
    }

    #[tokio::test]
    async fn callers_that_come_during_a_read_are_read_together_by_the_next_one() {
        let snapshots = Arc::new(Snapshots::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let reader = |reads: Arc<AtomicUsize>, released: tokio::sync::watch::Receiver<bool>| {
            move |users: Vec<UserId>| {
                let reads = reads.clone();
                let mut released = released.clone();
                async move {
                    let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
                    // The first read waits until the others have queued.
                    if n == 1 {
                        released.wait_for(|r| *r).await.unwrap();
                    }
                    Ok(users.iter().map(|u| snapshot(u, n)).collect())
                }
            }
        };
        let first = tokio::spawn({
            let (snapshots, read) = (snapshots.clone(), reader(reads.clone(), released.clone()));
            async move { snapshots.read(&user("ann"), read).await }
        });
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let later: Vec<_> = ["bob", "cat", "bob"]
            .into_iter()
            .map(|name| {
                let (snapshots, read) =
                    (snapshots.clone(), reader(reads.clone(), released.clone()));
                tokio::spawn(async move { snapshots.read(&user(name), read).await })
            })
            .collect();
        while snapshots.lock().waiting.len() < 3 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), snapshot(&user("ann"), 1));
        for (task, name) in later.into_iter().zip(["bob", "cat", "bob"]) {
            assert_eq!(task.await.unwrap().unwrap(), snapshot(&user(name), 2));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert!(!snapshots.lock().reading);
    }

    /// Ann reads alone (held until bob and cat have queued); bob then reads for bob and cat,
    /// and that read fails with `error`: what bob and cat are told.
    async fn told_after_a_failed_shared_read(error: fn() -> Error) -> (String, String) {
        let snapshots = Arc::new(Snapshots::default());
        let reads = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let reader = {
            let reads = reads.clone();
            move |users: Vec<UserId>| {
                let (reads, mut released) = (reads.clone(), released.clone());
                async move {
                    if reads.fetch_add(1, Ordering::SeqCst) == 0 {
                        released.wait_for(|r| *r).await.unwrap();
                        return Ok(users.iter().map(|u| snapshot(u, 1)).collect());
                    }
                    Err(error())
                }
            }
        };
        let spawn = |name: &'static str| {
            let (snapshots, reader) = (snapshots.clone(), reader.clone());
            tokio::spawn(async move { snapshots.read(&user(name), reader).await })
        };
        let ann = spawn("ann");
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let (bob, cat) = (spawn("bob"), spawn("cat"));
        while snapshots.lock().waiting.len() < 2 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        assert_eq!(ann.await.unwrap().unwrap(), snapshot(&user("ann"), 1));
        let told = |answer: Result<SubscriptionSnapshot>| answer.unwrap_err().to_string();
        (told(bob.await.unwrap()), told(cat.await.unwrap()))
    }

    #[tokio::test]
    async fn a_failed_read_fails_everyone_it_read_for_and_the_next_caller_reads_again() {
        // The storage's condition reaches everyone as it is.
        let (bob, cat) =
            told_after_a_failed_shared_read(|| Error::StorageIo("disk gone".into())).await;
        let disk_gone = Error::StorageIo("disk gone".into()).to_string();
        assert_eq!((bob, cat), (disk_gone.clone(), disk_gone));
        // Anything else: the reader gets the error, the others a read to retry.
        let (bob, cat) = told_after_a_failed_shared_read(|| Error::Corrupt("bad row".into())).await;
        assert_eq!(bob, Error::Corrupt("bad row".into()).to_string());
        assert_eq!(cat, "the subscription could not be read; retry");

        let snapshots = Snapshots::default();
        let failing = |_: Vec<UserId>| async { Err(Error::StorageIo("disk gone".into())) };
        let error = snapshots.read(&user("ann"), failing).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            Error::StorageIo("disk gone".into()).to_string()
        );
        let working =
            |users: Vec<UserId>| async move { Ok(users.iter().map(|u| snapshot(u, 7)).collect()) };
        let answer = snapshots.read(&user("bob"), working).await.unwrap();
        assert_eq!(answer, snapshot(&user("bob"), 7));
    }

    #[tokio::test]
    async fn a_caller_dropped_once_handed_the_turn_hands_it_on() {
        let snapshots = Arc::new(Snapshots::default());
        let (release, released) = tokio::sync::watch::channel(false);
        let held = move |users: Vec<UserId>| {
            let mut released = released.clone();
            async move {
                released.wait_for(|r| *r).await.unwrap();
                Ok(users.iter().map(|u| snapshot(u, 1)).collect())
            }
        };
        let ann = tokio::spawn({
            let snapshots = snapshots.clone();
            async move { snapshots.read(&user("ann"), held).await }
        });
        while !snapshots.lock().reading {
            tokio::task::yield_now().await;
        }
        let read =
            |users: Vec<UserId>| async move { Ok(users.iter().map(|u| snapshot(u, 2)).collect()) };
        // Bob queues, is handed the turn when ann's read ends, and gives up before taking it.
        let bob_id = user("bob");
        let mut bob = Box::pin(snapshots.read(&bob_id, read));
        assert!(futures::poll!(&mut bob).is_pending());
        release.send(true).unwrap();
        assert_eq!(ann.await.unwrap().unwrap(), snapshot(&user("ann"), 1));
        assert!(snapshots.lock().waiting.is_empty());
        drop(bob);
        assert!(!snapshots.lock().reading);
        let cat = snapshots.read(&user("cat"), read).await.unwrap();
        assert_eq!(cat, snapshot(&user("cat"), 2));
    }

    #[tokio::test]
    async fn a_reader_dropped_half_way_hands_the_turn_on() {
        let snapshots = Arc::new(Snapshots::default());
        let never = |_: Vec<UserId>| std::future::pending::<Result<Vec<SubscriptionSnapshot>>>();
        let stuck = tokio::spawn({
            let snapshots = snapshots.clone();
            async move { snapshots.read(&user("ann"), never).await }
        });
        while !snapshots.lock().reading {
            tokio::task::yield_now().await;
        }
        let waiting = tokio::spawn({
            let snapshots = snapshots.clone();
            async move {
                let read = |users: Vec<UserId>| async move {
                    Ok(users.iter().map(|u| snapshot(u, 3)).collect())
                };
                snapshots.read(&user("bob"), read).await
            }
        });
        while snapshots.lock().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        stuck.abort();
        assert_eq!(waiting.await.unwrap().unwrap(), snapshot(&user("bob"), 3));
        assert!(!snapshots.lock().reading);
    }
}

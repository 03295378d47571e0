//! The open tenants of an engine, bounded: opened on first use, closed again when they are
//! the least recently used of too many and nobody uses them.
//!
//! A tenant is *idle* when nobody but the registry holds it and it has no work in flight;
//! that is checked under the registry's lock, where nobody can take a new reference, so it
//! cannot change meanwhile. A tenant in use is never closed: if every open tenant is in use,
//! opening another is `UNAVAILABLE` rather than an unbounded overshoot.
//!
//! The tenant an open evicts closes in its own task, not on the opener's path: a close ends
//! with a checkpoint and its fsync, which the client whose tenant is opening should not wait
//! for. Opening a tenant that is still closing waits for that close to end first.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use pm_core::TenantId;
use tokio::sync::{watch, OnceCell};

use crate::error::{Error, Result};

/// What the registry needs of an open tenant.
pub(crate) trait Resident: Send + Sync + 'static {
    /// Whether it has work in flight (queued or being applied).
    fn busy(&self) -> bool;

    /// Finishes its work and releases its resources. Called once, on a tenant removed from
    /// the registry while idle.
    fn close(self: Arc<Self>) -> impl Future<Output = ()> + Send;
}

/// Tenants [`Registry::close_idle`] closes at the same time.
const CONCURRENT_CLOSES: usize = 8;

/// Open tenants, bounded, least recently used closed first.
#[derive(Debug)]
pub(crate) struct Registry<T> {
    max_open: usize,
    slots: Mutex<Slots<T>>,
    /// Evicted tenants whose close has not ended yet.
    closing: Arc<Mutex<HashMap<TenantId, Closing>>>,
    clock: AtomicU64,
}

/// An evicted tenant's close in progress: `done` reports an error once it has ended (its
/// sender is dropped), `tick` tells this close from a later one of the same tenant.
#[derive(Debug)]
struct Closing {
    tick: u64,
    done: watch::Receiver<()>,
}

#[derive(Debug)]
struct Slot<T> {
    tenant: Arc<OnceCell<Arc<T>>>,
    last_used: u64,
}

/// The open tenants, and the same tenants in the order they were last used: an eviction
/// takes the first idle one in that order instead of scanning every open tenant (under the
/// registry's lock, which every connection's lookup takes; at 600 open the scan was 1.7 % of
/// the runtime's samples in cold reopens, and it grows with the number open).
#[derive(Debug)]
struct Slots<T> {
    by_id: HashMap<TenantId, Slot<T>>,
    by_use: BTreeMap<u64, TenantId>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            by_id: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }
}

impl<T: Resident> Slots<T> {
    /// Slot `id`, marked used at `tick`.
    fn touch(&mut self, id: &TenantId, tick: u64) -> Option<&Slot<T>> {
        let slot = self.by_id.get_mut(id)?;
        self.by_use.remove(&slot.last_used);
        slot.last_used = tick;
        self.by_use.insert(tick, id.clone());
        Some(slot)
    }

    fn insert(&mut self, id: TenantId, slot: Slot<T>) {
        self.by_use.insert(slot.last_used, id.clone());
        if let Some(old) = self.by_id.insert(id, slot) {
            self.by_use.remove(&old.last_used);
        }
    }

    fn remove(&mut self, id: &TenantId) -> Option<Slot<T>> {
        let slot = self.by_id.remove(id)?;
        self.by_use.remove(&slot.last_used);
        Some(slot)
    }

    /// Removes the least recently used idle tenant.
    fn evict_one(&mut self) -> Option<(TenantId, Arc<T>)> {
        let victim = self
            .by_use
            .values()
            .find(|id| {
                self.by_id
                    .get(*id)
                    .and_then(|slot| slot.tenant.get())
                    .is_some_and(is_idle)
            })?
            .clone();
        let tenant = self.remove(&victim)?.tenant.get().cloned()?;
        Some((victim, tenant))
    }
}

fn is_idle<T: Resident>(tenant: &Arc<T>) -> bool {
    Arc::strong_count(tenant) == 1 && !tenant.busy()
}

impl<T: Resident> Registry<T> {
    /// At most `max_open` tenants open at once.
    pub(crate) fn new(max_open: usize) -> Self {
        Registry {
            max_open: max_open.max(1),
            slots: Mutex::new(Slots::default()),
            closing: Arc::default(),
            clock: AtomicU64::new(0),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots<T>> {
        self.slots.lock().expect("registry lock is never poisoned")
    }

    /// The open tenant `id`, or the one `open` opens (once, however many ask at the same
    /// time). Holding the returned `Arc` keeps the tenant from being closed.
    pub(crate) async fn get_or_open<F, Fut>(&self, id: &TenantId, open: F) -> Result<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<T>>>,
    {
        let cell = {
            let mut slots = self.slots();
            let tick = self.clock.fetch_add(1, Ordering::Relaxed);
            match slots.touch(id, tick) {
                Some(slot) => {
                    // Take the reference under the lock: from here on the tenant is in use
                    // and no eviction can close it.
                    if let Some(tenant) = slot.tenant.get() {
                        return Ok(tenant.clone());
                    }
                    slot.tenant.clone()
                }
                None => {
                    if slots.by_id.len() >= self.max_open {
                        let (victim, tenant) = slots.evict_one().ok_or_else(|| {
                            Error::Unavailable(
                                "too many tenants are open and all are in use; retry later".into(),
                            )
                        })?;
                        // Recorded under the slots' lock: whoever opens the victim again
                        // after this finds its close.
                        self.close_in_background(victim, tenant, tick);
                    }
                    let cell = Arc::new(OnceCell::new());
                    slots.insert(
                        id.clone(),
                        Slot {
                            tenant: cell.clone(),
                            last_used: tick,
                        },
                    );
                    cell
                }
            }
        };
        self.closed(id).await;
        let opened = cell.get_or_try_init(open).await.cloned();
        if opened.is_err() {
            // Forget the failed slot, unless someone else has replaced it meanwhile.
            let mut slots = self.slots();
            if slots
                .by_id
                .get(id)
                .is_some_and(|slot| Arc::ptr_eq(&slot.tenant, &cell) && slot.tenant.get().is_none())
            {
                slots.remove(id);
            }
        }
        opened
    }

    /// Stops serving `tenant` under `id` (if it is still the one there): the next open opens
    /// anew. It is not closed here; it ends when its last user lets go of it.
    pub(crate) fn forget(&self, id: &TenantId, tenant: &Arc<T>) {
        let mut slots = self.slots();
        if slots
            .by_id
            .get(id)
            .and_then(|slot| slot.tenant.get())
            .is_some_and(|open| Arc::ptr_eq(open, tenant))
        {
            slots.remove(id);
        }
    }

    /// The open tenants.
    pub(crate) fn open_tenants(&self) -> Vec<Arc<T>> {
        self.slots()
            .by_id
            .values()
            .filter_map(|slot| slot.tenant.get().cloned())
            .collect()
    }

    /// Tenants open (or opening) now.
    pub(crate) fn len(&self) -> usize {
        self.slots().by_id.len()
    }

    /// Closes an evicted tenant in a task of its own.
    fn close_in_background(&self, id: TenantId, tenant: Arc<T>, tick: u64) {
        tracing::debug!(tenant = %id, "closing the least recently used tenant");
        let (ended, done) = watch::channel(());
        let closing = self.closing.clone();
        lock(&closing).insert(id.clone(), Closing { tick, done });
        tokio::spawn(async move {
            tenant.close().await;
            let mut closing = lock(&closing);
            if closing.get(&id).is_some_and(|c| c.tick == tick) {
                closing.remove(&id);
            }
            drop(ended);
        });
    }

    /// Returns once tenant `id` is not closing (at once, nearly always).
    async fn closed(&self, id: &TenantId) {
        let done = lock(&self.closing).get(id).map(|c| c.done.clone());
        if let Some(done) = done {
            ended(done).await;
        }
    }

    /// Closes every tenant nobody uses, after the evicted ones still closing; returns how
    /// many were closed here.
    pub(crate) async fn close_idle(&self) -> usize {
        let closing: Vec<watch::Receiver<()>> = lock(&self.closing)
            .values()
            .map(|c| c.done.clone())
            .collect();
        for done in closing {
            ended(done).await;
        }
        let idle: Vec<Arc<T>> = {
            let mut slots = self.slots();
            let ids: Vec<TenantId> = slots
                .by_id
                .iter()
                .filter(|(_, slot)| slot.tenant.get().is_some_and(is_idle))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| slots.remove(id))
                .filter_map(|slot| slot.tenant.get().cloned())
                .collect()
        };
        let count = idle.len();
        // Each close ends with a checkpoint and its fsync: a few at a time.
        futures::stream::iter(idle.into_iter().map(Resident::close))
            .buffer_unordered(CONCURRENT_CLOSES)
            .collect::<()>()
            .await;
        count
    }
}

fn lock(
    closing: &Mutex<HashMap<TenantId, Closing>>,
) -> std::sync::MutexGuard<'_, HashMap<TenantId, Closing>> {
    closing.lock().expect("closing lock is never poisoned")
}

/// Returns when the close behind `done` has ended (its sender, never sent to, is dropped).
async fn ended(mut done: watch::Receiver<()>) {
    while done.changed().await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Semaphore;

    use super::*;

    /// What happened to the tenants, in order.
    type Log = Arc<Mutex<Vec<String>>>;

    /// A tenant whose close waits for a permit of `gate`, so a test decides when it ends.
    struct Gated {
        name: &'static str,
        log: Log,
        gate: Arc<Semaphore>,
    }

    impl Resident for Gated {
        fn busy(&self) -> bool {
            false
        }

        async fn close(self: Arc<Self>) {
            // Each permit lets one close end.
            self.gate
                .acquire()
                .await
                .expect("the gate is never closed")
                .forget();
            self.log
                .lock()
                .unwrap()
                .push(format!("closed {}", self.name));
        }
    }

    /// Opens `name` (or finds it open) and returns it: holding it keeps it in use.
    async fn open(
        registry: &Registry<Gated>,
        name: &'static str,
        log: &Log,
        gate: &Arc<Semaphore>,
    ) -> Arc<Gated> {
        let id = TenantId::parse(name).unwrap();
        registry
            .get_or_open(&id, || async {
                log.lock().unwrap().push(format!("opened {name}"));
                Ok(Arc::new(Gated {
                    name,
                    log: log.clone(),
                    gate: gate.clone(),
                }))
            })
            .await
            .unwrap()
    }

    /// The tenants closed so far, in order, once `count` have been (the closes run in tasks
    /// of their own).
    async fn closed(log: &Log, count: usize) -> Vec<String> {
        for _ in 0..100 {
            let closed: Vec<String> = log
                .lock()
                .unwrap()
                .iter()
                .filter(|entry| entry.starts_with("closed"))
                .cloned()
                .collect();
            if closed.len() >= count {
                return closed;
            }
            tokio::task::yield_now().await;
        }
        panic!("fewer than {count} closes ended: {:?}", log.lock().unwrap());
    }

    #[tokio::test]
    async fn an_open_evicts_the_least_recently_used_tenant_nobody_holds() {
        let registry = Registry::new(3);
        let log = Log::default();
        let gate = Arc::new(Semaphore::new(10));
        for name in ["a", "b", "c"] {
            open(&registry, name, &log, &gate).await;
        }
        // Used again: b is now the least recently used, then c, then a.
        open(&registry, "a", &log, &gate).await;
        // b is held: the next opens evict c, then a, and never b, however long ago it was
        // used.
        let held = open(&registry, "b", &log, &gate).await;
        open(&registry, "a", &log, &gate).await;
        open(&registry, "d", &log, &gate).await;
        assert_eq!(closed(&log, 1).await, ["closed c"]);
        open(&registry, "e", &log, &gate).await;
        assert_eq!(closed(&log, 2).await, ["closed c", "closed a"]);
        assert_eq!(registry.len(), 3);

        // Let go, b is the least recently used idle tenant again.
        drop(held);
        open(&registry, "f", &log, &gate).await;
        assert_eq!(closed(&log, 3).await, ["closed c", "closed a", "closed b"]);
    }

    #[tokio::test]
    async fn an_evicted_tenant_opens_again_only_once_its_close_has_ended() {
        let registry = Arc::new(Registry::new(1));
        let log = Log::default();
        let gate = Arc::new(Semaphore::new(0));
        open(&registry, "a", &log, &gate).await;
        // Evicts a, whose close now waits at the gate, in its own task: b opens meanwhile.
        open(&registry, "b", &log, &gate).await;
        let reopen = tokio::spawn({
            let (registry, log, gate) = (registry.clone(), log.clone(), gate.clone());
            async move { open(&registry, "a", &log, &gate).await }
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            !reopen.is_finished(),
            "a reopened while it was still closing"
        );
        // One close ends: a's. b's, started when a evicts it, waits for another permit.
        gate.add_permits(1);
        reopen.await.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            ["opened a", "opened b", "closed a", "opened a"]
        );

        // Shutdown waits for the background close of b, then closes a.
        gate.add_permits(2);
        assert_eq!(registry.close_idle().await, 1);
        assert_eq!(
            *log.lock().unwrap(),
            ["opened a", "opened b", "closed a", "opened a", "closed b", "closed a"]
        );
    }
}

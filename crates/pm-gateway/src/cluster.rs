//! What a node of a cluster adds to a single node (issue 11): its committed groups go out on
//! the bus, and its hubs are fed by [`Relay`]s (the bus, this node's own commits and the
//! shared change log) instead of by the tenant's writer alone.
//!
//! Publishing runs off the commit path: one task per tenant open on this node reads the
//! writer's committed groups and publishes them in order. A publish that fails (NATS down or
//! slow) is counted and dropped; the other nodes read the group from the change log at their
//! next head check, so a commit is never lost, only later elsewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use pm_core::TenantId;
use pm_db::Tenant;
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::relay::{Bus, Commits};

/// A node's part in a cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    bus: Bus,
    /// The tenant instances whose commits this node publishes (weak: an idle tenant still
    /// closes, which ends its publisher).
    publishing: Mutex<HashMap<TenantId, Weak<dyn Tenant>>>,
    /// Test hook: while set, committed groups are not published, as if the node died
    /// between COMMIT and publish.
    suppressed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl Cluster {
    pub(crate) fn new(bus: Bus, metrics: Arc<Metrics>) -> Cluster {
        Cluster {
            bus,
            publishing: Mutex::default(),
            suppressed: Arc::default(),
            metrics,
        }
    }

    /// The node's bus.
    pub(crate) fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Makes sure `tenant`'s commits on this node are published: called before a session
    /// sends its first request, so that nothing it commits is missed. Cheap when already so.
    pub(crate) fn publish_commits(&self, tenant: &Arc<dyn Tenant>) {
        let mut publishing = self
            .publishing
            .lock()
            .expect("publishers lock is never poisoned");
        if publishing
            .get(tenant.id())
            .is_some_and(|known| std::ptr::addr_eq(known.as_ptr(), Arc::as_ptr(tenant)))
        {
            return;
        }
        publishing.retain(|_, known| known.strong_count() > 0);
        publishing.insert(tenant.id().clone(), Arc::downgrade(tenant));
        // Subscribed here, under the lock, before any of the session's requests.
        let commits = tenant.subscribe_commits();
        tokio::spawn(publish(
            self.bus.clone(),
            tenant.id().clone(),
            commits,
            self.suppressed.clone(),
            self.metrics.clone(),
        ));
    }

    /// Test hook: stop (or resume) publishing committed groups.
    #[cfg(feature = "test-util")]
    pub(crate) fn suppress_publishing(&self, suppressed: bool) {
        self.suppressed.store(suppressed, Ordering::Release);
    }
}

/// One tenant's publisher: its committed groups, in order, until the tenant closes.
async fn publish(
    bus: Bus,
    tenant: TenantId,
    mut commits: Commits,
    suppressed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    // Said once per outage rather than once per group.
    let mut failing = false;
    loop {
        let group = match commits.recv().await {
            Ok(group) => group,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                metrics.bus_publish_failures.inc_by(missed);
                tracing::warn!(%tenant, missed, "bus: publisher lagged; other nodes read the log");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if suppressed.load(Ordering::Acquire) {
            continue;
        }
        match bus.publish(&tenant, &group).await {
            Ok(()) => {
                metrics.bus_published.inc();
                if failing {
                    tracing::info!(%tenant, "bus: publishing again");
                    failing = false;
                }
            }
            Err(error) => {
                metrics.bus_publish_failures.inc();
                if !failing {
                    tracing::warn!(%tenant, %error, "bus: cannot publish; other nodes read the log");
                    failing = true;
                }
            }
        }
    }
}

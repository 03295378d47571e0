//! Rate limits and connection counts.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use pm_core::{TenantId, UserId};

/// Governor's clock over tokio's: the same time as the rest of the server, so that tests
/// with paused time (`tokio::time::pause`/`advance`) drive the buckets too.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// A token bucket: `rate` tokens per second, up to `burst` (governor's GCRA, which lets
/// through exactly what a continuously refilled bucket of that size would).
#[derive(Debug)]
pub struct TokenBucket {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>,
    burst: NonZeroU32,
}

impl TokenBucket {
    /// A full bucket. `rate` and `burst` count as at least 1 (the settings refuse 0).
    pub fn new(rate: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        TokenBucket {
            limiter: RateLimiter::direct_with_clock(quota, TokioClock),
            burst,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&self) -> bool {
        self.limiter.check().is_ok()
    }

    /// Whether the bucket has refilled completely by now. Governor has no look without a
    /// take, so this asks for the whole burst at once: granted only to a full bucket, which
    /// is then empty, so a `true` bucket must be dropped; a refused ask takes nothing.
    fn drain_if_full(&self) -> bool {
        matches!(self.limiter.check_n(self.burst), Ok(Ok(())))
    }
}

/// Open connections per tenant and per (tenant, user).
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    tenants: HashMap<TenantId, usize>,
    users: HashMap<(TenantId, UserId), usize>,
    /// Request budgets that closed connections left unspent, per user, until they have
    /// refilled: a new connection takes one over, so reconnecting does not refill a budget
    /// faster than its rate. Each closed connection parks one and each new one takes one, so
    /// a user never has more parked than the per-user connection limit.
    parked: HashMap<(TenantId, UserId), Vec<TokenBucket>>,
}

/// Users with parked budgets beyond which refilled ones are swept out.
const PARKED_SWEEP: usize = 4_096;

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many connections for the tenant.
    Tenant,
    /// Too many connections for the user.
    User,
}

/// Holds one connection's place in the counts; gives it back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    tenant: TenantId,
    user: UserId,
}

impl ConnectionCounts {
    /// Counts a connection of `user` in `tenant` if both are under their limits.
    pub fn admit(
        self: &Arc<Self>,
        tenant: &TenantId,
        user: &UserId,
        per_tenant: usize,
        per_user: usize,
    ) -> Result<ConnectionSlot, Refused> {
        let mut c = self
            .counts
            .lock()
            .expect("connection counts lock is never poisoned");
        let t = c.tenants.get(tenant).copied().unwrap_or(0);
        if t >= per_tenant {
            return Err(Refused::Tenant);
        }
        let key = (tenant.clone(), user.clone());
        let u = c.users.get(&key).copied().unwrap_or(0);
        if u >= per_user {
            return Err(Refused::User);
        }
        c.tenants.insert(tenant.clone(), t + 1);
        c.users.insert(key, u + 1);
        Ok(ConnectionSlot {
            counts: self.clone(),
            tenant: tenant.clone(),
            user: user.clone(),
        })
    }
}

impl ConnectionSlot {
    /// This connection's request budget: one that a closed connection of the same user left
    /// and that has not refilled yet, or a full one.
    pub fn bucket(&self, rate: u32, burst: u32) -> TokenBucket {
        let mut c = self
            .counts
            .counts
            .lock()
            .expect("connection counts lock is never poisoned");
        let key = (self.tenant.clone(), self.user.clone());
        let Some(parked) = c.parked.get_mut(&key) else {
            return TokenBucket::new(rate, burst);
        };
        parked.retain(|bucket| !bucket.drain_if_full());
        let bucket = parked.pop();
        if parked.is_empty() {
            c.parked.remove(&key);
        }
        bucket.unwrap_or_else(|| TokenBucket::new(rate, burst))
    }

    /// Leaves what this connection did not spend of its budget to the user's next connection.
    pub fn park(&self, bucket: TokenBucket) {
        if bucket.drain_if_full() {
            return;
        }
        let mut c = self
            .counts
            .counts
            .lock()
            .expect("connection counts lock is never poisoned");
        if c.parked.len() >= PARKED_SWEEP {
            c.parked.retain(|_, parked| {
                parked.retain(|bucket| !bucket.drain_if_full());
                !parked.is_empty()
            });
        }
        c.parked
            .entry((self.tenant.clone(), self.user.clone()))
            .or_default()
            .push(bucket);
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self
            .counts
            .counts
            .lock()
            .expect("connection counts lock is never poisoned");
        if let Some(n) = c.tenants.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                c.tenants.remove(&self.tenant);
            }
        }
        let key = (self.tenant.clone(), self.user.clone());
        if let Some(n) = c.users.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                c.users.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_at_its_rate() {
        let bucket = TokenBucket::new(10, 2);
        assert!(bucket.take());
        assert!(bucket.take());
        assert!(!bucket.take());
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert!(bucket.take());
        assert!(!bucket.take());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_takes_over_the_budget_a_closed_one_left_until_it_refills() {
        let counts = Arc::new(ConnectionCounts::default());
        let t = TenantId::parse("acme").unwrap();
        let a = UserId::parse("sub", "a").unwrap();
        let b = UserId::parse("sub", "b").unwrap();
        let first = counts.admit(&t, &a, 10, 10).unwrap();
        let spent = first.bucket(10, 2);
        assert!(spent.take() && spent.take() && !spent.take());
        first.park(spent);
        drop(first);

        let second = counts.admit(&t, &a, 10, 10).unwrap();
        let inherited = second.bucket(10, 2);
        assert!(!inherited.take(), "reconnecting refilled nothing");
        // Another user, and the next connection after this one took the parked budget, start
        // full.
        let other = counts.admit(&t, &b, 10, 10).unwrap();
        assert!(other.bucket(10, 2).take());
        let third = counts.admit(&t, &a, 10, 10).unwrap();
        let fresh = third.bucket(10, 2);
        assert!(fresh.take() && fresh.take());
        second.park(inherited);

        // Once refilled, a parked budget is dropped rather than handed on.
        tokio::time::advance(std::time::Duration::from_millis(200)).await;
        let fourth = counts.admit(&t, &a, 10, 10).unwrap();
        let refilled = fourth.bucket(10, 2);
        assert!(refilled.take() && refilled.take() && !refilled.take());
        assert!(counts.counts.lock().unwrap().parked.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_budget_is_handed_over_as_it_was_left() {
        let counts = Arc::new(ConnectionCounts::default());
        let t = TenantId::parse("acme").unwrap();
        let a = UserId::parse("sub", "a").unwrap();
        let first = counts.admit(&t, &a, 10, 10).unwrap();
        let spent = first.bucket(10, 4);
        assert!(spent.take());
        first.park(spent);
        drop(first);

        // Checking whether the parked budget had refilled took nothing from it.
        let second = counts.admit(&t, &a, 10, 10).unwrap();
        let inherited = second.bucket(10, 4);
        assert!(inherited.take() && inherited.take() && inherited.take());
        assert!(!inherited.take());
        // Half a token's time later there is still none; the rest of it brings one.
        tokio::time::advance(std::time::Duration::from_millis(50)).await;
        assert!(!inherited.take());
        tokio::time::advance(std::time::Duration::from_millis(50)).await;
        assert!(inherited.take() && !inherited.take());
    }

    #[test]
    fn counts_are_per_tenant_and_per_user_and_released_on_drop() {
        let counts = Arc::new(ConnectionCounts::default());
        let t = TenantId::parse("acme").unwrap();
        let a = UserId::parse("sub", "a").unwrap();
        let b = UserId::parse("sub", "b").unwrap();
        let s1 = counts.admit(&t, &a, 3, 1).unwrap();
        assert_eq!(counts.admit(&t, &a, 3, 1).unwrap_err(), Refused::User);
        let _s2 = counts.admit(&t, &b, 2, 1).unwrap();
        assert_eq!(counts.admit(&t, &b, 2, 5).unwrap_err(), Refused::Tenant);
        drop(s1);
        assert!(counts.admit(&t, &a, 3, 1).is_ok());
    }
}

//! Rate limits and connection counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pm_core::{TenantId, UserId};
use tokio::time::Instant;

/// A token bucket: `rate` tokens per second, up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
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
}

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
        let mut bucket = TokenBucket::new(10, 2);
        assert!(bucket.take());
        assert!(bucket.take());
        assert!(!bucket.take());
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert!(bucket.take());
        assert!(!bucket.take());
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

//! Connection options and the reconnect backoff.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How a [`Client`](crate::Client) connects and behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent in `Hello.client_name`, for the server's logs.
    pub client_name: String,
    /// How long a request waits for its response before failing with `Timeout`.
    pub request_timeout: Duration,
    /// How long opening the socket plus `Hello`/`Welcome` may take.
    pub connect_timeout: Duration,
    /// Capacity of the event stream; when the consumer falls this far behind, the client stops
    /// reading and lets the server cut it off (it resumes without loss if reconnect is on).
    pub event_buffer: usize,
    /// Capacity of the queue of outgoing frames.
    pub send_buffer: usize,
    /// Reconnect automatically (and resume the subscription) when the connection drops.
    pub reconnect: Option<Backoff>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            client_name: concat!("pm-client/", env!("CARGO_PKG_VERSION")).into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            event_buffer: 1024,
            send_buffer: 256,
            reconnect: None,
        }
    }
}

/// Exponential backoff between reconnect attempts.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The delay before the first attempt.
    pub initial: Duration,
    /// The delay never grows beyond this.
    pub max: Duration,
    /// Fraction (0.0 to 1.0) of each delay that is randomized, so that many clients cut off
    /// at once do not come back at once.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (1-based): `initial * 2^(attempt-1)`, capped at
    /// `max`, minus up to `jitter` of it at random.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let base = self
            .initial
            .saturating_mul(1u32 << exponent)
            .min(self.max.max(self.initial));
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        // A fresh `RandomState` is randomly keyed: enough randomness for spreading retries.
        let random = RandomState::new().build_hasher().finish();
        let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(1.0 - jitter * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_without_jitter() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(700),
            jitter: 0.0,
        };
        let delays: Vec<u128> = (1..=5).map(|a| backoff.delay(a).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 700, 700]);
        assert_eq!(backoff.delay(200), Duration::from_millis(700));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let backoff = Backoff {
            initial: Duration::from_millis(1_000),
            max: Duration::from_secs(10),
            jitter: 0.5,
        };
        for _ in 0..100 {
            let delay = backoff.delay(1);
            assert!(delay >= Duration::from_millis(500) && delay <= Duration::from_millis(1_000));
        }
    }
}

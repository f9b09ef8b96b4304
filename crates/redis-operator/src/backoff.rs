//! Per-object exponential backoff for the error policy: one failing RedisCluster slows down on
//! its own, without holding back the others, and starts from the bottom again after a success.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use crate::sync::lock;

pub struct Backoff<K> {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<K, u32>>,
}

impl<K: Eq + Hash> Backoff<K> {
    /// About 1 s, doubling on every failure up to 5 min.
    pub fn standard() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(300))
    }

    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::default(),
        }
    }

    /// Counts one more failure for `key` and returns how long to wait before the next try.
    pub fn next_delay(&self, key: K) -> Duration {
        let failures = {
            let mut map = lock(&self.failures);
            let count = map.entry(key).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        // Jitter spreads out clusters that failed together (say, an API server restart).
        delay(self.base, self.max, failures, rand::random_range(0.8..=1.2))
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset(&self, key: &K) {
        lock(&self.failures).remove(key);
    }

    /// How many failures in a row `key` has had.
    #[cfg(test)]
    pub fn failures(&self, key: &K) -> u32 {
        lock(&self.failures).get(key).copied().unwrap_or(0)
    }
}

/// `base * 2^(failures-1) * jitter`, never above `max`.
fn delay(base: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let exponential = base.saturating_mul(1u32 << doublings).min(max);
    exponential.mul_f64(jitter).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn delay_doubles_from_base_and_stops_at_max() {
        let cases = [
            (1, 1.0, S(1)),
            (2, 1.0, S(2)),
            (3, 1.0, S(4)),
            (9, 1.0, S(256)),
            (10, 1.0, S(300)),
            (1000, 1.0, S(300)),
            (3, 0.8, Duration::from_millis(3200)),
            (3, 1.2, Duration::from_millis(4800)),
            (10, 1.2, S(300)),
        ];
        for (failures, jitter, expected) in cases {
            assert_eq!(
                delay(S(1), S(300), failures, jitter),
                expected,
                "{failures} failures"
            );
        }
    }

    #[test]
    fn failures_are_counted_per_key_and_reset_on_success() {
        let backoff = Backoff::new(S(1), S(300));
        let first = backoff.next_delay("a");
        backoff.next_delay("a");
        let third = backoff.next_delay("a");
        assert!(first <= Duration::from_millis(1200), "{first:?}");
        assert!(third >= Duration::from_millis(3200), "{third:?}");
        assert_eq!(backoff.failures(&"a"), 3);
        assert_eq!(backoff.failures(&"b"), 0);

        backoff.reset(&"a");
        assert_eq!(backoff.failures(&"a"), 0);
        assert!(backoff.next_delay("a") <= Duration::from_millis(1200));
    }
}

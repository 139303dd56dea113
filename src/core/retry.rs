//! How an endpoint retries a failed query function (R36): how many times, and after what delay.

use serde::{Deserialize, Serialize};

/// An endpoint's retry policy (R36): a failed request is run again up to `max_retries` times,
/// the `n`th retry `base_ms × 2^(n-1)` after the failure (at most `max_ms`), shortened by up to
/// `jitter_percent` % of it. The jitter is a deterministic function of `seed`, the request and
/// the attempt, so a run replays exactly (no clock or global randomness in the core).
///
/// ```
/// use livecache::core::RetryPolicy;
/// let policy = RetryPolicy { max_retries: 3, base_ms: 100, max_ms: 250, jitter_percent: 0, seed: 0 };
/// assert_eq!([1, 2, 3].map(|n| policy.delay_ms(n, 7)), [100, 200, 250]);
/// let jittered = RetryPolicy { jitter_percent: 50, ..policy };
/// let d = jittered.delay_ms(2, 7);
/// assert!((100..=200).contains(&d));
/// assert_eq!(d, jittered.delay_ms(2, 7)); // the same every time
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first failure (0: none).
    pub max_retries: u32,
    /// The delay before the first retry, in milliseconds.
    pub base_ms: u64,
    /// The longest delay, in milliseconds.
    pub max_ms: u64,
    /// How much of each delay the jitter may take off, in percent (clamped to 100).
    pub jitter_percent: u8,
    /// The jitter's seed.
    pub seed: u64,
}

impl Default for RetryPolicy {
    /// Three retries after 1 s, 2 s and 4 s (at most 30 s), each shortened by up to 20 %.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_ms: 1_000,
            max_ms: 30_000,
            jitter_percent: 20,
            seed: 0,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry `attempt` (1 for the first) of `request`.
    pub fn delay_ms(&self, attempt: u32, request: u64) -> u64 {
        let exponent = attempt.saturating_sub(1).min(63);
        let full = self
            .base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.max_ms);
        let jitter = u64::from(self.jitter_percent.min(100));
        if jitter == 0 || full == 0 {
            return full;
        }
        let span = full / 100 * jitter + full % 100 * jitter / 100;
        let r = mix(self.seed ^ request.rotate_left(17) ^ u64::from(attempt).rotate_left(41));
        full - r % (span + 1)
    }
}

/// SplitMix64's finaliser: a well-spread 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_only_shortens_within_its_share() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_ms: 100,
            max_ms: 1_000,
            jitter_percent: 30,
            seed: 42,
        };
        for attempt in 1..=10 {
            let full = (100u64 << (attempt - 1)).min(1_000);
            for request in 0..50 {
                let d = policy.delay_ms(attempt, request);
                assert!(
                    d <= full && d >= full - full * 30 / 100,
                    "{attempt} {request}: {d}"
                );
            }
        }
        // Not constant: the jitter spreads retries.
        let spread: std::collections::BTreeSet<u64> =
            (0..50).map(|r| policy.delay_ms(3, r)).collect();
        assert!(spread.len() > 10);
        // A huge attempt saturates instead of overflowing.
        let huge = RetryPolicy {
            max_ms: u64::MAX,
            ..policy
        };
        assert!(huge.delay_ms(200, 1) > 0);
    }

    /// The jitter takes off up to exactly `jitter_percent` % of the delay (rounded down), and
    /// its draws cover that share — also for delays that are not a multiple of 100 ms.
    #[test]
    fn the_jitter_spans_exactly_its_share_of_any_delay() {
        for (base_ms, jitter_percent) in [(150, 30), (199, 100), (1_234, 45), (99, 50)] {
            let policy = RetryPolicy {
                max_retries: 1,
                base_ms,
                max_ms: u64::MAX,
                jitter_percent,
                seed: 7,
            };
            let span = base_ms * u64::from(jitter_percent) / 100;
            let delays: Vec<u64> = (0..4_000).map(|r| policy.delay_ms(1, r)).collect();
            let (low, high) = (
                delays.iter().min().copied().unwrap_or(0),
                delays.iter().max().copied().unwrap_or(0),
            );
            // 4,000 draws over at most 556 values: both ends are drawn (for this seed).
            assert_eq!(low, base_ms - span, "{base_ms} {jitter_percent}");
            assert_eq!(high, base_ms, "{base_ms} {jitter_percent}");
        }
    }
}

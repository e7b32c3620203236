//! Token buckets: client messages per second, feedback per minute.

use std::time::Instant;

/// `rate` messages per second with a burst of `burst`.
pub(super) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` per second, burst `rate`.
    pub(super) fn new(rate: u32) -> Self {
        TokenBucket {
            rate: rate as f64,
            burst: rate as f64,
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    /// `count` per minute, burst `count`.
    pub(super) fn per_minute(count: u32) -> Self {
        TokenBucket {
            rate: count as f64 / 60.0,
            ..Self::new(count)
        }
    }

    pub(super) fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_bucket_is_per_minute() {
        let mut bucket = TokenBucket::per_minute(3);
        assert_eq!((0..10).filter(|_| bucket.take()).count(), 3);
    }

    #[test]
    fn bucket_limits_bursts() {
        let mut bucket = TokenBucket::new(5);
        let taken = (0..20).filter(|_| bucket.take()).count();
        assert!((5..=6).contains(&taken), "{taken}");
    }
}

//! Exponential backoff with jitter: the one retry schedule for webhook deliveries, S3 upload
//! retries and reconnecting to the Docker Engine's event stream.
//!
//! Not here: the restart budget's `backoff_after` (config), which is the documented,
//! user-facing Kubernetes-style schedule between restarts (`budget.backoff`, doubling up to
//! `budget.backoff_max`): operators read its exact waits in alerts, so it has no jitter.

use rand::Rng;
use std::time::Duration;

/// Doubling delays from `base` up to `max`, each with up to 20 % random jitter so that many
/// targets retrying together do not move in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

/// The bounds given to [`Backoff::new`] do not make sense.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("backoff base {base:?} must be non-zero and not above max {max:?}")]
pub struct InvalidBackoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if base.is_zero() || base > max {
            return Err(InvalidBackoff { base, max });
        }
        Ok(Self { base, max })
    }

    /// Bounds written in the code: checked when the constant is evaluated, so a bad pair
    /// fails the build instead of a run.
    pub const fn fixed(base: Duration, max: Duration) -> Self {
        assert!(
            !base.is_zero() && base.as_nanos() <= max.as_nanos(),
            "backoff base must be non-zero and not above max"
        );
        Self { base, max }
    }

    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.min(20));
        let capped = exp.min(self.max);
        let jitter = rand::thread_rng().gen_range(0.0..0.2);
        capped.mul_f64(1.0 - jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_within_jitter() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).unwrap();
        let d0 = b.delay(0);
        assert!(d0 <= Duration::from_millis(100) && d0 >= Duration::from_millis(80));
        let d2 = b.delay(2);
        assert!(d2 <= Duration::from_millis(400) && d2 >= Duration::from_millis(320));
        assert!(b.delay(30) <= Duration::from_secs(1));
    }

    #[test]
    fn fixed_bounds_behave_like_validated_ones() {
        const B: Backoff = Backoff::fixed(Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(
            Some(B),
            Backoff::new(Duration::from_secs(1), Duration::from_secs(2)).ok()
        );
        assert!(B.delay(5) <= Duration::from_secs(2));
    }

    #[test]
    fn rejects_bad_bounds() {
        assert!(Backoff::new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }
}

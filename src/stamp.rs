//! Wall-clock stamps shared by incident ids, bundle paths and outage keys. A leaf module:
//! everything may use it, it uses nothing of ours.

use chrono::{DateTime, Utc};
use std::time::Instant;

/// A sortable UTC stamp used in incident ids and bundle paths: `20261125T033401.123Z`.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// The wall-clock time that corresponds to a past monotonic instant.
pub fn wall_at(i: Instant) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(i.elapsed()).unwrap_or_default()
}

/// The monotonic instant that corresponds to a past wall-clock time.
pub fn instant_at(t: DateTime<Utc>) -> Instant {
    let ago = (Utc::now() - t).to_std().unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_like_time() {
        let a = stamp("2026-01-02T03:04:05.006Z".parse().unwrap());
        let b = stamp("2026-01-02T03:04:05.100Z".parse().unwrap());
        assert_eq!(a, "20260102T030405.006Z");
        assert!(a < b);
    }
}

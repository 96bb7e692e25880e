//! `fleet_guard:`: restarts are held while a large share of the fleet fails at once.

use super::error::Problems;
use serde::Deserialize;

/// `fleet_guard:`: when many targets fail at once the cause is likely the network or this
/// host; restarts are held until the share drops.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetGuard {
    /// Hold restarts when more than this share of targets fails (default 0.5)...
    pub max_failing_share: Option<f64>,
    /// ...and at least this many (default 3).
    pub min_failing: Option<i64>,
}

/// The fleet guard.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetGuardConfig {
    pub max_failing_share: f64,
    pub min_failing: usize,
}

impl Default for FleetGuardConfig {
    fn default() -> Self {
        Self {
            max_failing_share: 0.5,
            min_failing: 3,
        }
    }
}

/// Validates `fleet_guard:` over the defaults; a bad key keeps its default.
pub(crate) fn build_fleet_guard(g: RawFleetGuard, problems: &mut Problems) -> FleetGuardConfig {
    let mut guard = FleetGuardConfig::default();
    if let Some(s) = g.max_failing_share {
        if !(0.0..1.0).contains(&s) {
            problems.push(
                "fleet_guard.max_failing_share",
                format!("{s} is not a share"),
                "use a fraction from 0 to 1, e.g. 0.5",
            );
        } else {
            guard.max_failing_share = s;
        }
    }
    if let Some(n) = g.min_failing {
        if n < 1 {
            problems.push(
                "fleet_guard.min_failing",
                format!("{n} is too small"),
                "use 1 or more (default 3)",
            );
        } else {
            guard.min_failing = n as usize;
        }
    }
    guard
}

//! `restart_budget:` (in `defaults:` and per target): how often a target may be restarted.

use super::duration::{checked as duration, RawDuration};
use super::error::Problems;
use serde::Deserialize;
use std::time::Duration;

/// `restart_budget:`: at most `max_restarts` restarts per `window`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Restarts allowed inside one window.
    pub max_restarts: Option<i64>,
    /// Length of the sliding window.
    pub window: Option<RawDuration>,
    /// Wait before a second restart of a failing target (default 10s), doubling each time...
    pub backoff: Option<RawDuration>,
    /// ...up to this (default 5m)...
    pub backoff_max: Option<RawDuration>,
    /// ...and back to `backoff` after this long healthy (default 10m).
    pub backoff_reset: Option<RawDuration>,
}

/// At most `max_restarts` per sliding `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    pub max_restarts: u32,
    pub window: Duration,
    /// Kubernetes-style backoff between restarts of one target.
    pub backoff: Duration,
    pub backoff_max: Duration,
    pub backoff_reset: Duration,
}

impl BudgetConfig {
    /// The wait after the `n`-th restart of a streak (n >= 1) before the next one.
    pub fn backoff_after(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            window: Duration::from_secs(3600),
            backoff: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(600),
        }
    }
}

/// `base` with the keys `over` sets, each checked; a bad key keeps the base's value.
pub(crate) fn merge_budget(
    base: &BudgetConfig,
    over: Option<&RawBudget>,
    at: &str,
    problems: &mut Problems,
) -> BudgetConfig {
    let mut b = base.clone();
    let Some(o) = over else { return b };
    if let Some(n) = o.max_restarts {
        if !(0..=1000).contains(&n) {
            problems.push(
                format!("{at}.max_restarts"),
                format!("{n} is out of range"),
                "use 0 (never restart) up to 1000",
            );
        } else {
            b.max_restarts = n as u32;
        }
    }
    if let Some(d) = o
        .window
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.window"), problems))
    {
        if d.is_zero() {
            problems.push(
                format!("{at}.window"),
                "a window of 0 would allow unlimited restarts",
                "use a window such as 1h",
            );
        } else {
            b.window = d;
        }
    }
    let mut set = |raw: &Option<RawDuration>, key: &str, slot: &mut Duration| {
        if let Some(d) = raw
            .as_ref()
            .and_then(|d| duration(d, &format!("{at}.{key}"), problems))
        {
            *slot = d;
        }
    };
    set(&o.backoff, "backoff", &mut b.backoff);
    set(&o.backoff_max, "backoff_max", &mut b.backoff_max);
    set(&o.backoff_reset, "backoff_reset", &mut b.backoff_reset);
    if b.backoff > b.backoff_max {
        problems.push(
            format!("{at}.backoff"),
            "backoff is longer than backoff_max",
            "make backoff_max at least as long as backoff",
        );
    }
    b
}

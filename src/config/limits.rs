//! `discovery.docker.limits`: the floor and cap of every number a label may set.
//!
//! A label's author (an image author, whoever starts a container) is not the operator, so a
//! label may tune a discovered target only within bounds the operator sets: by default no
//! container costs the daemon more than a registry target on the defaults would (probes no
//! more often than once a second, no more restarts than the defaults allow, ...). A value out
//! of bounds skips the container with one problem naming the label and the bound.

use super::duration::{checked as duration, format_duration, RawDuration};
use super::error::Problems;
use super::TargetDefaults;
use serde::Deserialize;
use std::time::Duration;

/// `limits.<key>: { min: ..., max: ... }`, either or both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBound<T> {
    /// The smallest value a label may give.
    pub min: Option<T>,
    /// The largest value a label may give.
    pub max: Option<T>,
}

/// `discovery.docker.limits`: one bound per label that takes a number or a duration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `{ns}.probe.interval` (default 1s to 1h).
    pub probe_interval: Option<RawBound<RawDuration>>,
    /// `{ns}.probe.timeout` (default 100ms to 30s).
    pub probe_timeout: Option<RawBound<RawDuration>>,
    /// `{ns}.probe.failure_threshold` (default 1 to 100).
    pub failure_threshold: Option<RawBound<i64>>,
    /// `{ns}.restart_budget.max_restarts` (default 0 to the defaults' max_restarts).
    pub max_restarts: Option<RawBound<i64>>,
    /// `{ns}.restart_budget.window` (default the defaults' window to 24h).
    pub window: Option<RawBound<RawDuration>>,
    /// `{ns}.restart_budget.backoff` (default 1s to 1h).
    pub backoff: Option<RawBound<RawDuration>>,
    /// `{ns}.restart_budget.backoff_max` (default 1s to 1h).
    pub backoff_max: Option<RawBound<RawDuration>>,
    /// `{ns}.restart_budget.backoff_reset` (default 1s to 24h).
    pub backoff_reset: Option<RawBound<RawDuration>>,
    /// `{ns}.recovery_timeout` (default 5s to 1h).
    pub recovery_timeout: Option<RawBound<RawDuration>>,
    /// `{ns}.heal.stop_timeout` (default 1s to 5m).
    pub stop_timeout: Option<RawBound<RawDuration>>,
    /// `{ns}.forensics.log_tail` in lines (default 0 to 10000).
    pub log_tail: Option<RawBound<i64>>,
}

/// The closed range a label's value must lie in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound<T> {
    pub min: T,
    pub max: T,
}

impl<T: PartialOrd + Copy> Bound<T> {
    /// The bound the value breaks: Some((true, min)) below it, Some((false, max)) above.
    pub fn broken_by(&self, v: T) -> Option<(bool, T)> {
        if v < self.min {
            Some((true, self.min))
        } else if v > self.max {
            Some((false, self.max))
        } else {
            None
        }
    }
}

/// The bounds labels are held to. `max_restarts`' cap and `window`'s floor default to the
/// operator's defaults (None), so they are resolved against them where a label is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelLimits {
    pub probe_interval: Bound<Duration>,
    pub probe_timeout: Bound<Duration>,
    pub failure_threshold: Bound<u32>,
    pub max_restarts: Bound<Option<u32>>,
    pub window: Bound<Option<Duration>>,
    pub backoff: Bound<Duration>,
    pub backoff_max: Bound<Duration>,
    pub backoff_reset: Bound<Duration>,
    pub recovery_timeout: Bound<Duration>,
    pub stop_timeout: Bound<Duration>,
    pub log_tail: Bound<u32>,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl Default for LabelLimits {
    fn default() -> Self {
        let d = |min, max| Bound { min, max };
        Self {
            probe_interval: d(secs(1), secs(3600)),
            probe_timeout: d(Duration::from_millis(100), secs(30)),
            failure_threshold: Bound { min: 1, max: 100 },
            max_restarts: Bound {
                min: Some(0),
                max: None,
            },
            window: Bound {
                min: None,
                max: Some(secs(86_400)),
            },
            backoff: d(secs(1), secs(3600)),
            backoff_max: d(secs(1), secs(3600)),
            backoff_reset: d(secs(1), secs(86_400)),
            recovery_timeout: d(secs(5), secs(3600)),
            stop_timeout: d(secs(1), secs(300)),
            log_tail: Bound {
                min: 0,
                max: 10_000,
            },
        }
    }
}

impl LabelLimits {
    /// `max_restarts` with its default cap, the defaults' own max_restarts.
    pub fn max_restarts(&self, d: &TargetDefaults) -> Bound<u32> {
        Bound {
            min: self.max_restarts.min.unwrap_or(0),
            max: self.max_restarts.max.unwrap_or(d.budget.max_restarts),
        }
    }

    /// `window` with its default floor, the defaults' own window.
    pub fn window(&self, d: &TargetDefaults) -> Bound<Duration> {
        Bound {
            min: self.window.min.unwrap_or(d.budget.window),
            max: self.window.max.unwrap_or(secs(86_400)),
        }
    }
}

/// The limits as written over the defaults; every problem pushed.
pub(crate) fn build_limits(raw: Option<RawLimits>, problems: &mut Problems) -> LabelLimits {
    let mut l = LabelLimits::default();
    let Some(r) = raw else { return l };
    let mut d = |b: &Option<RawBound<RawDuration>>, key: &str, slot: &mut Bound<Duration>| {
        let (min, max) = durations(b, key, problems);
        slot.min = min.unwrap_or(slot.min);
        slot.max = max.unwrap_or(slot.max);
    };
    d(&r.probe_interval, "probe_interval", &mut l.probe_interval);
    d(&r.probe_timeout, "probe_timeout", &mut l.probe_timeout);
    d(&r.backoff, "backoff", &mut l.backoff);
    d(&r.backoff_max, "backoff_max", &mut l.backoff_max);
    d(&r.backoff_reset, "backoff_reset", &mut l.backoff_reset);
    d(
        &r.recovery_timeout,
        "recovery_timeout",
        &mut l.recovery_timeout,
    );
    d(&r.stop_timeout, "stop_timeout", &mut l.stop_timeout);
    let (min, max) = durations(&r.window, "window", problems);
    l.window.min = min.or(l.window.min);
    l.window.max = max.or(l.window.max);
    let mut n = |b: &Option<RawBound<i64>>, key: &str, slot: &mut Bound<u32>| {
        let (min, max) = counts(b, key, problems);
        slot.min = min.unwrap_or(slot.min);
        slot.max = max.unwrap_or(slot.max);
    };
    n(
        &r.failure_threshold,
        "failure_threshold",
        &mut l.failure_threshold,
    );
    n(&r.log_tail, "log_tail", &mut l.log_tail);
    let (min, max) = counts(&r.max_restarts, "max_restarts", problems);
    l.max_restarts.min = min.or(l.max_restarts.min);
    l.max_restarts.max = max.or(l.max_restarts.max);
    check_order(&l, problems);
    l
}

/// A duration bound's `min` and `max` as written (None: not given, or reported).
fn durations(
    b: &Option<RawBound<RawDuration>>,
    key: &str,
    problems: &mut Problems,
) -> (Option<Duration>, Option<Duration>) {
    let at = format!("discovery.docker.limits.{key}");
    let Some(b) = b else { return (None, None) };
    let mut one = |v: &Option<RawDuration>| v.as_ref().and_then(|v| duration(v, &at, problems));
    (one(&b.min), one(&b.max))
}

/// A count bound's `min` and `max` as written (None: not given, or reported).
fn counts(
    b: &Option<RawBound<i64>>,
    key: &str,
    problems: &mut Problems,
) -> (Option<u32>, Option<u32>) {
    let Some(b) = b else { return (None, None) };
    let mut one = |v: Option<i64>| {
        let v = v?;
        u32::try_from(v)
            .map_err(|_| {
                problems.push(
                    format!("discovery.docker.limits.{key}"),
                    format!("{v} is not a count"),
                    "give a whole number of 0 or more",
                )
            })
            .ok()
    };
    (one(b.min), one(b.max))
}

/// A floor above its cap is a problem (no value could pass).
fn check_order(l: &LabelLimits, problems: &mut Problems) {
    let durs = [
        ("probe_interval", l.probe_interval),
        ("probe_timeout", l.probe_timeout),
        ("backoff", l.backoff),
        ("backoff_max", l.backoff_max),
        ("backoff_reset", l.backoff_reset),
        ("recovery_timeout", l.recovery_timeout),
        ("stop_timeout", l.stop_timeout),
    ];
    for (k, b) in durs {
        if b.min > b.max {
            problems.push(
                format!("discovery.docker.limits.{k}"),
                format!(
                    "min {} is above max {}",
                    format_duration(b.min),
                    format_duration(b.max)
                ),
                "make min at most max",
            );
        }
    }
    for (k, b) in [
        ("failure_threshold", l.failure_threshold),
        ("log_tail", l.log_tail),
    ] {
        if b.min > b.max {
            problems.push(
                format!("discovery.docker.limits.{k}"),
                format!("min {} is above max {}", b.min, b.max),
                "make min at most max",
            );
        }
    }
}

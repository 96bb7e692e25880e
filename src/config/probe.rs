//! `probe:` (in `defaults:` and per target): the SQL health check.

use super::duration::{checked as duration, RawDuration};
use super::error::Problems;
use serde::Deserialize;
use std::time::Duration;

/// `probe:`: the SQL health check.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// SQL run on every probe (simple protocol; the first column of the first row is checked
    /// against `expect` when that is set).
    pub query: Option<String>,
    /// Time between probes while healthy.
    pub interval: Option<RawDuration>,
    /// Limit for connecting and for the query (also sent as statement_timeout).
    pub timeout: Option<RawDuration>,
    /// Consecutive ambiguous failures (timeouts, errors) before a target is declared failing.
    pub failure_threshold: Option<i64>,
    /// Expected text of the first column of the first row; any other answer is a failure.
    pub expect: Option<String>,
    /// `primary`: a target answering as a standby (pg_is_in_recovery) is a `read_only` failure.
    pub role: Option<String>,
}

/// Probe settings for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    pub query: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub expect: Option<String>,
    /// The target must be a primary (not in recovery).
    pub primary: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            query: "SELECT 1".into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            failure_threshold: 3,
            primary: false,
            expect: None,
        }
    }
}

/// `base` with the keys `over` sets, each checked; a bad key keeps the base's value.
pub(crate) fn merge_probe(
    base: &ProbeConfig,
    over: Option<&RawProbe>,
    at: &str,
    problems: &mut Problems,
) -> ProbeConfig {
    let mut p = base.clone();
    let Some(o) = over else { return p };
    if let Some(q) = &o.query {
        if q.trim().is_empty() {
            problems.push(
                format!("{at}.query"),
                "the probe query is empty",
                "use a cheap query such as SELECT 1",
            );
        } else {
            p.query = q.clone();
        }
    }
    if let Some(d) = o
        .interval
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.interval"), problems))
    {
        if d.is_zero() {
            problems.push(
                format!("{at}.interval"),
                "an interval of 0 would probe in a busy loop",
                "use at least 100ms",
            );
        } else {
            p.interval = d;
        }
    }
    if let Some(d) = o
        .timeout
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.timeout"), problems))
    {
        if d.is_zero() {
            problems.push(
                format!("{at}.timeout"),
                "a timeout of 0 fails every probe",
                "use at least 100ms",
            );
        } else {
            p.timeout = d;
        }
    }
    if let Some(n) = o.failure_threshold {
        if !(1..=1000).contains(&n) {
            problems.push(
                format!("{at}.failure_threshold"),
                format!("{n} is not a usable threshold"),
                "use 1 or more (1 acts on the first failure)",
            );
        } else {
            p.failure_threshold = n as u32;
        }
    }
    if o.expect.is_some() {
        p.expect = o.expect.clone();
    }
    match o.role.as_deref() {
        None => {}
        Some("primary") => p.primary = true,
        Some("any") => p.primary = false,
        Some(other) => problems.push(
            format!("{at}.role"),
            format!("'{other}' is not a role"),
            "use primary (a standby answer is a failure) or any",
        ),
    }
    p
}

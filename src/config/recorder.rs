//! `recorder:` (in `defaults:` and per target): the flight recorder's cadence and memory, and
//! the thresholds of the early warnings it raises (see `crate::flight`).

use super::duration::{checked as duration, RawDuration};
use super::error::Problems;
use serde::Deserialize;
use std::time::Duration;

/// Most samples one target's ring may hold (`window / every`): about 136 bytes each.
pub const MAX_SAMPLES: u64 = 360;

/// `recorder:`: light vitals sampled on the probe's session, kept for the bundle, the alert
/// and `/status`; early warnings from the newest sample.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecorder {
    /// `false` turns the recorder and its warnings off for the target (default on).
    pub enabled: Option<bool>,
    /// How often a sample is taken, at most (default 10s; at least 1s): on the first probe
    /// due after it, so never more often than the probe interval.
    pub every: Option<RawDuration>,
    /// How far back the ring reaches (default 10m): `window / every` samples, at most 360.
    pub window: Option<RawDuration>,
    /// Warn when a filesystem of the data directory or pg_wal is this full, in percent
    /// (default 90; 0 turns the warning off).
    pub disk_percent: Option<f64>,
    /// Warn when this share of max_connections is in use, in percent (default 90; 0 off).
    pub connections_percent: Option<f64>,
    /// Warn when the oldest database's transaction ID age (`age(datfrozenxid)`) reaches this
    /// (default 1500000000; wraparound stops writes near 2^31; 0 off).
    pub xid_age: Option<f64>,
}

/// The flight recorder's settings for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct RecorderConfig {
    pub enabled: bool,
    pub every: Duration,
    pub window: Duration,
    pub warn: WarnThresholds,
}

/// Early-warning thresholds; `None` turns one off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarnThresholds {
    /// Percent of a filesystem used.
    pub disk_percent: Option<f64>,
    /// Percent of max_connections in use.
    pub connections_percent: Option<f64>,
    /// Transaction ID age.
    pub xid_age: Option<f64>,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            every: Duration::from_secs(10),
            window: Duration::from_secs(600),
            warn: WarnThresholds {
                disk_percent: Some(90.0),
                connections_percent: Some(90.0),
                xid_age: Some(1.5e9),
            },
        }
    }
}

impl RecorderConfig {
    /// How many samples the ring keeps: the window's worth, and one more for its far end.
    pub fn samples(&self) -> usize {
        let n = self.window.as_millis() / self.every.as_millis().max(1);
        (n as usize).clamp(1, MAX_SAMPLES as usize) + 1
    }
}

/// A threshold: a number in `range`, 0 meaning off; a bad one keeps the base's value.
fn threshold(
    v: Option<f64>,
    base: Option<f64>,
    at: String,
    range: std::ops::RangeInclusive<f64>,
    fix: &str,
    problems: &mut Problems,
) -> Option<f64> {
    match v {
        None => base,
        Some(0.0) => None,
        Some(x) if range.contains(&x) => Some(x),
        Some(x) => {
            problems.push(at, format!("{x} is out of range"), fix);
            base
        }
    }
}

/// `base` with the keys `over` sets, each checked; a bad key keeps the base's value.
pub(crate) fn merge_recorder(
    base: &RecorderConfig,
    over: Option<&RawRecorder>,
    at: &str,
    problems: &mut Problems,
) -> RecorderConfig {
    let mut r = base.clone();
    let Some(o) = over else { return r };
    if let Some(e) = o.enabled {
        r.enabled = e;
    }
    if let Some(d) = o
        .every
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.every"), problems))
    {
        if d < Duration::from_secs(1) {
            problems.push(
                format!("{at}.every"),
                "a sample more often than every second costs the server for nothing",
                "use 1s or more (default 10s)",
            );
        } else {
            r.every = d;
        }
    }
    if let Some(d) = o
        .window
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.window"), problems))
    {
        r.window = d;
    }
    let n = r.window.as_millis() / r.every.as_millis().max(1);
    if r.window < r.every || n > MAX_SAMPLES as u128 {
        problems.push(
            format!("{at}.window"),
            format!(
                "a window of {} at one sample every {} holds {n} samples",
                super::duration::format_duration(r.window),
                super::duration::format_duration(r.every)
            ),
            format!("keep window / every between 1 and {MAX_SAMPLES} (default 10m / 10s)"),
        );
        r.window = base.window.max(r.every);
    }
    let w = &mut r.warn;
    w.disk_percent = threshold(
        o.disk_percent,
        w.disk_percent,
        format!("{at}.disk_percent"),
        1.0..=100.0,
        "use a percentage from 1 to 100, or 0 to turn the warning off",
        problems,
    );
    w.connections_percent = threshold(
        o.connections_percent,
        w.connections_percent,
        format!("{at}.connections_percent"),
        1.0..=100.0,
        "use a percentage from 1 to 100, or 0 to turn the warning off",
        problems,
    );
    w.xid_age = threshold(
        o.xid_age,
        w.xid_age,
        format!("{at}.xid_age"),
        1e6..=2.1e9,
        "use an age from 1000000 to 2100000000 (default 1500000000), or 0 to turn the warning off",
        problems,
    );
    r
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, Source, VarSource};

    fn load(recorder: &str) -> Result<crate::config::Registry, String> {
        let text = format!(
            "defaults:\n  recorder: {recorder}\ntargets:\n  - name: db\n    dsn: postgres://u@h/db\n    recorder: {{ xid_age: 0 }}\n"
        );
        load_str(
            &text,
            Source::Generated("test".into()),
            &VarSource::fixed(Default::default()),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_apply_targets_override_and_bad_values_are_named_with_the_fix() {
        let r = load("{ every: 5s, window: 1m, connections_percent: 80 }").unwrap();
        let c = &r.targets[0].recorder;
        assert_eq!((c.every.as_secs(), c.window.as_secs()), (5, 60));
        assert_eq!(c.samples(), 13);
        assert_eq!(c.warn.connections_percent, Some(80.0));
        assert_eq!(c.warn.xid_age, None, "0 turns it off on the target");
        assert_eq!(c.warn.disk_percent, Some(90.0));
        let e = load("{ every: 100ms, window: 2h, disk_percent: 120, bogus: 1 }").unwrap_err();
        for want in ["defaults.recorder", "bogus"] {
            assert!(e.contains(want), "{want} in {e}");
        }
        let e = load("{ every: 100ms, window: 2h, disk_percent: 120 }").unwrap_err();
        for want in [
            "defaults.recorder.every",
            "use 1s or more",
            "defaults.recorder.window",
            "between 1 and 360",
            "defaults.recorder.disk_percent",
            "0 to turn the warning off",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
    }
}

//! `heartbeat:`: pings to a dead-man switch, so the daemon's own death is noticed.

use super::duration::{checked as duration, format_duration, RawDuration};
use super::error::Problems;
use super::notify::webhook_url;
use super::secret::Secret;
use serde::Deserialize;
use std::time::Duration;

/// `heartbeat:`: pings to a dead-man switch, so the daemon's own death is noticed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    /// Any URL that alerts when pings stop (GET every interval).
    pub url: String,
    /// Default 60s.
    pub interval: Option<RawDuration>,
}

/// The dead-man switch.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatConfig {
    pub url: Secret,
    pub interval: Duration,
}

/// Validates `heartbeat:`; None when its URL is unusable.
pub(crate) fn build_heartbeat(h: RawHeartbeat, problems: &mut Problems) -> Option<HeartbeatConfig> {
    let interval = h
        .interval
        .as_ref()
        .and_then(|d| duration(d, "heartbeat.interval", problems))
        .unwrap_or(Duration::from_secs(60));
    if interval < Duration::from_millis(100) {
        problems.push(
            "heartbeat.interval",
            format!("{} would ping in a busy loop", format_duration(interval)),
            "use at least 100ms (default 60s; most dead-man switches expect minutes)",
        );
    }
    webhook_url(&h.url, "heartbeat.url", problems).then(|| HeartbeatConfig {
        url: Secret::new(h.url),
        interval,
    })
}

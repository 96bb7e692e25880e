//! The registry exactly as written in YAML. Every struct denies unknown keys; values that need
//! checking (durations, DSNs, URLs) stay text here and are judged in `validate`.

use super::duration::RawDuration;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `defaults:`: values every target inherits unless it overrides them key by key.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Probe settings shared by every target.
    pub probe: Option<RawProbe>,
    /// Restart budget shared by every target.
    pub restart_budget: Option<RawBudget>,
    /// How long after a heal starts a target may take to answer probes before escalation.
    pub recovery_timeout: Option<RawDuration>,
}

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
}

/// `restart_budget:`: at most `max_restarts` restarts per `window`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// Restarts allowed inside one window.
    pub max_restarts: Option<i64>,
    /// Length of the sliding window.
    pub window: Option<RawDuration>,
}

/// `archive:`: where forensic bundles go.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    /// A local directory sink.
    pub local: Option<RawLocalArchive>,
}

/// `archive.local:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalArchive {
    /// Directory that receives `{timestamp}-{target}/` bundles (created if missing).
    pub dir: String,
}

/// `notify:`: alert channels.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// Slack incoming webhook.
    pub slack: Option<RawChatWebhook>,
    /// Discord webhook.
    pub discord: Option<RawChatWebhook>,
    /// Generic JSON webhooks.
    pub webhooks: Option<Vec<RawGenericWebhook>>,
    /// Print notices on standard output too (the demo turns this on).
    pub console: Option<bool>,
    /// Delivery attempts per notice before giving up (default 6).
    pub max_attempts: Option<i64>,
    /// Upper bound on the wait between attempts (default 30s).
    pub max_backoff: Option<RawDuration>,
}

/// A Slack or Discord webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChatWebhook {
    /// The webhook URL (a secret: it is never logged).
    pub webhook_url: String,
}

/// A generic JSON webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGenericWebhook {
    /// Where the JSON is POSTed (a secret: only its host is ever logged).
    pub url: String,
    /// Extra request headers, for example an Authorization token.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One entry of `targets:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Unique name; used in bundle paths, logs, metrics and alerts.
    pub name: String,
    /// libpq-style connection string or URL. The password is never logged.
    pub dsn: String,
    /// Overrides of `defaults.probe`, key by key.
    pub probe: Option<RawProbe>,
    /// Overrides of `defaults.restart_budget`, key by key.
    pub restart_budget: Option<RawBudget>,
    /// Override of `defaults.recovery_timeout`.
    pub recovery_timeout: Option<RawDuration>,
    /// Files archived before any restart.
    pub forensics: Option<RawForensics>,
    /// How to restart the database.
    pub heal: Option<RawHeal>,
    /// The postmaster on this host, watched for instant death detection.
    pub process: Option<RawProcess>,
}

/// `forensics:`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForensics {
    /// Paths or glob patterns; each match is copied whole into the bundle.
    #[serde(default)]
    pub files: Vec<String>,
}

/// `heal:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeal {
    /// Program and arguments run without a shell (for example `pg_ctl ... start`).
    pub command: Vec<String>,
    /// Limit for one run of the command (default 60s).
    pub timeout: Option<RawDuration>,
}

/// `process:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    /// The cluster's `postmaster.pid`; its first line is the postmaster's pid.
    pub pid_file: String,
}

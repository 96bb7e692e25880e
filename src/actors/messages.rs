//! The protocol between the actors, top to bottom in the order an incident uses it:
//! Monitor → Archiver (bundle), Monitor → Healer (restart), Monitor → Notifier (alerts),
//! Healer's report → Archiver (heal log into the bundle), Supervisor → everyone (reload, drain).
//!
//! Archive, Heal and Notify carry the incident id and are idempotent on it: a replacement
//! Monitor that re-sends them after a crash gets the first result back, never a second action.

use crate::config::TargetConfig;
use crate::notify::Notice;
use crate::probe::ProbeFailure;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Write the forensic bundle for an incident (once per incident id).
#[derive(Message, Clone)]
#[rtype(result = "Result<ArchiveReport, String>")]
pub struct Archive {
    /// The incident, as the bundle's manifest records it.
    pub incident: IncidentFacts,
    /// The target's configuration (file patterns, endpoint).
    pub target: Arc<TargetConfig>,
    /// What SQL could still tell while the target was suspect (None: not captured yet; the
    /// Archiver then tries itself unless the postmaster is known dead).
    pub snapshot: Option<crate::probe::snapshot::SqlSnapshot>,
}

/// What the manifest says about an incident.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentFacts {
    pub incident_id: String,
    pub target: String,
    /// The sortable UTC stamp shared by every file of the bundle.
    pub stamp: String,
    pub endpoint: String,
    pub failure: ProbeFailure,
    pub hard_failure: bool,
    pub first_failure_at: DateTime<Utc>,
    pub declared_at: DateTime<Utc>,
    /// What the failure class calls for: `restart` or `alert`.
    pub action: &'static str,
    /// What the failure means and what to do.
    pub diagnosis: &'static str,
}

/// Where a bundle went and what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    /// Where the bundle is, for people: the S3 URL, the local directory, or both, or the spool
    /// path while the upload is pending.
    pub location: String,
    /// The bundle's directory on this host (local sink, or the spool's staging copy).
    pub dir: std::path::PathBuf,
    /// Files copied, with sizes and hashes.
    pub files: Vec<crate::archive::FileEntry>,
    /// Patterns that matched nothing or files that could not be read.
    pub missing: Vec<crate::archive::Missing>,
    /// Whether the SQL snapshot was taken and answered.
    pub sql_snapshot: Option<crate::archive::manifest::SnapshotSummary>,
}

/// Restart a target (once per incident id), retrying a failed start until recovery_timeout.
#[derive(Message, Clone)]
#[rtype(result = "HealReport")]
pub struct Heal {
    pub incident_id: String,
    pub target: Arc<TargetConfig>,
    /// The earliest the failure can have begun (the last passing probe's start, else the
    /// incident's first failure): a container started after it was already restarted (by its
    /// restart policy or a person) and must not be restarted again.
    pub failed_at: DateTime<Utc>,
    /// Starts this heal may make, its first included: what the restart budget has left. A
    /// retry that starts a server again counts like any restart.
    pub max_starts: u32,
}

/// What the heal did.
#[derive(Debug, Clone, Serialize)]
pub struct HealReport {
    /// The server accepts connections (or is starting up) after the last attempt.
    pub success: bool,
    pub attempts: Vec<HealAttempt>,
    /// The combined output of every attempt.
    #[serde(skip)]
    pub log_path: Option<PathBuf>,
    /// Set when the heal stopped on a failure retrying cannot fix (a missing container, a
    /// forbidden Engine, a restart policy that did not act).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<HealFailure>,
    /// Attempts that started (or restarted) a server: each one counts against the budget.
    pub starts: u32,
}

impl HealReport {
    /// A heal that never ran.
    pub fn none() -> Self {
        Self {
            success: false,
            attempts: vec![],
            log_path: None,
            failure: None,
            starts: 0,
        }
    }
}

/// Why a heal stopped without retrying.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealFailure {
    /// `container_missing`, `forbidden`, `ambiguous`, `restart_policy_stalled`.
    pub kind: &'static str,
    /// What happened and what to do.
    pub detail: String,
    /// What the incident turns out to be, when the heal learnt it (a missing container).
    #[serde(skip)]
    pub class: Option<crate::probe::FailureClass>,
}

/// One run of the heal action.
#[derive(Debug, Clone, Serialize)]
pub struct HealAttempt {
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// Exit code, when a command ran to completion.
    pub exit_code: Option<i32>,
    /// What was concluded: "accepting connections", "exit 1", "still refusing", "timed out".
    pub verdict: String,
}

/// Add the heal's log and report to the incident's bundle.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachHeal {
    pub incident_id: String,
    pub report: HealReport,
}

/// Deliver a notice on every channel (once per incident, kind and reason).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Notify(pub Notice);

/// Finish in-flight work before `deadline`; answers how many items were left undone.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Drain {
    pub deadline: Duration,
}

/// Stop a Monitor for good (target removed or changed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Re-read the registry (SIGHUP).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload;

/// Stop probing, drain, and finish (SIGTERM/SIGINT).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub signal: &'static str,
}

/// What `/status` shows for one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub name: String,
    /// `host:port/db`.
    pub endpoint: String,
    /// healthy, suspect, archiving, healing, recovering, held, escalated, unhealed.
    pub state: String,
    pub up: Option<bool>,
    pub last_probe_at: Option<DateTime<Utc>>,
    pub last_probe_latency_ms: Option<f64>,
    pub consecutive_failures: u32,
    pub restarts_in_window: usize,
    pub max_restarts: u32,
    pub open_incident: Option<String>,
    pub maintenance_until: Option<DateTime<Utc>>,
    pub monitor_alive: bool,
    /// For a discovered target: its container and the container's labels under the namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovered: Option<DiscoveredFrom>,
}

/// Where a discovered target came from, for `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveredFrom {
    pub container: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The whole set of targets discovery finds now; it replaces the previous set.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Discovered(pub Vec<crate::discovery::DiscoveredTarget>);

/// Every target's status, in registry order.
#[derive(Message)]
#[rtype(result = "Vec<TargetStatus>")]
pub struct GetStatus;

/// Open (`until` set) or close a maintenance window; Err names an unknown target.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct SetMaintenance {
    pub target: String,
    pub until: Option<DateTime<Utc>>,
}

/// The incident closed (a probe passes): a heal still retrying for it stops, so it never
/// restarts a server that a later incident is handling.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HealDone {
    pub incident_id: String,
}

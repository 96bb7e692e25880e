//! The protocol between the actors, top to bottom in the order an incident uses it:
//! Monitor → Archiver (bundle), Monitor → Healer (restart), Monitor → Notifier (alerts),
//! Healer's report → Archiver (heal log into the bundle), Supervisor → everyone (reload, drain).
//!
//! Archive, Heal and Notify carry the incident id and are idempotent on it: a replacement
//! Monitor that re-sends them after a crash gets the first result back, never a second action.

use crate::config::TargetConfig;
use crate::notify::Notice;
use crate::status::TargetStatus;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

// Data the messages carry, defined by their domain modules. Re-exported because the Monitor,
// Healer and Archiver import them from here.
use crate::archive::{manifest::IncidentFacts, ArchiveReport};
use crate::heal_report::HealReport;

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
    pub snapshot: Option<crate::sql_snapshot::SqlSnapshot>,
    /// The flight recorder's ring when the incident was declared (`flight.json`).
    pub flight: Option<Box<crate::flight::Recording>>,
    /// What the Monitor knows of the postmaster's end (its pid, exit status, whether it
    /// lives): the Archiver adds the logs, the kernel's word and the free space.
    pub clues: crate::cause::Evidence,
}

/// Restart a target (once per incident id), retrying a failed start until recovery_timeout.
#[derive(Message, Clone)]
#[rtype(result = "HealReport")]
pub struct Heal {
    /// Also the heal log's name.
    pub incident_id: crate::ids::IncidentId,
    pub target: Arc<TargetConfig>,
    /// The earliest the failure can have begun (the last passing probe's start, else the
    /// incident's first failure): a container started after it was already restarted (by its
    /// restart policy or a person) and must not be restarted again.
    pub failed_at: DateTime<Utc>,
    /// Starts this heal may make, its first included: what the restart budget has left. A
    /// retry that starts a server again counts like any restart.
    pub max_starts: u32,
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

/// The whole set of targets discovery finds now; it replaces the previous set.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Discovered(pub crate::discovery::DiscoveredSet);

impl From<crate::discovery::DiscoveredSet> for Discovered {
    fn from(set: crate::discovery::DiscoveredSet) -> Self {
        Self(set)
    }
}

/// The target's container was re-created (same target name, new container id): the Monitor
/// closes the open incident as replaced, then stops; the new container gets a new Monitor
/// with a fresh record.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Replaced {
    /// The new container's name and id.
    pub container: String,
    pub container_id: String,
}

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

/// The incident closed (a probe passes), or its target became another daemon's (cluster
/// mode): a heal still retrying for it stops, so it never restarts a server that a later
/// incident, or another daemon, is handling.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HealDone {
    pub incident_id: String,
}

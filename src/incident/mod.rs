//! Incidents: what one is ([`Incident`], [`Phase`]), the per-target record that outlives a
//! Monitor ([`record`]), and the decisions about it ([`machine`]): a pure state machine that
//! the Monitor feeds with observations and whose actions the Monitor carries out.
//!
//! Layout:
//! - `record.rs`: [`TargetRecord`], the machine's state, shared with the Supervisor.
//! - `machine.rs`: `step(record, env, observation) -> actions`, the whole incident policy.
//! - `machine/heal.rs`: the restart gates (manager, policy, fleet guard, budget, backoff, lease).
//! - `orphan.rs`: a target watched without its owner's powers while coordination is lost.
//! - `machine/identity.rs`: whether a passing probe came from the target's own server.
//! - `machine/unannounced.rs`: a restart nobody announced (the postmaster's start time moved).
//! - `machine/recorder.rs`: flight recorder samples and the early warnings they raise.
//! - `actions.rs`: what the machine asks for ([`Action`]) and what it is told ([`Observation`]).

pub mod actions;
pub mod machine;
pub mod orphan;
pub mod record;
#[cfg(test)]
mod tests;

pub use actions::{Action, LogLine, Observation};
pub use machine::{step, Env};
pub use record::{SharedRecord, TargetRecord};

use crate::probe::ProbeFailure;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Where a target is in the healing loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Probes pass.
    Healthy,
    /// Some probes failed, fewer than the threshold; no action yet.
    Suspect,
    /// Declared failing; the forensic bundle is being written.
    Archiving,
    /// The heal action is running.
    Healing,
    /// The heal action finished; waiting for a passing probe.
    Recovering,
    /// Restart budget spent: probing and waiting for a person (or the window).
    Held,
    /// No recovery within recovery_timeout: escalated, no more restarts for this incident.
    Escalated,
    /// Failing, and the target has no heal action: alerted, waiting.
    Unhealed,
}

impl Phase {
    pub fn from_label(s: &str) -> Option<Self> {
        [
            Phase::Healthy,
            Phase::Suspect,
            Phase::Archiving,
            Phase::Healing,
            Phase::Recovering,
            Phase::Held,
            Phase::Escalated,
            Phase::Unhealed,
        ]
        .into_iter()
        .find(|p| p.label() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Phase::Healthy => "healthy",
            Phase::Suspect => "suspect",
            Phase::Archiving => "archiving",
            Phase::Healing => "healing",
            Phase::Recovering => "recovering",
            Phase::Held => "held",
            Phase::Escalated => "escalated",
            Phase::Unhealed => "unhealed",
        }
    }
}

/// One incident: from declaration to recovery or escalation.
#[derive(Debug, Clone)]
pub struct Incident {
    /// `{stamp}-{target}`: also the bundle's directory, heal log and spool record name.
    pub id: crate::ids::IncidentId,
    pub target: String,
    pub first_failure_at: DateTime<Utc>,
    pub first_failure_instant: Instant,
    pub declared_at: DateTime<Utc>,
    pub declared_instant: Instant,
    pub failure: ProbeFailure,
    /// Declared without waiting for the threshold (the postmaster was seen to die).
    pub hard: bool,
    /// Where the bundle went, once written (path or URL), or why it could not be.
    pub archive: Option<Result<String, String>>,
    /// When the heal action was issued (the restart counted against the budget).
    pub heal_started: Option<Instant>,
    /// The heal action finished and reported success.
    pub heal_succeeded: Option<bool>,
    /// The failure alert was handed to the notifier.
    pub alerted: bool,
    pub escalated_at: Option<Instant>,
    /// Every notice issued for this incident, recorded before it is sent: a replacement
    /// Monitor re-sends them all and the Notifier drops the ones it already has.
    pub notices: Vec<crate::notify::Notice>,
    /// What the flight recorder saw move most before the failure (`flight::movers`), for
    /// the failure alert.
    pub before: Option<String>,
    /// The likely cause, once the bundle's evidence is classified.
    pub cause: Option<crate::cause::Cause>,
    /// A full disk holds the restart until the filesystem has room again.
    pub held_for_space: bool,
    /// The space came back: the one restart a full disk allows is due (never held again).
    pub space_freed: bool,
}

impl Incident {
    pub fn new(
        target: &str,
        failure: ProbeFailure,
        hard: bool,
        first_failure: (DateTime<Utc>, Instant),
        (now_utc, now): (DateTime<Utc>, Instant),
    ) -> Self {
        let stamp = crate::ids::Stamp::of(now_utc);
        Self {
            id: crate::ids::IncidentId::new(&stamp, target),
            target: target.to_string(),
            first_failure_at: first_failure.0,
            first_failure_instant: first_failure.1,
            declared_at: now_utc,
            declared_instant: now,
            failure,
            hard,
            archive: None,
            heal_started: None,
            heal_succeeded: None,
            alerted: false,
            escalated_at: None,
            notices: Vec::new(),
            before: None,
            cause: None,
            held_for_space: false,
            space_freed: false,
        }
    }

    /// Records a notice issued for this incident (a replacement Monitor re-sends them all).
    pub(crate) fn queue_notice(&mut self, n: crate::notify::Notice) {
        self.notices.push(n);
    }

    /// The archive location for alerts: the path or URL, or the reason it is missing.
    pub fn archive_text(&self) -> Option<String> {
        self.archive.as_ref().map(|a| match a {
            Ok(loc) => loc.clone(),
            Err(e) => format!("archive failed: {e}"),
        })
    }
}

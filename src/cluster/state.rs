//! What must survive a takeover, kept in etcd under `state/{target}` by the target's owner:
//! the restart budget and backoff, the maintenance window, and the open incident with what
//! was archived, healed and notified. The next owner resumes from it, so an outage stays one
//! incident (one id, one PagerDuty `dedup_key`) and the budget counts every daemon's restarts.

use crate::incident::TargetRecord;
use crate::notify::Notice;
use crate::store::{IncidentRow, StoredTarget};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One target's state as kept in etcd (JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetState {
    /// Restarts inside the budget window (by any daemon), oldest first.
    pub restarts: Vec<DateTime<Utc>>,
    pub backoff_step: u32,
    pub maintenance_until: Option<DateTime<Utc>>,
    /// The open incident; None when the target is healthy.
    pub incident: Option<IncidentState>,
    /// Who wrote this, for the status page and the logs.
    pub written_by: String,
    /// Which server is the target's own (`probe::identity`); absent in older states.
    #[serde(default)]
    pub identity: Option<crate::probe::identity::LearnedIdentity>,
}

/// An open incident, with the notices sent so far (the row leaves them out of its JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentState {
    pub row: IncidentRow,
    pub notices: Vec<Notice>,
}

impl TargetState {
    /// The record as it stands now.
    pub fn of(rec: &TargetRecord, member: &str) -> Self {
        Self {
            restarts: rec
                .restarts
                .iter()
                .copied()
                .map(crate::stamp::wall_at)
                .collect(),
            backoff_step: rec.backoff_step,
            maintenance_until: rec.maintenance_until,
            incident: rec.incident.as_ref().map(|inc| IncidentState {
                row: IncidentRow::of(inc, rec.phase),
                notices: inc.notices.clone(),
            }),
            written_by: member.to_string(),
            identity: rec.identity.clone(),
        }
    }

    /// What a new owner resumes from.
    pub fn into_stored(self) -> StoredTarget {
        let (open, heal_started) = match self.incident {
            Some(IncidentState { mut row, notices }) => {
                row.notices = notices;
                // A heal recorded as issued may have run: never restart twice.
                let started = row.heal_issued_at.is_some();
                (Some(row), started)
            }
            None => (None, false),
        };
        StoredTarget {
            restarts: self.restarts,
            maintenance_until: self.maintenance_until,
            open,
            heal_started,
            backoff_step: self.backoff_step,
            identity: self.identity,
        }
    }
}

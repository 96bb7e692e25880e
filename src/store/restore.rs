//! A target's record rebuilt from what a previous run of the daemon stored.

use super::{IncidentRow, Store};
use crate::config::BudgetConfig;
use crate::incident::{Incident, Phase, TargetRecord};
use crate::probe::{FailureClass, ProbeFailure};
use crate::stamp::instant_at;
use chrono::Utc;

impl Store {
    /// The record a previous run of the daemon left in the store: the restart budget, the
    /// maintenance window and the open incident. An incident whose heal command already ran
    /// (its heal log exists) resumes as recovering: it is never restarted a second time. One
    /// whose heal was decided but never started (the daemon died in between) gets it now.
    pub fn restore_record(
        &self,
        target: &str,
        budget: &BudgetConfig,
        heal_log_dir: &std::path::Path,
    ) -> TargetRecord {
        let mut rec = TargetRecord::default();
        let since = Utc::now() - chrono::Duration::from_std(budget.window).unwrap_or_default();
        rec.restarts = self
            .restarts_since(target, since)
            .unwrap_or_default()
            .into_iter()
            .map(instant_at)
            .collect();
        rec.maintenance_until = self.maintenance(target);
        if let Some(row) = self.open_incident(target) {
            let inc = incident_from_row(&row);
            let heal_started = heal_log_dir.join(format!("{}.log", row.id)).exists();
            let phase = match Phase::from_label(&row.phase) {
                Some(Phase::Healing) if heal_started => Phase::Recovering,
                Some(Phase::Healthy | Phase::Suspect) | None => Phase::Archiving,
                Some(p) => p,
            };
            rec.first_failure = Some((inc.first_failure_at, inc.first_failure_instant));
            if phase == Phase::Escalated {
                rec.quiet_until = inc.escalated_at.map(|e| e + budget.window);
            }
            rec.phase = phase;
            rec.incident = Some(inc);
        }
        rec
    }
}

/// Rebuilds an open incident that a previous run of the daemon stored.
fn incident_from_row(row: &IncidentRow) -> Incident {
    let stamp = row
        .id
        .strip_suffix(&format!("-{}", row.target))
        .unwrap_or(&row.id)
        .to_string();
    let class = FailureClass::from_label(&row.class).unwrap_or(FailureClass::ConnectionRefused);
    Incident {
        id: row.id.clone(),
        target: row.target.clone(),
        stamp,
        first_failure_at: row.first_failure_at,
        first_failure_instant: instant_at(row.first_failure_at),
        declared_at: row.declared_at,
        declared_instant: instant_at(row.declared_at),
        failure: ProbeFailure {
            class,
            sqlstate: row.sqlstate.clone(),
            detail: row.detail.clone(),
        },
        hard: row.hard,
        archive: row
            .archive
            .clone()
            .map(|a| match a.strip_prefix("archive failed: ") {
                Some(e) => Err(e.to_string()),
                None => Ok(a),
            }),
        heal_started: row.heal_issued_at.map(instant_at),
        heal_succeeded: row.heal_succeeded,
        alerted: row.alerted,
        escalated_at: row.escalated_at.map(instant_at),
        notices: row.notices.clone(),
    }
}

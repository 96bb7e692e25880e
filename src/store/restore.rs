//! A target's record rebuilt from what a previous run of the daemon stored.

use super::{IncidentRow, Store};
use crate::config::BudgetConfig;
use crate::incident::{Incident, Phase, TargetRecord};
use crate::probe::{FailureClass, ProbeFailure};
use crate::stamp::instant_at;
use chrono::{DateTime, Utc};

/// What was kept of a target, wherever it was kept (this daemon's SQLite store, or etcd for
/// a target taken over from another daemon).
#[derive(Debug, Default)]
pub struct StoredTarget {
    /// Restarts inside the budget window.
    pub restarts: Vec<DateTime<Utc>>,
    pub maintenance_until: Option<DateTime<Utc>>,
    pub open: Option<IncidentRow>,
    /// The open incident's heal already ran: it resumes as recovering, never restarted twice.
    pub heal_started: bool,
    pub backoff_step: u32,
    /// Which server is the target's own (`probe::identity`).
    pub identity: Option<crate::probe::identity::LearnedIdentity>,
}

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
        let since = Utc::now() - chrono::Duration::from_std(budget.window).unwrap_or_default();
        let open = self.open_incident(target);
        let heal_started = open
            .as_ref()
            .is_some_and(|row| heal_log_dir.join(format!("{}.log", row.id)).exists());
        let stored = StoredTarget {
            restarts: self.restarts_since(target, since).unwrap_or_default(),
            maintenance_until: self.maintenance(target),
            open,
            heal_started,
            backoff_step: 0,
            identity: self.identity(target),
        };
        record_from(stored, budget)
    }
}

/// Rebuilds a target's record from what was kept of it.
pub fn record_from(stored: StoredTarget, budget: &BudgetConfig) -> TargetRecord {
    let mut rec = TargetRecord::default();
    let since = Utc::now() - chrono::Duration::from_std(budget.window).unwrap_or_default();
    rec.restarts = stored
        .restarts
        .into_iter()
        .filter(|t| *t >= since)
        .map(instant_at)
        .collect();
    rec.backoff_step = stored.backoff_step;
    rec.maintenance_until = stored.maintenance_until;
    rec.identity = stored.identity;
    if let Some(row) = stored.open {
        let inc = incident_from_row(&row);
        let phase = match Phase::from_label(&row.phase) {
            Some(Phase::Healing) if stored.heal_started => Phase::Recovering,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::identity::{LearnedIdentity, SystemIdentifier};

    #[test]
    fn the_learned_identity_survives_a_daemon_restart() {
        let dir = tempfile::tempdir().unwrap();
        let learned = LearnedIdentity {
            endpoint: "127.0.0.1:5432/postgres".into(),
            system_identifier: SystemIdentifier::parse("7716395630755388239").unwrap(),
            learned_at: Utc::now(),
        };
        let store = Store::open(dir.path()).unwrap();
        let path = store.path().to_string();
        store
            .save_identity("orders", &learned)
            .blocking(&path)
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let rec = store.restore_record("orders", &BudgetConfig::default(), dir.path());
        let got = rec.identity.expect("restored");
        assert_eq!(got.endpoint, learned.endpoint);
        assert_eq!(got.system_identifier, learned.system_identifier);
        assert!(store.identity("other").is_none());
        store.forget_identity("orders").blocking(&path).unwrap();
        assert!(store.identity("orders").is_none());
    }
}

//! A target's record rebuilt from what a previous run of the daemon stored.

use super::{IncidentRow, Store};
use crate::config::BudgetConfig;
use crate::ids::{check_time, IncidentId};
use crate::incident::{Incident, Phase, TargetRecord};
use crate::probe::{FailureClass, ProbeFailure};
use crate::stamp::instant_at;
use chrono::{DateTime, Utc};

/// Something read back from etcd or the store that no daemon writes: refused. Whoever can
/// write etcd or the state directory can make a target forget its state (they can delete
/// it anyway), never make the daemon write outside its directories or act for another
/// target.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {what}; refused: the target starts without it (if no daemon wrote it, find out who else can write there)")]
pub struct Untrusted {
    /// The etcd key or store row it came from.
    pub key: String,
    pub what: String,
}

impl Untrusted {
    /// One ERROR line naming the key and what was wrong, and the counter by source
    /// (`etcd` or `store`).
    pub fn report(&self, log: &slog::Logger, source: &'static str) {
        slog::error!(log, "untrusted state refused"; "event" => "untrusted_state_refused",
            "source" => source, "key" => &self.key, "what" => &self.what, "error" => %self);
        crate::metrics::global().inc(
            "sentinel_untrusted_state_rejected_total",
            &[("source", source)],
        );
    }
}

/// An open incident read back, checked against the target it was kept for: its id parses
/// (so it can name a bundle, a heal log and a spool record) and is that target's, it names
/// that target, its notices are its own and its times are in range. The only way to build
/// one, so a restored incident never carries an unchecked id.
#[derive(Debug)]
pub struct OpenIncident {
    id: IncidentId,
    row: IncidentRow,
}

impl OpenIncident {
    /// Checks `row`, kept for `target` (whose name the registry checked); the reason when
    /// a daemon cannot have written it.
    pub fn check(row: IncidentRow, target: &str, now: DateTime<Utc>) -> Result<Self, String> {
        let id = IncidentId::parse(&row.id).map_err(|e| e.to_string())?;
        if row.target != target {
            return Err(format!(
                "the incident is for target {:?}, not {target:?}",
                row.target.chars().take(80).collect::<String>()
            ));
        }
        if id.name() != target {
            return Err(format!("incident id {id} is not one of target {target:?}"));
        }
        let times = [
            ("first_failure_at", Some(row.first_failure_at)),
            ("declared_at", Some(row.declared_at)),
            ("heal_issued_at", row.heal_issued_at),
            ("escalated_at", row.escalated_at),
        ];
        for (what, t) in times {
            if let Some(t) = t {
                check_time(what, t, now)?;
            }
        }
        if let Some(n) = row
            .notices
            .iter()
            .find(|n| n.incident_id != *id || n.target != target)
        {
            return Err(format!(
                "a notice is for incident {:?} of target {:?}",
                n.incident_id.chars().take(80).collect::<String>(),
                n.target.chars().take(80).collect::<String>()
            ));
        }
        Ok(Self { id, row })
    }

    pub fn id(&self) -> &IncidentId {
        &self.id
    }

    pub fn row(&self) -> &IncidentRow {
        &self.row
    }
}

/// What was kept of a target, wherever it was kept (this daemon's SQLite store, or etcd for
/// a target taken over from another daemon).
#[derive(Debug, Default)]
pub struct StoredTarget {
    /// Restarts inside the budget window.
    pub restarts: Vec<DateTime<Utc>>,
    pub maintenance_until: Option<DateTime<Utc>>,
    pub open: Option<OpenIncident>,
    /// The open incident's heal already ran: it resumes as recovering, never restarted twice.
    pub heal_started: bool,
    pub backoff_step: u32,
    /// Which server is the target's own (`probe::identity`).
    pub identity: Option<crate::probe::identity::LearnedIdentity>,
    /// What was kept was refused (the target starts without it): for the alert.
    pub refused: Option<Untrusted>,
}

impl Store {
    /// The record a previous run of the daemon left in the store: the restart budget, the
    /// maintenance window and the open incident. An incident whose heal command already ran
    /// (its heal log exists) resumes as recovering: it is never restarted a second time. One
    /// whose heal was decided but never started (the daemon died in between) gets it now.
    /// An open incident that does not pass [`OpenIncident::check`] is left out, and said.
    pub fn restore_record(
        &self,
        target: &str,
        budget: &BudgetConfig,
        heal_log_dir: &std::path::Path,
    ) -> (TargetRecord, Option<Untrusted>) {
        let since = Utc::now() - chrono::Duration::from_std(budget.window).unwrap_or_default();
        let (open, refused) = match self.open_incident(target) {
            None => (None, None),
            Some(row) => {
                let id: String = row.id.chars().take(80).collect();
                let key = format!("{} incidents row {id:?}", self.path);
                match OpenIncident::check(row, target, Utc::now()) {
                    Ok(open) => (Some(open), None),
                    Err(what) => (None, Some(Untrusted { key, what })),
                }
            }
        };
        let heal_started = open
            .as_ref()
            .is_some_and(|o| o.id().heal_log_in(heal_log_dir).exists());
        let stored = StoredTarget {
            restarts: self.restarts_since(target, since).unwrap_or_default(),
            maintenance_until: self.maintenance(target),
            open,
            heal_started,
            backoff_step: 0,
            refused: None,
            identity: self.identity(target),
        };
        (record_from(stored, budget), refused)
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
    if let Some(open) = stored.open {
        let (inc, row) = (incident_from_row(&open), open.row);
        if inc.failure.class == FailureClass::UnannouncedRestart {
            // Over already (the server was up): only its bundle and its one notice are due.
            rec.unannounced = Some(inc);
            return rec;
        }
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

/// Rebuilds an open incident that a previous run of the daemon (or another daemon) kept.
fn incident_from_row(open: &OpenIncident) -> Incident {
    let row = &open.row;
    let class = FailureClass::from_label(&row.class).unwrap_or(FailureClass::ConnectionRefused);
    Incident {
        id: open.id.clone(),
        target: row.target.clone(),
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
        // Its notices, recorded with the line, are what a restored incident re-sends.
        before: None,
        cause: row.cause.clone(),
        held_for_space: false,
        space_freed: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_open_row_is_refused_and_the_target_starts_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sql = "INSERT INTO incidents (id, target, class, hard, detail, phase, first_failure_at, declared_at)
                   VALUES ('../../escape', 'orders', 'connection_refused', 0, 'x', 'archiving', ?1, ?1)";
        store
            .with(|c| c.execute(sql, rusqlite::params![Utc::now()]))
            .unwrap();
        let logs = dir.path().join("heal-logs");
        let (rec, refused) = store.restore_record("orders", &BudgetConfig::default(), &logs);
        assert!(rec.incident.is_none());
        assert_eq!(rec.phase, Phase::Healthy);
        let u = refused.expect("refused");
        assert!(
            u.key.contains("sentinel.db") && u.key.contains("../../escape"),
            "{u}"
        );
        assert!(u.what.contains("incident id"), "{u}");
    }

    #[test]
    fn the_learned_identity_survives_a_daemon_restart() {
        use crate::probe::identity::{LearnedIdentity, SystemIdentifier};
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
        let (rec, _) = store.restore_record("orders", &BudgetConfig::default(), dir.path());
        let got = rec.identity.expect("restored");
        assert_eq!(got.endpoint, learned.endpoint);
        assert_eq!(got.system_identifier, learned.system_identifier);
        assert!(store.identity("other").is_none());
        store.forget_identity("orders").blocking(&path).unwrap();
        assert!(store.identity("orders").is_none());
    }

    /// An unannounced restart's incident left open by a killed daemon comes back as one still
    /// to archive and tell, never as an outage to restart or recover from.
    #[test]
    fn an_open_unannounced_restart_resumes_as_one_not_as_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sql = "INSERT INTO incidents (id, target, class, hard, detail, phase, first_failure_at, declared_at)
                   VALUES ('20261207T060000.000Z-orders', 'orders', 'unannounced_restart', 0, 'x', 'archiving', ?1, ?1)";
        store
            .with(|c| c.execute(sql, rusqlite::params![Utc::now()]))
            .unwrap();
        let (rec, refused) = store.restore_record("orders", &BudgetConfig::default(), dir.path());
        assert!(refused.is_none());
        assert!(rec.incident.is_none());
        assert_eq!(rec.phase, Phase::Healthy);
        assert_eq!(
            rec.unannounced.expect("kept to finish").failure.class,
            FailureClass::UnannouncedRestart
        );
    }
}

//! Incidents and the per-target record that outlives any one Monitor actor.
//!
//! The Supervisor owns a [`TargetRecord`] per target and hands it to each Monitor incarnation,
//! so a Monitor that panics mid-incident is replaced by one that resumes the same incident:
//! nothing is lost, and the shared actors' per-incident deduplication keeps anything from
//! happening twice.

use crate::config::BudgetConfig;
use crate::probe::ProbeFailure;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
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

/// A sortable UTC stamp used in incident ids and bundle paths: `20261125T033401.123Z`.
/// The monotonic instant that corresponds to a past wall-clock time.
pub fn instant_at(t: DateTime<Utc>) -> Instant {
    let ago = (Utc::now() - t).to_std().unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

pub fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// One incident: from declaration to recovery or escalation.
#[derive(Debug, Clone)]
pub struct Incident {
    /// `{stamp}-{target}`: also the bundle's directory name.
    pub id: String,
    pub target: String,
    pub stamp: String,
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
}

impl Incident {
    pub fn new(
        target: &str,
        failure: ProbeFailure,
        hard: bool,
        first_failure: (DateTime<Utc>, Instant),
    ) -> Self {
        let now = Utc::now();
        let stamp = stamp(now);
        Self {
            id: format!("{stamp}-{target}"),
            target: target.to_string(),
            stamp,
            first_failure_at: first_failure.0,
            first_failure_instant: first_failure.1,
            declared_at: now,
            declared_instant: Instant::now(),
            failure,
            hard,
            archive: None,
            heal_started: None,
            heal_succeeded: None,
            alerted: false,
            escalated_at: None,
            notices: Vec::new(),
        }
    }

    /// Rebuilds an open incident that a previous run of the daemon stored.
    pub fn restore(row: &crate::store::IncidentRow) -> Self {
        let stamp = row
            .id
            .strip_suffix(&format!("-{}", row.target))
            .unwrap_or(&row.id)
            .to_string();
        let class = crate::probe::FailureClass::from_label(&row.class)
            .unwrap_or(crate::probe::FailureClass::ConnectionRefused);
        Self {
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

    /// Records the notice in the incident and returns the step that sends it.
    pub(crate) fn queue_notice(&mut self, n: crate::notify::Notice) -> crate::notify::Notice {
        self.notices.push(n.clone());
        n
    }

    /// The archive location for alerts: the path or URL, or the reason it is missing.
    pub fn archive_text(&self) -> Option<String> {
        self.archive.as_ref().map(|a| match a {
            Ok(loc) => loc.clone(),
            Err(e) => format!("archive failed: {e}"),
        })
    }
}

/// Everything the daemon knows about one target that must survive a Monitor restart.
#[derive(Debug)]
pub struct TargetRecord {
    pub phase: Phase,
    /// Consecutive failed probes.
    pub failures: u32,
    /// When the current run of failures began.
    pub first_failure: Option<(DateTime<Utc>, Instant)>,
    pub incident: Option<Incident>,
    /// Restarts inside the budget window, oldest first.
    pub restarts: VecDeque<Instant>,
    /// The budget-exhausted alert went out for the current exhaustion.
    pub budget_alerted: bool,
    /// Escalated and waiting: no new incident until recovery or the window elapses.
    pub quiet_until: Option<Instant>,
    pub last_probe: Option<(DateTime<Utc>, std::time::Duration)>,
    /// What SQL could tell when this run of failures began (for the bundle).
    pub snapshot: Option<crate::probe::snapshot::SqlSnapshot>,
    /// Probed and reported, but never archived, restarted or alerted until then.
    pub maintenance_until: Option<DateTime<Utc>>,
    /// The suppression during this maintenance was logged already.
    pub maintenance_noted: bool,
    /// Whether the last probe passed.
    pub last_ok: Option<bool>,
    /// When the last passing probe started: a failure began after it, so a container started
    /// since then was already restarted during this outage (by its policy, even before our
    /// first failing probe).
    pub last_ok_at: Option<DateTime<Utc>>,
    /// Restarts in the current streak; the next waits `budget.backoff_after(step)`.
    pub backoff_step: u32,
    /// Passing probes since then (resets the backoff after `backoff_reset`).
    pub healthy_since: Option<Instant>,
    /// Another manager found on the server (e.g. Patroni): we never restart it.
    pub managed_by: Option<String>,
}

impl Default for TargetRecord {
    fn default() -> Self {
        Self {
            phase: Phase::Healthy,
            failures: 0,
            first_failure: None,
            incident: None,
            restarts: VecDeque::new(),
            budget_alerted: false,
            quiet_until: None,
            last_probe: None,
            snapshot: None,
            maintenance_until: None,
            maintenance_noted: false,
            last_ok: None,
            last_ok_at: None,
            backoff_step: 0,
            healthy_since: None,
            managed_by: None,
        }
    }
}

impl TargetRecord {
    /// Whether another restart fits in the budget now (forgets restarts older than the window).
    pub fn budget_allows(&mut self, budget: &BudgetConfig, now: Instant) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.duration_since(oldest) >= budget.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        (self.restarts.len() as u32) < budget.max_restarts
    }
}

/// The record shared between the Supervisor and the target's current Monitor. Never held
/// across an await.
#[derive(Debug, Clone, Default)]
pub struct SharedRecord(Arc<Mutex<TargetRecord>>);

impl SharedRecord {
    pub fn new(rec: TargetRecord) -> Self {
        Self(Arc::new(Mutex::new(rec)))
    }

    /// The record a previous run of the daemon left in the store: the restart budget, the
    /// maintenance window and the open incident. An incident whose heal command already ran
    /// (its heal log exists) resumes as recovering: it is never restarted a second time. One
    /// whose heal was decided but never started (the daemon died in between) gets it now.
    pub fn restore(
        store: &crate::store::Store,
        target: &str,
        budget: &BudgetConfig,
        heal_log_dir: &std::path::Path,
    ) -> Self {
        let mut rec = TargetRecord::default();
        let since = Utc::now() - chrono::Duration::from_std(budget.window).unwrap_or_default();
        rec.restarts = store
            .restarts_since(target, since)
            .unwrap_or_default()
            .into_iter()
            .map(instant_at)
            .collect();
        rec.maintenance_until = store.maintenance(target);
        if let Some(row) = store.open_incident(target) {
            let inc = Incident::restore(&row);
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
        Self::new(rec)
    }

    /// Locks the record. A Monitor that panicked while holding it leaves it usable: every
    /// update is a few field assignments, so the last consistent state is what we want.
    pub fn lock(&self) -> MutexGuard<'_, TargetRecord> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn budget_counts_inside_the_window_only() {
        let b = BudgetConfig {
            max_restarts: 2,
            window: Duration::from_secs(60),
            ..BudgetConfig::default()
        };
        let mut r = TargetRecord::default();
        let t0 = Instant::now();
        assert!(r.budget_allows(&b, t0));
        r.restarts.push_back(t0);
        r.restarts.push_back(t0 + Duration::from_secs(1));
        assert!(!r.budget_allows(&b, t0 + Duration::from_secs(30)));
        assert!(r.budget_allows(&b, t0 + Duration::from_secs(60)));
        assert_eq!(r.restarts.len(), 1);
    }

    #[test]
    fn stamps_sort_like_time() {
        let a = stamp("2026-01-02T03:04:05.006Z".parse().unwrap());
        let b = stamp("2026-01-02T03:04:05.100Z".parse().unwrap());
        assert_eq!(a, "20260102T030405.006Z");
        assert!(a < b);
    }
}

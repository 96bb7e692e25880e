//! The per-target record that outlives any one Monitor actor, and the state the incident
//! machine steps.
//!
//! The Supervisor owns a [`TargetRecord`] per target and hands it to each Monitor incarnation,
//! so a Monitor that panics mid-incident is replaced by one that resumes the same incident:
//! nothing is lost, and the shared actors' per-incident deduplication keeps anything from
//! happening twice.

use super::{Incident, Phase};
use crate::config::BudgetConfig;
use crate::probe::FailureClass;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

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
    /// The pid watch saw the postmaster exit or stop (or Docker reported the container down)
    /// and no probe has passed since: the next failing probe declares at once.
    pub process_dead: bool,
    /// What an outside source reported (Docker about the container, the pid watch about a
    /// stopped postmaster), for the failure detail, and the class it implies.
    pub container_event: Option<(String, Option<FailureClass>)>,
    /// The container's restart policy when it restarts after a crash (`always`, ...): the heal
    /// then waits for it instead of racing it.
    pub restart_policy: Option<String>,
    /// The newest redo LSN seen in the server log since the restart: a recovery whose LSN
    /// moves is waited on past recovery_timeout.
    pub redo_lsn: Option<u64>,
    /// The last probe answered 57P03 (starting up or in crash recovery).
    pub recovering: bool,
    /// A restart lease was asked for this incident and has not answered yet.
    pub lease_pending: Option<String>,
    /// Which server is the target's own (`probe::identity`): learned at the first passing
    /// probe, kept in the store, learned again for a new endpoint or in a maintenance window.
    pub identity: Option<crate::probe::identity::LearnedIdentity>,
    /// Said once that the server's identity cannot be read (the check is off meanwhile).
    pub identity_unchecked_said: bool,
    /// Cluster mode: notices the Monitor withheld while this daemon was fenced, sent when
    /// the fence lifts if their incident is still open (else dropped).
    pub withheld: Vec<crate::notify::Notice>,
    /// The postmaster's start time the last passing probe read, and at which endpoint: a
    /// later one that differs is a restart nobody announced.
    pub server_started: Option<(String, DateTime<Utc>)>,
    /// The incident of a restart nobody announced, while its bundle is written (it closes
    /// with its one notice then). Apart from `incident`: the server is up, nothing waits on it.
    pub unannounced: Option<Incident>,
    /// The flight recorder's samples of this target (`crate::flight`).
    pub flight: crate::flight::Ring,
    /// Early warnings raised and not cleared yet, each with the id its notices share.
    pub warnings: std::collections::BTreeMap<crate::flight::warn::Condition, String>,
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
            process_dead: false,
            container_event: None,
            restart_policy: None,
            redo_lsn: None,
            recovering: false,
            lease_pending: None,
            identity: None,
            identity_unchecked_said: false,
            withheld: Vec::new(),
            server_started: None,
            unannounced: None,
            flight: Default::default(),
            warnings: Default::default(),
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
}

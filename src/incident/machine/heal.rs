//! The restart decision: every gate a restart passes (another manager, the failure class's
//! policy, a heal action to run, the fleet guard, the budget, the backoff, the lease), then
//! the restart itself, its report, and escalation.

use super::super::actions::{Action, Level, Metric};
use super::super::Phase;
use super::Machine;
use crate::config::duration::format_duration;
use crate::heal_report::HealReport;
use crate::lease::LeaseRefusal;
use crate::notify::{EscalationReason, NoticeKind};
use std::time::Duration;

/// How long a restart held by the fleet guard or a refused lease waits before deciding again.
const HOLD_RETRY: Duration = Duration::from_secs(2);

impl Machine<'_, '_> {
    /// Restart if the failure class calls for it and the budget allows; else alert (with the
    /// diagnosis) or hold and escalate once for this incident. The last gate, the lease, is
    /// asked for here and answered by an observation.
    pub(super) fn start_heal(&mut self) {
        if self.rec.lease_pending.is_some() {
            return; // already asked; the answer decides
        }
        let Some(class) = self.rec.incident.as_ref().map(|i| i.failure.class) else {
            return;
        };
        let t = self.env.target;
        if self.held_for_space() {
            return;
        }
        if let Some(manager) = self.rec.managed_by.clone() {
            // One manager at a time: restarting under Patroni would race its own failover.
            return self.alert_only(
                "manager_refused",
                "server is managed by another tool: no restart",
                format!("The server is managed by {manager} (seen in pg_stat_activity): sentinel-remedy archived the evidence and leaves the restart or failover to it."),
                format!("managed by {manager}: no restart"),
                Some(("manager", manager.clone())),
            );
        }
        if t.policy.action(class) == crate::policy::Action::Alert {
            let diagnosis = crate::policy::diagnosis(class);
            let sqlstate = self
                .rec
                .incident
                .as_ref()
                .and_then(|i| i.failure.sqlstate.clone());
            return self.alert_only(
                "alert_only",
                "failure class calls for an alert, not a restart",
                format!("{diagnosis} Evidence archived; sentinel-remedy will not restart it."),
                format!("{}: no restart by policy", class.label()),
                Some(("sqlstate", sqlstate.unwrap_or_default())),
            );
        }
        if t.heal.is_none() {
            return self.no_heal_action();
        }
        if let Some((failing, total)) = self.env.fleet_tripped {
            self.hold(HOLD_RETRY, "fleet_guard", format!(
                "Restart held by the fleet guard: {failing} of {total} targets are failing at once, which points at the network or this host. Restarts resume when fewer fail."));
            self.out.push(Action::FleetAlert { failing, total });
            return;
        }
        if !self.rec.budget_allows(&t.budget, self.env.now) {
            return self.budget_exhausted();
        }
        if self.rec.backoff_step > 0 {
            if let Some(last) = self.rec.restarts.back().copied() {
                let ready = last + t.budget.backoff_after(self.rec.backoff_step);
                if self.env.now < ready {
                    let wait = ready - self.env.now;
                    let step = self.rec.backoff_step;
                    return self.hold(wait, "restart_backoff", format!(
                        "Restarted {step} time(s) recently: the next restart waits {:.0} s (backoff doubles up to {}).",
                        wait.as_secs_f64(), format_duration(t.budget.backoff_max)));
                }
            }
        }
        let Some(inc) = &self.rec.incident else {
            return;
        };
        let (id, outage_started) = (inc.id.to_string(), inc.first_failure_at);
        self.rec.lease_pending = Some(id.clone());
        self.out.push(Action::AcquireLease { id, outage_started });
    }

    /// Alerts once with `summary` and restarts nothing (another manager, or the policy).
    fn alert_only(
        &mut self,
        event: &'static str,
        msg: &'static str,
        summary: String,
        why: String,
        field: Option<(&'static str, String)>,
    ) {
        self.rec.phase = Phase::Unhealed;
        let Some(inc) = self.rec.incident.as_mut() else {
            return;
        };
        inc.alerted = true;
        let (id, class) = (inc.id.to_string(), inc.failure.class.label());
        let failure = inc.failure.clone();
        let kv = self.log(Level::Warn, event, msg);
        kv.push(("incident", id.into()));
        if event == "alert_only" {
            kv.push(("class", class.into()));
        }
        if let Some((k, v)) = field {
            kv.push((k, v.into()));
        }
        let n = self.failure_notice(NoticeKind::Failure, summary, None, Some(failure));
        self.announce(n, "alerted", why);
    }

    fn no_heal_action(&mut self) {
        self.rec.phase = Phase::Unhealed;
        let Some(inc) = self.rec.incident.as_mut() else {
            return;
        };
        inc.alerted = true;
        let failure = inc.failure.clone();
        let n = self.failure_notice(
            NoticeKind::Escalation,
            "The target failed and has no heal action configured: a person must restart it.".into(),
            Some(EscalationReason::NoHealAction),
            Some(failure),
        );
        self.out.push(Action::Count(Metric::Escalation));
        self.announce(n, "escalated", "no heal action configured".into());
    }

    /// The budget is spent: hold, and page once for this exhaustion.
    fn budget_exhausted(&mut self) {
        let first_hold = !self.rec.budget_alerted;
        self.rec.budget_alerted = true;
        self.rec.phase = Phase::Held;
        let budget = self.env.target.budget.clone();
        let Some(inc) = self.rec.incident.as_mut() else {
            return;
        };
        if !first_hold || inc.escalated_at.is_some() {
            return;
        }
        inc.alerted = true;
        let (id, failure) = (inc.id.to_string(), inc.failure.clone());
        let kv = self.log(
            Level::Error,
            "budget_exhausted",
            "restart budget exhausted; not restarting",
        );
        kv.push(("incident", id.into()));
        kv.push(("max_restarts", budget.max_restarts.into()));
        kv.push(("window", format_duration(budget.window).into()));
        let n = self.failure_notice(NoticeKind::Escalation, format!(
            "Manual intervention needed: {} restarts in {} already used; sentinel-remedy will not restart it again until the window allows.",
            budget.max_restarts, format_duration(budget.window)),
            Some(EscalationReason::RestartBudgetExhausted), Some(failure));
        self.out.push(Action::Count(Metric::Escalation));
        self.announce(n, "held", "restart budget exhausted".into());
    }

    pub(super) fn on_lease_granted(&mut self, id: &str) {
        let asked = self.rec.lease_pending.as_deref() == Some(id);
        if asked {
            self.rec.lease_pending = None;
        }
        let waiting = matches!(self.rec.phase, Phase::Archiving | Phase::Held);
        if asked && waiting && self.is_open(id) {
            self.issue_heal();
        } else {
            // Recovered (or decided otherwise) while the lease was being taken.
            self.out.push(Action::ReleaseLease);
        }
    }

    pub(super) fn on_lease_refused(&mut self, id: &str, refusal: LeaseRefusal) {
        if self.rec.lease_pending.as_deref() != Some(id) {
            return;
        }
        self.rec.lease_pending = None;
        let waiting = matches!(self.rec.phase, Phase::Archiving | Phase::Held);
        let Some(inc) = self.rec.incident.as_ref().filter(|_| waiting) else {
            return;
        };
        let declared = inc.declared_instant;
        let why = match &refusal {
            // Fail closed, never silent: a lease store still failing at recovery_timeout goes
            // to a person, once, like any restart that could not happen.
            LeaseRefusal::Store(e)
                if self.env.now.duration_since(declared) >= self.env.target.recovery_timeout =>
            {
                return self.escalate(
                    &format!("No restart was made: the restart lease store failed for recovery_timeout ({e}). Fix lease.dir (see /healthz) or restart the server by hand."),
                    EscalationReason::HealRefused,
                );
            }
            LeaseRefusal::Held { .. } => "lease_held",
            LeaseRefusal::AlreadyRestarted { .. } => "lease_already_restarted",
            // Fail closed: without the lease there is no restart.
            LeaseRefusal::Store(_) => "lease_unavailable",
            // Someone holds flock on the lease file (or the wait ran out): retried.
            LeaseRefusal::Busy(_) => "lease_busy",
            // Cluster mode: not known to own the target now; the owner (or this daemon, once
            // it owns it again) decides.
            LeaseRefusal::Fenced(_) => "coordination_lost",
        };
        self.hold(
            HOLD_RETRY,
            why,
            format!("Restart not made by this daemon: {refusal}."),
        );
    }

    /// Every gate passed and the lease is ours: count the restart and run the heal.
    fn issue_heal(&mut self) {
        let now = self.env.now;
        self.rec.restarts.push_back(now);
        self.rec.backoff_step += 1;
        self.rec.budget_alerted = false;
        self.rec.phase = Phase::Healing;
        let in_window = self.rec.restarts.len();
        let restart = match &self.rec.restart_policy {
            Some(p) => format!("its restart policy ({p}) restarts the container, so sentinel-remedy waits for that instead of restarting it"),
            None => "restart issued".to_string(),
        };
        let in_container = self.env.target.container().is_some();
        let Some(inc) = self.rec.incident.as_mut() else {
            return;
        };
        inc.heal_started = Some(now);
        inc.alerted = true;
        let (id, failure) = (inc.id.clone(), inc.failure.clone());
        let since_ms = now.duration_since(inc.declared_instant).as_millis() as u64;
        let cause = if inc.hard && in_container {
            "Docker reported the container down"
        } else if inc.hard {
            "The postmaster died"
        } else {
            "Probes failed past the threshold"
        };
        let failed = if inc.archive.as_ref().is_some_and(|a| a.is_err()) {
            " (the archive FAILED, see below)"
        } else {
            ""
        };
        let kv = self.log(Level::Info, "heal_issued", "heal issued");
        kv.push(("incident", id.as_str().into()));
        kv.push(("restarts_in_window", in_window.into()));
        kv.push(("since_detection_ms", since_ms.into()));
        self.out.push(Action::Count(Metric::Restart));
        // Recorded in the incident before it is written, sent after the heal starts.
        let summary = format!("{cause}. Forensics archived; {restart}{failed}.");
        let n = self.failure_notice(NoticeKind::Failure, summary, None, Some(failure));
        if let Some(inc) = self.rec.incident.as_mut() {
            inc.queue_notice(n.clone());
        }
        // Written before the heal runs: a restarted daemon must not restart again for this incident.
        self.out.push(Action::RecordRestart);
        self.persist("heal_issued", "restart issued".into());
        self.out.push(Action::Checkpoint("heal_issued"));
        let heal = self.heal_action(&id);
        self.out.push(heal);
        self.out.push(Action::Notify(n));
        self.out.push(Action::RecoveryTimer {
            id: id.to_string(),
            after: self.env.target.recovery_timeout,
        });
    }

    /// The heal for `id`: since when a container start counts as this outage's restart, and
    /// how many starts the budget leaves it (its first is already in the window).
    pub(super) fn heal_action(&mut self, id: &crate::ids::IncidentId) -> Action {
        let budget = &self.env.target.budget;
        self.rec.budget_allows(budget, self.env.now);
        let left = budget
            .max_restarts
            .saturating_sub(self.rec.restarts.len() as u32);
        let at = self.rec.incident.as_ref().map(|i| i.first_failure_at);
        let at = at.unwrap_or(self.env.now_utc);
        Action::Heal {
            id: id.clone(),
            failed_at: self.rec.last_ok_at.filter(|ok| *ok < at).unwrap_or(at),
            max_starts: left + 1,
        }
    }

    /// Holds the restart for `wait` (backoff, fleet guard, lease): the failure alert says why,
    /// and a timer decides again.
    fn hold(&mut self, wait: Duration, why: &'static str, summary: String) {
        let entering = self.rec.phase != Phase::Held;
        self.rec.phase = Phase::Held;
        let Some(inc) = self.rec.incident.as_mut() else {
            return;
        };
        let id = inc.id.to_string();
        self.out.push(Action::RetryHeal {
            id: id.clone(),
            after: wait.max(Duration::from_millis(100)),
        });
        if !entering {
            return;
        }
        inc.alerted = true;
        let failure = inc.failure.clone();
        let kv = self.log(Level::Warn, why, "restart held");
        kv.push(("incident", id.into()));
        kv.push(("wait_s", wait.as_secs_f64().into()));
        kv.push(("why", summary.as_str().into()));
        let mut n = self.failure_notice(NoticeKind::Failure, summary, None, Some(failure));
        if let Some(o) = n.outage.as_mut() {
            // Refused by the lease: the daemon that acted announces this outage.
            o.may_lead = !matches!(
                why,
                "lease_held" | "lease_already_restarted" | "coordination_lost"
            );
        }
        self.announce(n, "held", why.into());
    }

    pub(super) fn on_healed(&mut self, id: &str, report: HealReport) {
        // The heal's own further starts count like restarts (the first one already does),
        // and are kept across a daemon restart like the first.
        for _ in 1..report.starts {
            self.rec.restarts.push_back(self.env.now);
            self.rec.backoff_step += 1;
            self.out.push(Action::RecordRestart);
        }
        let attempts = format!("{} attempt(s)", report.attempts.len());
        if !(self.rec.phase == Phase::Healing && self.is_open(id)) {
            // Already recovered (a probe passed before the healer reported): the timeline
            // still gets the heal's result.
            let event = if report.success {
                "heal_succeeded"
            } else {
                "heal_failed"
            };
            self.out.push(Action::Timeline {
                id: id.into(),
                event,
                detail: attempts,
            });
            return;
        }
        if report.success {
            if let Some(inc) = self.rec.incident.as_mut() {
                inc.heal_succeeded = Some(true);
            }
            self.rec.phase = Phase::Recovering;
            self.persist("heal_succeeded", attempts);
            self.rec.process_dead = false;
            self.out.push(Action::ProbeSoon);
            return;
        }
        if let Some(inc) = self.rec.incident.as_mut() {
            inc.heal_succeeded = Some(false);
            // E.g. a missing container: its own kind of incident, nothing to restart.
            if let Some(class) = report.failure.as_ref().and_then(|f| f.class) {
                inc.failure.class = class;
            }
        }
        self.persist("heal_failed", attempts);
        match &report.failure {
            Some(f) if f.kind == "restart_budget_exhausted" => self.escalate(
                &format!("{}.", f.detail),
                EscalationReason::RestartBudgetExhausted,
            ),
            Some(f) => self.escalate_because(
                &format!("The restart cannot work: {}", f.detail),
                EscalationReason::HealRefused,
                f.cause.clone(),
            ),
            None => self.escalate(
                "The heal action kept failing until recovery_timeout.",
                EscalationReason::RecoveryTimeout,
            ),
        }
    }

    /// Pages once for this incident and stops restarting it; probing goes on, and the quiet
    /// window keeps a new incident from opening until it passes.
    pub(super) fn escalate(&mut self, why: &str, reason: EscalationReason) {
        self.escalate_because(why, reason, None)
    }

    /// [`Self::escalate`], with the cause of this escalation when it is not the incident's
    /// own (a start that failed on a configuration error): the page's first line says it.
    pub(super) fn escalate_because(
        &mut self,
        why: &str,
        reason: EscalationReason,
        cause: Option<crate::cause::Cause>,
    ) {
        let window = self.env.target.budget.window;
        let now = self.env.now;
        let Some(inc) = self.rec.incident.as_mut() else {
            return;
        };
        if inc.escalated_at.is_some() {
            return;
        }
        inc.escalated_at = Some(now);
        inc.alerted = true;
        let (id, failure) = (inc.id.to_string(), inc.failure.clone());
        let kv = self.log(Level::Error, "escalation", "not recovered; escalating");
        kv.push(("incident", id.into()));
        kv.push(("why", why.into()));
        self.rec.phase = Phase::Escalated;
        let mut n = self.failure_notice(
            NoticeKind::Escalation,
            format!("Manual intervention needed: {why} No further restart for this incident."),
            Some(reason),
            Some(failure),
        );
        if cause.is_some() {
            n.cause = cause;
        }
        self.rec.quiet_until = Some(now + window);
        self.out.push(Action::Count(Metric::Escalation));
        self.announce(n, "escalated", why.into());
    }

    pub(super) fn failure_notice(
        &self,
        kind: NoticeKind,
        summary: String,
        reason: Option<EscalationReason>,
        failure: Option<crate::probe::ProbeFailure>,
    ) -> crate::notify::Notice {
        let inc = self
            .rec
            .incident
            .as_ref()
            .expect("called with an open incident");
        let mut n = self.notice(kind, inc, summary);
        n.reason = reason;
        n.failure = failure;
        n.summary = crate::flight::movers::with_line(n.summary, inc.before.as_deref());
        n
    }

    /// Records the notice in the incident (a replacement Monitor re-sends it), writes the
    /// incident with a timeline step, then sends the notice.
    pub(super) fn announce(
        &mut self,
        n: crate::notify::Notice,
        event: &'static str,
        detail: String,
    ) {
        if let Some(inc) = self.rec.incident.as_mut() {
            inc.queue_notice(n.clone());
        }
        self.persist(event, detail);
        self.out.push(Action::Notify(n));
    }
}

//! The incident policy as a pure function: `step(record, env, observation) -> actions`.
//!
//! No I/O, no clock reads, no actor types: the Monitor passes the time and the fleet guard's
//! verdict in [`Env`], feeds every probe result, process and container event and reply as an
//! [`Observation`], and carries out the [`Action`]s in order. The whole policy (suspect,
//! declare, hold, heal, recovered, escalate, maintenance) reads in this file and `heal.rs`,
//! and is tested by tables in `tests.rs`.

mod cause;
mod heal;
mod identity;
mod recorder;
mod unannounced;

pub use identity::judge;

use super::actions::{Action, Level, LogLine, Metric, Observation};
use super::{Incident, Phase, TargetRecord};
use crate::archive::manifest::IncidentFacts;
use crate::config::TargetConfig;
use crate::notify::{Notice, NoticeKind, OutageRef};
use crate::probe::snapshot::SqlSnapshot;
use crate::probe::{FailureClass, ProbeFailure};
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

/// What a step may know besides the record and the observation.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub target: &'a TargetConfig,
    /// Now, on both clocks (read once by the caller).
    pub now: Instant,
    pub now_utc: DateTime<Utc>,
    /// The fleet guard's verdict: `(failing, total)` while it holds every restart.
    pub fleet_tripped: Option<(usize, usize)>,
}

/// Applies one observation to the record and returns what to do, in order.
pub fn step(rec: &mut TargetRecord, env: &Env<'_>, obs: Observation) -> Vec<Action> {
    let mut m = Machine {
        rec,
        env,
        out: Vec::new(),
    };
    m.observe(obs);
    m.out
}

/// One step in progress: the record, the environment and the actions so far.
pub(super) struct Machine<'r, 'e> {
    pub(super) rec: &'r mut TargetRecord,
    pub(super) env: &'e Env<'e>,
    pub(super) out: Vec<Action>,
}

impl Machine<'_, '_> {
    fn observe(&mut self, obs: Observation) {
        match obs {
            Observation::Probe {
                result,
                latency,
                manager,
            } => self.on_probe(result, latency, manager),
            Observation::ProcessExited => {
                if !self.died_after_backend_crash("the postmaster exited") {
                    self.rec.process_dead = true;
                }
                self.out.push(Action::ProbeSoon);
            }
            Observation::ProcessStopped { pid } => {
                // Hung, not dead: one probe (it times out) confirms, as for a paused container,
                // and the heal stops it before the start.
                self.rec.process_dead = true;
                self.rec.container_event =
                    Some((format!("postmaster {pid} is stopped (SIGSTOP)"), None));
                self.out.push(Action::ProbeSoon);
            }
            Observation::ContainerDown { detail, class } => self.on_container_down(detail, class),
            Observation::RestartPolicy(p) => self.rec.restart_policy = p,
            Observation::Snapshot(snap) => {
                if self.rec.phase != Phase::Healthy && self.rec.snapshot.is_none() {
                    self.log(Level::Debug, "", "SQL snapshot captured")
                        .push(("answered", snap.answered.into()));
                    self.rec.snapshot = Some(snap);
                }
            }
            Observation::Sample(s) => self.on_sample(s),
            Observation::Archived { id, outcome, cause } => self.on_archived(&id, outcome, cause),
            Observation::BackendCrash { detail } => self.on_backend_crash(detail),
            Observation::SpaceFreed { id } => self.on_space_freed(&id),
            Observation::LeaseGranted { id } => self.on_lease_granted(&id),
            Observation::LeaseRefused { id, refusal } => self.on_lease_refused(&id, refusal),
            Observation::Healed { id, report } => self.on_healed(&id, report),
            Observation::RetryHeal { id } => {
                if self.rec.phase == Phase::Held && self.is_open(&id) {
                    self.start_heal();
                }
            }
            Observation::RecoveryDeadline { id } => self.on_recovery_deadline(&id),
            Observation::RedoBaseline(lsn) => {
                if self.rec.redo_lsn.is_none() {
                    self.rec.redo_lsn = lsn;
                }
            }
            Observation::RedoProgress { id, lsn } => self.on_redo_progress(&id, lsn),
            Observation::Resume => self.resume(),
            Observation::Replaced {
                container,
                container_id,
            } => self.on_replaced(&container, &container_id),
        }
    }

    fn on_probe(
        &mut self,
        result: Result<(), ProbeFailure>,
        latency: Duration,
        manager: Option<Option<String>>,
    ) {
        let (now, now_utc) = (self.env.now, self.env.now_utc);
        self.rec.last_probe = Some((now_utc, latency));
        self.rec.last_ok = Some(result.is_ok());
        if result.is_ok() {
            self.rec.last_ok_at =
                Some(now_utc - chrono::Duration::from_std(latency).unwrap_or_default());
        }
        if let Some(found) = manager {
            self.note_manager(found);
        }
        let failing = failing(&result);
        if failing {
            self.rec.healthy_since = None;
        } else if result.is_ok() {
            let since = *self.rec.healthy_since.get_or_insert(now);
            if self.rec.backoff_step > 0
                && now.duration_since(since) >= self.env.target.budget.backoff_reset
            {
                self.rec.backoff_step = 0;
            }
        }
        match result {
            Ok(()) => {
                self.log(Level::Debug, "probe_ok", "probe ok")
                    .push(("latency_ms", (latency.as_millis() as u64).into()));
                self.rec.process_dead = false;
                self.rec.container_event = None;
                self.rec.redo_lsn = None;
                self.rec.recovering = false;
                self.on_success();
            }
            Err(f) if f.class == FailureClass::Recovering => self.on_recovering(&f),
            Err(f) => {
                self.rec.recovering = false;
                self.on_failure(f);
            }
        }
    }

    fn note_manager(&mut self, found: Option<String>) {
        if found == self.rec.managed_by {
            return;
        }
        match &found {
            Some(m) => self
                .log(
                    Level::Warn,
                    "manager_detected",
                    "another manager runs this server: restarts are left to it",
                )
                .push(("manager", m.into())),
            None => {
                self.log(
                    Level::Info,
                    "manager_gone",
                    "no other manager found on this server any more",
                );
            }
        }
        self.rec.managed_by = found;
    }

    /// 57P03: starting up or in crash recovery. Alive, not failed: never restarted for. Said
    /// once at info when it starts, then at debug on every probe.
    fn on_recovering(&mut self, f: &ProbeFailure) {
        let (level, msg) = if self.rec.recovering {
            (Level::Debug, "server still starting up or in recovery")
        } else {
            (Level::Info, "server is starting up or in recovery; waiting")
        };
        let phase = self.rec.phase;
        let kv = self.log(level, "probe_recovering", msg);
        kv.push(("sqlstate", f.sqlstate.as_deref().unwrap_or("").into()));
        kv.push(("phase", phase.label().into()));
        if !self.rec.recovering && matches!(phase, Phase::Healing | Phase::Recovering) {
            self.out.push(Action::BaselineRedo);
        }
        self.rec.recovering = true;
    }

    fn on_success(&mut self) {
        if self.awaits_its_alert() {
            self.rec.failures = 0;
            return;
        }
        self.rec.failures = 0;
        self.rec.first_failure = None;
        self.rec.quiet_until = None;
        match self.rec.phase {
            Phase::Healthy => {}
            Phase::Suspect => {
                self.log(
                    Level::Info,
                    "transient_cleared",
                    "transient failure cleared; no action taken",
                );
            }
            _ => {
                if let Some(inc) = self.rec.incident.take() {
                    self.recovered(inc);
                }
            }
        }
        self.rec.phase = Phase::Healthy;
        self.rec.snapshot = None;
    }

    /// A probe passes during an incident: close it, with the downtime measured from the fault.
    fn recovered(&mut self, inc: Incident) {
        let downtime = self
            .env
            .now
            .duration_since(inc.first_failure_instant)
            .as_secs_f64();
        let ttr = self
            .env
            .now
            .duration_since(inc.declared_instant)
            .as_secs_f64();
        let kv = self.log(Level::Info, "target_recovered", "target recovered");
        kv.push(("incident", inc.id.as_str().into()));
        kv.push(("downtime_s", format!("{downtime:.3}").into()));
        kv.push(("ttr_s", format!("{ttr:.3}").into()));
        kv.push(("restarted", inc.heal_started.is_some().into()));
        self.out.push(Action::Count(Metric::RecoverySeconds(ttr)));
        if inc.heal_started.is_some() {
            self.out.push(Action::HealDone {
                id: inc.id.to_string(),
            });
        }
        self.persist_as(
            &inc,
            Phase::Healthy,
            Some(Some((downtime, ttr))),
            "recovered",
            format!("probe passes; down {downtime:.3} s, recovered {ttr:.3} s after detection"),
        );
        if inc.alerted {
            let summary = match inc.heal_started {
                Some(_) => format!("Probe passes again after the restart; down {downtime:.1} s, recovered {ttr:.1} s after detection."),
                None => format!("Probe passes again (no restart by sentinel-remedy); down {downtime:.1} s."),
            };
            let mut n = self.notice(NoticeKind::Recovery, &inc, summary);
            n.downtime_seconds = Some(downtime);
            n.time_to_recovery_seconds = Some(ttr);
            self.out.push(Action::Notify(n));
        }
    }

    /// The container was re-created: the open incident closes as replaced (no downtime is
    /// measured: nothing recovered, a new container took the old one's place), with a notice
    /// when the failure was alerted, and the record starts over (the new container's budget
    /// is its own; the Supervisor gives it a fresh record anyway).
    fn on_replaced(&mut self, container: &str, container_id: &str) {
        let short: String = container_id.chars().take(12).collect();
        if let Some(inc) = self.rec.incident.take() {
            let kv = self.log(
                Level::Info,
                "incident_replaced",
                "container re-created: incident closed as replaced",
            );
            kv.push(("incident", inc.id.as_str().into()));
            kv.push(("container", container.into()));
            kv.push(("container_id", short.as_str().into()));
            if inc.heal_started.is_some() {
                self.out.push(Action::HealDone {
                    id: inc.id.to_string(),
                });
            }
            self.persist_as(
                &inc,
                Phase::Healthy,
                Some(None),
                "replaced",
                format!(
                    "container {container} re-created (new id {short}); closed without recovery"
                ),
            );
            if inc.alerted {
                let summary = format!(
                    "Container {container} was re-created (new container {short}): this incident is closed as replaced, not recovered. The new container is watched with a fresh restart budget."
                );
                self.out.push(Action::Notify(self.notice(
                    NoticeKind::Replaced,
                    &inc,
                    summary,
                )));
            }
        }
        let maintenance_until = self.rec.maintenance_until;
        *self.rec = TargetRecord {
            maintenance_until,
            ..Default::default()
        };
    }

    fn on_failure(&mut self, f: ProbeFailure) {
        let (now, now_utc) = (self.env.now, self.env.now_utc);
        if self.rec.first_failure.is_none() {
            self.rec.first_failure = Some((now_utc, now));
        }
        self.rec.failures += 1;
        self.wrong_server_during_incident(&f);
        match self.rec.phase {
            Phase::Healthy | Phase::Suspect => self.on_failure_while_up(f),
            Phase::Held => {
                self.log(Level::Debug, "", "probe failed while held")
                    .push(("class", f.class.label().into()));
                // Backoff and fleet-guard holds decide again on their own timers.
                if self.rec.budget_alerted && self.rec.budget_allows(&self.env.target.budget, now) {
                    self.log(
                        Level::Info,
                        "budget_available",
                        "restart budget allows a restart again",
                    );
                    self.start_heal();
                }
            }
            Phase::Escalated => {
                if self.rec.quiet_until.is_some_and(|q| now >= q) {
                    self.close_unrecovered();
                }
            }
            phase => {
                let kv = self.log(Level::Debug, "", "probe failed during incident");
                kv.push(("class", f.class.label().into()));
                kv.push(("phase", phase.label().into()));
            }
        }
    }

    /// A failing probe while no incident is open: suspect, or declare past the threshold (at
    /// once when the process is known dead), unless a maintenance window is open.
    fn on_failure_while_up(&mut self, f: ProbeFailure) {
        let threshold = self.env.target.probe.failure_threshold;
        let dead = self.rec.process_dead;
        let failures = self.rec.failures;
        let kv = self.log(Level::Warn, "probe_failed", "probe failed");
        kv.push(("class", f.class.label().into()));
        kv.push(("sqlstate", f.sqlstate.as_deref().unwrap_or("").into()));
        kv.push(("detail", f.detail.as_str().into()));
        kv.push(("failures", failures.into()));
        kv.push(("threshold", threshold.into()));
        kv.push(("process_dead", dead.into()));
        // A refused authentication is certain at once (probing again only asks the same), and
        // is declared on its own so it never counts among the failures that call for a restart.
        let refused = f.class.is_refusal();
        let due = dead || refused || self.rec.failures >= threshold;
        if due && self.in_maintenance() {
            if !self.rec.maintenance_noted {
                self.rec.maintenance_noted = true;
                self.log(
                    Level::Warn,
                    "maintenance_suppressed",
                    "target failing during maintenance: no archive, restart or alert",
                )
                .push(("class", f.class.label().into()));
            }
            self.rec.phase = Phase::Suspect;
            return;
        }
        if due {
            let f = self.explain(f);
            return self.declare(f, dead);
        }
        let first = self.rec.phase == Phase::Healthy;
        self.rec.phase = Phase::Suspect;
        if first {
            self.out.push(Action::Snapshot);
        }
    }

    /// The failure as the user should read it: what Docker or the pid watch saw first. Another
    /// server on the address stays `wrong_server`: restarting ours would not remove it.
    fn explain(&self, f: ProbeFailure) -> ProbeFailure {
        match (&self.rec.container_event, self.rec.process_dead) {
            (Some((ev, _)), true) if f.class == FailureClass::WrongServer => ProbeFailure {
                detail: format!("{ev}; {}", f.detail),
                ..f
            },
            (Some((ev, class)), true) => ProbeFailure {
                class: class.unwrap_or(f.class),
                detail: format!("{ev}; {}", f.detail),
                ..f
            },
            (None, true) if f.class == FailureClass::ConnectionRefused => ProbeFailure::new(
                FailureClass::ProcessExited,
                format!("postmaster exited; {}", f.detail),
            ),
            _ => f,
        }
    }

    pub(super) fn in_maintenance(&self) -> bool {
        self.rec
            .maintenance_until
            .is_some_and(|u| u > self.env.now_utc)
    }

    /// Escalated and the quiet window passed: the incident closes unrecovered, and the next
    /// failure opens a new one.
    fn close_unrecovered(&mut self) {
        let closed = self.rec.incident.take();
        if let Some(inc) = &closed {
            self.persist_as(
                inc,
                Phase::Escalated,
                Some(None),
                "closed_unrecovered",
                "escalated and the quiet window passed".into(),
            );
        }
        let id = closed.map(|i| i.id.to_string()).unwrap_or_default();
        self.log(
            Level::Warn,
            "incident_closed_unrecovered",
            "escalated incident closed unrecovered; the next failure opens a new incident",
        )
        .push(("incident", id.into()));
        self.rec.phase = Phase::Suspect;
        self.rec.failures = 0;
        self.rec.quiet_until = None;
    }

    fn declare(&mut self, f: ProbeFailure, hard: bool) {
        let first = self
            .rec
            .first_failure
            .unwrap_or((self.env.now_utc, self.env.now));
        let mut inc = Incident::new(
            &self.env.target.name,
            f,
            hard,
            first,
            (self.env.now_utc, self.env.now),
        );
        // What moved before it, for the failure alert.
        inc.before = crate::flight::movers::line(&self.rec.flight);
        let detect_ms = self
            .env
            .now
            .duration_since(inc.first_failure_instant)
            .as_millis() as u64;
        let failures = self.rec.failures;
        let kv = self.log(Level::Error, "incident_declared", "target declared failing");
        kv.push(("incident", inc.id.as_str().into()));
        kv.push(("class", inc.failure.class.label().into()));
        kv.push(("hard", hard.into()));
        kv.push(("failures", failures.into()));
        kv.push(("detect_ms", detect_ms.into()));
        self.out.push(Action::Count(Metric::Incident {
            class: inc.failure.class.label(),
        }));
        let detail = format!("{}: {}", inc.failure.class.label(), inc.failure.detail);
        self.rec.incident = Some(inc);
        self.rec.phase = Phase::Archiving;
        self.persist("declared", detail);
        self.archive();
    }

    /// Asks for the bundle of the open incident, with the snapshot taken while suspect.
    fn archive(&mut self) {
        let Some(inc) = &self.rec.incident else {
            return;
        };
        let facts = facts(self.env.target, inc);
        let snapshot = self.rec.snapshot.take().or_else(|| {
            inc.hard
                .then(|| SqlSnapshot::not_taken("the postmaster had exited: no server left to ask"))
        });
        let flight = self.recording();
        self.out.push(Action::Archive {
            facts,
            snapshot,
            flight,
        });
    }

    fn on_container_down(&mut self, detail: String, class: Option<FailureClass>) {
        if class.is_some() && self.died_after_backend_crash(&detail) {
            self.out.push(Action::ProbeSoon);
            return;
        }
        // During an incident our own restart emits the same events: they change nothing.
        if !matches!(self.rec.phase, Phase::Healthy | Phase::Suspect) {
            return;
        }
        self.rec.process_dead = true;
        self.rec.container_event = Some((detail, class));
        self.out.push(Action::ProbeSoon);
        // The policy may have changed since start-up; known again before the archive is done.
        self.out.push(Action::InspectContainer);
    }

    /// Archive finished (or failed): decide about the restart.
    fn on_archived(
        &mut self,
        id: &str,
        outcome: Result<String, String>,
        cause: Option<crate::cause::Cause>,
    ) {
        if self.rec.unannounced.as_ref().is_some_and(|i| i.id == *id) {
            return self.unannounced_archived(outcome);
        }
        let phase = self.rec.phase;
        let Some(inc) = self.rec.incident.as_mut().filter(|i| i.id == *id) else {
            self.log(
                Level::Info,
                "recovered_before_heal",
                "target recovered before the restart; none issued",
            )
            .push(("incident", id.into()));
            return;
        };
        let detail = match &outcome {
            Ok(l) => l.clone(),
            Err(e) => format!("archive failed: {e}"),
        };
        inc.archive = Some(outcome);
        if cause.is_some() {
            inc.cause = cause;
        }
        // A repeat reply while the lease is being asked for changes nothing.
        if phase == Phase::Archiving && self.rec.lease_pending.is_none() {
            self.persist("archived", detail);
            self.out.push(Action::Checkpoint("archived"));
            self.start_heal();
        }
    }

    fn on_recovery_deadline(&mut self, id: &str) {
        if !(matches!(self.rec.phase, Phase::Healing | Phase::Recovering) && self.is_open(id)) {
            return;
        }
        if self.rec.recovering {
            // In recovery (57P03): wait longer while redo advances.
            self.out.push(Action::CheckRedo { id: id.into() });
        } else {
            self.escalate(
                "No passing probe within recovery_timeout after the restart.",
                crate::notify::EscalationReason::RecoveryTimeout,
            );
        }
    }

    fn on_redo_progress(&mut self, id: &str, lsn: Option<(u64, String)>) {
        if !(matches!(self.rec.phase, Phase::Healing | Phase::Recovering) && self.is_open(id)) {
            return;
        }
        match lsn {
            Some((n, text)) if self.rec.redo_lsn.is_none_or(|before| n > before) => {
                self.rec.redo_lsn = Some(n);
                let kv = self.log(Level::Info, "recovery_progress",
                    "still in crash recovery, and redo advances: waiting another recovery_timeout");
                kv.push(("incident", id.into()));
                kv.push(("lsn", text.into()));
                self.out.push(Action::RecoveryTimer {
                    id: id.into(),
                    after: self.env.target.recovery_timeout,
                });
            }
            _ => self.escalate(
                "The server is still in recovery (57P03) past recovery_timeout and its log shows no redo progress (PostgreSQL 15+ logs it every log_startup_progress_interval). It is not restarted while it recovers.",
                crate::notify::EscalationReason::RecoveryTimeout,
            ),
        }
    }

    /// Re-issues the work of an incident that was open when the previous Monitor died. The
    /// shared actors answer repeats from their first result, so nothing happens twice.
    fn resume(&mut self) {
        let lease_lost = self.rec.lease_pending.take();
        if let Some(inc) = &self.rec.unannounced {
            // Its bundle may not have been asked for: the archiver answers a repeat once.
            let facts = facts(self.env.target, inc);
            let flight = self.recording();
            self.out.push(Action::Archive {
                facts,
                snapshot: None,
                flight,
            });
        }
        let Some(inc) = &self.rec.incident else {
            return;
        };
        let id = inc.id.clone();
        let notices = inc.notices.clone();
        let heal_started = inc.heal_started;
        let phase = self.rec.phase;
        let acts = matches!(phase, Phase::Archiving | Phase::Healing | Phase::Recovering);
        if acts || !notices.is_empty() || lease_lost.is_some() {
            self.log(
                Level::Warn,
                "incident_resumed",
                "resuming the open incident",
            )
            .push(("phase", phase.label().into()));
        }
        match self.rec.phase {
            Phase::Archiving => self.archive(),
            Phase::Healing | Phase::Recovering => {
                let left = heal_started
                    .map(|t| {
                        self.env
                            .target
                            .recovery_timeout
                            .saturating_sub(self.env.now.duration_since(t))
                    })
                    .unwrap_or_default();
                self.out.push(Action::RecoveryTimer {
                    id: id.to_string(),
                    after: left,
                });
                if self.rec.phase == Phase::Healing {
                    let heal = self.heal_action(&id);
                    self.out.push(heal);
                }
            }
            // A lease answer went with the previous Monitor: ask again.
            Phase::Held if lease_lost.is_some() => self.out.push(Action::RetryHeal {
                id: id.to_string(),
                after: Duration::ZERO,
            }),
            _ => {}
        }
        // Notices issued before the previous Monitor died may not have been sent.
        self.out.extend(notices.into_iter().map(Action::Notify));
    }

    /// Whether `id` is the open incident.
    pub(super) fn is_open(&self, id: &str) -> bool {
        self.rec.incident.as_ref().is_some_and(|i| i.id == *id)
    }

    /// Starts a log line and returns its fields to extend.
    pub(super) fn log(
        &mut self,
        level: Level,
        event: &'static str,
        msg: &'static str,
    ) -> &mut Vec<(&'static str, super::actions::Value)> {
        self.out.push(Action::Log(LogLine::new(level, event, msg)));
        match self.out.last_mut() {
            Some(Action::Log(l)) => &mut l.kv,
            _ => unreachable!("a log line was just pushed"),
        }
    }

    /// Writes the open incident (and a timeline step) before its action runs.
    pub(super) fn persist(&mut self, event: &'static str, detail: String) {
        if let Some(inc) = &self.rec.incident {
            self.out.push(Action::Persist {
                incident: Box::new(inc.clone()),
                phase: self.rec.phase,
                closed: None,
                event,
                detail,
            });
        }
    }

    fn persist_as(
        &mut self,
        inc: &Incident,
        phase: Phase,
        closed: Option<Option<(f64, f64)>>,
        event: &'static str,
        detail: String,
    ) {
        self.out.push(Action::Persist {
            incident: Box::new(inc.clone()),
            phase,
            closed,
            event,
            detail,
        });
    }

    /// A notice about `inc`, with the outage it belongs to (for one page per outage).
    pub(super) fn notice(&self, kind: NoticeKind, inc: &Incident, summary: String) -> Notice {
        let t = self.env.target;
        Notice {
            kind,
            target: t.name.clone(),
            endpoint: t.dsn.endpoint(),
            incident_id: inc.id.to_string(),
            timestamp: self.env.now_utc,
            failure: None,
            archive: inc.archive_text(),
            reason: None,
            downtime_seconds: None,
            time_to_recovery_seconds: None,
            summary,
            outage: Some(OutageRef {
                server: server_key(t),
                started_at: inc.first_failure_at,
                may_lead: true,
                id: None,
            }),
            cause: inc.cause.clone(),
        }
    }
}

/// Whether a probe result counts as a failure: 57P03 (starting up, in recovery) does not.
pub fn failing(result: &Result<(), ProbeFailure>) -> bool {
    result
        .as_ref()
        .is_err_and(|f| f.class != FailureClass::Recovering)
}

/// What the bundle's manifest says about an incident.
pub fn facts(t: &TargetConfig, inc: &Incident) -> IncidentFacts {
    IncidentFacts {
        incident_id: inc.id.clone(),
        target: inc.target.clone(),
        stamp: inc.id.stamp().to_string(),
        endpoint: t.dsn.endpoint(),
        failure: inc.failure.clone(),
        hard_failure: inc.hard,
        first_failure_at: inc.first_failure_at,
        declared_at: inc.declared_at,
        action: t.policy.action(inc.failure.class).label(),
        diagnosis: crate::policy::diagnosis(inc.failure.class),
    }
}

/// The lease and outage key: the server, `host:port`, whatever the target is called.
pub fn server_key(t: &TargetConfig) -> String {
    let ep = t.dsn.endpoint();
    ep.split('/').next().unwrap_or(&ep).to_string()
}

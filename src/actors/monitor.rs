//! The Monitor: one per target. Probes on the target's cadence, watches the postmaster, and
//! walks an incident through archive → heal → alert → recovery by messages to the shared
//! actors. All state that must outlive this actor lives in the target's [`SharedRecord`].
//!
//! Decisions are made under the record's lock and returned as `Step`s; the steps (messages,
//! timers) run after the lock is released.

use super::archiver::Archiver;
use super::healer::Healer;
use super::messages::{Archive, AttachHeal, Heal, HealReport, IncidentFacts, Notify, Retire};
use super::notifier::Notifier;
use crate::config::TargetConfig;
use crate::docker::events::ContainerEvent;
use crate::incident::{Incident, Phase, SharedRecord, TargetRecord};
use crate::lease::LeaseRefusal;
use crate::notify::{EscalationReason, Notice, NoticeKind};
use crate::pidwatch::{PidWatch, WatchEnd};

/// How often a watched postmaster's state is read to see it stopped (a hang the pidfd cannot
/// tell): a read of /proc per target per second.
const STOPPED_CHECK_EVERY: Duration = Duration::from_secs(1);
use crate::probe::{FailureClass, ProbeFailure, ProbeOutcome, Prober};
use actix::prelude::*;
use chrono::Utc;
use slog::{debug, error, info, warn, Logger};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shared actors a Monitor talks to.
#[derive(Clone)]
pub struct Peers {
    pub archiver: Addr<Archiver>,
    pub healer: Addr<Healer>,
    pub notifier: Addr<Notifier>,
    /// The incident history; None only in tests that run without a state dir.
    pub store: Option<crate::store::Store>,
    pub fleet: Arc<crate::fleet::FleetGuard>,
    /// Restart leases shared with other daemons, and our owner id in them.
    pub leases: Arc<dyn crate::lease::LeaseBackend>,
    pub lease_owner: Arc<str>,
    pub lease_ttl: Duration,
    /// The Docker Engine, for targets in containers.
    pub docker: Arc<crate::docker::DockerClient>,
}

/// Something to do once the record's lock is released.
enum Step {
    /// Capture what SQL can still tell, while the target is only suspect.
    Snapshot,
    Archive(IncidentFacts),
    Heal(String),
    Notify(Notice),
    RecoveryTimer(String, Duration),
    /// A restart was held (backoff, fleet guard): decide again then.
    RetryHeal(String, Duration),
    ProbeSoon,
}

pub struct Monitor {
    target: Arc<TargetConfig>,
    log: Logger,
    record: SharedRecord,
    peers: Peers,
    /// None while a probe is in flight: probes never overlap.
    prober: Option<Prober>,
    next_probe: Option<SpawnHandle>,
    /// Run another probe as soon as the one in flight ends.
    probe_again: bool,
    watch: Option<SpawnHandle>,
    /// The pid watch saw the postmaster exit (or Docker reported the container down) and no
    /// probe has passed since.
    process_dead: bool,
    /// What an outside source reported (Docker about the container, the pid watch about a
    /// stopped postmaster), for the failure detail.
    container_event: Option<(String, Option<FailureClass>)>,
    /// The container's restart policy, as last inspected (`always`, `on-failure`, ...).
    restart_policy: Option<String>,
    /// Said once that the container does not exist, until it does.
    said_missing: bool,
    /// Said once that the pid file was refused (a symlink, FIFO, device or huge file).
    said_pid_file: bool,
    /// The newest redo LSN seen in the server log since the restart: a recovery whose LSN
    /// moves is waited on past recovery_timeout.
    redo_lsn: Option<u64>,
    retired: bool,
    /// The last probe answered 57P03 (logged at info only when that starts).
    recovering: bool,
}

/// While an incident is open, probe this often to see recovery quickly.
const FAST_PROBE: Duration = Duration::from_millis(100);
/// While an incident waits for someone else (held, escalated, alert only), probe this often.
const WATCH_PROBE: Duration = Duration::from_secs(1);

impl Monitor {
    pub fn new(
        target: Arc<TargetConfig>,
        record: SharedRecord,
        peers: Peers,
        log: &Logger,
    ) -> Self {
        let log = log.new(slog::o!("actor" => "monitor", "target" => target.name.clone()));
        let prober = Prober::new(&target);
        Self {
            target,
            log,
            record,
            peers,
            prober: Some(prober),
            next_probe: None,
            probe_again: false,
            watch: None,
            process_dead: false,
            container_event: None,
            restart_policy: None,
            said_missing: false,
            said_pid_file: false,
            redo_lsn: None,
            retired: false,
            recovering: false,
        }
    }

    /// Writes the open incident (and a timeline step) to the store before its action runs.
    fn persist(&self, rec: &TargetRecord, event: &str, detail: &str) {
        if let Some(inc) = &rec.incident {
            self.save(inc, rec.phase, None, event, detail);
        }
    }

    /// Writes an incident and a timeline step; `closed` carries (downtime, time to recovery)
    /// when a probe passed, `Some(None)` when it closed unrecovered, `None` while it is open.
    fn save(
        &self,
        inc: &Incident,
        phase: Phase,
        closed: Option<Option<(f64, f64)>>,
        event: &str,
        detail: &str,
    ) {
        let Some(store) = &self.peers.store else {
            return;
        };
        let r = store
            .save_incident(inc, phase, closed.is_some(), closed.flatten())
            .and_then(|_| store.event(&inc.id, event, detail));
        if let Err(e) = r {
            error!(self.log, "incident not written to the store; going on (a restarted daemon may not resume it)"; "event" => "store_failed", "error" => %e);
        }
    }

    /// Whether a maintenance window is open for this target.
    fn in_maintenance(rec: &TargetRecord) -> bool {
        rec.maintenance_until.is_some_and(|u| u > Utc::now())
    }

    fn schedule_probe(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        if let Some(h) = self.next_probe.take() {
            ctx.cancel_future(h);
        }
        self.next_probe = Some(ctx.run_later(delay, |act, ctx| {
            act.next_probe = None;
            act.probe_now(ctx);
        }));
    }

    fn probe_now(&mut self, ctx: &mut Context<Self>) {
        if self.retired {
            return;
        }
        let Some(mut prober) = self.prober.take() else {
            self.probe_again = true;
            return;
        };
        if self.process_dead {
            // A backend orphaned by a dead postmaster can still answer on the old connection.
            prober.reset();
        }
        let fut = async move {
            let out = prober.probe().await;
            (prober, out)
        };
        ctx.spawn(fut.into_actor(self).map(|(prober, out), act, ctx| {
            act.prober = Some(prober);
            let took = out.latency;
            act.on_probe(out, ctx);
            let delay = if std::mem::take(&mut act.probe_again) {
                Duration::ZERO
            } else if act.record.lock().phase == Phase::Suspect {
                // Failing: confirm at one probe per probe timeout, counted from the start of
                // the last one, so a hung server (each probe timing out) is declared after
                // timeout × threshold, not after threshold healthy intervals.
                act.cadence()
                    .min(act.target.probe.timeout)
                    .saturating_sub(took)
            } else {
                act.cadence()
            };
            act.schedule_probe(ctx, delay);
        }));
    }

    fn cadence(&self) -> Duration {
        match self.record.lock().phase {
            Phase::Archiving | Phase::Healing | Phase::Recovering => {
                FAST_PROBE.min(self.target.probe.interval)
            }
            // Nobody restarts it here: a person or another tool will, and the recovery
            // notice (with the downtime from the fault) must follow within about a second.
            Phase::Held | Phase::Escalated | Phase::Unhealed => {
                WATCH_PROBE.min(self.target.probe.interval)
            }
            _ => self.target.probe.interval,
        }
    }

    fn on_probe(&mut self, out: ProbeOutcome, ctx: &mut Context<Self>) {
        let mut take_baseline = false;
        let steps = {
            let mut rec = self.record.lock();
            rec.last_probe = Some((Utc::now(), out.latency));
            rec.last_ok = Some(out.result.is_ok());
            if out.result.is_ok() {
                rec.last_ok_at =
                    Some(Utc::now() - chrono::Duration::from_std(out.latency).unwrap_or_default());
            }
            if let Some(found) = &out.manager {
                if *found != rec.managed_by {
                    match found {
                        Some(m) => {
                            warn!(self.log, "another manager runs this server: restarts are left to it"; "event" => "manager_detected", "manager" => m)
                        }
                        None => {
                            info!(self.log, "no other manager found on this server any more"; "event" => "manager_gone")
                        }
                    }
                    rec.managed_by = found.clone();
                }
            }
            let m = crate::metrics::global();
            let t = self.target.name.as_str();
            m.observe(
                "sentinel_probe_duration_seconds",
                &[("target", t)],
                out.latency.as_secs_f64(),
            );
            m.set(
                "sentinel_target_up",
                &[("target", t)],
                if out.result.is_ok() { 1.0 } else { 0.0 },
            );
            if let Err(f) = &out.result {
                m.inc(
                    "sentinel_probe_failures_total",
                    &[("target", t), ("class", f.class.label())],
                );
            }
            let failing = out
                .result
                .as_ref()
                .is_err_and(|f| f.class != FailureClass::Recovering);
            self.peers.fleet.report(t, failing);
            if failing {
                rec.healthy_since = None;
            } else if out.result.is_ok() {
                let since = *rec.healthy_since.get_or_insert_with(Instant::now);
                if rec.backoff_step > 0 && since.elapsed() >= self.target.budget.backoff_reset {
                    rec.backoff_step = 0;
                }
            }
            match out.result {
                Ok(()) => {
                    debug!(self.log, "probe ok"; "event" => "probe_ok", "latency_ms" => out.latency.as_millis() as u64);
                    self.process_dead = false;
                    self.container_event = None;
                    self.redo_lsn = None;
                    self.recovering = false;
                    self.on_success(&mut rec)
                }
                Err(f) if f.class == FailureClass::Recovering => {
                    // 57P03: starting up or in crash recovery. Alive, not failed: never restarted for.
                    // Said once at info when it starts, then at debug on every probe.
                    if self.recovering {
                        debug!(self.log, "server still starting up or in recovery"; "event" => "probe_recovering",
                            "sqlstate" => f.sqlstate.as_deref().unwrap_or(""), "phase" => rec.phase.label());
                    } else {
                        info!(self.log, "server is starting up or in recovery; waiting"; "event" => "probe_recovering",
                            "sqlstate" => f.sqlstate.as_deref().unwrap_or(""), "phase" => rec.phase.label());
                    }
                    take_baseline =
                        !self.recovering && matches!(rec.phase, Phase::Healing | Phase::Recovering);
                    self.recovering = true;
                    vec![]
                }
                Err(f) => {
                    self.recovering = false;
                    self.on_failure(&mut rec, f)
                }
            }
        };
        if take_baseline {
            self.baseline_redo_lsn(ctx);
        }
        self.run_steps(steps, ctx);
        if !self.process_dead {
            self.arm_watch(ctx);
        }
    }

    fn on_success(&self, rec: &mut TargetRecord) -> Vec<Step> {
        let mut steps = vec![];
        rec.failures = 0;
        rec.first_failure = None;
        rec.quiet_until = None;
        match rec.phase {
            Phase::Healthy => {}
            Phase::Suspect => {
                info!(self.log, "transient failure cleared; no action taken"; "event" => "transient_cleared")
            }
            _ => {
                if let Some(inc) = rec.incident.take() {
                    let downtime = inc.first_failure_instant.elapsed().as_secs_f64();
                    let ttr = inc.declared_instant.elapsed().as_secs_f64();
                    info!(self.log, "target recovered"; "event" => "target_recovered", "incident" => &inc.id,
                        "downtime_s" => format!("{downtime:.3}"), "ttr_s" => format!("{ttr:.3}"), "restarted" => inc.heal_started.is_some());
                    crate::metrics::global().observe(
                        "sentinel_incident_recovery_seconds",
                        &[("target", self.target.name.as_str())],
                        ttr,
                    );
                    if inc.heal_started.is_some() {
                        self.peers.healer.do_send(super::messages::HealDone {
                            incident_id: inc.id.clone(),
                        });
                    }
                    self.save(&inc, Phase::Healthy, Some(Some((downtime, ttr))), "recovered",
                        &format!("probe passes; down {downtime:.3} s, recovered {ttr:.3} s after detection"));
                    if inc.alerted {
                        let summary = match inc.heal_started {
                            Some(_) => format!("Probe passes again after the restart; down {downtime:.1} s, recovered {ttr:.1} s after detection."),
                            None => format!("Probe passes again (no restart by sentinel-remedy); down {downtime:.1} s."),
                        };
                        let mut n = self.notice(NoticeKind::Recovery, &inc, summary);
                        n.downtime_seconds = Some(downtime);
                        n.time_to_recovery_seconds = Some(ttr);
                        steps.push(Step::Notify(n));
                    }
                }
            }
        }
        rec.phase = Phase::Healthy;
        rec.snapshot = None;
        steps
    }

    fn on_failure(&self, rec: &mut TargetRecord, f: ProbeFailure) -> Vec<Step> {
        let now = Instant::now();
        if rec.first_failure.is_none() {
            rec.first_failure = Some((Utc::now(), now));
        }
        rec.failures += 1;
        let threshold = self.target.probe.failure_threshold;
        match rec.phase {
            Phase::Healthy | Phase::Suspect => {
                warn!(self.log, "probe failed"; "event" => "probe_failed", "class" => f.class.label(),
                    "sqlstate" => f.sqlstate.as_deref().unwrap_or(""), "detail" => &f.detail,
                    "failures" => rec.failures, "threshold" => threshold, "process_dead" => self.process_dead);
                if (self.process_dead || rec.failures >= threshold) && Self::in_maintenance(rec) {
                    if !rec.maintenance_noted {
                        rec.maintenance_noted = true;
                        warn!(self.log, "target failing during maintenance: no archive, restart or alert"; "event" => "maintenance_suppressed",
                            "class" => f.class.label());
                    }
                    rec.phase = Phase::Suspect;
                    return vec![];
                }
                if self.process_dead || rec.failures >= threshold {
                    let hard = self.process_dead;
                    let f = match (&self.container_event, hard) {
                        (Some((ev, class)), true) => ProbeFailure {
                            class: class.unwrap_or(f.class),
                            detail: format!("{ev}; {}", f.detail),
                            ..f
                        },
                        (None, true) if f.class == FailureClass::ConnectionRefused => {
                            ProbeFailure::new(
                                FailureClass::ProcessExited,
                                format!("postmaster exited; {}", f.detail),
                            )
                        }
                        _ => f,
                    };
                    return self.declare(rec, f, hard);
                }
                let first = rec.phase == Phase::Healthy;
                rec.phase = Phase::Suspect;
                if first {
                    vec![Step::Snapshot]
                } else {
                    vec![]
                }
            }
            Phase::Held => {
                debug!(self.log, "probe failed while held"; "class" => f.class.label());
                // Backoff and fleet-guard holds decide again on their own timers.
                if rec.budget_alerted && rec.budget_allows(&self.target.budget, now) {
                    info!(self.log, "restart budget allows a restart again"; "event" => "budget_available");
                    return self.start_heal(rec);
                }
                vec![]
            }
            Phase::Escalated => {
                if rec.quiet_until.is_some_and(|q| now >= q) {
                    let closed = rec.incident.take();
                    if let Some(inc) = &closed {
                        self.save(
                            inc,
                            Phase::Escalated,
                            Some(None),
                            "closed_unrecovered",
                            "escalated and the quiet window passed",
                        );
                    }
                    let id = closed.map(|i| i.id).unwrap_or_default();
                    warn!(self.log, "escalated incident closed unrecovered; the next failure opens a new incident";
                        "event" => "incident_closed_unrecovered", "incident" => id);
                    rec.phase = Phase::Suspect;
                    rec.failures = 0;
                    rec.quiet_until = None;
                }
                vec![]
            }
            _ => {
                debug!(self.log, "probe failed during incident"; "class" => f.class.label(), "phase" => rec.phase.label());
                vec![]
            }
        }
    }

    fn declare(&self, rec: &mut TargetRecord, f: ProbeFailure, hard: bool) -> Vec<Step> {
        let first = rec.first_failure.unwrap_or((Utc::now(), Instant::now()));
        let inc = Incident::new(&self.target.name, f, hard, first);
        error!(self.log, "target declared failing"; "event" => "incident_declared", "incident" => &inc.id,
            "class" => inc.failure.class.label(), "hard" => hard, "failures" => rec.failures,
            "detect_ms" => inc.first_failure_instant.elapsed().as_millis() as u64);
        let facts = self.facts(&inc);
        crate::metrics::global().inc(
            "sentinel_incidents_total",
            &[
                ("target", self.target.name.as_str()),
                ("class", inc.failure.class.label()),
            ],
        );
        let detail = format!("{}: {}", inc.failure.class.label(), inc.failure.detail);
        rec.incident = Some(inc);
        rec.phase = Phase::Archiving;
        self.persist(rec, "declared", &detail);
        vec![Step::Archive(facts)]
    }

    /// Archive finished (or failed): decide about the restart.
    fn on_archived(&mut self, id: &str, outcome: Result<String, String>, ctx: &mut Context<Self>) {
        let steps = {
            let mut rec = self.record.lock();
            let phase = rec.phase;
            match rec.incident.as_mut().filter(|i| i.id == id) {
                Some(inc) => {
                    let detail = match &outcome {
                        Ok(l) => l.clone(),
                        Err(e) => format!("archive failed: {e}"),
                    };
                    inc.archive = Some(outcome);
                    if phase == Phase::Archiving {
                        self.persist(&rec, "archived", &detail);
                        crate::faults::maybe_kill(&self.target.name, "archived");
                        self.start_heal(&mut rec)
                    } else {
                        vec![]
                    }
                }
                None => {
                    info!(self.log, "target recovered before the restart; none issued"; "event" => "recovered_before_heal", "incident" => id);
                    vec![]
                }
            }
        };
        crate::faults::maybe_panic(&self.target.name, "archived");
        self.run_steps(steps, ctx);
    }

    /// Restart if the failure class calls for it and the budget allows; else alert (with the
    /// diagnosis) or hold and escalate once for this incident.
    fn start_heal(&self, rec: &mut TargetRecord) -> Vec<Step> {
        let now = Instant::now();
        let class = rec.incident.as_ref().map(|i| i.failure.class);
        if let Some(manager) = rec.managed_by.clone() {
            // One manager at a time: restarting under Patroni would race its own failover.
            rec.phase = Phase::Unhealed;
            let Some(inc) = rec.incident.as_mut() else {
                return vec![];
            };
            inc.alerted = true;
            warn!(self.log, "server is managed by another tool: no restart"; "event" => "manager_refused", "incident" => &inc.id, "manager" => &manager);
            let mut n = self.notice(NoticeKind::Failure, inc, format!(
                "The server is managed by {manager} (seen in pg_stat_activity): sentinel-remedy archived the evidence and leaves the restart or failover to it."));
            n.failure = Some(inc.failure.clone());
            let step = Step::Notify(inc.queue_notice(n));
            self.persist(rec, "alerted", &format!("managed by {manager}: no restart"));
            return vec![step];
        }
        if let Some(class) =
            class.filter(|c| self.target.policy.action(*c) == crate::policy::Action::Alert)
        {
            rec.phase = Phase::Unhealed;
            let Some(inc) = rec.incident.as_mut() else {
                return vec![];
            };
            inc.alerted = true;
            let diagnosis = crate::policy::diagnosis(class);
            warn!(self.log, "failure class calls for an alert, not a restart"; "event" => "alert_only", "incident" => &inc.id,
                "class" => class.label(), "sqlstate" => inc.failure.sqlstate.as_deref().unwrap_or(""));
            let mut n = self.notice(
                NoticeKind::Failure,
                inc,
                format!("{diagnosis} Evidence archived; sentinel-remedy will not restart it."),
            );
            n.failure = Some(inc.failure.clone());
            let step = Step::Notify(inc.queue_notice(n));
            self.persist(
                rec,
                "alerted",
                &format!("{}: no restart by policy", class.label()),
            );
            return vec![step];
        }
        if self.target.heal.is_none() {
            rec.phase = Phase::Unhealed;
            let Some(inc) = rec.incident.as_mut() else {
                return vec![];
            };
            inc.alerted = true;
            let mut n = self.notice(
                NoticeKind::Escalation,
                inc,
                "The target failed and has no heal action configured: a person must restart it."
                    .into(),
            );
            n.reason = Some(EscalationReason::NoHealAction);
            n.failure = Some(inc.failure.clone());
            let step = Step::Notify(inc.queue_notice(n));
            crate::metrics::global().inc(
                "sentinel_escalations_total",
                &[("target", self.target.name.as_str())],
            );
            self.persist(rec, "escalated", "no heal action configured");
            return vec![step];
        }
        if let Some((failing, total)) = self.peers.fleet.tripped() {
            let mut steps = self.hold(rec, Duration::from_secs(2), "fleet_guard", format!(
                "Restart held by the fleet guard: {failing} of {total} targets are failing at once, which points at the network or this host. Restarts resume when fewer fail."));
            if self.peers.fleet.take_alert() {
                error!(self.log, "fleet guard tripped: restarts held fleet-wide"; "event" => "fleet_guard_tripped", "failing" => failing, "targets" => total);
                steps.push(Step::Notify(fleet_notice(failing, total)));
            }
            return steps;
        }
        if !rec.budget_allows(&self.target.budget, now) {
            let first_hold = !rec.budget_alerted;
            rec.budget_alerted = true;
            rec.phase = Phase::Held;
            let budget = self.target.budget.clone();
            let Some(inc) = rec.incident.as_mut() else {
                return vec![];
            };
            if first_hold && inc.escalated_at.is_none() {
                inc.alerted = true;
                error!(self.log, "restart budget exhausted; not restarting"; "event" => "budget_exhausted", "incident" => &inc.id,
                    "max_restarts" => budget.max_restarts, "window" => crate::config::duration::format_duration(budget.window));
                let mut n = self.notice(NoticeKind::Escalation, inc, format!(
                    "Manual intervention needed: {} restarts in {} already used; sentinel-remedy will not restart it again until the window allows.",
                    budget.max_restarts, crate::config::duration::format_duration(budget.window)));
                n.reason = Some(EscalationReason::RestartBudgetExhausted);
                n.failure = Some(inc.failure.clone());
                let step = Step::Notify(inc.queue_notice(n));
                crate::metrics::global().inc(
                    "sentinel_escalations_total",
                    &[("target", self.target.name.as_str())],
                );
                self.persist(rec, "held", "restart budget exhausted");
                return vec![step];
            }
            return vec![];
        }
        if rec.backoff_step > 0 {
            if let Some(last) = rec.restarts.back().copied() {
                let ready = last + self.target.budget.backoff_after(rec.backoff_step);
                if now < ready {
                    let wait = ready - now;
                    return self.hold(rec, wait, "restart_backoff", format!(
                        "Restarted {} time(s) recently: the next restart waits {:.0} s (backoff doubles up to {}).",
                        rec.backoff_step, wait.as_secs_f64(), crate::config::duration::format_duration(self.target.budget.backoff_max)));
                }
            }
        }
        if let Some(inc) = rec.incident.as_ref() {
            let (id, started, declared) =
                (inc.id.clone(), inc.first_failure_at, inc.declared_instant);
            match self.peers.leases.acquire(
                &self.server_key(),
                &self.peers.lease_owner,
                self.peers.lease_ttl,
                &id,
                started,
                self.target.recovery_timeout,
            ) {
                Ok(()) => {}
                // Fail closed, never silent: a lease store still failing at recovery_timeout
                // goes to a person, once, like any restart that could not happen.
                Err(LeaseRefusal::Store(e))
                    if declared.elapsed() >= self.target.recovery_timeout =>
                {
                    return self.escalate_as(
                        rec,
                        &format!("No restart was made: the restart lease store failed for recovery_timeout ({e}). Fix lease.dir (see /healthz) or restart the server by hand."),
                        EscalationReason::HealRefused,
                    );
                }
                Err(refusal) => {
                    let why = match refusal {
                        LeaseRefusal::Held { .. } => "lease_held",
                        LeaseRefusal::AlreadyRestarted { .. } => "lease_already_restarted",
                        // Fail closed: without the lease there is no restart.
                        LeaseRefusal::Store(_) => "lease_unavailable",
                        // Someone holds flock on the lease file: fail closed, retried below.
                        LeaseRefusal::Busy(_) => "lease_busy",
                    };
                    return self.hold(
                        rec,
                        Duration::from_secs(2),
                        why,
                        format!("Restart not made by this daemon: {refusal}."),
                    );
                }
            }
        }
        rec.restarts.push_back(now);
        rec.backoff_step += 1;
        rec.budget_alerted = false;
        rec.phase = Phase::Healing;
        let Some(inc) = rec.incident.as_mut() else {
            return vec![];
        };
        inc.heal_started = Some(now);
        inc.alerted = true;
        info!(self.log, "heal issued"; "event" => "heal_issued", "incident" => &inc.id,
            "restarts_in_window" => rec.restarts.len(), "since_detection_ms" => inc.declared_instant.elapsed().as_millis() as u64);
        let restart = match &self.restart_policy {
            Some(p) => format!("its restart policy ({p}) restarts the container, so sentinel-remedy waits for that instead of restarting it"),
            None => "restart issued".to_string(),
        };
        let summary = format!(
            "{}. Forensics archived; {restart}{}.",
            if inc.hard && self.target.container().is_some() {
                "Docker reported the container down"
            } else if inc.hard {
                "The postmaster died"
            } else {
                "Probes failed past the threshold"
            },
            if inc.archive.as_ref().is_some_and(|a| a.is_err()) {
                " (the archive FAILED, see below)"
            } else {
                ""
            }
        );
        let mut n = self.notice(NoticeKind::Failure, inc, summary);
        n.failure = Some(inc.failure.clone());
        let steps = vec![
            Step::Heal(inc.id.clone()),
            Step::Notify(inc.queue_notice(n)),
            Step::RecoveryTimer(inc.id.clone(), self.target.recovery_timeout),
        ];
        crate::metrics::global().inc(
            "sentinel_restarts_total",
            &[("target", self.target.name.as_str())],
        );
        // Written before the heal runs: a restarted daemon must not restart again for this incident.
        if let Some(store) = &self.peers.store {
            if let Err(e) = store.restart(&self.target.name) {
                error!(self.log, "restart not written to the store"; "event" => "store_failed", "error" => %e);
            }
        }
        self.persist(rec, "heal_issued", "restart issued");
        crate::faults::maybe_kill(&self.target.name, "heal_issued");
        steps
    }

    /// Holds the restart for `wait` (backoff, fleet guard, lease): the failure alert says why,
    /// and a timer decides again.
    fn hold(
        &self,
        rec: &mut TargetRecord,
        wait: Duration,
        why: &'static str,
        summary: String,
    ) -> Vec<Step> {
        let entering = rec.phase != Phase::Held;
        rec.phase = Phase::Held;
        let Some(inc) = rec.incident.as_mut() else {
            return vec![];
        };
        let id = inc.id.clone();
        let mut steps = vec![Step::RetryHeal(
            id.clone(),
            wait.max(Duration::from_millis(100)),
        )];
        if entering {
            warn!(self.log, "restart held"; "event" => why, "incident" => &id, "wait_s" => wait.as_secs_f64(), "why" => &summary);
            inc.alerted = true;
            let mut n = self.notice(NoticeKind::Failure, inc, summary);
            n.failure = Some(inc.failure.clone());
            if let Some(o) = n.outage.as_mut() {
                // Refused by the lease: the daemon that acted announces this outage.
                o.may_lead = !matches!(why, "lease_held" | "lease_already_restarted");
            }
            steps.push(Step::Notify(inc.queue_notice(n)));
            self.persist(rec, "held", why);
        }
        steps
    }

    /// The lease key: the server, `host:port`, whatever the target is called.
    fn server_key(&self) -> String {
        let ep = self.target.dsn.endpoint();
        ep.split('/').next().unwrap_or(&ep).to_string()
    }

    fn on_healed(&mut self, id: &str, report: HealReport, ctx: &mut Context<Self>) {
        self.peers
            .leases
            .release(&self.server_key(), &self.peers.lease_owner);
        self.peers.archiver.do_send(AttachHeal {
            incident_id: id.to_string(),
            report: report.clone(),
        });
        let steps = {
            let mut rec = self.record.lock();
            // The heal's own further starts count like restarts (the first one already does).
            let now = Instant::now();
            for _ in 1..report.starts {
                rec.restarts.push_back(now);
                rec.backoff_step += 1;
                // Kept across a daemon restart, like the first.
                if let Some(store) = &self.peers.store {
                    if let Err(e) = store.restart(&self.target.name) {
                        error!(self.log, "restart not written to the store"; "event" => "store_failed", "error" => %e);
                    }
                }
            }
            let healing =
                rec.phase == Phase::Healing && rec.incident.as_ref().is_some_and(|i| i.id == id);
            if !healing {
                // Already recovered (a probe passed before the healer reported): the timeline
                // still gets the heal's result.
                if let Some(store) = &self.peers.store {
                    let kind = if report.success {
                        "heal_succeeded"
                    } else {
                        "heal_failed"
                    };
                    let _ = store.event(id, kind, &format!("{} attempt(s)", report.attempts.len()));
                }
                vec![]
            } else if report.success {
                if let Some(inc) = rec.incident.as_mut() {
                    inc.heal_succeeded = Some(true);
                }
                rec.phase = Phase::Recovering;
                self.persist(
                    &rec,
                    "heal_succeeded",
                    &format!("{} attempt(s)", report.attempts.len()),
                );
                self.process_dead = false;
                vec![Step::ProbeSoon]
            } else {
                if let Some(inc) = rec.incident.as_mut() {
                    inc.heal_succeeded = Some(false);
                    // E.g. a missing container: its own kind of incident, nothing to restart.
                    if let Some(class) = report.failure.as_ref().and_then(|f| f.class) {
                        inc.failure.class = class;
                    }
                }
                self.persist(
                    &rec,
                    "heal_failed",
                    &format!("{} attempt(s)", report.attempts.len()),
                );
                match &report.failure {
                    Some(f) if f.kind == "restart_budget_exhausted" => self.escalate_as(
                        &mut rec,
                        &format!("{}.", f.detail),
                        EscalationReason::RestartBudgetExhausted,
                    ),
                    Some(f) => self.escalate_as(
                        &mut rec,
                        &format!("The restart cannot work: {}", f.detail),
                        EscalationReason::HealRefused,
                    ),
                    None => self.escalate(
                        &mut rec,
                        "The heal action kept failing until recovery_timeout.",
                    ),
                }
            }
        };
        self.run_steps(steps, ctx);
    }

    /// Notes the redo LSN the server log shows when a restarted server starts answering
    /// 57P03, so the deadline can tell whether recovery moved since.
    fn baseline_redo_lsn(&mut self, ctx: &mut Context<Self>) {
        let (target, docker) = (self.target.clone(), self.peers.docker.clone());
        let fut = async move { crate::probe::progress::redo_lsn(&target, &docker).await };
        ctx.spawn(fut.into_actor(self).map(|lsn, act, _| {
            if act.redo_lsn.is_none() {
                act.redo_lsn = lsn.map(|(n, _)| n);
            }
        }));
    }

    fn on_recovery_deadline(&mut self, id: &str, ctx: &mut Context<Self>) {
        let open = {
            let rec = self.record.lock();
            matches!(rec.phase, Phase::Healing | Phase::Recovering)
                && rec.incident.as_ref().is_some_and(|i| i.id == id)
        };
        if !open {
            return;
        }
        if !self.recovering {
            let steps = self.escalate(
                &mut self.record.lock(),
                "No passing probe within recovery_timeout after the restart.",
            );
            return self.run_steps(steps, ctx);
        }
        // In recovery (57P03): wait longer while redo advances, escalate once it stands still.
        let (target, docker) = (self.target.clone(), self.peers.docker.clone());
        let id = id.to_string();
        let fut = async move { crate::probe::progress::redo_lsn(&target, &docker).await };
        ctx.spawn(fut.into_actor(self).map(move |lsn, act, ctx| {
            let steps = match lsn {
                Some((n, text)) if act.redo_lsn.is_none_or(|before| n > before) => {
                    act.redo_lsn = Some(n);
                    info!(act.log, "still in crash recovery, and redo advances: waiting another recovery_timeout";
                        "event" => "recovery_progress", "incident" => &id, "lsn" => text);
                    vec![Step::RecoveryTimer(id, act.target.recovery_timeout)]
                }
                _ => act.escalate(
                    &mut act.record.lock(),
                    "The server is still in recovery (57P03) past recovery_timeout and its log shows no redo progress (PostgreSQL 15+ logs it every log_startup_progress_interval). It is not restarted while it recovers.",
                ),
            };
            act.run_steps(steps, ctx);
        }));
    }

    fn escalate(&self, rec: &mut TargetRecord, why: &str) -> Vec<Step> {
        self.escalate_as(rec, why, EscalationReason::RecoveryTimeout)
    }

    fn escalate_as(
        &self,
        rec: &mut TargetRecord,
        why: &str,
        reason: EscalationReason,
    ) -> Vec<Step> {
        let window = self.target.budget.window;
        let Some(inc) = rec.incident.as_mut() else {
            return vec![];
        };
        if inc.escalated_at.is_some() {
            return vec![];
        }
        inc.escalated_at = Some(Instant::now());
        inc.alerted = true;
        error!(self.log, "not recovered; escalating"; "event" => "escalation", "incident" => &inc.id, "why" => why);
        let mut n = self.notice(
            NoticeKind::Escalation,
            inc,
            format!("Manual intervention needed: {why} No further restart for this incident."),
        );
        n.reason = Some(reason);
        n.failure = Some(inc.failure.clone());
        rec.phase = Phase::Escalated;
        let n = inc.queue_notice(n);
        rec.quiet_until = Some(Instant::now() + window);
        crate::metrics::global().inc(
            "sentinel_escalations_total",
            &[("target", self.target.name.as_str())],
        );
        self.persist(rec, "escalated", why);
        vec![Step::Notify(n)]
    }

    fn run_steps(&mut self, steps: Vec<Step>, ctx: &mut Context<Self>) {
        for step in steps {
            match step {
                Step::Snapshot => {
                    let target = self.target.clone();
                    let work = async move { crate::probe::snapshot::capture(&target).await };
                    ctx.spawn(work.into_actor(self).map(|snap, act, _| {
                        let mut rec = act.record.lock();
                        if rec.phase != Phase::Healthy && rec.snapshot.is_none() {
                            debug!(act.log, "SQL snapshot captured"; "answered" => snap.answered);
                            rec.snapshot = Some(snap);
                        }
                    }));
                }
                Step::Archive(facts) => {
                    let id = facts.incident_id.clone();
                    let snapshot = self.record.lock().snapshot.take().or_else(|| {
                        facts.hard_failure.then(|| {
                            crate::probe::snapshot::SqlSnapshot::not_taken(
                                "the postmaster had exited: no server left to ask",
                            )
                        })
                    });
                    let req = self.peers.archiver.send(Archive {
                        incident: facts,
                        target: self.target.clone(),
                        snapshot,
                    });
                    ctx.spawn(req.into_actor(self).map(move |res, act, ctx| {
                        let outcome = match res {
                            Ok(Ok(report)) => Ok(report.location),
                            Ok(Err(e)) => Err(e),
                            Err(e) => Err(format!("archiver unavailable: {e}")),
                        };
                        act.on_archived(&id, outcome, ctx);
                    }));
                }
                Step::Heal(id) => {
                    let (failed_at, max_starts) = {
                        let mut rec = self.record.lock();
                        rec.budget_allows(&self.target.budget, Instant::now());
                        // This heal's first start is already in the window.
                        let left = self
                            .target
                            .budget
                            .max_restarts
                            .saturating_sub(rec.restarts.len() as u32);
                        let at = rec.incident.as_ref().map(|i| i.first_failure_at);
                        let at = at.unwrap_or_else(Utc::now);
                        (rec.last_ok_at.filter(|ok| *ok < at).unwrap_or(at), left + 1)
                    };
                    let req = self.peers.healer.send(Heal {
                        incident_id: id.clone(),
                        target: self.target.clone(),
                        failed_at,
                        max_starts,
                    });
                    crate::faults::maybe_panic(&self.target.name, "heal_issued");
                    ctx.spawn(req.into_actor(self).map(move |res, act, ctx| match res {
                        Ok(report) => act.on_healed(&id, report, ctx),
                        Err(e) => {
                            error!(act.log, "healer unavailable"; "incident" => &id, "error" => %e)
                        }
                    }));
                }
                Step::Notify(n) => self.peers.notifier.do_send(Notify(n)),
                Step::RetryHeal(id, after) => {
                    ctx.run_later(after, move |act, ctx| {
                        let steps = {
                            let mut rec = act.record.lock();
                            let same = rec.phase == Phase::Held
                                && rec.incident.as_ref().is_some_and(|i| i.id == id);
                            if same {
                                act.start_heal(&mut rec)
                            } else {
                                vec![]
                            }
                        };
                        act.run_steps(steps, ctx);
                    });
                }
                Step::RecoveryTimer(id, after) => {
                    ctx.run_later(after, move |act, ctx| act.on_recovery_deadline(&id, ctx));
                }
                Step::ProbeSoon => self.schedule_probe(ctx, Duration::ZERO),
            }
        }
    }

    /// Re-issues the work of an incident that was open when the previous Monitor died. The
    /// shared actors answer repeats from their first result, so nothing happens twice.
    fn resume(&mut self, ctx: &mut Context<Self>) {
        let steps = {
            let rec = self.record.lock();
            let mut s = match (&rec.incident, rec.phase) {
                (Some(inc), Phase::Archiving) => vec![Step::Archive(self.facts(inc))],
                (Some(inc), Phase::Healing | Phase::Recovering) => {
                    let left = inc
                        .heal_started
                        .map(|t| self.target.recovery_timeout.saturating_sub(t.elapsed()))
                        .unwrap_or_default();
                    let mut s = vec![Step::RecoveryTimer(inc.id.clone(), left)];
                    if rec.phase == Phase::Healing {
                        s.push(Step::Heal(inc.id.clone()));
                    }
                    s
                }
                _ => vec![],
            };
            // Notices issued before the previous Monitor died may not have been sent.
            s.extend(
                rec.incident
                    .iter()
                    .flat_map(|i| i.notices.iter().cloned())
                    .map(Step::Notify),
            );
            s
        };
        if !steps.is_empty() {
            warn!(self.log, "resuming the open incident"; "event" => "incident_resumed", "phase" => self.record.lock().phase.label());
        }
        self.run_steps(steps, ctx);
    }

    fn arm_watch(&mut self, ctx: &mut Context<Self>) {
        if self.watch.is_some() {
            return;
        }
        let Some(path) = &self.target.pid_file else {
            return;
        };
        // The pid file is the postgres user's (a FIFO, a link to /dev/zero): read off this thread.
        let (path, log) = (path.clone(), self.log.clone());
        let fut = async move {
            let watch = match PidWatch::from_pid_file(&path).await {
                Ok(w) => w,
                Err(e) => {
                    debug!(log, "postmaster not watchable yet"; "pid_file" => %path.display(), "error" => %e);
                    return Err(e);
                }
            };
            let pid = watch.pid();
            debug!(log, "watching postmaster"; "pid" => pid);
            let end = watch.exited_or_stopped(STOPPED_CHECK_EVERY).await;
            Ok((pid, end))
        };
        self.watch = Some(ctx.spawn(fut.into_actor(self).map(|pid, act, ctx| {
            act.watch = None;
            let (pid, end) = match pid {
                Ok(ended) => ended,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    if !std::mem::replace(&mut act.said_pid_file, true) {
                        warn!(act.log, "the pid file is not a regular file of its own: not read, so a postmaster death is seen by the probes only";
                            "event" => "pid_file_refused", "error" => %e, "fix" => "point process.pid_file at the real postmaster.pid");
                    }
                    return;
                }
                Err(_) => return,
            };
            act.said_pid_file = false;
            act.process_dead = true;
            if end == WatchEnd::Stopped {
                // Hung, not dead: one probe (it times out) confirms, as for a paused container,
                // and the heal stops it before the start.
                warn!(act.log, "postmaster stopped (SIGSTOP): it accepts no new client; confirming with a probe";
                    "event" => "process_stopped", "pid" => pid);
                act.container_event = Some((format!("postmaster {pid} is stopped (SIGSTOP)"), None));
                act.schedule_probe(ctx, Duration::ZERO);
                return;
            }
            // If we adopted it (we started it), reap it now: its zombie would block the restart.
            crate::reaper::sweep();
            warn!(act.log, "postmaster exited"; "event" => "process_exited", "pid" => pid);
            act.schedule_probe(ctx, Duration::ZERO);
        })));
    }

    /// Reads the container's state: says at once when it does not exist, and notes a restart
    /// policy (which the heal then waits for instead of racing it).
    fn inspect_container(&mut self, ctx: &mut Context<Self>) {
        let Some(c) = self.target.container().cloned() else {
            return;
        };
        let docker = self.peers.docker.clone();
        let fut = async move {
            docker
                .call(
                    |api, ep| async move { crate::docker::container::inspect(&api, &ep, &c).await },
                )
                .await
        };
        ctx.spawn(fut.into_actor(self).map(|r, act, _| match r {
            Ok(state) => {
                act.said_missing = false;
                let acts = state.restarts_after_crash();
                if acts && act.restart_policy.as_deref() != Some(state.restart_policy.as_str()) {
                    warn!(act.log, "the container has a restart policy: after a crash sentinel-remedy waits for it instead of restarting the container itself";
                        "event" => "restart_policy_found", "container" => &state.name, "policy" => &state.restart_policy);
                }
                act.restart_policy = acts.then_some(state.restart_policy);
            }
            Err(e @ crate::docker::DockerError::NotFound { .. }) => {
                if !std::mem::replace(&mut act.said_missing, true) {
                    error!(act.log, "the target's container does not exist"; "event" => "container_missing", "error" => %e);
                }
            }
            Err(e) => debug!(act.log, "cannot inspect the container"; "kind" => e.kind(), "error" => %e),
        }));
    }

    fn facts(&self, inc: &Incident) -> IncidentFacts {
        IncidentFacts {
            incident_id: inc.id.clone(),
            target: inc.target.clone(),
            stamp: inc.stamp.clone(),
            endpoint: self.target.dsn.endpoint(),
            failure: inc.failure.clone(),
            hard_failure: inc.hard,
            first_failure_at: inc.first_failure_at,
            declared_at: inc.declared_at,
            action: self.target.policy.action(inc.failure.class).label(),
            diagnosis: crate::policy::diagnosis(inc.failure.class),
        }
    }

    fn notice(&self, kind: NoticeKind, inc: &Incident, summary: String) -> Notice {
        Notice {
            kind,
            target: self.target.name.clone(),
            endpoint: self.target.dsn.endpoint(),
            incident_id: inc.id.clone(),
            timestamp: Utc::now(),
            failure: None,
            archive: inc.archive_text(),
            reason: None,
            downtime_seconds: None,
            time_to_recovery_seconds: None,
            summary,
            outage: Some(crate::notify::OutageRef {
                server: self.server_key(),
                started_at: inc.first_failure_at,
                may_lead: true,
                id: None,
            }),
        }
    }
}

impl Actor for Monitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.retired {
            ctx.stop();
            return;
        }
        info!(self.log, "monitoring"; "event" => "monitor_started", "endpoint" => self.target.dsn.endpoint(),
            "interval" => crate::config::duration::format_duration(self.target.probe.interval),
            "threshold" => self.target.probe.failure_threshold, "pid_watch" => self.target.pid_file.is_some(),
            "heal" => self.target.heal.is_some());
        self.resume(ctx);
        self.arm_watch(ctx);
        self.inspect_container(ctx);
        self.schedule_probe(ctx, Duration::ZERO);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        info!(self.log, "monitor stopped"; "event" => "monitor_stopped");
    }
}

impl actix::Supervised for Monitor {
    /// Stopped but not retired: start over from the shared record.
    fn restarting(&mut self, _: &mut Context<Self>) {
        warn!(self.log, "monitor restarting"; "event" => "monitor_restarting");
        self.prober = Some(Prober::new(&self.target));
        self.next_probe = None;
        self.watch = None;
        self.probe_again = false;
    }
}

impl Handler<Retire> for Monitor {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.retired = true;
        ctx.stop();
    }
}

impl Handler<ContainerEvent> for Monitor {
    type Result = ();
    /// Docker says the container died, was paused or was removed: one probe confirms it and
    /// the incident is declared without waiting for the threshold. During an incident (our own
    /// restart emits the same events) it changes nothing.
    fn handle(&mut self, ev: ContainerEvent, ctx: &mut Context<Self>) {
        if self.retired {
            return;
        }
        let phase = self.record.lock().phase;
        if !matches!(phase, Phase::Healthy | Phase::Suspect) {
            debug!(self.log, "container event during an incident"; "action" => &ev.action, "phase" => phase.label());
            return;
        }
        warn!(self.log, "Docker reports the container down; confirming with a probe"; "event" => "container_event",
            "action" => &ev.action, "container" => &ev.name, "exit_code" => ev.exit_code.map(|c| c.to_string()).unwrap_or_default());
        self.process_dead = true;
        self.container_event = Some((ev.describe(), ev.failure_class()));
        self.schedule_probe(ctx, Duration::ZERO);
        // The policy may have changed since start-up; known again before the archive is done.
        self.inspect_container(ctx);
    }
}

/// The one fleet-wide alert of a fleet-guard trip (its own incident id, not a target's).
fn fleet_notice(failing: usize, total: usize) -> Notice {
    let now = Utc::now();
    Notice {
        kind: NoticeKind::Escalation,
        target: "fleet".into(),
        endpoint: format!("{failing} of {total} targets"),
        incident_id: format!("{}-fleet", crate::incident::stamp(now)),
        timestamp: now,
        failure: None,
        archive: None,
        reason: Some(EscalationReason::FleetGuard),
        downtime_seconds: None,
        time_to_recovery_seconds: None,
        outage: None,
        summary: format!("{failing} of {total} targets are failing at once. That points at the network or the daemon's own host, so every restart is held until fewer fail. Check connectivity first."),
    }
}

//! Carrying out the incident machine's actions: messages to the shared actors, timers,
//! leases, store writes, logs and metrics. Each reply comes back to the machine as an
//! observation. Store writes are queued (never awaited on this thread); a checkpoint waits for
//! them off the thread before the actions after it run.

use super::Monitor;
use crate::actors::messages::{Archive, AttachHeal, Heal, HealDone, Notify};
use crate::incident::actions::{Level, LogLine, Metric, Value};
use crate::incident::machine::server_key;
use crate::incident::{Action, Observation};
use crate::lease::LeaseRequest;
use crate::notify::{EscalationReason, Notice, NoticeKind};
use actix::prelude::*;
use chrono::Utc;
use slog::{debug, error, info, warn};
use std::time::Duration;

/// Longest a checkpoint (the restart) waits for the store writes before it: past this the
/// restart goes on, as it did when a write failed, and the log says so.
const STORE_WAIT: Duration = Duration::from_secs(10);

impl Monitor {
    /// Carries out `actions` in order.
    pub(super) fn perform(&mut self, actions: Vec<Action>, ctx: &mut Context<Self>) {
        let mut rest = actions.into_iter();
        while let Some(action) = rest.next() {
            if let Action::Checkpoint(point) = action {
                if !(self.unsynced.is_empty() && self.unsynced_cluster.is_empty()) {
                    // The rest waits for the writes, off this thread.
                    return self.after_writes(point, rest.collect(), ctx);
                }
                self.checkpoint(point);
                continue;
            }
            self.perform_one(action, ctx);
        }
    }

    fn after_writes(&mut self, point: &'static str, rest: Vec<Action>, ctx: &mut Context<Self>) {
        let writes = std::mem::take(&mut self.unsynced);
        let kept = std::mem::take(&mut self.unsynced_cluster);
        let path = self.peers.store.as_ref().map(|s| s.path().to_string());
        let path = path.unwrap_or_default();
        let fut = async move {
            let mut errors = vec![];
            for w in writes {
                if let Err(e) = w.wait(STORE_WAIT, &path).await {
                    errors.push(e.to_string());
                }
            }
            for k in kept {
                // Not kept in etcd: a daemon taking over would not know this step.
                match tokio::time::timeout(STORE_WAIT, k).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(e))) => errors.push(format!("etcd: {e}")),
                    _ => errors.push("etcd: the state write did not answer".into()),
                }
            }
            errors
        };
        ctx.spawn(fut.into_actor(self).map(move |errors, act, ctx| {
            if let Some(e) = errors.first() {
                error!(act.log, "state not confirmed by the store before going on (a restarted daemon may not resume it)";
                    "event" => "store_failed", "at" => point, "error" => e);
            }
            act.checkpoint(point);
            let rest = act.still_due(rest);
            act.perform(rest, ctx);
        }));
    }

    /// Drops the restart and its failure alert when the incident closed while its writes
    /// were awaited (a probe passed meanwhile): a recovered server is never restarted. An
    /// alert with no restart beside it (a backend crash: the server is back at once) is
    /// still sent: its recovery notice went out, and a recovery with no failure before it
    /// would be the only word of an outage that dropped every connection.
    fn still_due(&self, rest: Vec<Action>) -> Vec<Action> {
        let rec = self.record.lock();
        let open = rec.incident.as_ref().map(|i| i.id.clone());
        let healing = rec.phase == crate::incident::Phase::Healing;
        drop(rec);
        let restart_dropped = rest.iter().any(|a| {
            matches!(a, Action::Heal { id, .. } if !(healing && open.as_deref() == Some(id.as_str())))
        });
        rest.into_iter()
            .filter_map(|a| match &a {
                Action::Heal { id, .. } if !(healing && open.as_deref() == Some(id.as_str())) => {
                    info!(self.log, "target recovered before the restart; none issued"; "event" => "recovered_before_heal", "incident" => id);
                    Some(Action::ReleaseLease)
                }
                Action::Notify(n)
                    if restart_dropped
                        && n.kind == NoticeKind::Failure
                        && open.as_deref() != Some(n.incident_id.as_str()) =>
                {
                    None
                }
                _ => Some(a),
            })
            .collect()
    }

    /// Where the test suite may crash the daemon or this Monitor.
    fn checkpoint(&self, point: &'static str) {
        crate::faults::maybe_kill(&self.target.name, point);
        if point == "archived" {
            crate::faults::maybe_panic(&self.target.name, point);
        }
    }

    fn perform_one(&mut self, action: Action, ctx: &mut Context<Self>) {
        match action {
            Action::Snapshot => {
                let target = self.target.clone();
                let work = async move { crate::probe::snapshot::capture(&target).await };
                ctx.spawn(
                    work.into_actor(self)
                        .map(|snap, act, ctx| act.feed(Observation::Snapshot(snap), ctx)),
                );
            }
            Action::Archive {
                facts,
                snapshot,
                flight,
            } => self.archive(facts, snapshot, flight, ctx),
            Action::WatchSpace { id } => self.watch_space(id, ctx),
            Action::AcquireLease { id, outage_started } => {
                self.acquire_lease(id, outage_started, ctx)
            }
            Action::ReleaseLease => self.release_lease(ctx),
            Action::Heal {
                id,
                failed_at,
                max_starts,
            } => self.heal(id, failed_at, max_starts, ctx),
            Action::HealDone { id } => self.peers.healer.do_send(HealDone { incident_id: id }),
            Action::Notify(n) => self.notify(n),
            Action::FleetAlert { failing, total } => self.fleet_alert(failing, total),
            Action::RetryHeal { id, after } => {
                ctx.run_later(after, move |act, ctx| {
                    act.feed(Observation::RetryHeal { id }, ctx)
                });
            }
            Action::RecoveryTimer { id, after } => {
                ctx.run_later(after, move |act, ctx| {
                    act.feed(Observation::RecoveryDeadline { id }, ctx)
                });
            }
            Action::BaselineRedo => {
                self.read_redo(ctx, |lsn| Observation::RedoBaseline(lsn.map(|(n, _)| n)))
            }
            Action::CheckRedo { id } => {
                self.read_redo(ctx, move |lsn| Observation::RedoProgress { id, lsn })
            }
            Action::InspectContainer => self.inspect_container(ctx),
            Action::ProbeSoon => self.schedule_probe(ctx, Duration::ZERO),
            a @ (Action::Persist { .. }
            | Action::Timeline { .. }
            | Action::RecordRestart
            | Action::SaveIdentity(_)) => self.write(a),
            Action::Checkpoint(point) => self.checkpoint(point),
            Action::Count(m) => self.count(m),
            Action::Log(line) => self.write_log(line),
        }
    }

    fn acquire_lease(
        &mut self,
        id: String,
        outage_started: chrono::DateTime<Utc>,
        ctx: &mut Context<Self>,
    ) {
        let req = LeaseRequest {
            key: server_key(&self.target),
            target: self.target.name.clone(),
            owner: self.peers.lease_owner.to_string(),
            ttl: self.peers.lease_ttl,
            incident: id.clone(),
            outage_started,
            settle: self.target.recovery_timeout,
        };
        let fut = self.peers.leases.acquire(req);
        ctx.spawn(fut.into_actor(self).map(move |r, act, ctx| {
            let obs = match r {
                Ok(()) => Observation::LeaseGranted { id },
                Err(refusal) => Observation::LeaseRefused { id, refusal },
            };
            act.feed(obs, ctx);
        }));
    }

    /// Sends a notice, unless this daemon is fenced (cluster mode): the target may be another
    /// daemon's by now, and that daemon announces the outage; two pages for one outage are
    /// what the cluster exists to prevent. A withheld notice is kept: sent when the fence
    /// lifts with the outage still on ([`Monitor::send_withheld`]), or, once the target is
    /// dropped, announced by the orphan watch if nobody heals it (`supervisor/orphans.rs`).
    fn notify(&self, n: Notice) {
        if let Some(why) = self.peers.cluster.as_ref().and_then(|c| c.fenced()) {
            warn!(self.log, "notice withheld while this daemon is fenced: sent when the fence lifts if the outage is still on"; "event" => "notice_withheld",
                "kind" => n.kind.label(), "incident" => &n.incident_id, "why" => why);
            self.record.lock().withheld.push(n);
            return;
        }
        self.peers.notifier.do_send(Notify(n));
    }

    /// The fence lifted (the lease was renewed in time): sends the notices withheld during it
    /// whose incident is still open; the others are over and dropped.
    pub(super) fn send_withheld(&self) {
        if self
            .peers
            .cluster
            .as_ref()
            .is_some_and(|c| c.fenced().is_some())
        {
            return;
        }
        let due: Vec<Notice> = {
            let mut rec = self.record.lock();
            if rec.withheld.is_empty() {
                return;
            }
            let open = rec.incident.as_ref().map(|i| i.id.to_string());
            std::mem::take(&mut rec.withheld)
                .into_iter()
                .filter(|n| open.as_deref() == Some(n.incident_id.as_str()))
                .collect()
        };
        for n in due {
            info!(self.log, "fence lifted with the outage still on: sending the notice withheld during it"; "event" => "notice_released",
                "kind" => n.kind.label(), "incident" => &n.incident_id);
            self.peers.notifier.do_send(Notify(n));
        }
    }

    fn fleet_alert(&self, failing: usize, total: usize) {
        if self.peers.fleet.take_alert() {
            error!(self.log, "fleet guard tripped: restarts held fleet-wide"; "event" => "fleet_guard_tripped", "failing" => failing, "targets" => total);
            self.peers
                .notifier
                .do_send(Notify(fleet_notice(failing, total)));
        }
    }

    /// Queues a store write; the ones a checkpoint depends on are kept to await there.
    fn write(&mut self, action: Action) {
        if let Some(c) = &self.peers.cluster {
            if matches!(
                action,
                Action::Persist { .. } | Action::RecordRestart | Action::SaveIdentity(_)
            ) {
                // After the machine's step: the record already holds what the action says.
                let state = crate::cluster::TargetState::of(&self.record.lock(), c.member());
                self.unsynced_cluster
                    .push(c.save_state(&self.target.name, state));
            }
        }
        let Some(store) = &self.peers.store else {
            return;
        };
        let target = self.target.name.as_str();
        match action {
            Action::Persist {
                incident,
                phase,
                closed,
                event,
                detail,
            } => {
                let w = store.save_incident(&incident, phase, closed.is_some(), closed.flatten());
                let e = store.event(target, &incident.id, event, &detail);
                self.unsynced.extend([w, e]);
            }
            Action::Timeline { id, event, detail } => {
                drop(store.event(target, &id, event, &detail));
            }
            Action::RecordRestart => self.unsynced.push(store.restart(target)),
            // Not awaited: learned again from the next probe if lost.
            Action::SaveIdentity(id) => drop(store.save_identity(target, &id)),
            _ => {}
        }
    }

    fn archive(
        &mut self,
        facts: crate::archive::manifest::IncidentFacts,
        snapshot: Option<crate::probe::snapshot::SqlSnapshot>,
        flight: Option<Box<crate::flight::Recording>>,
        ctx: &mut Context<Self>,
    ) {
        let id = facts.incident_id.clone();
        let clues = self.clues(&facts);
        let req = self.peers.archiver.send(Archive {
            incident: facts,
            target: self.target.clone(),
            snapshot,
            flight,
            clues,
        });
        ctx.spawn(req.into_actor(self).map(move |res, act, ctx| {
            let (outcome, cause) = match res {
                Ok(Ok(report)) => (Ok(report.location), report.cause.map(|c| *c)),
                Ok(Err(e)) => (Err(e), None),
                Err(e) => (Err(format!("archiver unavailable: {e}")), None),
            };
            act.feed(
                Observation::Archived {
                    id: id.to_string(),
                    outcome,
                    cause,
                },
                ctx,
            );
        }));
    }

    fn heal(
        &mut self,
        id: crate::ids::IncidentId,
        failed_at: chrono::DateTime<Utc>,
        max_starts: u32,
        ctx: &mut Context<Self>,
    ) {
        let req = self.peers.healer.send(Heal {
            incident_id: id.clone(),
            target: self.target.clone(),
            failed_at,
            max_starts,
        });
        crate::faults::maybe_panic(&self.target.name, "heal_issued");
        ctx.spawn(req.into_actor(self).map(move |res, act, ctx| match res {
            Ok(report) => {
                act.release_lease(ctx);
                act.peers.archiver.do_send(AttachHeal {
                    incident_id: id.to_string(),
                    report: report.clone(),
                });
                act.feed(
                    Observation::Healed {
                        id: id.to_string(),
                        report,
                    },
                    ctx,
                );
            }
            Err(e) => error!(act.log, "healer unavailable"; "incident" => &id, "error" => %e),
        }));
    }

    fn release_lease(&mut self, ctx: &mut Context<Self>) {
        let fut = self
            .peers
            .leases
            .release(server_key(&self.target), self.peers.lease_owner.to_string());
        ctx.spawn(fut.into_actor(self));
    }

    /// Reads the redo LSN from the server log (off this thread) and reports it.
    fn read_redo(
        &mut self,
        ctx: &mut Context<Self>,
        obs: impl FnOnce(Option<(u64, String)>) -> Observation + 'static,
    ) {
        let (target, docker) = (self.target.clone(), self.peers.docker.clone());
        let fut = async move { crate::probe::progress::redo_lsn(&target, &docker).await };
        ctx.spawn(
            fut.into_actor(self)
                .map(move |lsn, act, ctx| act.feed(obs(lsn), ctx)),
        );
    }

    fn count(&self, m: Metric) {
        let g = crate::metrics::global();
        let t = self.target.name.as_str();
        match m {
            Metric::Incident { class } => g.inc(
                "sentinel_incidents_total",
                &[("target", t), ("class", class)],
            ),
            Metric::Escalation => g.inc("sentinel_escalations_total", &[("target", t)]),
            Metric::Restart => g.inc("sentinel_restarts_total", &[("target", t)]),
            Metric::RecoverySeconds(s) => {
                g.observe("sentinel_incident_recovery_seconds", &[("target", t)], s)
            }
        }
    }

    fn write_log(&self, line: LogLine) {
        let kv = Fields(line.kv);
        match line.level {
            Level::Debug => debug!(self.log, "{}", line.msg; kv),
            Level::Info => info!(self.log, "{}", line.msg; kv),
            Level::Warn => warn!(self.log, "{}", line.msg; kv),
            Level::Error => error!(self.log, "{}", line.msg; kv),
        }
    }
}

/// A machine log line's fields, typed for the JSON log.
struct Fields(Vec<(&'static str, Value)>);

impl slog::KV for Fields {
    fn serialize(&self, _: &slog::Record, ser: &mut dyn slog::Serializer) -> slog::Result {
        for (k, v) in &self.0 {
            match v {
                Value::Str(s) => ser.emit_str(k, s)?,
                Value::U64(n) => ser.emit_u64(k, *n)?,
                Value::F64(n) => ser.emit_f64(k, *n)?,
                Value::Bool(b) => ser.emit_bool(k, *b)?,
            }
        }
        Ok(())
    }
}

/// The one fleet-wide alert of a fleet-guard trip (its own incident id, not a target's).
fn fleet_notice(failing: usize, total: usize) -> Notice {
    Notice::about_daemon(
        NoticeKind::Escalation,
        Some(EscalationReason::FleetGuard),
        "fleet".into(),
        format!("{failing} of {total} targets"),
        format!("{}-fleet", crate::stamp::stamp(Utc::now())),
        format!("{failing} of {total} targets are failing at once. That points at the network or the daemon's own host, so every restart is held until fewer fail. Check connectivity first."),
    )
}

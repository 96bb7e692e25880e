//! Cluster mode in the Supervisor: a target runs here only while this daemon owns it. The
//! cluster agent says what was gained (with the state the last owner kept, which the new
//! Monitor resumes) and what was lost (its Monitor stops at once, mid-incident or not: the
//! new owner continues the incident from etcd).

use super::Supervisor;
use crate::actors::messages::HealDone;
use crate::cluster::ClusterEvent;
use crate::notify::{EscalationReason, Notice, NoticeKind};
use actix::prelude::*;
use slog::{error, info};

impl StreamHandler<ClusterEvent> for Supervisor {
    fn handle(&mut self, ev: ClusterEvent, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        match ev {
            ClusterEvent::Gained { target, state } => {
                self.regain_orphan(&target);
                self.owned.insert(target.clone());
                self.handed_state
                    .insert(target, state.map(|s| *s).unwrap_or_default());
                self.sync_soon(ctx);
            }
            ClusterEvent::Lost { target, why } => {
                self.owned.remove(&target);
                self.handed_state.remove(&target);
                drop(self.end_orphan(&target));
                if let Some(slot) = self.slots.remove(&target) {
                    slot.addr.do_send(crate::actors::messages::Retire);
                    crate::metrics::global().forget_target(&target);
                    let (incident, withheld) = {
                        let mut rec = slot.record.lock();
                        (rec.incident.clone(), std::mem::take(&mut rec.withheld))
                    };
                    if why == "fenced" {
                        // Still probed from here, never restarted (`orphans.rs`).
                        self.watch_orphan(slot.cfg.clone(), incident.clone(), withheld, ctx);
                    }
                    let open = incident.as_ref().map(|i| i.id.to_string());
                    if let Some(incident_id) = open {
                        info!(self.log, "target lost mid-incident: its new owner continues the incident";
                            "event" => "cluster_target_lost", "target" => &target, "why" => why);
                        // A heal still retrying here would race the new owner's.
                        self.peers.healer.do_send(HealDone { incident_id });
                    }
                }
                self.sync_soon(ctx);
            }
            ClusterEvent::Coordination { lost, reason } => self.coordination(lost, reason),
        }
    }

    /// The agent runs as long as the daemon: its stream never ends before shutdown.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Supervisor {
    /// Brings the Monitors in line with what is owned once the events queued now are
    /// handled: a takeover gains thousands of targets in one burst, and each sync walks the
    /// whole fleet, so one sync per event would cost the burst times the fleet. (A lost
    /// target's Monitor is stopped at once, before this.)
    fn sync_soon(&mut self, ctx: &mut Context<Self>) {
        if std::mem::replace(&mut self.sync_pending, true) {
            return;
        }
        ctx.run_later(std::time::Duration::ZERO, |act, _| {
            act.sync_pending = false;
            if !act.stopping {
                act.sync();
            }
        });
    }

    /// A target's record in cluster mode: what its last owner kept in etcd.
    pub(super) fn record_from_cluster(
        &mut self,
        t: &crate::config::TargetConfig,
    ) -> crate::incident::SharedRecord {
        let mut state = self.handed_state.remove(&t.name).unwrap_or_default();
        if let Some(u) = state.refused.take() {
            self.say_untrusted(t, &u);
        }
        let resumed = state.open.as_ref().map(|o| o.id().to_string());
        let mut rec = crate::store::record_from(state, &t.budget);
        rec.withheld = self.withheld_for(&t.name);
        if let Some(id) = resumed {
            info!(self.log, "took over an open incident: continuing it"; "event" => "incident_taken_over",
                "target" => &t.name, "incident" => id, "phase" => rec.phase.label());
        }
        crate::incident::SharedRecord::new(rec)
    }

    /// Tells the user that the state kept for `t` was refused (logged and counted where it
    /// was read): someone who is not a daemon wrote to etcd or the state directory.
    pub(super) fn say_untrusted(
        &mut self,
        t: &crate::config::TargetConfig,
        u: &crate::store::Untrusted,
    ) {
        let now = chrono::Utc::now();
        let id = crate::ids::IncidentId::new(&crate::ids::Stamp::of(now), &t.name);
        let summary = format!("The state kept for {} ({}) was refused: {}. The target starts without it. No daemon writes such a value: check who else can write etcd or this daemon's state directory.", t.name, u.key, u.what);
        let notice = Notice::about_daemon(
            NoticeKind::Escalation,
            None,
            t.name.clone(),
            t.dsn.endpoint(),
            format!("{id}-untrusted"),
            summary,
        );
        self.peers
            .notifier
            .do_send(crate::actors::messages::Notify(notice));
    }

    /// Says once that coordination was lost (every target dropped, no restarts anywhere from
    /// here), and once that it came back.
    pub(super) fn coordination(&mut self, lost: bool, reason: String) {
        let Some(cluster) = self.peers.cluster.clone() else {
            return;
        };
        let now = chrono::Utc::now();
        let endpoint = cluster.config().etcd.join(",");
        let id = self
            .coordination_incident
            .get_or_insert_with(|| {
                format!("{}-cluster-{}", crate::stamp::stamp(now), cluster.member())
            })
            .clone();
        let (kind, summary) = if lost {
            error!(self.log, "coordination lost: this daemon restarts nothing until etcd answers again; it still probes the targets it owned"; "event" => "coordination_lost", "reason" => &reason);
            (NoticeKind::Escalation, format!("Daemon {} lost coordination ({reason}). It restarts nothing; the other daemons take its targets over if they still reach etcd, and it still probes them and says if one stays down. Check etcd ({endpoint}) and this host's network.", cluster.member()))
        } else {
            info!(self.log, "coordination restored"; "event" => "coordination_restored");
            self.coordination_incident = None;
            (
                NoticeKind::Recovery,
                format!(
                    "Daemon {} reaches etcd again and takes its share of the targets back.",
                    cluster.member()
                ),
            )
        };
        let notice = Notice::about_daemon(
            kind,
            lost.then_some(EscalationReason::CoordinationLost),
            format!("cluster member {}", cluster.member()),
            endpoint,
            id,
            summary,
        );
        self.peers
            .notifier
            .do_send(crate::actors::messages::Notify(notice));
    }
}

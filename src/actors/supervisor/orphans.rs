//! Cluster mode without etcd: the targets this daemon last owned stay probed
//! (`incident::orphan`): never restarted, announced once if they stay down, and handed to
//! their next owner (`cluster::announce`) once etcd answers again.

use super::Supervisor;
use crate::actors::messages::Notify;
use crate::cluster::state::IncidentState;
use crate::config::TargetConfig;
use crate::incident::orphan::{grace, OrphanStep, OrphanWatch};
use crate::incident::Incident;
use crate::notify::Notice;
use crate::probe::Prober;
use actix::prelude::*;
use slog::{error, info};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// The watched targets, by name.
#[derive(Default)]
pub(super) struct Orphans {
    watched: BTreeMap<String, Orphan>,
    next_id: u64,
    /// Withheld notices of a target gained again, for its new Monitor.
    handed: HashMap<String, Vec<Notice>>,
}

struct Orphan {
    cfg: Arc<TargetConfig>,
    watch: OrphanWatch,
    /// What its Monitor withheld while fenced (until this watch announces the outage).
    withheld: Vec<Notice>,
    /// Which watch a probe result belongs to (a target watched again gets a new one).
    id: u64,
}

impl Supervisor {
    /// Starts watching the target of `cfg`, dropped because this daemon is fenced; `open` is
    /// the incident it had open then, `withheld` the notices its Monitor withheld.
    pub(super) fn watch_orphan(
        &mut self,
        cfg: Arc<TargetConfig>,
        open: Option<Incident>,
        withheld: Vec<Notice>,
        ctx: &mut Context<Self>,
    ) {
        self.orphans.next_id += 1;
        let id = self.orphans.next_id;
        let name = cfg.name.clone();
        info!(self.log, "fenced: still probing this target, restarting nothing, until etcd answers"; "event" => "orphan_watch_started",
            "target" => &name, "open_incident" => open.as_ref().map(|i| i.id.to_string()).unwrap_or_default());
        let prober = Prober::new(&cfg);
        let watch = OrphanWatch::new(open, &withheld);
        let orphan = Orphan {
            cfg,
            watch,
            withheld,
            id,
        };
        self.orphans.watched.insert(name.clone(), orphan);
        self.orphan_probe(name, id, prober, ctx);
    }

    fn orphan_probe(&mut self, name: String, id: u64, mut prober: Prober, ctx: &mut Context<Self>) {
        let fut = async move {
            let out = prober.probe().await;
            (prober, out)
        };
        ctx.spawn(fut.into_actor(self).map(move |(prober, out), act, ctx| {
            let grace = act
                .peers
                .cluster
                .as_ref()
                .map(|c| grace(c.config().ttl))
                .unwrap_or_default();
            let Some(o) = act.orphans.watched.get_mut(&name).filter(|o| o.id == id) else {
                return;
            };
            let now = (chrono::Utc::now(), Instant::now());
            let step = o.watch.observe(&o.cfg, out.result, now, grace);
            let interval = o.cfg.probe.interval;
            act.orphan_step(&name, step);
            ctx.run_later(interval, move |act, ctx| {
                if act.orphans.watched.get(&name).is_some_and(|o| o.id == id) {
                    act.orphan_probe(name, id, prober, ctx);
                }
            });
        }));
    }

    fn orphan_step(&mut self, name: &str, step: OrphanStep) {
        let cluster = self.peers.cluster.clone();
        let n = match step {
            OrphanStep::Nothing => return,
            OrphanStep::Alert(n) => {
                error!(self.log, "target down and NOT restarted: this daemon lost coordination (etcd); its next owner continues the incident"; "event" => "orphan_down",
                    "target" => name, "incident" => &n.incident_id);
                if let Some(o) = self.orphans.watched.get_mut(name) {
                    o.withheld.clear(); // said now
                    if let (Some(c), Some(inc)) = (&cluster, o.watch.announced()) {
                        c.announce(name, IncidentState::announced(inc));
                    }
                }
                n
            }
            OrphanStep::Recovered(n) => {
                info!(self.log, "target up again while coordination is lost"; "event" => "orphan_recovered",
                    "target" => name, "incident" => &n.incident_id);
                if let Some(c) = &cluster {
                    c.withdraw(name);
                }
                n
            }
        };
        self.peers.notifier.do_send(Notify(n));
    }

    /// Stops watching `name`: it runs a Monitor here again, or is another daemon's.
    pub(super) fn end_orphan(&mut self, name: &str) -> Vec<Notice> {
        match self.orphans.watched.remove(name) {
            Some(o) => {
                info!(self.log, "orphan watch ended"; "event" => "orphan_watch_ended", "target" => name);
                o.withheld
            }
            None => vec![],
        }
    }

    /// Gained `name` again: what its last Monitor withheld goes to its next one, which sends
    /// it if the outage is still on (`Monitor::send_withheld`).
    pub(super) fn regain_orphan(&mut self, name: &str) {
        let withheld = self.end_orphan(name);
        if !withheld.is_empty() {
            self.orphans.handed.insert(name.to_string(), withheld);
        }
    }

    /// The notices withheld for `name`, for its new record.
    pub(super) fn withheld_for(&mut self, name: &str) -> Vec<Notice> {
        self.orphans.handed.remove(name).unwrap_or_default()
    }

    /// Ends every watch once this daemon is no longer fenced: the targets it owns run
    /// Monitors again (an announced outage is handed over through etcd), the others are
    /// another daemon's.
    pub(super) fn prune_orphans(&mut self) {
        if self.orphans.watched.is_empty() {
            return;
        }
        if self
            .peers
            .cluster
            .as_ref()
            .is_none_or(|c| c.fenced().is_some())
        {
            return;
        }
        let names: Vec<String> = self.orphans.watched.keys().cloned().collect();
        for name in names {
            drop(self.end_orphan(&name));
        }
    }
}

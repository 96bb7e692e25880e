//! A reload that changes `cluster:` (endpoints, prefix, member, TTL, TLS, login): this
//! daemon leaves the cluster it is in (its lease revoked, so its owner and member keys go at
//! once and the other daemons take its targets without waiting for a TTL) and joins with the
//! new settings, as a new session that claims its share like a joining daemon.
//!
//! All or nothing. A change that cannot be applied cleanly refuses the whole reload, and the
//! previous registry keeps running:
//! - turning cluster mode on or off (the restart leases and the outage book differ: a
//!   restart of the daemon does it);
//! - a target here with an open incident (leaving would hand it over mid-heal, and under a
//!   new prefix its state would not follow: the reload is to be sent again once it closes);
//! - the new cluster thread cannot start.
//!
//! Nothing is paged: leaving is not losing coordination.

use super::Supervisor;
use crate::cluster::{Cluster, ClusterEvent};
use crate::config::ClusterConfig;
use actix::prelude::*;
use slog::info;
use std::sync::Arc;
use std::time::Duration;

impl Supervisor {
    /// Leaves the running cluster and joins `new`'s, or says why not (nothing changed then).
    pub(super) fn rejoin(
        &mut self,
        new: Option<ClusterConfig>,
        ctx: &mut Context<Self>,
    ) -> Result<(), String> {
        let (Some(old), Some(cfg)) = (self.peers.cluster.clone(), new) else {
            return Err("cluster: turning cluster mode on or off needs a restart of the daemon (restart leases and outage records move between files and etcd); restart it to apply".into());
        };
        let mid_incident: Vec<&str> = self
            .slots
            .iter()
            .filter(|(_, s)| s.record.lock().incident.is_some())
            .map(|(n, _)| n.as_str())
            .collect();
        if !mid_incident.is_empty() {
            return Err(format!(
                "cluster: {} has an open incident here, and leaving the cluster now would hand it over mid-heal; send SIGHUP again once it is closed",
                mid_incident.join(", ")
            ));
        }
        let (tx, events) = futures::channel::mpsc::unbounded::<ClusterEvent>();
        let (go, gate) = futures::channel::oneshot::channel();
        let new = Cluster::start_after(cfg, &self.root, tx, old.token(), Some(gate))
            .map_err(|e| format!("cluster: cannot start the new cluster thread: {e}"))?;
        info!(self.log, "cluster settings changed: leaving the cluster and joining again with the new settings"; "event" => "cluster_rejoining",
            "member" => new.member(), "prefix" => &new.config().prefix, "etcd" => new.config().etcd.join(","),
            "was_member" => old.member(), "was_prefix" => &old.config().prefix, "was_etcd" => old.config().etcd.join(","),
            "targets_left" => self.owned.len());
        // Every target here stops now: the old session's keys go with its lease, and the new
        // session gains its share as the new cluster gives it.
        for (name, slot) in std::mem::take(&mut self.slots) {
            slot.addr.do_send(crate::actors::messages::Retire);
            crate::metrics::global().forget_target(&name);
        }
        self.owned.clear();
        self.handed_state.clear();
        if let Some(h) = self.cluster_stream.take() {
            ctx.cancel_future(h);
        }
        self.cluster_stream = Some(ctx.add_stream(events));
        self.peers.leases = new.leases();
        self.peers.cluster = Some(new.clone());
        self.current.set(new.clone());
        if self.coordination_incident.is_some() {
            self.close_coordination_on_join(new, ctx);
        }
        let leave = old.leave();
        actix_rt::spawn(async move {
            leave.await;
            old.end();
            let _ = go.send(());
        });
        Ok(())
    }

    /// The old session's "coordination lost" (a reload is often how wrong endpoints are
    /// fixed) is closed once the new session has joined: the new agent never said it.
    fn close_coordination_on_join(&mut self, new: Arc<Cluster>, ctx: &mut Context<Self>) {
        let joined = new.clone();
        let wait = async move {
            while joined.lease_age().is_none() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        ctx.spawn(wait.into_actor(self).map(move |_, act, _| {
            let current = act
                .peers
                .cluster
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &new));
            if current && act.coordination_incident.is_some() {
                act.coordination(false, "joined the cluster with the new settings".into());
            }
        }));
    }
}

//! The delivery ledger of cluster mode (`notify::ledger`): each notice's delivery per channel
//! is kept in the target's state in etcd, next to the open incident it belongs to, so the
//! daemon that takes the target over sends only what was not delivered. A mark is written by
//! the owner only (a compare on the owner key, like every state write), under the same lock
//! as the Monitor's state writes, which carry the marks over (`Cluster::put_state`).

use super::state::TargetState;
use super::{Cluster, Session};
use crate::notify::ledger::{kind_key, DeliveryLedger, Mark};
use crate::notify::Notice;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// The ledger the Notifier's workers share: a handle on the cluster.
pub(super) struct EtcdLedger(pub(super) Arc<Cluster>);

impl DeliveryLedger for EtcdLedger {
    fn begin<'a>(
        &'a self,
        n: &'a Notice,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<Mark>, String>> {
        // Delivered or in flight: left as it is (the caller skips or repeats).
        Box::pin(self.0.mark(n, channel, |prior| match prior {
            Some(Mark::Delivered | Mark::InFlight) => None,
            Some(Mark::Failed) | None => Some(Mark::InFlight),
        }))
    }

    fn finish<'a>(
        &'a self,
        n: &'a Notice,
        channel: &'a str,
        mark: Mark,
    ) -> BoxFuture<'a, Result<(), String>> {
        let done = self.0.mark(n, channel, move |_| Some(mark));
        Box::pin(async move { done.await.map(|_| ()) })
    }
}

/// How a mark changes: given the recorded one, the new one (None: leave it).
type Change = Box<dyn FnOnce(Option<Mark>) -> Option<Mark> + Send>;

impl Cluster {
    /// Applies `change` to the mark of `n` on `channel` and answers the mark recorded before.
    /// A notice whose incident is not the open one kept in etcd (already closed: a recovery;
    /// or never kept) is not recorded: Ok(None).
    fn mark(
        self: &Arc<Self>,
        n: &Notice,
        channel: &str,
        change: impl FnOnce(Option<Mark>) -> Option<Mark> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<Option<Mark>, String>> {
        let (tx, rx) = futures::channel::oneshot::channel();
        let me = self.clone();
        let (target, incident) = (n.target.clone(), n.incident_id.clone());
        let (kind, channel) = (kind_key(n), channel.to_string());
        let change: Change = Box::new(change);
        self.rt.spawn(async move {
            let _order = me.state_lock.lock().await;
            let work = me.update_mark(&target, &incident, &kind, &channel, change);
            let r = tokio::time::timeout(Duration::from_secs(2), work)
                .await
                .unwrap_or_else(|_| Err("etcd did not answer within 2 s".into()));
            let _ = tx.send(r);
        });
        async move {
            rx.await
                .unwrap_or_else(|_| Err("the cluster thread ended".into()))
        }
    }

    async fn update_mark(
        &self,
        target: &str,
        incident: &str,
        kind: &str,
        channel: &str,
        change: Change,
    ) -> Result<Option<Mark>, String> {
        let Some(s) = self.lock().session.clone() else {
            return Err("no etcd session".into());
        };
        let Some(mut state) = self.read_state(&s, target).await? else {
            return Ok(None);
        };
        let Some(inc) = state.incident.as_mut().filter(|i| i.row.id == incident) else {
            return Ok(None);
        };
        let prior = inc.mark(kind, channel);
        let Some(next) = change(prior) else {
            return Ok(prior);
        };
        inc.set_mark(kind, channel, next);
        state.written_by = self.cfg.member.clone();
        self.write_state(&s, target, &state).await?;
        Ok(prior)
    }

    /// The state kept for `target` as this daemon reads it back to update it; a value that
    /// is not a state, or whose marks are not a daemon's, counts as none (it is replaced).
    pub(super) async fn read_state(
        &self,
        s: &Session,
        target: &str,
    ) -> Result<Option<TargetState>, String> {
        let mut client = s.client.clone();
        let r = client
            .get(self.keys.state(target), None)
            .await
            .map_err(|e| e.to_string())?;
        let Some(kv) = r.kvs().first() else {
            return Ok(None);
        };
        let state: Option<TargetState> = serde_json::from_slice(kv.value()).ok();
        Ok(state.filter(|st| {
            st.incident
                .as_ref()
                .is_none_or(|i| i.row.target == target && i.check_marks().is_ok())
        }))
    }
}

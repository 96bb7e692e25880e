//! The restart lease of cluster mode: before every restart, a compare-and-swap in etcd that
//! succeeds only while this daemon still owns the target on its current lease, and that
//! records the restart intent (owner, incident, when, the owner key's revision as fencing
//! token) under `restart/{host:port}`. Another daemon that takes the target over reads it
//! and never restarts the server a second time for the same outage.

use super::Cluster;
use crate::lease::{LeaseBackend, LeaseRefusal, LeaseRequest};
use chrono::{DateTime, Utc};
use etcd_client::{Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Longest a restart waits for etcd before it is refused (and retried by the machine).
const DECIDE_WITHIN: Duration = Duration::from_secs(2);

/// One restart intent as kept in etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartIntent {
    pub owner: String,
    pub target: String,
    pub incident: String,
    pub at: DateTime<Utc>,
    /// The owner key's modification revision when the restart was decided.
    pub owner_revision: i64,
}

pub(super) struct RestartIntents {
    c: Arc<Cluster>,
}

impl RestartIntents {
    pub(super) fn new(c: Arc<Cluster>) -> Self {
        Self { c }
    }
}

impl LeaseBackend for RestartIntents {
    fn acquire(&self, req: LeaseRequest) -> BoxFuture<'static, Result<(), LeaseRefusal>> {
        let c = self.c.clone();
        let (tx, rx) = futures::channel::oneshot::channel();
        self.c.rt.spawn(async move {
            let r = match tokio::time::timeout(DECIDE_WITHIN, decide(&c, &req)).await {
                Ok(r) => r,
                Err(_) => Err(LeaseRefusal::Busy("etcd did not answer within 2 s".into())),
            };
            let _ = tx.send(r);
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(LeaseRefusal::Busy("the cluster thread ended".into())))
        })
    }

    /// The intent stays: it is the record that this outage was restarted.
    fn release(&self, _key: String, _owner: String) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

async fn decide(c: &Cluster, req: &LeaseRequest) -> Result<(), LeaseRefusal> {
    if let Some(why) = c.fenced() {
        return Err(LeaseRefusal::Fenced(why));
    }
    let Some(s) = c.lock().session.clone() else {
        return Err(LeaseRefusal::Fenced("no etcd session".into()));
    };
    let (owner_kv, restart_kv) = read_keys(c, &s, req).await?;
    let owner_rev = match &owner_kv {
        Some(kv) if kv.value() == c.cfg.member.as_bytes() && kv.lease() == s.lease => {
            kv.mod_revision()
        }
        Some(kv) => {
            return Err(LeaseRefusal::Fenced(format!(
                "{} is owned by {} now",
                req.target,
                String::from_utf8_lossy(kv.value())
            )))
        }
        None => {
            return Err(LeaseRefusal::Fenced(format!(
                "{} has no owner in etcd (this daemon's lease ended)",
                req.target
            )))
        }
    };
    let (last, restart_rev) = match &restart_kv {
        Some(kv) => (intent_of(c, kv), kv.mod_revision()),
        None => (None, 0),
    };
    if let Some(last) = last.filter(|l| l.incident != req.incident) {
        let settle = chrono::Duration::from_std(req.settle).unwrap_or_default();
        if last.at >= req.outage_started && Utc::now() - last.at < settle {
            return Err(LeaseRefusal::AlreadyRestarted {
                at: last.at,
                incident: last.incident,
            });
        }
    }
    record_intent(c, &s, req, owner_rev, restart_rev).await
}

/// The intent kept in `kv`, if a daemon can have written it: the owner a member id, the
/// target a target name, the incident an incident id, the time in range. Anything else was
/// written by another etcd client and is refused (said, and counted): no restart of ours is
/// recorded in it, so it holds none back.
fn intent_of(c: &Cluster, kv: &KeyValue) -> Option<RestartIntent> {
    let check = |i: &RestartIntent| -> Result<(), String> {
        crate::ids::MemberId::parse(&i.owner).map_err(|e| e.to_string())?;
        crate::ids::TargetName::parse(&i.target).map_err(|e| e.to_string())?;
        crate::ids::IncidentId::parse(&i.incident).map_err(|e| e.to_string())?;
        crate::ids::check_time("at", i.at, Utc::now())
    };
    let read = serde_json::from_slice::<RestartIntent>(kv.value())
        .map_err(|e| format!("not a restart intent: {e}"))
        .and_then(|i| check(&i).map(|()| i));
    match read {
        Ok(i) => Some(i),
        Err(what) => {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            crate::store::Untrusted { key, what }.report(&c.log, "etcd");
            None
        }
    }
}

/// The target's owner key and the server's last restart intent, read at one revision.
async fn read_keys(
    c: &Cluster,
    s: &super::Session,
    req: &LeaseRequest,
) -> Result<(Option<KeyValue>, Option<KeyValue>), LeaseRefusal> {
    let mut client = s.client.clone();
    let read = client
        .txn(Txn::new().and_then([
            TxnOp::get(c.keys.owner(&req.target), None),
            TxnOp::get(c.keys.restart(&req.key), None),
        ]))
        .await
        .map_err(|e| LeaseRefusal::Busy(e.to_string()))?;
    let mut gets = read.op_responses().into_iter().filter_map(|o| match o {
        TxnOpResponse::Get(g) => Some(g.kvs().first().cloned()),
        _ => None,
    });
    Ok((gets.next().flatten(), gets.next().flatten()))
}

/// Records the restart intent, only if the owner key and the restart record are still as
/// read: the fencing compare-and-swap.
async fn record_intent(
    c: &Cluster,
    s: &super::Session,
    req: &LeaseRequest,
    owner_rev: i64,
    restart_rev: i64,
) -> Result<(), LeaseRefusal> {
    let intent = RestartIntent {
        owner: c.cfg.member.clone(),
        target: req.target.clone(),
        incident: req.incident.clone(),
        at: Utc::now(),
        owner_revision: owner_rev,
    };
    let json = serde_json::to_vec(&intent).map_err(|e| LeaseRefusal::Store(e.to_string()))?;
    let (owner_key, restart_key) = (c.keys.owner(&req.target), c.keys.restart(&req.key));
    let txn = Txn::new()
        .when([
            Compare::value(owner_key.clone(), CompareOp::Equal, c.cfg.member.clone()),
            Compare::mod_revision(owner_key, CompareOp::Equal, owner_rev),
            Compare::mod_revision(restart_key.clone(), CompareOp::Equal, restart_rev),
        ])
        .and_then([TxnOp::put(restart_key, json, None::<PutOptions>)]);
    let mut client = s.client.clone();
    let r = client
        .txn(txn)
        .await
        .map_err(|e| LeaseRefusal::Busy(e.to_string()))?;
    if r.succeeded() {
        Ok(())
    } else {
        Err(LeaseRefusal::Busy(
            "the owner key or the restart record changed while deciding: deciding again".into(),
        ))
    }
}

//! Outages announced while coordination was lost (`incident::orphan`), handed to whichever
//! daemon owns the target next. Kept in memory until etcd answers, then under
//! `announced/{target}` (no lease: it must outlive its announcer), and adopted by the daemon
//! that gains the target: its state then holds the incident, alerted, with the failure
//! notice marked delivered on every channel, so its Monitor continues that incident (the
//! restart, within the budget; the recovery notice) and sends no second failure page.
//!
//! Who writes it: any etcd client, like the state. An adopted value becomes the state and is
//! checked with it ([`super::TargetState::decode`]) before a Monitor uses it.

use super::state::{IncidentState, TargetState, EVERY_CHANNEL};
use super::{Cluster, Session};
use crate::notify::ledger::Mark;
use etcd_client::{GetOptions, TxnOp};
use slog::{info, warn};
use std::collections::BTreeMap;
use std::time::Duration;

/// One gained target: its name, the state kept for it, whether we claimed it.
pub(super) type Gain = (String, Option<Vec<u8>>, Option<i64>);

impl IncidentState {
    /// An incident announced while coordination was lost, as its next owner continues it:
    /// from the archive on, alerted, its failure notice delivered on every channel.
    pub fn announced(inc: &crate::incident::Incident) -> Self {
        Self {
            row: crate::store::IncidentRow::of(
                inc,
                crate::incident::orphan::OrphanWatch::resume_phase(),
            ),
            notices: inc.notices.clone(),
            deliveries: vec![super::state::DeliveryMark {
                kind: "failure".into(),
                channel: EVERY_CHANNEL.into(),
                mark: Mark::Delivered,
            }],
        }
    }
}

impl Cluster {
    /// Hands the announced incident of `target` to its next owner (published once etcd
    /// answers).
    pub fn announce(&self, target: &str, incident: IncidentState) {
        self.lock().announced.insert(target.to_string(), incident);
    }

    /// The announced outage is over (the target is up again): nothing to hand over.
    pub fn withdraw(&self, target: &str) {
        self.lock().announced.remove(target);
    }

    /// Writes what was announced while etcd was away; kept for the next step on failure.
    pub(super) async fn publish_announcements(&self, s: &Session) {
        let pending: BTreeMap<String, IncidentState> = self.lock().announced.clone();
        for (target, inc) in pending {
            let Ok(json) = serde_json::to_vec(&inc) else {
                continue;
            };
            let mut client = s.client.clone();
            let put = client.put(self.keys.announced(&target), json, None);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), put).await {
                info!(self.log, "outage announced while coordination was lost handed to the target's next owner"; "event" => "outage_handed_over",
                    "target" => &target, "incident" => &inc.row.id);
                self.lock().announced.remove(&target);
            }
        }
    }

    /// Adopts the announcements kept for the targets just gained: each one's state becomes
    /// the announced incident (or its open incident, the same one, is marked as announced),
    /// written back while we own the target, the announcement deleted in the same
    /// transaction.
    pub(super) async fn adopt_announcements(&self, s: &Session, gained: &mut [Gain]) {
        if gained.is_empty() {
            return;
        }
        let mut client = s.client.clone();
        let prefix = self.keys.announcements();
        let read = client.get(prefix.clone(), Some(GetOptions::new().with_prefix()));
        let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), read).await else {
            return;
        };
        for kv in r.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            let Some(target) = super::keys::Keys::strip(&key, &prefix) else {
                continue;
            };
            let Some(gain) = gained.iter_mut().find(|g| g.0 == target) else {
                continue;
            };
            let announced: Option<IncidentState> = serde_json::from_slice(kv.value()).ok();
            let Some(merged) = announced.and_then(|a| self.merged(target, gain.1.as_deref(), a))
            else {
                continue;
            };
            let Ok(json) = serde_json::to_vec(&merged) else {
                continue;
            };
            let ops = vec![
                TxnOp::put(self.keys.state(target), json.clone(), None),
                TxnOp::delete(key.clone(), None),
            ];
            match s
                .while_owner(&self.keys, target, &self.cfg.member, ops)
                .await
            {
                Ok(true) => {
                    info!(self.log, "continuing an outage announced while coordination was lost"; "event" => "outage_adopted",
                        "target" => target, "incident" => merged.incident.as_ref().map(|i| i.row.id.as_str()).unwrap_or(""));
                    gain.1 = Some(json);
                }
                _ => {
                    warn!(self.log, "an outage announced while coordination was lost could not be adopted"; "event" => "outage_adopt_failed", "target" => target)
                }
            }
        }
    }

    /// The state of `target` with the announcement `a` in it; None when the state has
    /// another open incident (that one goes on) or `a` is not about `target`.
    fn merged(&self, target: &str, state: Option<&[u8]>, a: IncidentState) -> Option<TargetState> {
        if a.row.target != target {
            return None;
        }
        let mut st: TargetState = state
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or_default();
        st.written_by = self.cfg.member.clone();
        match st.incident.as_mut() {
            None => st.incident = Some(a),
            Some(open) if open.row.id == a.row.id => {
                open.row.alerted = true;
                open.set_mark("failure", EVERY_CHANNEL, Mark::Delivered);
            }
            Some(_) => return None,
        }
        Some(st)
    }
}

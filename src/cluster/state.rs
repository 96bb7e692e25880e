//! What must survive a takeover, kept in etcd under `state/{target}` by the target's owner:
//! the restart budget and backoff, the maintenance window, and the open incident with what
//! was archived, healed and notified. The next owner resumes from it, so an outage stays one
//! incident (one id, one PagerDuty `dedup_key`) and the budget counts every daemon's restarts.
//! Beside the incident, how each of its notices went on each channel (`deliveries`, written
//! by the Notifier through `deliveries.rs`): the next owner sends only what was not delivered.
//!
//! Who writes it: any client that can write etcd, not only our daemons. So a value is data,
//! checked against the key it came from before anything of it is used ([`TargetState::decode`]):
//! its incident must be that target's with an id that parses, its times in range. Such a
//! client can make a target forget its budget and open incident (it could delete the key
//! anyway); it cannot make a daemon write outside its directories or act for another target.
//! It can mark a notice delivered, so that a new owner does not send it: no more than
//! deleting the incident does. Marks past [`MAX_MARKS`], or with names longer than a
//! channel's or a kind's, refuse the whole value.

use crate::ids::check_time;
use crate::incident::TargetRecord;
use crate::notify::ledger::Mark;
use crate::notify::Notice;
use crate::store::{IncidentRow, OpenIncident, StoredTarget, Untrusted};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One target's state as kept in etcd (JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetState {
    /// Restarts inside the budget window (by any daemon), oldest first.
    pub restarts: Vec<DateTime<Utc>>,
    pub backoff_step: u32,
    pub maintenance_until: Option<DateTime<Utc>>,
    /// The open incident; None when the target is healthy.
    pub incident: Option<IncidentState>,
    /// Who wrote this, for the status page and the logs.
    pub written_by: String,
    /// Which server is the target's own (`probe::identity`); absent in older states.
    #[serde(default)]
    pub identity: Option<crate::probe::identity::LearnedIdentity>,
}

/// An open incident, with the notices sent so far (the row leaves them out of its JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentState {
    pub row: IncidentRow,
    pub notices: Vec<Notice>,
    /// How each notice went on each channel; absent in older states.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<DeliveryMark>,
}

/// One notice on one channel (`notify::ledger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryMark {
    /// `failure`, `escalation:recovery_timeout`, ... ([`crate::notify::ledger::kind_key`]).
    pub kind: String,
    /// `slack`, `pagerduty`, `webhook[0]`, ...
    pub channel: String,
    pub mark: Mark,
}

/// The channel name of a mark for every channel (an outage announced while coordination was
/// lost, `announce.rs`).
pub const EVERY_CHANNEL: &str = "*";

/// More marks than an incident's notices on every channel a registry can hold: not a daemon's.
pub const MAX_MARKS: usize = 512;

impl IncidentState {
    /// What was recorded of notice `kind` on `channel` (or on every channel: an outage
    /// announced while coordination was lost, `announce.rs`).
    pub fn mark(&self, kind: &str, channel: &str) -> Option<Mark> {
        let on = |c: &str| {
            self.deliveries
                .iter()
                .find(|d| d.kind == kind && d.channel == c)
        };
        on(channel).or_else(|| on(EVERY_CHANNEL)).map(|d| d.mark)
    }

    pub fn set_mark(&mut self, kind: &str, channel: &str, mark: Mark) {
        match self
            .deliveries
            .iter_mut()
            .find(|d| d.kind == kind && d.channel == channel)
        {
            Some(d) => d.mark = mark,
            None => self.deliveries.push(DeliveryMark {
                kind: kind.into(),
                channel: channel.into(),
                mark,
            }),
        }
    }

    /// Why the marks are not a daemon's, if they are not.
    pub fn check_marks(&self) -> Result<(), String> {
        if self.deliveries.len() > MAX_MARKS {
            return Err(format!(
                "{} delivery marks (at most {MAX_MARKS})",
                self.deliveries.len()
            ));
        }
        let bad = |s: &str| s.is_empty() || s.len() > 64 || s.chars().any(char::is_control);
        match self
            .deliveries
            .iter()
            .find(|d| bad(&d.kind) || bad(&d.channel))
        {
            Some(d) => Err(format!(
                "a delivery mark names kind {:?} on channel {:?}",
                crate::notify::clip(&d.kind, 80),
                crate::notify::clip(&d.channel, 80)
            )),
            None => Ok(()),
        }
    }
}

impl TargetState {
    /// The record as it stands now.
    pub fn of(rec: &TargetRecord, member: &str) -> Self {
        Self {
            restarts: rec
                .restarts
                .iter()
                .copied()
                .map(crate::stamp::wall_at)
                .collect(),
            backoff_step: rec.backoff_step,
            maintenance_until: rec.maintenance_until,
            incident: rec.incident.as_ref().map(|inc| IncidentState {
                row: IncidentRow::of(inc, rec.phase),
                notices: inc.notices.clone(),
                deliveries: Vec::new(),
            }),
            written_by: member.to_string(),
            identity: rec.identity.clone(),
        }
    }

    /// Reads the value of `key`, the state of `target` (a name the registry checked): what a
    /// new owner resumes from, or why it is refused (then the target starts fresh: a value
    /// with one field no daemon writes was not written by a daemon, so none of it is trusted).
    pub fn decode(value: &[u8], key: &str, target: &str) -> Result<Decoded, Untrusted> {
        let refuse = |what: String| Untrusted {
            key: key.to_string(),
            what,
        };
        let state: TargetState = serde_json::from_slice(value)
            .map_err(|e| refuse(format!("not a target state: {e}")))?;
        let written_by = state.written_by.clone();
        state
            .into_stored(target, Utc::now())
            .map(|stored| Decoded { stored, written_by })
            .map_err(refuse)
    }

    /// What a new owner resumes from, once every part is checked.
    fn into_stored(self, target: &str, now: DateTime<Utc>) -> Result<StoredTarget, String> {
        for t in &self.restarts {
            check_time("a restart", *t, now)?;
        }
        if let Some(t) = self.maintenance_until {
            // A window may be long, but not beyond what a person sets.
            if t > now + chrono::Duration::days(3660) {
                return Err(format!(
                    "maintenance_until {} is out of range",
                    t.to_rfc3339()
                ));
            }
        }
        crate::ids::MemberId::parse(&self.written_by).map_err(|e| e.to_string())?;
        let (open, heal_started) = match self.incident {
            Some(inc) => {
                inc.check_marks()?;
                let IncidentState {
                    mut row, notices, ..
                } = inc;
                row.notices = notices;
                // A heal recorded as issued may have run: never restart twice.
                let started = row.heal_issued_at.is_some();
                (Some(OpenIncident::check(row, target, now)?), started)
            }
            None => (None, false),
        };
        Ok(StoredTarget {
            restarts: self.restarts,
            maintenance_until: self.maintenance_until,
            open,
            heal_started,
            backoff_step: self.backoff_step,
            refused: None,
            identity: self.identity,
        })
    }
}

/// A checked state, and the member that wrote it (a takeover when it is not us).
#[derive(Debug)]
pub struct Decoded {
    pub stored: StoredTarget,
    pub written_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{Incident, Phase};
    use crate::probe::{FailureClass, ProbeFailure};
    use std::time::Instant;

    /// The state a daemon keeps for `target` with an open incident, as JSON.
    fn kept(target: &str) -> serde_json::Value {
        let now = (Utc::now(), Instant::now());
        let failure = ProbeFailure {
            class: FailureClass::ConnectionRefused,
            sqlstate: None,
            detail: "refused".into(),
        };
        let mut rec = TargetRecord::default();
        let inc = Incident::new(target, failure, false, now, now);
        rec.restarts.push_back(Instant::now());
        rec.incident = Some(inc);
        rec.phase = Phase::Archiving;
        serde_json::to_value(TargetState::of(&rec, "n1")).unwrap()
    }

    /// One change to a kept state, making it one no daemon writes.
    type Change = Box<dyn Fn(&mut serde_json::Value)>;

    fn decode(v: &serde_json::Value, target: &str) -> Result<Decoded, Untrusted> {
        let bytes = serde_json::to_vec(v).unwrap();
        TargetState::decode(&bytes, &format!("/sr/state/{target}"), target)
    }

    #[test]
    fn a_daemons_state_decodes_for_its_own_target_only() {
        let v = kept("orders");
        let d = decode(&v, "orders").expect("a daemon's own state");
        assert_eq!(d.written_by, "n1");
        let open = d.stored.open.expect("the open incident");
        assert_eq!(open.id().name(), "orders");
        let e = decode(&v, "billing").unwrap_err();
        assert_eq!(e.key, "/sr/state/billing");
        assert!(e.what.contains("not \"billing\""), "{e}");
    }

    #[test]
    fn a_state_no_daemon_writes_is_refused_with_what_is_wrong() {
        let stamp = crate::ids::Stamp::of(Utc::now());
        let cases: Vec<(&str, Change, &str)> = vec![
            (
                "id escapes",
                Box::new(|v| v["incident"]["row"]["id"] = "../../escape".into()),
                "incident id",
            ),
            (
                "id with a NUL",
                Box::new(|v| v["incident"]["row"]["id"] = "a\0b".into()),
                "incident id",
            ),
            (
                "another target's id",
                Box::new(move |v| v["incident"]["row"]["id"] = format!("{stamp}-billing").into()),
                "is not one of target",
            ),
            (
                "another target",
                Box::new(|v| v["incident"]["row"]["target"] = "../x".into()),
                "is for target",
            ),
            (
                "a time in 1970",
                Box::new(|v| v["incident"]["row"]["declared_at"] = "1970-01-01T00:00:00Z".into()),
                "declared_at",
            ),
            (
                "a restart in 2999",
                Box::new(|v| v["restarts"][0] = "2999-01-01T00:00:00Z".into()),
                "a restart",
            ),
            (
                "a writer with a slash",
                Box::new(|v| v["written_by"] = "a/b".into()),
                "member id",
            ),
            (
                "a notice of another incident",
                Box::new(|v| {
                    v["incident"]["notices"] = serde_json::json!([{"kind": "failure", "target": "orders",
                        "endpoint": "x", "incident_id": "../../x", "timestamp": Utc::now(), "failure": null,
                        "archive": null, "reason": null, "downtime_seconds": null,
                        "time_to_recovery_seconds": null, "summary": "s", "outage": null}])
                }),
                "a notice is for incident",
            ),
        ];
        for (name, change, says) in cases {
            let mut v = kept("orders");
            change(&mut v);
            let e = decode(&v, "orders").expect_err(name);
            assert!(e.what.contains(says), "{name}: {e}");
            assert_eq!(e.key, "/sr/state/orders");
        }
        let e = TargetState::decode(b"{", "/sr/state/orders", "orders").unwrap_err();
        assert!(e.what.contains("not a target state"), "{e}");
    }
}

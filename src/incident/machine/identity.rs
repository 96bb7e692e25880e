//! Whether a passing probe counts: the server that answered must be the target's own
//! ([`crate::probe::identity`]). Judged before the probe is reported or stepped, so metrics,
//! the fleet guard, `/status` and the machine all see one verdict: another server is a
//! `wrong_server` failure, never a recovery.

use super::super::actions::{Action, Level};
use super::super::TargetRecord;
use super::{Env, Machine};
use crate::notify::{EscalationReason, NoticeKind};
use crate::probe::identity::{self, IdentityRead, Verdict};
use crate::probe::{FailureClass, ProbeFailure};

/// Judges a probe's result by the server that answered it: learns the identity of the first
/// one that passes (and of the first at a new endpoint, or any during a maintenance window),
/// and turns a pass from another server into a `wrong_server` failure. Returns the result to
/// report and step, and the actions (logs, the store write of a learned identity).
pub fn judge(
    rec: &mut TargetRecord,
    env: &Env<'_>,
    result: Result<(), ProbeFailure>,
    read: Option<IdentityRead>,
) -> (Result<(), ProbeFailure>, Vec<Action>) {
    let mut m = Machine {
        rec,
        env,
        out: Vec::new(),
    };
    let result = match (result, &read) {
        (Ok(()), Some(read)) => m.judge_identity(read),
        (result, _) => result,
    };
    if let (Ok(()), Some(Ok(found))) = (&result, &read) {
        m.note_start(found.started_at);
    }
    (result, m.out)
}

impl Machine<'_, '_> {
    fn judge_identity(&mut self, read: &IdentityRead) -> Result<(), ProbeFailure> {
        let endpoint = self.env.target.dsn.endpoint();
        let known = self.rec.identity.as_ref();
        let moved = known.is_some_and(|k| k.endpoint != endpoint);
        match identity::judge(known, &endpoint, read, self.env.now_utc) {
            Verdict::Same => Ok(()),
            Verdict::Learn(learned) => {
                let (event, msg) = if moved {
                    (
                        "server_identity_relearned",
                        "the target's endpoint changed: its server's identity is learned again",
                    )
                } else {
                    ("server_identity_learned", "server identity learned")
                };
                self.learn(learned, Level::Info, event, msg);
                Ok(())
            }
            Verdict::Other(f) => match read {
                // Planned work: the operator moved the target to another cluster.
                Ok(found) if self.in_maintenance() => {
                    let learned = identity::LearnedIdentity {
                        endpoint,
                        system_identifier: found.system_identifier,
                        learned_at: self.env.now_utc,
                    };
                    self.learn(
                        learned,
                        Level::Warn,
                        "server_identity_accepted",
                        "another server answers during a maintenance window: accepted as the target's own",
                    );
                    Ok(())
                }
                _ => Err(f),
            },
            Verdict::Unchecked(why) => {
                if !std::mem::replace(&mut self.rec.identity_unchecked_said, true) {
                    self.log(
                        Level::Warn,
                        "server_identity_unreadable",
                        "the server's identity cannot be read: probes cannot tell another server on this address from the target's own",
                    )
                    .push(("why", why.into()));
                }
                Ok(())
            }
        }
    }

    fn learn(
        &mut self,
        learned: identity::LearnedIdentity,
        level: Level,
        event: &'static str,
        msg: &'static str,
    ) {
        let before = self.rec.identity.as_ref().map(|b| b.system_identifier);
        let kv = self.log(level, event, msg);
        kv.push((
            "system_identifier",
            learned.system_identifier.to_string().into(),
        ));
        if let Some(before) = before {
            kv.push(("previous_system_identifier", before.to_string().into()));
        }
        self.rec.identity_unchecked_said = false;
        self.rec.identity = Some(learned.clone());
        self.out.push(Action::SaveIdentity(learned));
    }

    /// Another server answers on the address of a target already in an incident (its own
    /// server went down first): one alert for the incident, naming both identifiers. Its own
    /// class stands (a restart, if any, was for that); nothing closes the incident but the
    /// target's own server passing a probe.
    pub(super) fn wrong_server_during_incident(&mut self, f: &ProbeFailure) {
        if f.class != FailureClass::WrongServer || self.in_maintenance() {
            return;
        }
        let Some(inc) = self.rec.incident.as_ref() else {
            return;
        };
        let told = inc.failure.class == FailureClass::WrongServer
            || inc
                .notices
                .iter()
                .any(|n| n.reason == Some(EscalationReason::WrongServer));
        if told {
            return;
        }
        let id = inc.id.clone();
        let kv = self.log(
            Level::Error,
            "wrong_server",
            "another server answers on the target's address",
        );
        kv.push(("incident", id.as_str().into()));
        kv.push(("detail", f.detail.as_str().into()));
        let n = self.failure_notice(
            NoticeKind::Escalation,
            format!(
                "{} The target's own server is still not back; sentinel-remedy restarts nothing for this.",
                crate::policy::diagnosis(FailureClass::WrongServer)
            ),
            Some(EscalationReason::WrongServer),
            Some(f.clone()),
        );
        self.announce(n, "wrong_server", f.detail.clone());
    }
}

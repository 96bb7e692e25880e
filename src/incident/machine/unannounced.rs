//! A restart nobody announced: two passing probes read different postmaster start times
//! ([`crate::probe::identity`]), so the server went down and came back between them (a crash
//! and a restart by another manager, a container's restart policy, a person) without a probe
//! failing. It is an incident all the same: the logs are archived, one notice names the
//! restart with both start times and the downtime it bounds, and the incident closes with it.
//! Nothing is restarted: the server is up.

use super::super::actions::{Action, Level, Metric};
use super::super::{Incident, Phase};
use super::{facts, Machine};
use crate::notify::NoticeKind;
use crate::probe::{FailureClass, ProbeFailure};
use chrono::{DateTime, Utc};

/// A start time as the notice shows it.
fn shown(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

impl Machine<'_, '_> {
    /// Keeps the start time a passing probe of the target's own server read, and opens an
    /// incident when it moved while no incident was open (our own restarts move it too, but
    /// always inside an incident, which the passing probe closes after this).
    pub(super) fn note_start(&mut self, started: Option<DateTime<Utc>>) {
        let Some(now_start) = started else {
            return;
        };
        let endpoint = self.env.target.dsn.endpoint();
        let before = self
            .rec
            .server_started
            .replace((endpoint.clone(), now_start));
        let Some((was_at, was)) = before else {
            return;
        };
        if was_at != endpoint || was == now_start {
            return;
        }
        let quiet = matches!(self.rec.phase, Phase::Healthy | Phase::Suspect)
            && self.rec.incident.is_none()
            && self.rec.unannounced.is_none();
        if !quiet || self.in_maintenance() {
            let kv = self.log(
                Level::Info,
                "server_start_moved",
                "the postmaster's start time moved during an incident or a maintenance window",
            );
            kv.push(("before", shown(was).into()));
            kv.push(("after", shown(now_start).into()));
            return;
        }
        self.unannounced_restart(was, now_start);
    }

    fn unannounced_restart(&mut self, was: DateTime<Utc>, now_start: DateTime<Utc>) {
        let (now, now_utc) = (self.env.now, self.env.now_utc);
        // The server went down after the last passing probe began, and was up by this one.
        let last_ok = self.rec.last_ok_at.unwrap_or(was).min(now_utc);
        let since = (now_utc - last_ok).to_std().unwrap_or_default();
        let first = (last_ok, now.checked_sub(since).unwrap_or(now));
        let failure = ProbeFailure::new(
            FailureClass::UnannouncedRestart,
            format!(
                "restarted without us: postmaster start time moved from {} to {}",
                shown(was),
                shown(now_start)
            ),
        );
        let inc = Incident::new(&self.env.target.name, failure, false, first, (now_utc, now));
        let kv = self.log(
            Level::Error,
            "unannounced_restart",
            "the server was restarted by something else between two passing probes",
        );
        kv.push(("incident", inc.id.as_str().into()));
        kv.push(("before", shown(was).into()));
        kv.push(("after", shown(now_start).into()));
        self.out.push(Action::Count(Metric::Incident {
            class: FailureClass::UnannouncedRestart.label(),
        }));
        let detail = inc.failure.detail.clone();
        self.persist_as(&inc, Phase::Archiving, None, "declared", detail);
        // The archiver reads the SQL snapshot itself: the server answers again.
        self.out.push(Action::Archive {
            facts: facts(self.env.target, &inc),
            snapshot: None,
            flight: self.recording(),
        });
        self.rec.unannounced = Some(inc);
    }

    /// The bundle is written (or could not be): the one notice, and the incident closes with
    /// the downtime bounded by the passing probes around it.
    pub(super) fn unannounced_archived(&mut self, outcome: Result<String, String>) {
        let Some(mut inc) = self.rec.unannounced.take() else {
            return;
        };
        inc.archive = Some(outcome);
        inc.alerted = true;
        let down = (inc.declared_at - inc.first_failure_at)
            .to_std()
            .unwrap_or_default()
            .as_secs_f64();
        let summary = format!(
            "The server was restarted without sentinel-remedy: {}. Down at most {down:.1} s (from the last passing probe at {} to the first after the restart). Logs archived; no restart by sentinel-remedy.",
            inc.failure.detail.trim_start_matches("restarted without us: "),
            inc.first_failure_at.format("%H:%M:%S%.3f UTC"),
        );
        let mut n = self.notice(NoticeKind::UnannouncedRestart, &inc, summary);
        n.failure = Some(inc.failure.clone());
        n.downtime_seconds = Some(down);
        // Over already: no outage for the gate to hold open, nothing for a recovery to close.
        n.outage = None;
        inc.queue_notice(n.clone());
        let kv = self.log(
            Level::Info,
            "unannounced_restart_closed",
            "incident of a restart nobody announced closed",
        );
        kv.push(("incident", inc.id.as_str().into()));
        kv.push(("downtime_at_most_s", down.into()));
        let detail = format!("closed: down at most {down:.3} s");
        self.persist_as(
            &inc,
            Phase::Healthy,
            Some(Some((down, 0.0))),
            "closed",
            detail,
        );
        self.out.push(Action::Notify(n));
    }
}

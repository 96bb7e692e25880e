//! A target this daemon last owned, watched while it has lost coordination (cluster mode, no
//! etcd): probed, never restarted, and announced once if it stays down.
//!
//! Fail closed for restarts: without etcd no daemon can know it is the only one acting, so
//! nothing is restarted. Fail open for alerts: when every daemon lost etcd, nobody else will
//! say the target is down. A daemon cut off alone cannot tell that case from its own, so it
//! waits [`grace`] first: long enough for a daemon that still reaches etcd to take the target
//! over and heal it (then nothing is said here). Past it, one failure notice ("down; not
//! restarting: coordination lost") opens an incident, which the target's next owner continues
//! once etcd answers (`cluster::announce`): restarted then, within the budget, under the same
//! incident id, with no second failure page. Up again before that: one recovery notice.

use super::{Incident, Phase};
use crate::config::TargetConfig;
use crate::notify::{Notice, NoticeKind, OutageRef};
use crate::probe::ProbeFailure;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

/// How long a target stays down, unowned, before this daemon says so: two lease TTLs (the
/// lease expires, another daemon claims the target) and ten seconds to heal it.
pub fn grace(ttl: Duration) -> Duration {
    ttl * 2 + Duration::from_secs(10)
}

/// One watched target.
#[derive(Debug, Default)]
pub struct OrphanWatch {
    /// When the current run of failures began.
    down_since: Option<(DateTime<Utc>, Instant)>,
    /// The outage's incident: the one open when coordination was lost, or one this watch
    /// opened.
    incident: Option<Incident>,
}

/// What to do after a probe.
#[derive(Debug)]
pub enum OrphanStep {
    Nothing,
    /// Say the target is down, and keep the incident for its next owner.
    Alert(Notice),
    /// Say it is up again: the incident is over.
    Recovered(Notice),
}

impl OrphanWatch {
    /// Watches a target whose incident `open` (if any) was open when coordination was lost;
    /// `withheld` are its notices the Monitor did not send (fenced): an incident whose every
    /// alert was withheld was never announced.
    pub fn new(open: Option<Incident>, withheld: &[Notice]) -> Self {
        let open = open.map(|mut i| {
            let sent = |n: &&Notice| !withheld.iter().any(|w| w.key() == n.key());
            i.alerted = i.alerted && i.notices.iter().filter(sent).any(|n| !n.kind.closes());
            i
        });
        Self {
            down_since: None,
            incident: open,
        }
    }

    /// The announced incident, still open: what the next owner continues.
    pub fn announced(&self) -> Option<&Incident> {
        self.incident.as_ref().filter(|i| i.alerted)
    }

    /// One probe's result at `now`.
    pub fn observe(
        &mut self,
        t: &TargetConfig,
        result: Result<(), ProbeFailure>,
        now: (DateTime<Utc>, Instant),
        grace: Duration,
    ) -> OrphanStep {
        let failure = match result {
            Ok(()) => {
                self.down_since = None;
                let Some(inc) = self.incident.take_if(|i| i.alerted) else {
                    return OrphanStep::Nothing;
                };
                let down = now
                    .1
                    .duration_since(inc.first_failure_instant)
                    .as_secs_f64();
                let mut n = notice(t, &inc, NoticeKind::Recovery, now.0, format!(
                    "Probe passes again (no restart: this daemon has lost coordination); down {down:.1} s."
                ));
                n.downtime_seconds = Some(down);
                return OrphanStep::Recovered(n);
            }
            Err(f) => f,
        };
        let since = *self.down_since.get_or_insert(now);
        if self.incident.as_ref().is_some_and(|i| i.alerted) || now.1 - since.1 < grace {
            return OrphanStep::Nothing;
        }
        let inc = self
            .incident
            .get_or_insert_with(|| Incident::new(&t.name, failure.clone(), false, since, now));
        inc.alerted = true;
        let down = now.1.duration_since(since.1).as_secs_f64();
        let mut n = notice(t, inc, NoticeKind::Failure, now.0, format!(
            "Down for {down:.0} s; not restarting: coordination lost (this daemon cannot reach etcd, so no restart is safe). It is restarted, within its budget, once a daemon reaches etcd again."
        ));
        n.failure = Some(failure);
        inc.queue_notice(n.clone());
        OrphanStep::Alert(n)
    }

    /// The phase the next owner resumes the announced incident in: from the start (the
    /// archive, then the restart).
    pub fn resume_phase() -> Phase {
        Phase::Archiving
    }
}

fn notice(
    t: &TargetConfig,
    inc: &Incident,
    kind: NoticeKind,
    at: DateTime<Utc>,
    summary: String,
) -> Notice {
    Notice {
        kind,
        target: t.name.clone(),
        endpoint: t.dsn.endpoint(),
        incident_id: inc.id.to_string(),
        timestamp: at,
        failure: None,
        archive: None,
        reason: None,
        downtime_seconds: None,
        time_to_recovery_seconds: None,
        summary,
        outage: Some(OutageRef {
            server: super::machine::server_key(t),
            started_at: inc.first_failure_at,
            may_lead: true,
            id: None,
        }),
        cause: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::FailureClass;

    fn down() -> Result<(), ProbeFailure> {
        Err(ProbeFailure {
            class: FailureClass::ConnectionRefused,
            sqlstate: None,
            detail: "refused".into(),
        })
    }

    #[test]
    fn down_past_the_grace_is_said_once_and_up_again_once() {
        let t = crate::incident::tests::target("");
        let grace = Duration::from_secs(10);
        let (w0, i0) = (Utc::now(), Instant::now());
        let at = |s: u64| {
            (
                w0 + chrono::Duration::seconds(s as i64),
                i0 + Duration::from_secs(s),
            )
        };
        let mut w = OrphanWatch::new(None, &[]);
        let steps: Vec<String> = [
            (0, false),
            (5, false),
            (9, false),
            (10, false),
            (11, false),
            (30, false),
            (31, true),
            (32, true),
            (40, false),
        ]
        .into_iter()
        .map(|(s, up)| {
            let r = if up { Ok(()) } else { down() };
            match w.observe(&t, r, at(s), grace) {
                OrphanStep::Nothing => format!("{s}:-"),
                OrphanStep::Alert(n) => format!("{s}:{}", n.kind.label()),
                OrphanStep::Recovered(n) => format!("{s}:{}", n.kind.label()),
            }
        })
        .collect();
        assert_eq!(
            steps,
            [
                "0:-",
                "5:-",
                "9:-",
                "10:failure",
                "11:-",
                "30:-",
                "31:recovery",
                "32:-",
                "40:-"
            ]
        );
    }

    #[test]
    fn an_incident_already_announced_is_not_announced_again() {
        let t = crate::incident::tests::target("");
        let now = (Utc::now(), Instant::now());
        let mut inc = Incident::new(&t.name, down().unwrap_err(), false, now, now);
        inc.alerted = true;
        let sent = notice(
            &t,
            &inc,
            NoticeKind::Failure,
            now.0,
            "restart issued".into(),
        );
        inc.queue_notice(sent);
        let id = inc.id.to_string();
        let mut w = OrphanWatch::new(Some(inc), &[]);
        let later = (now.0, now.1 + Duration::from_secs(60));
        assert!(matches!(
            w.observe(&t, down(), later, Duration::ZERO),
            OrphanStep::Nothing
        ));
        assert_eq!(w.announced().map(|i| i.id.to_string()), Some(id.clone()));
        match w.observe(&t, Ok(()), later, Duration::ZERO) {
            OrphanStep::Recovered(n) => assert_eq!(n.incident_id, id),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_incident_whose_alert_was_withheld_is_announced_past_the_grace() {
        let t = crate::incident::tests::target("");
        let now = (Utc::now(), Instant::now());
        let mut inc = Incident::new(&t.name, down().unwrap_err(), false, now, now);
        inc.alerted = true;
        let held = notice(&t, &inc, NoticeKind::Failure, now.0, "held".into());
        inc.queue_notice(held.clone());
        let id = inc.id.to_string();
        let mut w = OrphanWatch::new(Some(inc), &[held]);
        assert!(w.announced().is_none(), "withheld: not announced");
        let grace = Duration::from_secs(10);
        let first = (now.0, now.1 + Duration::from_secs(1));
        assert!(matches!(
            w.observe(&t, down(), first, grace),
            OrphanStep::Nothing
        ));
        let later = (now.0, now.1 + Duration::from_secs(11));
        match w.observe(&t, down(), later, grace) {
            OrphanStep::Alert(n) => {
                assert_eq!(n.incident_id, id, "the same incident");
                assert!(n.summary.contains("not restarting: coordination lost"));
            }
            other => panic!("{other:?}"),
        }
    }
}

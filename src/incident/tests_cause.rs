//! Judgment from the cause: a backend crash is alerted and never restarted, a full disk holds
//! the restart until there is room and then restarts once, a start that cannot work escalates
//! with its cause as the page's first line.

use super::*;
use crate::cause::{Cause, CauseClass};

fn cause(class: CauseClass, sentence: &str) -> Cause {
    Cause {
        class,
        sentence: sentence.into(),
        evidence: vec![],
        fix: Some("the fix".into()),
    }
}

impl T {
    fn archived_with(&mut self, c: Cause) -> Vec<Action> {
        let id = self.id();
        self.step(Observation::Archived {
            id,
            outcome: Ok("/incidents/x".into()),
            cause: Some(c),
        })
    }
}

#[test]
fn a_backend_crash_opens_an_incident_at_once_alerts_its_cause_and_never_restarts() {
    let mut t = T::new("");
    t.ok();
    let got = t.step(Observation::BackendCrash {
        detail: "checkpointer replaced".into(),
    });
    assert_eq!(names(&got), ["persist:declared", "archive"]);
    assert!(events(&got).contains(&"backend_crash".to_string()));
    // The server is back before the bundle is written: the incident waits for its alert.
    t.ok();
    assert_eq!(t.rec.phase, Phase::Archiving);
    let got = t.archived_with(cause(
        CauseClass::BackendCrash,
        "Backend crash: server process 42 was terminated by signal 11 while running \"SELECT 1\".",
    ));
    assert_eq!(
        names(&got),
        [
            "persist:archived",
            "checkpoint:archived",
            "persist:alerted",
            "notify:failure"
        ]
    );
    let n = notices(&got)[0];
    assert!(n.title().contains("signal 11"), "{}", n.title());
    assert_eq!(t.rec.phase, Phase::Unhealed);
    let got = t.ok();
    assert_eq!(t.rec.phase, Phase::Healthy);
    assert!(names(&got).contains(&"notify:recovery".to_string()));
    assert!(!names(&got).contains(&"heal".to_string()));
    // During an incident (a dead postmaster being healed), a crash report changes nothing.
    t.restarting();
    let got = t.step(Observation::BackendCrash { detail: "x".into() });
    assert!(names(&got).is_empty(), "{:?}", names(&got));
}

#[test]
fn a_full_disk_holds_the_restart_alerts_once_and_restarts_once_when_space_is_back() {
    let mut t = T::new("");
    t.declare(FailureClass::ConnectionRefused);
    let got = t.archived_with(cause(
        CauseClass::DiskFull,
        "Disk full: 0.0 MiB free of 64.0 MiB.",
    ));
    assert_eq!(
        names(&got),
        [
            "persist:archived",
            "checkpoint:archived",
            "watch_space",
            "persist:held",
            "notify:failure"
        ]
    );
    assert!(notices(&got)[0].title().contains("Disk full"));
    assert_eq!(t.rec.phase, Phase::Held);
    // Probes keep failing while held: no restart, no second alert.
    for _ in 0..5 {
        let got = t.fail(FailureClass::ConnectionRefused);
        assert!(!names(&got)
            .iter()
            .any(|n| n == "heal" || n.starts_with("notify")));
    }
    let id = t.id();
    let got = t.step(Observation::SpaceFreed { id: id.clone() });
    assert_eq!(names(&got), ["lease"]);
    let got = t.granted();
    assert_eq!(names(&got), HEAL_ISSUED);
    // A repeat of the same news after the restart changes nothing.
    let got = t.step(Observation::SpaceFreed { id });
    assert!(names(&got).is_empty());
}

#[test]
fn a_start_that_cannot_work_escalates_with_its_own_cause_first() {
    let mut t = T::new("");
    t.restarting();
    let start = cause(
        CauseClass::ConfigError,
        "The start failed on a configuration error at /d/postgresql.conf line 812: \"syntax error\".",
    );
    let got = t.healed(
        false,
        Some(HealFailure {
            kind: "start_failed",
            detail: start.sentence.clone(),
            class: None,
            cause: Some(start),
        }),
    );
    assert_eq!(
        names(&got),
        [
            "persist:heal_failed",
            "persist:escalated",
            "notify:escalation"
        ]
    );
    let n = notices(&got)[0];
    assert!(
        n.title().contains("postgresql.conf line 812"),
        "{}",
        n.title()
    );
    assert_eq!(n.reason, Some(EscalationReason::HealRefused));
    assert_eq!(t.rec.phase, Phase::Escalated);
}

#[test]
fn a_postmaster_that_dies_after_a_backend_crash_is_restarted_like_any_death() {
    for death in [
        Observation::ProcessExited,
        Observation::ContainerDown {
            detail: "container pg exited (code 137)".into(),
            class: Some(FailureClass::ProcessExited),
        },
    ] {
        let mut t = T::new("");
        t.ok();
        t.step(Observation::BackendCrash {
            detail: "crash".into(),
        });
        t.archived_with(cause(CauseClass::BackendCrash, "Backend crash."));
        assert_eq!(t.rec.phase, Phase::Unhealed);
        let got = t.step(death);
        assert_eq!(names(&got), ["lease", "probe_soon"]);
        assert_eq!(
            t.rec.incident.as_ref().unwrap().failure.class,
            FailureClass::ProcessExited
        );
        let got = t.granted();
        assert_eq!(names(&got), HEAL_ISSUED);
    }
}

//! Table tests of the incident machine: each row is a record, a sequence of observations (with
//! the time they arrive at), and what must come out: the phase, and the actions in order,
//! named shortly (`archive`, `lease`, `heal`, `notify:failure`, `persist:declared`, ...).
//! Logs and metrics are left out of the names except where a row says so.

use super::actions::{Action, Metric};
use super::{step, Env, Incident, Observation, Phase, TargetRecord};
use crate::config::{Source, TargetConfig, VarSource};
use crate::heal_report::{HealFailure, HealReport};
use crate::lease::LeaseRefusal;
use crate::notify::{EscalationReason, NoticeKind};
use crate::probe::{FailureClass, ProbeFailure};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One target: threshold 3, budget 2 per hour, backoff 10 s, recovery_timeout 60 s, a heal
/// command; `extra` is YAML appended to the target's entry.
pub(super) fn target(extra: &str) -> TargetConfig {
    let text = format!(
        r#"
defaults:
  probe: {{ interval: 5s, timeout: 2s, failure_threshold: 3 }}
  restart_budget: {{ max_restarts: 2, window: 1h, backoff: 10s, backoff_max: 5m, backoff_reset: 10m }}
  recovery_timeout: 60s
notify: {{ console: true }}
targets:
  - name: db
    dsn: "postgres://u@127.0.0.1:5999/db"
{extra}"#
    );
    let text = if extra.contains("heal") {
        text
    } else {
        format!("{text}    heal: {{ command: [\"true\"] }}\n")
    };
    let reg = crate::config::load_str(
        &text,
        Source::Generated("machine test".into()),
        &VarSource::fixed(HashMap::new()),
    )
    .unwrap_or_else(|e| panic!("test registry: {e}"));
    reg.targets.into_iter().next().expect("one target")
}

/// A machine under test, with its own clock.
struct T {
    rec: TargetRecord,
    cfg: TargetConfig,
    now: Instant,
    utc: DateTime<Utc>,
    fleet: Option<(usize, usize)>,
}

impl T {
    fn new(extra: &str) -> Self {
        Self {
            rec: TargetRecord::default(),
            cfg: target(extra),
            now: Instant::now(),
            utc: Utc::now(),
            fleet: None,
        }
    }

    fn at(&mut self, d: Duration) -> &mut Self {
        self.now += d;
        self.utc += chrono::Duration::from_std(d).unwrap();
        self
    }

    fn step(&mut self, obs: Observation) -> Vec<Action> {
        let env = Env {
            target: &self.cfg,
            now: self.now,
            now_utc: self.utc,
            fleet_tripped: self.fleet,
        };
        step(&mut self.rec, &env, obs)
    }

    fn probe(&mut self, result: Result<(), ProbeFailure>) -> Vec<Action> {
        self.step(Observation::Probe {
            result,
            latency: Duration::from_millis(3),
            manager: None,
        })
    }

    fn ok(&mut self) -> Vec<Action> {
        self.probe(Ok(()))
    }

    /// A passing probe answered by the server with this `system_identifier`, judged as the
    /// Monitor does (identity first, then the machine); the judge's actions come first.
    fn ok_from(&mut self, sysid: &str) -> Vec<Action> {
        self.ok_started(sysid, None)
    }

    /// A passing probe from `sysid` whose postmaster started at `started`.
    fn ok_started(&mut self, sysid: &str, started: Option<DateTime<Utc>>) -> Vec<Action> {
        let read = Ok(crate::probe::identity::ServerIdentity {
            system_identifier: crate::probe::identity::SystemIdentifier::parse(sysid).unwrap(),
            started_at: started,
        });
        let env = Env {
            target: &self.cfg,
            now: self.now,
            now_utc: self.utc,
            fleet_tripped: self.fleet,
        };
        let (result, mut out) = super::machine::judge(&mut self.rec, &env, Ok(()), Some(read));
        out.extend(self.probe(result));
        out
    }

    fn fail(&mut self, class: FailureClass) -> Vec<Action> {
        self.probe(Err(ProbeFailure::new(class, "test failure")))
    }

    fn id(&self) -> String {
        self.rec
            .incident
            .as_ref()
            .expect("an open incident")
            .id
            .to_string()
    }

    /// Declares an incident (threshold failures) and returns its id.
    fn declare(&mut self, class: FailureClass) -> String {
        for _ in 0..3 {
            self.fail(class);
        }
        assert_eq!(self.rec.phase, Phase::Archiving);
        self.id()
    }

    /// Declares a refused-connection incident and takes it to the issued restart; its id.
    fn restarting(&mut self) -> String {
        self.declare(FailureClass::ConnectionRefused);
        self.archived();
        self.granted();
        self.id()
    }

    fn archived(&mut self) -> Vec<Action> {
        let id = self.id();
        self.step(Observation::Archived {
            id,
            outcome: Ok("/incidents/x".into()),
            cause: None,
        })
    }

    fn granted(&mut self) -> Vec<Action> {
        let id = self.id();
        self.step(Observation::LeaseGranted { id })
    }

    fn healed(&mut self, success: bool, failure: Option<HealFailure>) -> Vec<Action> {
        let id = self.id();
        let report = HealReport {
            success,
            failure,
            starts: 1,
            ..HealReport::none()
        };
        self.step(Observation::Healed { id, report })
    }
}

/// Short names of the actions, logs and metrics left out.
fn names(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| {
            Some(match a {
                Action::Snapshot => "snapshot".into(),
                Action::Archive { .. } => "archive".into(),
                Action::AcquireLease { .. } => "lease".into(),
                Action::ReleaseLease => "release".into(),
                Action::Heal { .. } => "heal".into(),
                Action::HealDone { .. } => "heal_done".into(),
                Action::Notify(n) => format!("notify:{}", n.kind.label()),
                Action::FleetAlert { .. } => "fleet_alert".into(),
                Action::RetryHeal { .. } => "retry".into(),
                Action::RecoveryTimer { .. } => "recovery_timer".into(),
                Action::BaselineRedo => "baseline_redo".into(),
                Action::CheckRedo { .. } => "check_redo".into(),
                Action::InspectContainer => "inspect".into(),
                Action::WatchSpace { .. } => "watch_space".into(),
                Action::ProbeSoon => "probe_soon".into(),
                Action::Persist { event, .. } => format!("persist:{event}"),
                Action::Timeline { event, .. } => format!("timeline:{event}"),
                Action::RecordRestart => "record_restart".into(),
                Action::SaveIdentity(_) => "save_identity".into(),
                Action::Checkpoint(p) => format!("checkpoint:{p}"),
                Action::Count(_) | Action::Log(_) => return None,
            })
        })
        .collect()
}

/// The `event` of every log line.
fn events(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(l) => l.event().map(str::to_string),
            _ => None,
        })
        .collect()
}

fn notices(actions: &[Action]) -> Vec<&crate::notify::Notice> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify(n) => Some(n),
            _ => None,
        })
        .collect()
}

const HEAL_ISSUED: [&str; 6] = [
    "record_restart",
    "persist:heal_issued",
    "checkpoint:heal_issued",
    "heal",
    "notify:failure",
    "recovery_timer",
];

#[test]
fn failures_below_the_threshold_are_suspect_and_clear_without_action() {
    let mut t = T::new("");
    let rows: [(&str, Phase, &[&str]); 4] = [
        ("fail", Phase::Suspect, &["snapshot"]),
        ("fail", Phase::Suspect, &[]),
        ("ok", Phase::Healthy, &[]),
        ("fail", Phase::Suspect, &["snapshot"]),
    ];
    for (i, (obs, phase, want)) in rows.iter().enumerate() {
        let got = match *obs {
            "fail" => t.fail(FailureClass::ConnectionRefused),
            _ => t.ok(),
        };
        assert_eq!(t.rec.phase, *phase, "row {i}");
        assert_eq!(names(&got), *want, "row {i}");
        if i == 2 {
            assert_eq!(events(&got), ["probe_ok", "transient_cleared"]);
        }
    }
    assert!(t.rec.incident.is_none());
}

#[test]
fn the_threshold_declares_archives_then_leases_heals_alerts_and_recovers() {
    let mut t = T::new("");
    t.fail(FailureClass::Timeout);
    t.fail(FailureClass::Timeout);
    let got = t.fail(FailureClass::Timeout);
    assert_eq!(names(&got), ["persist:declared", "archive"]);
    assert!(events(&got).contains(&"incident_declared".to_string()));
    assert!(got
        .iter()
        .any(|a| matches!(a, Action::Count(Metric::Incident { class: "timeout" }))));

    let got = t.archived();
    assert_eq!(
        names(&got),
        ["persist:archived", "checkpoint:archived", "lease"]
    );
    assert_eq!(t.rec.phase, Phase::Archiving, "waiting for the lease");
    assert_eq!(
        names(&t.archived()),
        Vec::<String>::new(),
        "a repeat archive reply"
    );

    let got = t.granted();
    assert_eq!(names(&got), HEAL_ISSUED);
    assert_eq!(t.rec.phase, Phase::Healing);
    assert_eq!(t.rec.restarts.len(), 1);

    let got = t.healed(true, None);
    assert_eq!(names(&got), ["persist:heal_succeeded", "probe_soon"]);
    assert_eq!(t.rec.phase, Phase::Recovering);

    t.at(Duration::from_secs(2));
    let got = t.ok();
    assert_eq!(
        names(&got),
        ["heal_done", "persist:recovered", "notify:recovery"]
    );
    assert_eq!(t.rec.phase, Phase::Healthy);
    assert!(t.rec.incident.is_none());
    let n = notices(&got)[0];
    assert!(
        n.downtime_seconds.unwrap() >= 2.0,
        "downtime counts from the first failure"
    );
}

#[test]
fn a_dead_process_declares_at_the_first_failing_probe_with_its_cause() {
    for (obs, class, detail) in [
        (
            Observation::ProcessExited,
            FailureClass::ProcessExited,
            "postmaster exited",
        ),
        (
            Observation::ProcessStopped { pid: 42 },
            FailureClass::Timeout,
            "postmaster 42 is stopped",
        ),
        (
            Observation::ContainerDown {
                detail: "container db died".into(),
                class: None,
            },
            FailureClass::ConnectionRefused,
            "container db died",
        ),
    ] {
        let mut t = T::new("");
        let soon = t.step(obs);
        assert!(names(&soon).contains(&"probe_soon".to_string()));
        let probe_class = if class == FailureClass::Timeout {
            FailureClass::Timeout
        } else {
            FailureClass::ConnectionRefused
        };
        let got = t.fail(probe_class);
        assert_eq!(names(&got), ["persist:declared", "archive"], "{detail}");
        let inc = t.rec.incident.as_ref().unwrap();
        assert!(inc.hard);
        assert_eq!(inc.failure.class, class, "{detail}");
        assert!(
            inc.failure.detail.starts_with(detail),
            "{}",
            inc.failure.detail
        );
    }
}

#[test]
fn container_events_during_an_incident_change_nothing() {
    let mut t = T::new("");
    t.declare(FailureClass::ConnectionRefused);
    let got = t.step(Observation::ContainerDown {
        detail: "die".into(),
        class: None,
    });
    assert!(got.is_empty());
    assert!(!t.rec.process_dead);
}

#[test]
fn holds_and_refusals_each_alert_once_and_retry() {
    // (setup, expected phase, expected actions after the archive reply)
    type Setup = fn(&mut T);
    let rows: [(&str, Setup, Phase, &[&str]); 4] = [
        (
            "budget spent",
            |t| {
                t.rec.restarts.extend([t.now, t.now]);
            },
            Phase::Held,
            &["persist:held", "notify:escalation"],
        ),
        (
            "backoff",
            |t| {
                t.rec.restarts.push_back(t.now);
                t.rec.backoff_step = 1;
            },
            Phase::Held,
            &["retry", "persist:held", "notify:failure"],
        ),
        (
            "fleet guard",
            |t| t.fleet = Some((5, 6)),
            Phase::Held,
            &["retry", "persist:held", "notify:failure", "fleet_alert"],
        ),
        (
            "another manager",
            |t| t.rec.managed_by = Some("Patroni".into()),
            Phase::Unhealed,
            &["persist:alerted", "notify:failure"],
        ),
    ];
    for (what, setup, phase, want) in rows {
        let mut t = T::new("");
        setup(&mut t);
        t.declare(FailureClass::ConnectionRefused);
        let got = t.archived();
        let after = &names(&got)[2..];
        assert_eq!(after, want, "{what}");
        assert_eq!(t.rec.phase, phase, "{what}");
        // Probing on while held: nothing new.
        let again = t.fail(FailureClass::ConnectionRefused);
        assert!(notices(&again).is_empty(), "{what}: no second alert");
    }
}

#[test]
fn a_budget_hold_escalates_with_its_reason_and_restarts_when_the_window_allows() {
    let mut t = T::new("");
    t.rec.restarts.extend([t.now, t.now]);
    t.declare(FailureClass::ConnectionRefused);
    let got = t.archived();
    assert_eq!(
        notices(&got)[0].reason,
        Some(EscalationReason::RestartBudgetExhausted)
    );
    assert!(events(&got).contains(&"budget_exhausted".to_string()));
    t.at(Duration::from_secs(3601));
    let got = t.fail(FailureClass::ConnectionRefused);
    assert_eq!(
        names(&got),
        ["lease"],
        "the window passed: the restart is asked for"
    );
    assert_eq!(names(&t.granted()), HEAL_ISSUED);
}

#[test]
fn a_backoff_hold_retries_on_its_timer_then_restarts() {
    let mut t = T::new("");
    t.rec.restarts.push_back(t.now);
    t.rec.backoff_step = 1;
    t.declare(FailureClass::ConnectionRefused);
    let got = t.archived();
    let wait = got.iter().find_map(|a| match a {
        Action::RetryHeal { after, .. } => Some(*after),
        _ => None,
    });
    assert_eq!(wait, Some(Duration::from_secs(10)));
    let id = t.id();
    t.at(Duration::from_secs(5));
    let early = t.step(Observation::RetryHeal { id: id.clone() });
    assert_eq!(
        names(&early),
        ["retry"],
        "still in backoff: no second alert"
    );
    t.at(Duration::from_secs(5));
    assert_eq!(names(&t.step(Observation::RetryHeal { id })), ["lease"]);
}

#[test]
fn lease_answers() {
    // Held by another daemon: hold, and leave the page to the one that acted.
    let mut t = T::new("");
    t.declare(FailureClass::ConnectionRefused);
    t.archived();
    let id = t.id();
    let refusal = LeaseRefusal::Held {
        owner: "other".into(),
        until: t.utc,
    };
    let got = t.step(Observation::LeaseRefused {
        id: id.clone(),
        refusal,
    });
    assert_eq!(names(&got), ["retry", "persist:held", "notify:failure"]);
    assert!(!notices(&got)[0].outage.as_ref().unwrap().may_lead);
    assert_eq!(t.rec.phase, Phase::Held);

    // A store failing past recovery_timeout: escalate once, fail closed.
    t.at(Duration::from_secs(61));
    t.step(Observation::RetryHeal { id: id.clone() });
    let got = t.step(Observation::LeaseRefused {
        id,
        refusal: LeaseRefusal::Store("disk gone".into()),
    });
    assert_eq!(names(&got), ["persist:escalated", "notify:escalation"]);
    assert_eq!(notices(&got)[0].reason, Some(EscalationReason::HealRefused));
    assert_eq!(t.rec.phase, Phase::Escalated);

    // Recovered while the lease was being taken: give it back, restart nothing.
    let mut t = T::new("");
    t.declare(FailureClass::ConnectionRefused);
    t.archived();
    let id = t.id();
    t.ok();
    let got = t.step(Observation::LeaseGranted { id });
    assert_eq!(names(&got), ["release"]);
    assert!(t.rec.restarts.is_empty());
}

#[test]
fn a_second_heal_decision_waits_for_the_pending_lease() {
    let mut t = T::new("");
    t.rec.restarts.extend([t.now, t.now]);
    t.declare(FailureClass::ConnectionRefused);
    t.archived();
    t.at(Duration::from_secs(3601));
    assert_eq!(names(&t.fail(FailureClass::ConnectionRefused)), ["lease"]);
    let again = t.fail(FailureClass::ConnectionRefused);
    assert!(names(&again).is_empty(), "one lease request at a time");
}

#[test]
fn policy_classes_alert_without_restarting() {
    for (class, extra, phase, reason) in [
        (FailureClass::TooManyConnections, "", Phase::Unhealed, None),
        (FailureClass::Authentication, "", Phase::Unhealed, None),
        (
            FailureClass::ConnectionRefused,
            "no heal",
            Phase::Unhealed,
            Some(EscalationReason::NoHealAction),
        ),
    ] {
        let mut t = T::new("");
        if extra == "no heal" {
            t.cfg.heal = None;
        }
        t.declare(class);
        let got = t.archived();
        assert_eq!(t.rec.phase, phase, "{class:?}");
        assert!(!names(&got).contains(&"lease".to_string()), "{class:?}");
        let n = notices(&got);
        assert_eq!(n.len(), 1, "{class:?}");
        assert_eq!(n[0].reason, reason, "{class:?}");
    }
}

#[test]
fn a_refused_authentication_is_declared_at_once_alerted_once_and_never_restarted() {
    let mut t = T::new("");
    // Two refused connections, then what answers on the port asks for the password in
    // clear: that one failure declares, as its own class, and does not restart.
    t.fail(FailureClass::ConnectionRefused);
    t.fail(FailureClass::ConnectionRefused);
    let got = t.fail(FailureClass::InsecureAuth);
    assert_eq!(t.rec.phase, Phase::Archiving);
    assert_eq!(
        t.rec.incident.as_ref().unwrap().failure.class,
        FailureClass::InsecureAuth
    );
    assert!(
        names(&got).contains(&"archive".to_string()),
        "{:?}",
        names(&got)
    );
    let got = t.archived();
    assert!(
        !names(&got).contains(&"lease".to_string()),
        "{:?}",
        names(&got)
    );
    assert_eq!(notices(&got).len(), 1, "alerted once");
    // Later failures of any class change nothing: no lease, no heal, no second alert.
    for class in [FailureClass::InsecureAuth, FailureClass::ConnectionRefused] {
        for _ in 0..5 {
            let got = t.at(Duration::from_secs(1)).fail(class);
            assert!(
                !names(&got).iter().any(|n| n == "lease" || n == "heal"),
                "{:?}",
                names(&got)
            );
            assert!(notices(&got).is_empty());
        }
    }
    // A first failure of the class declares with no threshold at all.
    let mut t = T::new("");
    t.fail(FailureClass::InsecureAuth);
    assert_eq!(t.rec.phase, Phase::Archiving);
}

#[test]
fn a_container_restart_policy_is_waited_for_and_said() {
    let mut t = T::new("");
    t.step(Observation::RestartPolicy(Some("always".into())));
    t.declare(FailureClass::ConnectionRefused);
    t.archived();
    let got = t.granted();
    let n = notices(&got)[0];
    assert!(
        n.summary.contains("restart policy (always)"),
        "{}",
        n.summary
    );
}

#[test]
fn escalation_after_recovery_timeout_then_quiet_until_the_window_passes() {
    let mut t = T::new("");
    let id = t.restarting();
    t.healed(true, None);
    t.at(Duration::from_secs(60));
    let got = t.step(Observation::RecoveryDeadline { id: id.clone() });
    assert_eq!(names(&got), ["persist:escalated", "notify:escalation"]);
    assert_eq!(t.rec.phase, Phase::Escalated);
    assert!(t.step(Observation::RecoveryDeadline { id }).is_empty());
    assert!(notices(&t.fail(FailureClass::ConnectionRefused)).is_empty());
    t.at(Duration::from_secs(3600));
    let got = t.fail(FailureClass::ConnectionRefused);
    assert_eq!(names(&got), ["persist:closed_unrecovered"]);
    assert_eq!(t.rec.phase, Phase::Suspect);
    assert!(t.rec.incident.is_none());
}

#[test]
fn a_failed_heal_escalates_with_its_reason() {
    for (failure, reason, class) in [
        (None, EscalationReason::RecoveryTimeout, None),
        (
            Some(HealFailure {
                kind: "restart_budget_exhausted",
                detail: "3 starts".into(),
                class: None,
                cause: None,
            }),
            EscalationReason::RestartBudgetExhausted,
            None,
        ),
        (
            Some(HealFailure {
                kind: "container_missing",
                detail: "no such container".into(),
                class: Some(FailureClass::ContainerMissing),
                cause: None,
            }),
            EscalationReason::HealRefused,
            Some(FailureClass::ContainerMissing),
        ),
    ] {
        let mut t = T::new("");
        t.restarting();
        let got = t.healed(false, failure);
        assert_eq!(
            names(&got),
            [
                "persist:heal_failed",
                "persist:escalated",
                "notify:escalation"
            ]
        );
        assert_eq!(notices(&got)[0].reason, Some(reason));
        if let Some(c) = class {
            assert_eq!(t.rec.incident.as_ref().unwrap().failure.class, c);
        }
    }
}

#[test]
fn a_recovering_server_is_waited_on_while_redo_advances() {
    let mut t = T::new("");
    let id = t.restarting();
    t.healed(true, None);
    let got = t.fail(FailureClass::Recovering);
    assert_eq!(names(&got), ["baseline_redo"]);
    assert!(names(&t.fail(FailureClass::Recovering)).is_empty(), "once");
    t.step(Observation::RedoBaseline(Some(100)));
    t.at(Duration::from_secs(60));
    let got = t.step(Observation::RecoveryDeadline { id: id.clone() });
    assert_eq!(names(&got), ["check_redo"]);
    let got = t.step(Observation::RedoProgress {
        id: id.clone(),
        lsn: Some((200, "0/C8".into())),
    });
    assert_eq!(names(&got), ["recovery_timer"]);
    let got = t.step(Observation::RedoProgress {
        id,
        lsn: Some((200, "0/C8".into())),
    });
    assert_eq!(names(&got), ["persist:escalated", "notify:escalation"]);
}

#[test]
fn a_57p03_server_is_never_declared() {
    let mut t = T::new("");
    for _ in 0..10 {
        assert!(names(&t.fail(FailureClass::Recovering)).is_empty());
    }
    assert_eq!(t.rec.phase, Phase::Healthy);
}

#[test]
fn maintenance_suppresses_everything_and_says_so_once() {
    let mut t = T::new("");
    t.rec.maintenance_until = Some(t.utc + chrono::Duration::minutes(10));
    let mut said = 0;
    for _ in 0..6 {
        let got = t.fail(FailureClass::ConnectionRefused);
        said += events(&got)
            .iter()
            .filter(|e| *e == "maintenance_suppressed")
            .count();
        assert!(!names(&got).iter().any(|n| n == "archive"));
    }
    assert_eq!(said, 1);
    assert!(t.rec.incident.is_none());
    t.at(Duration::from_secs(601));
    let got = t.fail(FailureClass::ConnectionRefused);
    assert_eq!(
        names(&got),
        ["persist:declared", "archive"],
        "the window closed"
    );
}

#[test]
fn a_daemon_restart_resumes_the_open_incident_where_it_stood() {
    let rows: [(Phase, &[&str]); 5] = [
        (Phase::Archiving, &["archive", "notify:failure"]),
        (
            Phase::Healing,
            &["recovery_timer", "heal", "notify:failure"],
        ),
        (Phase::Recovering, &["recovery_timer", "notify:failure"]),
        (Phase::Escalated, &["notify:failure"]),
        (Phase::Healthy, &[]),
    ];
    for (phase, want) in rows {
        let mut t = T::new("");
        if phase != Phase::Healthy {
            let mut inc = Incident::new(
                "db",
                ProbeFailure::new(FailureClass::ConnectionRefused, "x"),
                false,
                (t.utc, t.now),
                (t.utc, t.now),
            );
            inc.heal_started = Some(t.now);
            let n = notice(&inc.id);
            inc.queue_notice(n);
            t.rec.incident = Some(inc);
        }
        t.rec.phase = phase;
        let got = t.step(Observation::Resume);
        assert_eq!(names(&got), want, "{phase:?}");
    }
}

#[test]
fn a_lease_answer_lost_with_a_replaced_monitor_is_asked_again() {
    let mut t = T::new("");
    t.rec.restarts.extend([t.now, t.now]);
    t.declare(FailureClass::ConnectionRefused);
    t.archived();
    t.at(Duration::from_secs(3601));
    t.fail(FailureClass::ConnectionRefused);
    assert!(t.rec.lease_pending.is_some());
    let got = t.step(Observation::Resume);
    assert!(names(&got).contains(&"retry".to_string()));
    assert!(t.rec.lease_pending.is_none());
}

#[test]
fn the_heal_counts_its_extra_starts_against_the_budget() {
    let mut t = T::new("");
    let id = t.restarting();
    let report = HealReport {
        success: true,
        starts: 3,
        ..HealReport::none()
    };
    let got = t.step(Observation::Healed { id, report });
    assert_eq!(
        names(&got),
        [
            "record_restart",
            "record_restart",
            "persist:heal_succeeded",
            "probe_soon"
        ]
    );
    assert_eq!(t.rec.restarts.len(), 3);
}

#[test]
fn the_machine_reads_no_clock() {
    // The same observations at the same given times give the same actions, whenever run.
    let run = || {
        let mut t = T::new("");
        t.now -= Duration::from_secs(1);
        t.declare(FailureClass::ConnectionRefused);
        t.archived();
        let got = t.granted();
        match got.iter().find(|a| matches!(a, Action::Heal { .. })) {
            Some(Action::Heal { max_starts, .. }) => *max_starts,
            _ => 0,
        }
    };
    assert_eq!(run(), 2);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(run(), 2);
}

fn notice(id: &str) -> crate::notify::Notice {
    crate::notify::Notice {
        kind: NoticeKind::Failure,
        target: "db".into(),
        endpoint: "127.0.0.1:5999/db".into(),
        incident_id: id.into(),
        timestamp: Utc::now(),
        failure: None,
        archive: None,
        reason: None,
        downtime_seconds: None,
        time_to_recovery_seconds: None,
        summary: "down".into(),
        outage: None,
        cause: None,
    }
}

#[test]
fn a_replaced_container_closes_the_incident_as_replaced_and_the_record_starts_over() {
    let mut t = T::new("");
    t.rec.restarts.extend([t.now, t.now]);
    t.declare(FailureClass::ConnectionRefused);
    t.archived();
    assert_eq!(t.rec.phase, Phase::Held);
    let id = t.id();
    t.at(Duration::from_secs(30));
    let got = t.step(Observation::Replaced {
        container: "db".into(),
        container_id: "0123456789abcdef".into(),
    });
    assert_eq!(names(&got), ["persist:replaced", "notify:replaced"]);
    assert!(events(&got).contains(&"incident_replaced".to_string()));
    let n = notices(&got)[0];
    assert_eq!(n.incident_id, id);
    assert_eq!(n.kind, NoticeKind::Replaced);
    assert_eq!(n.downtime_seconds, None, "not a recovery: no downtime");
    assert!(n.summary.contains("0123456789ab"), "{}", n.summary);
    assert!(t.rec.incident.is_none());
    assert!(t.rec.restarts.is_empty(), "a fresh budget");
    assert_eq!(t.rec.phase, Phase::Healthy);
    // No incident open: nothing to close, nothing said.
    let got = t.step(Observation::Replaced {
        container: "db".into(),
        container_id: "fedcba9876543210".into(),
    });
    assert!(names(&got).is_empty(), "{:?}", names(&got));
}

#[test]
fn another_server_on_the_address_is_wrong_server_alerted_never_restarted_nor_a_recovery() {
    let mut t = T::new("");
    let got = t.ok_from("7");
    assert_eq!(names(&got), ["save_identity"]);
    assert_eq!(events(&got), ["server_identity_learned", "probe_ok"]);
    assert!(names(&t.ok_from("7")).is_empty(), "learned once");
    // Another cluster on the port: its passes are failures, declared at the threshold.
    t.ok_from("8");
    t.ok_from("8");
    assert_eq!(t.rec.phase, Phase::Suspect);
    assert_eq!(t.rec.last_ok, Some(false), "/status shows it down");
    t.ok_from("8");
    assert_eq!(t.rec.phase, Phase::Archiving);
    let f = &t.rec.incident.as_ref().unwrap().failure;
    assert_eq!(f.class, FailureClass::WrongServer);
    assert!(
        f.detail.contains("expected system_identifier 7"),
        "{}",
        f.detail
    );
    assert!(f.detail.contains("found 8"), "{}", f.detail);
    let got = t.archived();
    assert_eq!(t.rec.phase, Phase::Unhealed, "never a restart");
    assert!(!names(&got).iter().any(|n| n == "lease" || n == "heal"));
    assert_eq!(notices(&got).len(), 1);
    assert_eq!(notices(&got)[0].kind, NoticeKind::Failure);
    // Still the other server: nothing more; the own server back: recovered.
    assert!(notices(&t.ok_from("8")).is_empty());
    assert_eq!(t.rec.phase, Phase::Unhealed);
    let got = t.ok_from("7");
    assert_eq!(t.rec.phase, Phase::Healthy);
    assert_eq!(names(&got), ["persist:recovered", "notify:recovery"]);
    // A registry override cannot make it a restart.
    let mut o = crate::policy::Policy::default();
    o.overrides
        .insert("wrong_server".into(), crate::policy::Action::Restart);
    assert_eq!(
        o.action(FailureClass::WrongServer),
        crate::policy::Action::Alert
    );
}

#[test]
fn another_server_during_an_open_incident_alerts_once_and_never_closes_it() {
    let mut t = T::new("");
    t.cfg.heal = None;
    t.ok_from("7");
    t.declare(FailureClass::ConnectionRefused);
    t.archived();
    assert_eq!(t.rec.phase, Phase::Unhealed);
    let got = t.ok_from("8");
    let n = notices(&got);
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].reason, Some(EscalationReason::WrongServer));
    let detail = &n[0].failure.as_ref().unwrap().detail;
    assert!(
        detail.contains("7") && detail.contains("found 8"),
        "{detail}"
    );
    assert!(t.rec.incident.is_some(), "not a recovery");
    assert!(
        notices(&t.ok_from("8")).is_empty(),
        "one alert per incident"
    );
    assert!(t.rec.incident.is_some());
    let got = t.ok_from("7");
    assert_eq!(t.rec.phase, Phase::Healthy);
    assert_eq!(notices(&got)[0].kind, NoticeKind::Recovery);
}

#[test]
fn a_maintenance_window_or_a_new_endpoint_learns_the_new_identity() {
    let mut t = T::new("");
    t.ok_from("7");
    t.rec.maintenance_until = Some(t.utc + chrono::Duration::minutes(10));
    let got = t.ok_from("8");
    assert_eq!(events(&got)[0], "server_identity_accepted");
    assert_eq!(names(&got), ["save_identity"]);
    t.rec.maintenance_until = None;
    assert!(names(&t.ok_from("8")).is_empty());
    assert_eq!(t.rec.phase, Phase::Healthy);
    // Learned at another endpoint (the DSN changed since): learned again, no failure.
    t.rec.identity.as_mut().unwrap().endpoint = "10.0.0.1:5432/db".into();
    let got = t.ok_from("9");
    assert_eq!(events(&got)[0], "server_identity_relearned");
    assert_eq!(t.rec.phase, Phase::Healthy);
}

/// A start time that moves between two passing probes opens an incident of its own: archived,
/// one notice naming both start times, closed at once; no restart, and the target stays
/// healthy. Our own restart moves it too, inside an incident: nothing more then.
#[test]
fn a_restart_nobody_announced_is_archived_and_told_once() {
    let mut t = T::new("");
    let t0 = t.utc - chrono::Duration::hours(1);
    t.ok_started("7", Some(t0));
    t.at(Duration::from_secs(5));
    assert!(names(&t.ok_started("7", Some(t0))).is_empty());
    t.at(Duration::from_secs(5));
    let t1 = t.utc - chrono::Duration::seconds(2);
    let out = t.ok_started("7", Some(t1));
    assert_eq!(names(&out), ["persist:declared", "archive"]);
    assert!(events(&out).contains(&"unannounced_restart".to_string()));
    assert_eq!(t.rec.phase, Phase::Healthy);
    assert!(t.rec.incident.is_none());
    let id = t.rec.unannounced.as_ref().unwrap().id.to_string();
    let out = t.step(Observation::Archived {
        id,
        outcome: Ok("/incidents/x".into()),
        cause: None,
    });
    assert_eq!(
        names(&out),
        ["persist:closed", "notify:unannounced_restart"]
    );
    let n = out
        .iter()
        .find_map(|a| match a {
            Action::Notify(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap();
    assert!(n.summary.contains("start time moved from"), "{}", n.summary);
    let down = n.downtime_seconds.unwrap();
    assert!((4.9..=5.1).contains(&down), "{down}");
    assert!(t.rec.unannounced.is_none());
    // Our own restart: the start time moves inside the incident, which the probe closes.
    t.restarting();
    t.at(Duration::from_secs(1));
    let t2 = t.utc;
    let out = t.ok_started("7", Some(t2));
    assert!(
        !names(&out).contains(&"archive".to_string()),
        "{:?}",
        names(&out)
    );
    assert!(events(&out).contains(&"server_start_moved".to_string()));
    assert_eq!(t.rec.phase, Phase::Healthy);
}

/// Samples over the connections threshold raise one warning; more samples over it say
/// nothing; one well under it clears it once, under the same id.
#[test]
fn an_early_warning_is_raised_once_and_cleared_once() {
    use crate::flight::{Sample, Vital};
    let mut t = T::new("");
    let sample = |t: &T, conns: f64| {
        let mut values = [f64::NAN; Vital::COUNT];
        values[Vital::Connections as usize] = conns;
        values[Vital::MaxConnections as usize] = 100.0;
        Sample {
            at_ms: t.utc.timestamp_millis(),
            values,
        }
    };
    let s = sample(&t, 95.0);
    let out = t.step(Observation::Sample(s));
    assert_eq!(names(&out), ["notify:warning"]);
    let id = notices(&out)[0].incident_id.clone();
    assert!(id.ends_with("-db-connections_nearly_exhausted"), "{id}");
    t.at(Duration::from_secs(10));
    let s = sample(&t, 99.0);
    assert!(names(&t.step(Observation::Sample(s))).is_empty());
    t.at(Duration::from_secs(10));
    let s = sample(&t, 50.0);
    let out = t.step(Observation::Sample(s));
    assert_eq!(names(&out), ["notify:warning_cleared"]);
    assert_eq!(notices(&out)[0].incident_id, id);
    assert_eq!(t.rec.flight.samples().len(), 3);
    assert!(t.rec.warnings.is_empty());
    // Past the window (10 minutes by default) the oldest samples go, whatever their count.
    t.at(Duration::from_secs(600));
    let s = sample(&t, 50.0);
    t.step(Observation::Sample(s));
    assert_eq!(t.rec.flight.samples().len(), 2, "the one 600 s old stays");
}

#[path = "tests_cause.rs"]
mod cause;

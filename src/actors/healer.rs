//! The Healer: runs a target's heal action once per incident, retrying a start that fails
//! (non-zero exit, or the server still refusing) with backoff until recovery_timeout. Heals of
//! different targets run side by side; a repeated request for one incident joins the first.

use super::messages::{Drain, Heal, HealDone};
use crate::backoff::Backoff;
use crate::config::TargetConfig;
use crate::docker::DockerClient;
use crate::heal::verify::answering;
use crate::heal::{self, stop, HealBackend, HealCx, Outcome, Started};
use crate::heal_report::{HealAttempt, HealFailure, HealReport};
use actix::prelude::*;
use chrono::Utc;
use slog::{error, info, warn, Logger};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

enum Slot {
    InFlight(Vec<oneshot::Sender<HealReport>>),
    Done(HealReport),
}

pub struct Healer {
    log: Logger,
    /// Heal logs are written here, then copied into the bundle.
    log_dir: PathBuf,
    slots: HashMap<String, Slot>,
    pending: Arc<AtomicUsize>,
    /// Stop flags of the heals in flight, by incident.
    stops: HashMap<String, Arc<AtomicBool>>,
    /// What heal backends share; each heal gets its backend from [`heal::backend`].
    clients: heal::Clients,
}

impl Healer {
    pub fn new(log: Logger, state_dir: PathBuf, docker: Arc<DockerClient>) -> Self {
        Self {
            log: log.new(slog::o!("actor" => "healer")),
            log_dir: state_dir.join("heal-logs"),
            slots: HashMap::new(),
            pending: Arc::default(),
            stops: HashMap::new(),
            clients: heal::Clients { docker },
        }
    }
}

impl Healer {
    /// A heal ended: its waiters get the report, which is kept for late repeats (the newest
    /// 1000 incidents).
    fn finished(&mut self, id: String, report: HealReport) {
        self.stops.remove(&id);
        self.pending.fetch_sub(1, Ordering::SeqCst);
        if let Some(Slot::InFlight(waiters)) = self.slots.remove(&id) {
            for w in waiters {
                let _ = w.send(report.clone());
            }
        }
        self.slots.insert(id, Slot::Done(report));
        if self.slots.len() > 1000 {
            let mut keys: Vec<String> = self.slots.keys().cloned().collect();
            keys.sort();
            for k in keys.iter().take(self.slots.len() - 1000) {
                if matches!(self.slots.get(k), Some(Slot::Done(_))) {
                    self.slots.remove(k);
                }
            }
        }
    }
}

impl Actor for Healer {
    type Context = Context<Self>;
}

impl Handler<Heal> for Healer {
    type Result = ResponseFuture<HealReport>;

    fn handle(&mut self, msg: Heal, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match self.slots.get_mut(msg.incident_id.as_str()) {
            Some(Slot::Done(r)) => {
                let r = r.clone();
                return Box::pin(async move { r });
            }
            Some(Slot::InFlight(w)) => w.push(tx),
            None => {
                self.slots
                    .insert(msg.incident_id.to_string(), Slot::InFlight(vec![tx]));
                self.pending.fetch_add(1, Ordering::SeqCst);
                let log = self.log.new(slog::o!("target" => msg.target.name.clone(), "incident" => msg.incident_id.clone()));
                let log_path = msg.incident_id.heal_log_in(&self.log_dir);
                let _ = crate::fsutil::private_dir(&self.log_dir);
                let id = msg.incident_id.to_string();
                let stop = Arc::new(AtomicBool::new(false));
                self.stops.insert(id.clone(), stop.clone());
                let backend = msg
                    .target
                    .heal
                    .as_ref()
                    .map(|action| heal::backend(action, &self.clients));
                let (target, failed_at, max_starts) =
                    (msg.target, msg.failed_at, msg.max_starts.max(1));
                ctx.spawn(
                    async move {
                        let Some(backend) = backend else {
                            return HealReport::none();
                        };
                        let cx = HealCx {
                            log: &log,
                            target: &target,
                            failed_at,
                            log_path: &log_path,
                        };
                        heal(cx, backend, max_starts, stop).await
                    }
                    .into_actor(self)
                    .map(move |report, act, _| act.finished(id, report)),
                );
            }
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| HealReport::none()) })
    }
}

impl Handler<Drain> for Healer {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, msg: Drain, _: &mut Self::Context) -> Self::Result {
        Box::pin(super::wait_for_zero(self.pending.clone(), msg.deadline))
    }
}

impl Handler<HealDone> for Healer {
    type Result = ();
    fn handle(&mut self, msg: HealDone, _: &mut Self::Context) {
        if let Some(stop) = self.stops.get(&msg.incident_id) {
            stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Consecutive attempts that start nothing (the lock file still held) before the heal gives up.
const MAX_IDLE_ATTEMPTS: u32 = 10;

/// One attempt as the retry loop judges it.
struct Judged {
    attempt: HealAttempt,
    /// The server answers after it.
    success: bool,
    /// It started (or restarted) a server, which counts against the budget.
    started: bool,
    /// The pid the pid file named before the attempt.
    held_before: Option<i32>,
    terminal: Option<HealFailure>,
    /// Why the start failed, when its output says (see [`Outcome::start_cause`]).
    start_cause: Option<crate::cause::Cause>,
}

/// Makes one attempt through the backend and judges it: did it start a server, does the
/// server answer. `stopped` is what the backend's preparation did (first attempt only).
async fn attempt_once(
    cx: &HealCx<'_>,
    backend: &dyn HealBackend,
    deadline: Instant,
    verify_for: Duration,
    stopped: Option<String>,
) -> Judged {
    let started_at = Utc::now();
    let t0 = Instant::now();
    let budget_left = deadline
        .saturating_duration_since(t0)
        .max(Duration::from_secs(1));
    let held_before = stop::lock_holder(cx.target).await.pid();
    let ran = backend.attempt(cx, budget_left).await;
    // Whether this attempt started (or restarted) a server. With a pid file, a program
    // that failed started one only if a new postmaster took the lock file (and still holds
    // it, running or killed): one that gave up on a lock or shared memory still held (a
    // zombie, a dying backend) removed its pid file again, or never wrote it.
    let started = match ran.started {
        Started::Known(s) => s,
        Started::Program { .. } if !ran.done && cx.target.pid_file.is_some() => {
            let after = stop::lock_holder(cx.target).await.pid();
            after.is_some() && after != held_before
        }
        Started::Program { ran } => ran,
    };
    let mut verdict = ran.verdict.clone();
    if let Some(s) = stopped {
        verdict = format!("{s}; then {verdict}");
    }
    if !started && ran.started == (Started::Program { ran: true }) {
        verdict = match held_before {
            Some(p) => format!("{verdict}; no server started (the pid file named pid {p})"),
            None => format!("{verdict}; no server started"),
        };
    }
    let (success, verdict) = check(cx, backend, &ran, verdict, deadline, verify_for).await;
    let mut terminal = ran.terminal;
    if !success && started && terminal.is_none() {
        terminal = backend.failed_start(cx).await;
    }
    Judged {
        attempt: HealAttempt {
            started_at,
            duration_ms: t0.elapsed().as_millis() as u64,
            exit_code: ran.exit_code,
            verdict,
        },
        success,
        started,
        held_before,
        terminal,
        start_cause: ran.start_cause.clone(),
    }
}

/// Done is not enough: the server must accept connections (or be starting up). An action
/// that failed is looked at once too: `pg_ctl start -w` outwaited by a long crash recovery
/// still started the server, and another attempt would not help. Returns whether it answers,
/// and the verdict completed with what was found.
async fn check(
    cx: &HealCx<'_>,
    backend: &dyn HealBackend,
    ran: &Outcome,
    verdict: String,
    deadline: Instant,
    verify_for: Duration,
) -> (bool, String) {
    let look_for = if ran.done {
        Some(verify_for.min(deadline.saturating_duration_since(Instant::now())))
    } else if ran.terminal.is_none() {
        Some(Duration::ZERO)
    } else {
        None
    };
    let Some(wait) = look_for else {
        return (false, verdict);
    };
    match answering(cx.target, wait).await {
        Ok(state) if ran.done => (true, backend.confirmed(verdict, state)),
        Ok(state) => (true, format!("{verdict}, but the server is {state}")),
        Err(class) if ran.done => (false, format!("{verdict} but {class}")),
        Err(_) => (false, verdict),
    }
}

/// Why the loop stops after a failed attempt with no terminal failure: the server started
/// too often, or nothing starts.
fn spent(
    log: &Logger,
    target: &TargetConfig,
    max_starts: u32,
    (starts, idle): (u32, u32),
    (held_before, start_cause): (Option<i32>, Option<crate::cause::Cause>),
) -> Option<HealFailure> {
    if starts >= max_starts {
        let detail = format!(
            "the server was started {starts} time(s) for this incident and did not stay up; the restart budget ({} in {}) allows no more",
            target.budget.max_restarts,
            crate::config::duration::format_duration(target.budget.window)
        );
        error!(log, "restart budget used up by this heal's starts; stopped"; "event" => "heal_budget_exhausted", "starts" => starts);
        return Some(HealFailure {
            kind: "restart_budget_exhausted",
            detail,
            class: None,
            cause: start_cause,
        });
    }
    if idle >= MAX_IDLE_ATTEMPTS {
        let detail = format!(
            "{idle} attempts in a row started nothing{}",
            held_before
                .map(|p| format!(" (the pid file still names pid {p}, which holds the lock file)"))
                .unwrap_or_default()
        );
        error!(log, "heal starts nothing; stopped"; "event" => "heal_refused", "kind" => "start_blocked", "error" => &detail);
        return Some(HealFailure {
            kind: "start_blocked",
            detail,
            class: None,
            cause: start_cause,
        });
    }
    None
}

/// The retry loop of one heal; `cancel` ends it early (the incident closed meanwhile). At most
/// `max_starts` attempts may start a server, with the budget's backoff between them; attempts
/// that start nothing retry quickly, at most [`MAX_IDLE_ATTEMPTS`] in a row.
async fn heal(
    cx: HealCx<'_>,
    backend: Arc<dyn HealBackend>,
    max_starts: u32,
    cancel: Arc<AtomicBool>,
) -> HealReport {
    let (log, target) = (cx.log, cx.target);
    let deadline = Instant::now() + target.recovery_timeout;
    let quick = Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
        .expect("static bounds are valid");
    let verify_for = target.probe.timeout.max(Duration::from_secs(5));
    let mut attempts = Vec::new();
    let (mut starts, mut idle) = (0u32, 0u32);
    let report = |success, attempts, failure, starts| HealReport {
        success,
        attempts,
        log_path: Some(cx.log_path.to_path_buf()),
        failure,
        starts,
    };
    let mut stopped = backend.prepare(&cx).await;
    for n in 0u32.. {
        if cancel.load(Ordering::SeqCst) {
            info!(log, "no further heal attempt: the target recovered, or (cluster mode) may be another daemon's"; "event" => "heal_stopped", "attempts" => attempts.len());
            return report(false, attempts, None, starts);
        }
        let j = attempt_once(&cx, &*backend, deadline, verify_for, stopped.take()).await;
        if j.started {
            starts += 1;
            idle = 0;
        } else {
            idle += 1;
        }
        let (verdict, duration_ms, started) =
            (&j.attempt.verdict, j.attempt.duration_ms, j.started);
        if j.success {
            info!(log, "heal attempt succeeded"; "event" => "heal_attempt", "attempt" => n + 1, "verdict" => verdict, "duration_ms" => duration_ms, "started" => started);
        } else {
            warn!(log, "heal attempt failed"; "event" => "heal_attempt", "attempt" => n + 1, "verdict" => verdict, "duration_ms" => duration_ms, "started" => started);
        }
        attempts.push(j.attempt);
        if j.success {
            return report(true, attempts, None, starts);
        }
        if let Some(failure) = j.terminal {
            error!(log, "heal cannot succeed by retrying; stopped"; "event" => "heal_refused", "kind" => failure.kind, "error" => &failure.detail);
            return report(false, attempts, Some(failure), starts);
        }
        if let Some(failure) = spent(
            log,
            target,
            max_starts,
            (starts, idle),
            (j.held_before, j.start_cause),
        ) {
            return report(false, attempts, Some(failure), starts);
        }
        // After a start that did not stay up, the budget's backoff; after a start that could
        // not happen, a quick retry.
        let delay = if j.started {
            target
                .budget
                .backoff_after(starts)
                .max(Duration::from_millis(50))
        } else {
            quick.delay(idle - 1)
        };
        if Instant::now() + delay >= deadline {
            warn!(log, "heal gave up at recovery_timeout"; "event" => "heal_exhausted", "attempts" => attempts.len());
            return report(false, attempts, None, starts);
        }
        tokio::time::sleep(delay).await;
    }
    unreachable!("the loop returns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_str, Source, VarSource};
    use futures::future::BoxFuture;

    /// A backend the daemon does not have: the retry loop needs nothing but the trait.
    struct Fake {
        outcome: Outcome,
        tries: AtomicUsize,
    }

    impl HealBackend for Fake {
        fn prepare<'a>(&'a self, _: &'a HealCx<'a>) -> BoxFuture<'a, Option<String>> {
            Box::pin(async { Some("prepared".to_string()) })
        }
        fn attempt<'a>(&'a self, _: &'a HealCx<'a>, _: Duration) -> BoxFuture<'a, Outcome> {
            self.tries.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { self.outcome.clone() })
        }
    }

    /// A target nothing answers for (port 1 refuses at once).
    fn target() -> TargetConfig {
        let mut r = load_str(
            "targets:\n  - name: x\n    dsn: postgres://u@127.0.0.1:1/db\n",
            Source::Generated("test".into()),
            &VarSource::fixed(Default::default()),
        )
        .expect("registry");
        r.targets.remove(0)
    }

    async fn run(outcome: Outcome, max_starts: u32) -> (HealReport, usize) {
        let (target, dir) = (target(), tempfile::tempdir().unwrap());
        let log = Logger::root(slog::Discard, slog::o!());
        let log_path = dir.path().join("heal.log");
        let cx = HealCx {
            log: &log,
            target: &target,
            failed_at: Utc::now(),
            log_path: &log_path,
        };
        let fake = Arc::new(Fake {
            outcome,
            tries: AtomicUsize::new(0),
        });
        let report = heal(cx, fake.clone(), max_starts, Arc::default()).await;
        (report, fake.tries.load(Ordering::SeqCst))
    }

    #[actix_rt::test]
    async fn a_start_that_does_not_stay_up_spends_the_budget_and_says_what_was_prepared() {
        let failed = Outcome {
            done: false,
            exit_code: None,
            verdict: "refused".into(),
            terminal: None,
            start_cause: None,
            started: Started::Known(true),
        };
        let (report, tries) = run(failed, 1).await;
        assert_eq!(tries, 1);
        assert_eq!((report.success, report.starts), (false, 1));
        assert_eq!(report.attempts[0].verdict, "prepared; then refused");
        let failure = report.failure.expect("a failure");
        assert_eq!(failure.kind, "restart_budget_exhausted");
    }

    #[actix_rt::test]
    async fn a_terminal_failure_stops_at_once_and_starts_nothing() {
        let refused = Outcome {
            done: false,
            exit_code: None,
            verdict: "forbidden".into(),
            terminal: Some(HealFailure {
                kind: "forbidden",
                detail: "no".into(),
                class: None,
                cause: None,
            }),
            start_cause: None,
            started: Started::Known(false),
        };
        let (report, tries) = run(refused, 3).await;
        assert_eq!((tries, report.starts), (1, 0));
        assert_eq!(report.failure.map(|f| f.kind), Some("forbidden"));
    }
}

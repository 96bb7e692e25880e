//! The Healer: runs a target's heal action once per incident, retrying a start that fails
//! (non-zero exit, or the server still refusing) with backoff until recovery_timeout. Heals of
//! different targets run side by side; a repeated request for one incident joins the first.

use super::messages::{Drain, Heal, HealAttempt, HealDone, HealFailure, HealReport};
use crate::backoff::Backoff;
use crate::config::{HealAction, TargetConfig};
use crate::docker::DockerClient;
use crate::heal::command::{self, CommandResult};
use crate::heal::stop;
use crate::probe::{accepts_connections, FailureClass};
use actix::prelude::*;
use chrono::Utc;
use slog::{error, info, warn, Logger};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    stops: HashMap<String, Arc<std::sync::atomic::AtomicBool>>,
    docker: Arc<DockerClient>,
}

impl Healer {
    pub fn new(log: Logger, state_dir: PathBuf, docker: Arc<DockerClient>) -> Self {
        Self {
            log: log.new(slog::o!("actor" => "healer")),
            log_dir: state_dir.join("heal-logs"),
            slots: HashMap::new(),
            pending: Arc::default(),
            stops: HashMap::new(),
            docker,
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
        match self.slots.get_mut(&msg.incident_id) {
            Some(Slot::Done(r)) => {
                let r = r.clone();
                return Box::pin(async move { r });
            }
            Some(Slot::InFlight(w)) => w.push(tx),
            None => {
                self.slots
                    .insert(msg.incident_id.clone(), Slot::InFlight(vec![tx]));
                self.pending.fetch_add(1, Ordering::SeqCst);
                let log = self.log.new(slog::o!("target" => msg.target.name.clone(), "incident" => msg.incident_id.clone()));
                let log_path = self.log_dir.join(format!("{}.log", msg.incident_id));
                let _ = crate::fsutil::private_dir(&self.log_dir);
                let id = msg.incident_id.clone();
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                self.stops.insert(id.clone(), stop.clone());
                ctx.spawn(
                    heal(
                        log,
                        msg.target,
                        msg.failed_at,
                        msg.max_starts.max(1),
                        self.docker.clone(),
                        log_path,
                        stop,
                    )
                    .into_actor(self)
                    .map(move |report, act, _| {
                        act.stops.remove(&id);
                        act.pending.fetch_sub(1, Ordering::SeqCst);
                        if let Some(Slot::InFlight(waiters)) = act.slots.remove(&id) {
                            for w in waiters {
                                let _ = w.send(report.clone());
                            }
                        }
                        act.slots.insert(id, Slot::Done(report));
                        if act.slots.len() > 1000 {
                            let mut keys: Vec<String> = act.slots.keys().cloned().collect();
                            keys.sort();
                            for k in keys.iter().take(act.slots.len() - 1000) {
                                if matches!(act.slots.get(k), Some(Slot::Done(_))) {
                                    act.slots.remove(k);
                                }
                            }
                        }
                    }),
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

/// What one attempt of the heal action did, before the connection check.
struct Ran {
    /// The action completed (exit 0, or the Engine restarted the container).
    done: bool,
    exit_code: Option<i32>,
    verdict: String,
    /// Retrying cannot help: stop here.
    terminal: Option<HealFailure>,
    /// A command ran at all (it could be started).
    spawned: bool,
}

/// Runs the heal action once.
async fn run_action(
    action: &HealAction,
    docker: &DockerClient,
    failed_at: chrono::DateTime<Utc>,
    budget_left: Duration,
    log_path: &std::path::Path,
) -> Ran {
    match action {
        HealAction::Command {
            argv, timeout, env, ..
        } => {
            let env = command::environment(std::env::vars(), env);
            let result = command::run(argv, &env, (*timeout).min(budget_left), log_path).await;
            let (exit_code, verdict) = match &result {
                CommandResult::Exited(c) => (Some(*c), format!("exit {c}")),
                CommandResult::Signalled => (None, "killed by a signal".to_string()),
                CommandResult::TimedOut => (None, "timed out".to_string()),
                CommandResult::SpawnFailed(e) => (None, format!("could not start: {e}")),
            };
            Ran {
                done: result == CommandResult::Exited(0),
                spawned: !matches!(result, CommandResult::SpawnFailed(_)),
                exit_code,
                verdict,
                terminal: None,
            }
        }
        HealAction::Docker {
            container,
            stop_timeout,
        } => {
            let r = crate::heal::docker::restart(
                docker,
                container,
                *stop_timeout,
                failed_at,
                budget_left,
            )
            .await;
            let line = match &r {
                Ok(v) => format!("{} docker: {v}\n", Utc::now().to_rfc3339()),
                Err(e) => format!(
                    "{} docker: FAILED ({}): {e}\n",
                    Utc::now().to_rfc3339(),
                    e.kind()
                ),
            };
            append(log_path, &line);
            match r {
                Ok(verdict) => Ran {
                    done: true,
                    exit_code: None,
                    verdict,
                    terminal: None,
                    spawned: true,
                },
                Err(e) => Ran {
                    spawned: true,
                    done: false,
                    exit_code: None,
                    verdict: e.to_string(),
                    terminal: (!e.retryable()).then(|| HealFailure {
                        kind: e.kind(),
                        detail: e.to_string(),
                        class: e.failure_class(),
                    }),
                },
            }
        }
    }
}

fn append(path: &std::path::Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = crate::fsutil::append_private(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Polls the server for up to `wait` (at least once): what it answers when it is up
/// ("accepting connections", "starting up (57P03)", or an authentication error, which also
/// proves it runs), else the class of the last failure.
async fn answering(target: &TargetConfig, wait: Duration) -> Result<&'static str, FailureClass> {
    let until = Instant::now() + wait;
    loop {
        let connect = target.probe.timeout.min(Duration::from_secs(2));
        match accepts_connections(target.dsn.config(), connect).await {
            Ok(()) => return Ok("accepting connections"),
            Err(f) if f.class == FailureClass::Recovering => return Ok("starting up (57P03)"),
            Err(f) if f.class == FailureClass::Authentication => {
                return Ok("answering (authentication error)")
            }
            Err(f) if Instant::now() >= until => return Err(f.class),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Consecutive attempts that start nothing (the lock file still held) before the heal gives up.
const MAX_IDLE_ATTEMPTS: u32 = 10;

/// The pid holding the target's pid file, read off the actor's thread (None: no pid file).
async fn lock_holder(target: &TargetConfig) -> stop::Holder {
    let Some(path) = target.pid_file.clone() else {
        return stop::Holder::None;
    };
    tokio::task::spawn_blocking(move || stop::holder(&path))
        .await
        .unwrap_or(stop::Holder::None)
}

/// A command heal of a target whose postmaster still runs (hung: alive, answering nothing)
/// stops it first; the start command could not start a server beside it. Returns what was
/// done, for the first attempt's verdict.
async fn stop_hung(
    log: &Logger,
    target: &TargetConfig,
    log_path: &std::path::Path,
) -> Option<String> {
    let Some(HealAction::Command {
        stop_timeout,
        stop_command,
        env,
        ..
    }) = &target.heal
    else {
        return None;
    };
    match lock_holder(target).await {
        stop::Holder::Running(pm) => {
            // It may have come back since the incident was declared: never stop a server
            // that answers.
            if let Ok(state) = answering(target, Duration::ZERO).await {
                info!(log, "the server answers again; not stopped"; "event" => "hung_stop_skipped", "pid" => pm.pid, "state" => state);
                return None;
            }
            warn!(log, "postmaster still runs but answers nothing: stopping it before the start"; "event" => "hung_stop", "pid" => pm.pid);
            let env = command::environment(std::env::vars(), env);
            let verdict = stop::stop(
                &pm,
                stop::StopPlan {
                    timeout: *stop_timeout,
                    command: stop_command.as_deref(),
                    env: &env,
                    log: log_path,
                },
            )
            .await;
            info!(log, "hung server stopped"; "event" => "hung_stopped", "pid" => pm.pid, "verdict" => &verdict);
            append(
                log_path,
                &format!("{} stop: {verdict}\n", Utc::now().to_rfc3339()),
            );
            Some(verdict)
        }
        stop::Holder::Unverified { pid, why } => {
            warn!(log, "the pid file names a live process that is not proven to be the target's postmaster; not signalled"; "event" => "hung_stop_refused", "pid" => pid, "why" => &why);
            append(
                log_path,
                &format!("{} stop: not done: {why}\n", Utc::now().to_rfc3339()),
            );
            None
        }
        stop::Holder::None | stop::Holder::Zombie(_) => None,
    }
}

/// The retry loop of one heal; `stop` ends it early (the incident closed meanwhile). At most
/// `max_starts` attempts may start a server, with the budget's backoff between them; attempts
/// that start nothing retry quickly, at most [`MAX_IDLE_ATTEMPTS`] in a row.
async fn heal(
    log: Logger,
    target: Arc<TargetConfig>,
    failed_at: chrono::DateTime<Utc>,
    max_starts: u32,
    docker: Arc<DockerClient>,
    log_path: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> HealReport {
    let Some(action) = target.heal.clone() else {
        return HealReport::none();
    };
    let deadline = Instant::now() + target.recovery_timeout;
    let quick = Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
        .expect("static bounds are valid");
    let verify_for = target.probe.timeout.max(Duration::from_secs(5));
    let mut attempts = Vec::new();
    let (mut starts, mut idle) = (0u32, 0u32);
    let report = |success, attempts, failure, starts| HealReport {
        success,
        attempts,
        log_path: Some(log_path.clone()),
        failure,
        starts,
    };
    let mut stopped = stop_hung(&log, &target, &log_path).await;
    for n in 0u32.. {
        if stop.load(Ordering::SeqCst) {
            info!(log, "target recovered; no further heal attempt"; "event" => "heal_stopped", "attempts" => attempts.len());
            return report(false, attempts, None, starts);
        }
        let started_at = Utc::now();
        let t0 = Instant::now();
        let budget_left = deadline
            .saturating_duration_since(t0)
            .max(Duration::from_secs(1));
        let held_before = lock_holder(&target).await.pid();
        let ran = run_action(&action, &docker, failed_at, budget_left, &log_path).await;
        // Whether this attempt started (or restarted) a server. With a pid file, a command
        // that failed started one only if a new postmaster took the lock file (and still
        // holds it, running or killed): one that gave up on a lock or shared memory still
        // held (a zombie, a dying backend) removed its pid file again, or never wrote it.
        let started = match (&action, &target.pid_file) {
            (HealAction::Command { .. }, Some(_)) if !ran.done => {
                let after = lock_holder(&target).await.pid();
                after.is_some() && after != held_before
            }
            (HealAction::Command { .. }, _) => ran.spawned,
            (HealAction::Docker { .. }, _) => ran.done,
        };
        if started {
            starts += 1;
            idle = 0;
        } else {
            idle += 1;
        }
        let (exit_code, mut verdict) = (ran.exit_code, ran.verdict);
        if let Some(s) = stopped.take() {
            verdict = format!("{s}; then {verdict}");
        }
        if !started && ran.spawned && matches!(action, HealAction::Command { .. }) {
            verdict = match held_before {
                Some(p) => format!("{verdict}; no server started (the pid file named pid {p})"),
                None => format!("{verdict}; no server started"),
            };
        }
        let mut success = false;
        // Done is not enough: the server must accept connections (or be starting up). An
        // action that failed is looked at once too: `pg_ctl start -w` outwaited by a long
        // crash recovery still started the server, and another attempt would not help.
        let look_for = if ran.done {
            Some(verify_for.min(deadline.saturating_duration_since(Instant::now())))
        } else if ran.terminal.is_none() {
            Some(Duration::ZERO)
        } else {
            None
        };
        if let Some(wait) = look_for {
            match answering(&target, wait).await {
                Ok(state) => {
                    success = true;
                    verdict = match (&action, ran.done) {
                        // A command's "exit 0" says nothing the check does not.
                        (HealAction::Command { .. }, true) => state.to_string(),
                        (HealAction::Docker { .. }, true) => format!("{verdict}; {state}"),
                        (_, false) => format!("{verdict}, but the server is {state}"),
                    };
                }
                Err(class) if ran.done => verdict = format!("{verdict} but {class}"),
                Err(_) => {}
            }
        }
        let attempt = HealAttempt {
            started_at,
            duration_ms: t0.elapsed().as_millis() as u64,
            exit_code,
            verdict: verdict.clone(),
        };
        if success {
            info!(log, "heal attempt succeeded"; "event" => "heal_attempt", "attempt" => n + 1, "verdict" => &verdict, "duration_ms" => attempt.duration_ms, "started" => started);
        } else {
            warn!(log, "heal attempt failed"; "event" => "heal_attempt", "attempt" => n + 1, "verdict" => &verdict, "duration_ms" => attempt.duration_ms, "started" => started);
        }
        attempts.push(attempt);
        if success {
            return report(true, attempts, None, starts);
        }
        if let Some(failure) = ran.terminal {
            error!(log, "heal cannot succeed by retrying; stopped"; "event" => "heal_refused", "kind" => failure.kind, "error" => &failure.detail);
            return report(false, attempts, Some(failure), starts);
        }
        if starts >= max_starts {
            let detail = format!(
                "the server was started {starts} time(s) for this incident and did not stay up; the restart budget ({} in {}) allows no more",
                target.budget.max_restarts,
                crate::config::duration::format_duration(target.budget.window)
            );
            error!(log, "restart budget used up by this heal's starts; stopped"; "event" => "heal_budget_exhausted", "starts" => starts);
            let failure = HealFailure {
                kind: "restart_budget_exhausted",
                detail,
                class: None,
            };
            return report(false, attempts, Some(failure), starts);
        }
        if idle >= MAX_IDLE_ATTEMPTS {
            let detail = format!(
                "{idle} attempts in a row started nothing{}",
                held_before
                    .map(|p| format!(
                        " (the pid file still names pid {p}, which holds the lock file)"
                    ))
                    .unwrap_or_default()
            );
            error!(log, "heal starts nothing; stopped"; "event" => "heal_refused", "kind" => "start_blocked", "error" => &detail);
            let failure = HealFailure {
                kind: "start_blocked",
                detail,
                class: None,
            };
            return report(false, attempts, Some(failure), starts);
        }
        // After a start that did not stay up, the budget's backoff; after a start that could
        // not happen, a quick retry.
        let delay = if started {
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

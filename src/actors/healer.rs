//! The Healer: runs a target's heal action once per incident, retrying a start that fails
//! (non-zero exit, or the server still refusing) with backoff until recovery_timeout. Heals of
//! different targets run side by side; a repeated request for one incident joins the first.

use super::messages::{Drain, Heal, HealAttempt, HealDone, HealFailure, HealReport};
use crate::backoff::Backoff;
use crate::config::{HealAction, TargetConfig};
use crate::docker::DockerClient;
use crate::heal::command::{self, CommandResult};
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
        HealAction::Command { argv, timeout } => {
            let result = command::run(argv, (*timeout).min(budget_left), log_path).await;
            let (exit_code, verdict) = match &result {
                CommandResult::Exited(c) => (Some(*c), format!("exit {c}")),
                CommandResult::Signalled => (None, "killed by a signal".to_string()),
                CommandResult::TimedOut => (None, "timed out".to_string()),
                CommandResult::SpawnFailed(e) => (None, format!("could not start: {e}")),
            };
            Ran {
                done: result == CommandResult::Exited(0),
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
                },
                Err(e) => Ran {
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
        match accepts_connections(target.dsn.config(), Duration::from_secs(2)).await {
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

/// The retry loop of one heal; `stop` ends it early (the incident closed meanwhile).
async fn heal(
    log: Logger,
    target: Arc<TargetConfig>,
    failed_at: chrono::DateTime<Utc>,
    docker: Arc<DockerClient>,
    log_path: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> HealReport {
    let Some(action) = target.heal.clone() else {
        return HealReport::none();
    };
    let deadline = Instant::now() + target.recovery_timeout;
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
        .expect("static bounds are valid");
    let verify_for = target.probe.timeout.max(Duration::from_secs(5));
    let mut attempts = Vec::new();
    let report = |success, attempts, failure| HealReport {
        success,
        attempts,
        log_path: Some(log_path.clone()),
        failure,
    };
    for n in 0u32.. {
        if stop.load(Ordering::SeqCst) {
            info!(log, "target recovered; no further heal attempt"; "event" => "heal_stopped", "attempts" => attempts.len());
            return report(false, attempts, None);
        }
        let started_at = Utc::now();
        let t0 = Instant::now();
        let budget_left = deadline
            .saturating_duration_since(t0)
            .max(Duration::from_secs(1));
        let ran = run_action(&action, &docker, failed_at, budget_left, &log_path).await;
        let (exit_code, mut verdict) = (ran.exit_code, ran.verdict);
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
            info!(log, "heal attempt succeeded"; "event" => "heal_attempt", "attempt" => n + 1, "verdict" => &verdict, "duration_ms" => attempt.duration_ms);
        } else {
            warn!(log, "heal attempt failed"; "event" => "heal_attempt", "attempt" => n + 1, "verdict" => &verdict, "duration_ms" => attempt.duration_ms);
        }
        attempts.push(attempt);
        if success {
            return report(true, attempts, None);
        }
        if let Some(failure) = ran.terminal {
            error!(log, "heal cannot succeed by retrying; stopped"; "event" => "heal_refused", "kind" => failure.kind, "error" => &failure.detail);
            return report(false, attempts, Some(failure));
        }
        let delay = backoff.delay(n);
        if Instant::now() + delay >= deadline {
            warn!(log, "heal gave up at recovery_timeout"; "event" => "heal_exhausted", "attempts" => attempts.len());
            return report(false, attempts, None);
        }
        tokio::time::sleep(delay).await;
    }
    unreachable!("the loop returns")
}

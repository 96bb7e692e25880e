//! The Healer: runs a target's heal action once per incident, retrying a start that fails
//! (non-zero exit, or the server still refusing) with backoff until recovery_timeout. Heals of
//! different targets run side by side; a repeated request for one incident joins the first.

use super::messages::{Drain, Heal, HealAttempt, HealDone, HealReport};
use crate::backoff::Backoff;
use crate::config::{HealAction, TargetConfig};
use crate::heal::command::{self, CommandResult};
use crate::probe::{accepts_connections, FailureClass};
use actix::prelude::*;
use chrono::Utc;
use slog::{info, warn, Logger};
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
}

impl Healer {
    pub fn new(log: Logger, state_dir: PathBuf) -> Self {
        Self {
            log: log.new(slog::o!("actor" => "healer")),
            log_dir: state_dir.join("heal-logs"),
            slots: HashMap::new(),
            pending: Arc::default(),
            stops: HashMap::new(),
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
                let _ = std::fs::create_dir_all(&self.log_dir);
                let id = msg.incident_id.clone();
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                self.stops.insert(id.clone(), stop.clone());
                ctx.spawn(heal(log, msg.target, log_path, stop).into_actor(self).map(
                    move |report, act, _| {
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
                    },
                ));
            }
        }
        Box::pin(async move {
            rx.await.unwrap_or(HealReport {
                success: false,
                attempts: vec![],
                log_path: None,
            })
        })
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

/// The retry loop of one heal; `stop` ends it early (the incident closed meanwhile).
async fn heal(
    log: Logger,
    target: Arc<TargetConfig>,
    log_path: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> HealReport {
    let Some(HealAction::Command { argv, timeout }) = target.heal.clone() else {
        return HealReport {
            success: false,
            attempts: vec![],
            log_path: None,
        };
    };
    let deadline = Instant::now() + target.recovery_timeout;
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
        .expect("static bounds are valid");
    let verify_for = target.probe.timeout.max(Duration::from_secs(5));
    let mut attempts = Vec::new();
    for n in 0u32.. {
        if stop.load(Ordering::SeqCst) {
            info!(log, "target recovered; no further heal attempt"; "event" => "heal_stopped", "attempts" => attempts.len());
            return HealReport {
                success: false,
                attempts,
                log_path: Some(log_path),
            };
        }
        let started_at = Utc::now();
        let t0 = Instant::now();
        let budget_left = deadline
            .saturating_duration_since(t0)
            .max(Duration::from_secs(1));
        let result = command::run(&argv, timeout.min(budget_left), &log_path).await;
        let (exit_code, mut verdict) = match &result {
            CommandResult::Exited(c) => (Some(*c), format!("exit {c}")),
            CommandResult::Signalled => (None, "killed by a signal".to_string()),
            CommandResult::TimedOut => (None, "timed out".to_string()),
            CommandResult::SpawnFailed(e) => (None, format!("could not start: {e}")),
        };
        let mut success = false;
        if result == CommandResult::Exited(0) {
            // Exit 0 is not enough: the server must accept connections (or be starting up).
            let until =
                Instant::now() + verify_for.min(deadline.saturating_duration_since(Instant::now()));
            loop {
                match accepts_connections(target.dsn.config(), Duration::from_secs(2)).await {
                    Ok(()) => {
                        success = true;
                        verdict = "accepting connections".into();
                        break;
                    }
                    Err(f) if f.class == FailureClass::Recovering => {
                        success = true;
                        verdict = "starting up (57P03)".into();
                        break;
                    }
                    Err(f) if f.class == FailureClass::Authentication => {
                        success = true;
                        verdict = "answering (authentication error)".into();
                        break;
                    }
                    Err(f) => {
                        if Instant::now() >= until {
                            verdict = format!("exit 0 but {}", f.class);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
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
            return HealReport {
                success,
                attempts,
                log_path: Some(log_path),
            };
        }
        let delay = backoff.delay(n);
        if Instant::now() + delay >= deadline {
            warn!(log, "heal gave up at recovery_timeout"; "event" => "heal_exhausted", "attempts" => attempts.len());
            return HealReport {
                success: false,
                attempts,
                log_path: Some(log_path),
            };
        }
        tokio::time::sleep(delay).await;
    }
    unreachable!("the loop returns")
}

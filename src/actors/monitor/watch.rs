//! What the Monitor watches besides probes: the postmaster's pid (exit or SIGSTOP, through a
//! pidfd and /proc) and the container's state (its restart policy, whether it exists).

use super::Monitor;
use crate::incident::Observation;
use crate::pidwatch::{PidWatch, WatchEnd};
use actix::prelude::*;
use slog::{debug, error, warn};
use std::time::Duration;

/// How often a watched postmaster's state is read to see it stopped (a hang the pidfd cannot
/// tell): a read of /proc per target per second.
const STOPPED_CHECK_EVERY: Duration = Duration::from_secs(1);

impl Monitor {
    /// Watches the postmaster named by the pid file, once per postmaster.
    pub(super) fn arm_watch(&mut self, ctx: &mut Context<Self>) {
        if self.watch.is_some() {
            return;
        }
        let Some(path) = &self.target.pid_file else {
            return;
        };
        // The pid file is the postgres user's (a FIFO, a link to /dev/zero): read off this thread.
        let (path, log) = (path.clone(), self.log.clone());
        let fut = async move {
            let watch = match PidWatch::from_pid_file(&path).await {
                Ok(w) => w,
                Err(e) => {
                    debug!(log, "postmaster not watchable yet"; "pid_file" => %path.display(), "error" => %e);
                    return Err(e);
                }
            };
            let pid = watch.pid();
            debug!(log, "watching postmaster"; "event" => "process_watched", "pid" => pid);
            let end = watch.exited_or_stopped(STOPPED_CHECK_EVERY).await;
            Ok((pid, end))
        };
        self.watch = Some(ctx.spawn(fut.into_actor(self).map(|ended, act, ctx| {
            act.watch = None;
            match ended {
                Ok((pid, end)) => act.on_watch_end(pid, end, ctx),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    if !std::mem::replace(&mut act.said_pid_file, true) {
                        warn!(act.log, "the pid file is not a regular file of its own: not read, so a postmaster death is seen by the probes only";
                            "event" => "pid_file_refused", "error" => %e, "fix" => "point process.pid_file at the real postmaster.pid");
                    }
                }
                Err(_) => {}
            }
        })));
    }

    fn on_watch_end(&mut self, pid: i32, end: WatchEnd, ctx: &mut Context<Self>) {
        self.said_pid_file = false;
        match end {
            WatchEnd::Stopped => {
                warn!(self.log, "postmaster stopped (SIGSTOP): it accepts no new client; confirming with a probe";
                    "event" => "process_stopped", "pid" => pid);
                return self.feed(Observation::ProcessStopped { pid }, ctx);
            }
            WatchEnd::Reinitialized { old, new } => {
                warn!(self.log, "the postmaster replaced its checkpointer: a server process crashed and it ran crash recovery";
                    "event" => "postmaster_reinitialized", "pid" => pid, "old_checkpointer" => old, "new_checkpointer" => new);
                self.arm_watch(ctx);
                let detail = format!("postmaster {pid} lives but replaced its checkpointer (pid {old} → {new}): a server process crashed and every connection was dropped for crash recovery");
                return self.feed(Observation::BackendCrash { detail }, ctx);
            }
            WatchEnd::Exited => {}
        }
        // If we adopted it (we started it), reap it now: its zombie would block the restart.
        crate::reaper::sweep();
        self.ended = Some((pid, crate::reaper::exit_of(pid)));
        warn!(self.log, "postmaster exited"; "event" => "process_exited", "pid" => pid);
        self.feed(Observation::ProcessExited, ctx);
    }

    /// Reads the container's state: says at once when it does not exist, and notes a restart
    /// policy (which the heal then waits for instead of racing it).
    pub(super) fn inspect_container(&mut self, ctx: &mut Context<Self>) {
        let Some(c) = self.target.container().cloned() else {
            return;
        };
        let docker = self.peers.docker.clone();
        let fut = async move {
            docker
                .call(
                    |api, ep| async move { crate::docker::container::inspect(&api, &ep, &c).await },
                )
                .await
        };
        ctx.spawn(fut.into_actor(self).map(|r, act, ctx| match r {
            Ok(state) => {
                act.said_missing = false;
                let acts = state.restarts_after_crash();
                let known = act.record.lock().restart_policy.clone();
                if acts && known.as_deref() != Some(state.restart_policy.as_str()) {
                    warn!(act.log, "the container has a restart policy: after a crash sentinel-remedy waits for it instead of restarting the container itself";
                        "event" => "restart_policy_found", "container" => &state.name, "policy" => &state.restart_policy);
                }
                act.feed(
                    Observation::RestartPolicy(acts.then_some(state.restart_policy)),
                    ctx,
                );
            }
            Err(e @ crate::docker::DockerError::NotFound { .. }) => {
                if !std::mem::replace(&mut act.said_missing, true) {
                    error!(act.log, "the target's container does not exist"; "event" => "container_missing", "error" => %e);
                }
            }
            Err(e) => debug!(act.log, "cannot inspect the container"; "kind" => e.kind(), "error" => %e),
        }));
    }
}

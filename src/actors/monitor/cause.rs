//! What the Monitor knows of the cause: how the postmaster ended (its pid, the exit status the
//! reaper saw), whether it lives (a backend crash), an OOM kill the Engine reported in a
//! container that still runs; and the free-space watch a full disk's held restart waits on.

use super::Monitor;
use crate::archive::manifest::IncidentFacts;
use crate::cause::Evidence;
use crate::docker::events::ContainerEvent;
use crate::incident::Observation;
use crate::probe::FailureClass;
use actix::prelude::*;
use slog::{debug, info, warn};
use std::time::Duration;

/// How often a held disk-full restart reads the free space again.
const SPACE_CHECK_EVERY: Duration = Duration::from_secs(2);

/// How long after an `oom` event the container is looked at: the postmaster either dies (a
/// `die` event follows) or has finished its crash recovery by then.
const OOM_SETTLE: Duration = Duration::from_millis(1500);

impl Monitor {
    /// The evidence this Monitor holds for the incident in `facts`; the Archiver adds the
    /// logs, the kernel log and the free space.
    pub(super) fn clues(&mut self, facts: &IncidentFacts) -> Evidence {
        let alive = facts.failure.class == FailureClass::BackendCrash;
        let (pid, exit) = match self.ended.take() {
            Some((pid, exit)) => (Some(pid), exit),
            None => (None, None),
        };
        let dead = !alive
            && (facts.hard_failure
                || matches!(
                    facts.failure.class,
                    FailureClass::ProcessExited | FailureClass::ConnectionRefused
                ));
        Evidence {
            postmaster_pid: pid,
            exit,
            exit_source: "exit status (waitpid on the postmaster this daemon adopted)".into(),
            postmaster_alive: alive,
            postmaster_dead: dead,
            engine_oom_event: std::mem::take(&mut self.oom_event),
            ..Evidence::default()
        }
    }

    /// An `oom` event: a process of the container was OOM-killed. If the container still
    /// runs a moment later, its postmaster lived and recovered by itself (a backend was
    /// killed): a backend crash, never a restart. If it died, its `die` event says so.
    pub(super) fn on_oom_event(&mut self, ev: &ContainerEvent, ctx: &mut Context<Self>) {
        let Some(c) = self.target.container().cloned() else {
            return;
        };
        let docker = self.peers.docker.clone();
        let name = ev.name.clone();
        let fut = async move {
            tokio::time::sleep(OOM_SETTLE).await;
            docker
                .call(
                    |api, ep| async move { crate::docker::container::inspect(&api, &ep, &c).await },
                )
                .await
        };
        ctx.spawn(fut.into_actor(self).map(move |r, act, ctx| match r {
            Ok(state) if state.status == "running" && !state.oom_killed => {
                act.oom_event = true;
                let detail = format!("the Docker Engine reported an OOM kill in container {name} and its postmaster still runs: a server process was killed under the memory limit and every connection was dropped for crash recovery");
                act.feed(Observation::BackendCrash { detail }, ctx);
            }
            Ok(state) => debug!(act.log, "oom event: the container is not running; its die event decides"; "status" => state.status),
            Err(e) => debug!(act.log, "oom event: cannot inspect the container"; "error" => %e),
        }));
    }

    /// Watches the free space under the data directory until it has room again (10 % or
    /// 1 GiB on both filesystems), then tells the machine; one watch at a time.
    pub(super) fn watch_space(&mut self, id: String, ctx: &mut Context<Self>) {
        let Some(dir) = self
            .target
            .pid_file
            .as_deref()
            .and_then(crate::cause::gather::data_dir_of)
        else {
            warn!(self.log, "disk full, but the data directory is unknown (no process.pid_file): the restart waits for a person";
                "event" => "space_watch_unavailable", "incident" => &id);
            return;
        };
        if let Some(h) = self.space_watch.take() {
            ctx.cancel_future(h);
        }
        let fut = async move {
            loop {
                tokio::time::sleep(SPACE_CHECK_EVERY).await;
                let d = dir.clone();
                let read = tokio::task::spawn_blocking(move || crate::cause::gather::space(&d));
                if let Ok(Ok(space)) = tokio::time::timeout(Duration::from_secs(5), read).await {
                    if !space.is_empty() && space.iter().all(|s| s.has_room()) {
                        return space;
                    }
                }
            }
        };
        self.space_watch = Some(ctx.spawn(fut.into_actor(self).map(move |space, act, ctx| {
            act.space_watch = None;
            let free: Vec<String> = space
                .iter()
                .map(|s| format!("{} {} MiB free of {} MiB", s.what, s.free_bytes >> 20, s.total_bytes >> 20))
                .collect();
            info!(act.log, "the data directory's filesystem has room again"; "event" => "space_freed",
                "incident" => &id, "space" => free.join("; "));
            act.feed(Observation::SpaceFreed { id }, ctx);
        })));
    }
}

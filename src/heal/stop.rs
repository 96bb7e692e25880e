//! Stopping a hung postmaster before the start command runs. A server that answers nothing
//! while its pid lives keeps its lock file and shared memory, so `pg_ctl start` cannot succeed
//! until it is gone: SIGQUIT (PostgreSQL's immediate shutdown) or the configured stop command,
//! then SIGKILL to the postmaster and its children after `heal.stop_timeout`.
//!
//! Only a process proven to be the target's postmaster is signalled: alive, named by the pid
//! file, and running in the pid file's directory (a postmaster's working directory is its data
//! directory). A stale pid file whose pid was reused by another program is left alone.

use super::HealCx;
use crate::config::TargetConfig;
use crate::procfs::{self, stat};
use chrono::Utc;
use slog::{info, warn};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A postmaster that still runs, and the children it had when found.
#[derive(Debug, Clone)]
pub struct Postmaster {
    pub pid: i32,
    /// (pid, start time in clock ticks): a child is signalled only while both still match.
    children: Vec<(i32, u64)>,
}

/// What the pid file points at.
#[derive(Debug, Clone)]
pub enum Holder {
    /// No process holds the pid file's pid (or there is no pid file).
    None,
    /// The pid has exited but is not reaped yet: it still blocks a new server's start.
    Zombie(i32),
    /// The target's postmaster runs.
    Running(Postmaster),
    /// A live process that cannot be shown to be the target's postmaster.
    Unverified { pid: i32, why: String },
}

impl Holder {
    /// The pid that holds the lock file, running or not.
    pub fn pid(&self) -> Option<i32> {
        match self {
            Holder::None => None,
            Holder::Zombie(p) | Holder::Unverified { pid: p, .. } => Some(*p),
            Holder::Running(pm) => Some(pm.pid),
        }
    }
}

/// Reads the pid file and judges its pid. Reads /proc and the pid file: call it off the
/// actor's thread.
pub fn holder(pid_file: &Path) -> Holder {
    let Ok(pid) = crate::pidwatch::read_pid_file(pid_file) else {
        return Holder::None;
    };
    match stat(pid) {
        None => Holder::None,
        Some(s) if s.state == 'Z' || s.state == 'X' => Holder::Zombie(pid),
        Some(_) => match same_dir(pid, pid_file) {
            Ok(()) => Holder::Running(Postmaster {
                pid,
                children: procfs::children_of(pid)
                    .into_iter()
                    .map(|(child, s)| (child, s.start))
                    .collect(),
            }),
            Err(why) => Holder::Unverified { pid, why },
        },
    }
}

/// The pid holding the target's pid file, read off the actor's thread (None: no pid file).
pub async fn lock_holder(target: &TargetConfig) -> Holder {
    let Some(path) = target.pid_file.clone() else {
        return Holder::None;
    };
    tokio::task::spawn_blocking(move || holder(&path))
        .await
        .unwrap_or(Holder::None)
}

/// Before a command heal's first attempt: a postmaster that still runs (hung: alive,
/// answering nothing) is stopped by `plan`, since the start command could not start a server
/// beside it. `plan.env` is the target's `heal.env`; the command gets it over the allowed part
/// of the daemon's environment. Returns what was done, for the first attempt's verdict.
pub async fn stop_hung(cx: &HealCx<'_>, plan: StopPlan<'_>) -> Option<String> {
    let (log, target, log_path) = (cx.log, cx.target, cx.log_path);
    match lock_holder(target).await {
        Holder::Running(pm) => {
            // It may have come back since the incident was declared: never stop a server
            // that answers.
            if let Ok(state) = super::verify::answering(target, Duration::ZERO).await {
                info!(log, "the server answers again; not stopped"; "event" => "hung_stop_skipped", "pid" => pm.pid, "state" => state);
                return None;
            }
            warn!(log, "postmaster still runs but answers nothing: stopping it before the start"; "event" => "hung_stop", "pid" => pm.pid);
            let env = super::process::environment(std::env::vars(), plan.env);
            let verdict = stop(&pm, StopPlan { env: &env, ..plan }).await;
            info!(log, "hung server stopped"; "event" => "hung_stopped", "pid" => pm.pid, "verdict" => &verdict);
            super::append_log(
                log_path,
                &format!("{} stop: {verdict}\n", Utc::now().to_rfc3339()),
            );
            Some(verdict)
        }
        Holder::Unverified { pid, why } => {
            warn!(log, "the pid file names a live process that is not proven to be the target's postmaster; not signalled"; "event" => "hung_stop_refused", "pid" => pid, "why" => &why);
            super::append_log(
                log_path,
                &format!("{} stop: not done: {why}\n", Utc::now().to_rfc3339()),
            );
            None
        }
        Holder::None | Holder::Zombie(_) => None,
    }
}

fn same_dir(pid: i32, pid_file: &Path) -> Result<(), String> {
    let data: PathBuf = pid_file
        .parent()
        .and_then(|d| d.canonicalize().ok())
        .ok_or_else(|| format!("cannot resolve the directory of {}", pid_file.display()))?;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
        .map_err(|e| format!("cannot read the working directory of pid {pid}: {e}"))?;
    if cwd == data {
        Ok(())
    } else {
        Err(format!(
            "pid {pid} runs in {}, not in the data directory {}: a stale pid file? Not signalled",
            cwd.display(),
            data.display()
        ))
    }
}

/// Whether the process has exited (gone, or a zombie nobody reaped yet).
fn gone(pid: i32) -> bool {
    stat(pid).is_none_or(|s| s.state == 'Z' || s.state == 'X')
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill takes a pid and a signal number; the pid was verified by the caller.
    unsafe { libc::kill(pid, sig) };
}

impl Postmaster {
    /// Children still running that are the same processes as when found.
    fn live_children(&self) -> Vec<i32> {
        self.children
            .iter()
            .filter(|(pid, start)| stat(*pid).is_some_and(|s| s.start == *start && s.state != 'Z'))
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Waits up to `wait` for the postmaster to exit, reaping it if it was ours.
    async fn exits_within(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            crate::reaper::sweep();
            if gone(self.pid) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How to stop a hung server.
pub struct StopPlan<'a> {
    pub timeout: Duration,
    pub command: Option<&'a [String]>,
    pub env: &'a BTreeMap<String, String>,
    pub log: &'a Path,
}

/// Stops the hung postmaster; returns what was done, for the heal log and report.
pub async fn stop(pm: &Postmaster, plan: StopPlan<'_>) -> String {
    let t0 = Instant::now();
    let how = match plan.command {
        Some(argv) => {
            let r = super::process::run(argv, plan.env, plan.timeout, plan.log).await;
            format!("stop command ({r:?})")
        }
        None => {
            signal(pm.pid, libc::SIGQUIT);
            "SIGQUIT".to_string()
        }
    };
    // A stopped (SIGSTOP) server acts on nothing but SIGKILL until it is continued.
    signal(pm.pid, libc::SIGCONT);
    for c in pm.live_children() {
        signal(c, libc::SIGCONT);
    }
    let left = plan.timeout.saturating_sub(t0.elapsed());
    let verdict = if pm.exits_within(left).await {
        format!(
            "hung postmaster {} stopped by {how} in {:.1} s",
            pm.pid,
            t0.elapsed().as_secs_f64()
        )
    } else {
        signal(pm.pid, libc::SIGKILL);
        let ok = pm.exits_within(Duration::from_secs(5)).await;
        format!(
            "hung postmaster {} did not stop within {:.1} s of {how}: {}",
            pm.pid,
            plan.timeout.as_secs_f64(),
            if ok {
                "killed (SIGKILL)"
            } else {
                "SIGKILL sent, still not gone after 5 s"
            }
        )
    };
    // Backends left behind still hold the shared memory a new server refuses to share.
    let orphans = pm.live_children();
    for &c in &orphans {
        signal(c, libc::SIGKILL);
    }
    let until = Instant::now() + Duration::from_secs(5);
    while !pm.live_children().is_empty() && Instant::now() < until {
        crate::reaper::sweep();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if orphans.is_empty() {
        verdict
    } else {
        format!("{verdict}; {} leftover child(ren) killed", orphans.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_naming_a_process_elsewhere_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("postmaster.pid");
        // Our own pid: alive, but its working directory is not the pid file's directory.
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        assert!(matches!(holder(&pid_file), Holder::Unverified { .. }));
        std::fs::write(&pid_file, "999999999\n").unwrap();
        assert!(matches!(holder(&pid_file), Holder::None));
    }
}

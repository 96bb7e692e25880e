//! Reaping the postmasters our heal commands start. `pg_ctl start` exits once the server is
//! up, so the postmaster is orphaned; as a child subreaper the daemon adopts it, and reaps it
//! the moment it dies. Without this a killed postmaster stays a zombie until the host's init
//! reaps it (seconds, on some container inits), and while it does, its pid still looks alive
//! to the new server's lock-file check: `pg_ctl start` fails and the heal must wait.
//!
//! Children whose exit status someone awaits (the heal commands themselves) are registered
//! here and never reaped by the sweep.

use std::collections::BTreeSet;
use std::io;
use std::sync::Mutex;

static OWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// The raw wait statuses of the last processes reaped, newest last: how an adopted postmaster
/// ended is evidence of why (`cause`). Bounded: the oldest go first.
static REAPED: Mutex<std::collections::VecDeque<(i32, i32)>> =
    Mutex::new(std::collections::VecDeque::new());

/// How many reaped statuses are kept.
const REAPED_KEPT: usize = 64;

/// How `pid` ended, if the sweep reaped it: killed by a signal, or its exit code.
pub fn exit_of(pid: i32) -> Option<crate::cause::Exit> {
    let reaped = REAPED.lock().unwrap_or_else(|e| e.into_inner());
    let (_, status) = reaped.iter().rev().find(|(p, _)| *p == pid)?;
    Some(if libc::WIFSIGNALED(*status) {
        crate::cause::Exit::Signal(libc::WTERMSIG(*status))
    } else {
        crate::cause::Exit::Code(libc::WEXITSTATUS(*status).into())
    })
}

/// Makes this process the reaper of its orphaned descendants (Linux).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Spawns `cmd` with its pid registered, so the sweep leaves its exit status to the caller.
/// Call [`release`] once it has been waited for.
pub fn spawn_owned(cmd: &mut tokio::process::Command) -> io::Result<tokio::process::Child> {
    let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        owned.insert(pid as i32);
    }
    Ok(child)
}

/// Forgets a child registered by [`spawn_owned`].
pub fn release(pid: Option<u32>) {
    if let Some(pid) = pid {
        OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(pid as i32));
    }
}

/// Reaps every exited child of ours that nobody awaits; returns how many.
pub fn sweep() -> usize {
    let owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let mut reaped = 0;
    for pid in zombie_children(me) {
        if owned.contains(&pid) {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on one specific pid that /proc says is our exited child; WNOHANG.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            reaped += 1;
            let mut kept = REAPED.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() >= REAPED_KEPT {
                kept.pop_front();
            }
            kept.push_back((pid, status));
        }
    }
    reaped
}

/// Pids of our children that have exited and wait to be reaped.
fn zombie_children(parent: i32) -> Vec<i32> {
    crate::procfs::children_of(parent)
        .into_iter()
        .filter(|(_, s)| s.state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

/// Sweeps on every SIGCHLD for as long as the runtime runs.
pub fn spawn_sweeper(log: slog::Logger) {
    let mut sig = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            slog::warn!(log, "cannot watch SIGCHLD; orphaned servers are reaped by the host's init"; "error" => %e);
            return;
        }
    };
    actix_rt::spawn(async move {
        while sig.recv().await.is_some() {
            let n = sweep();
            if n > 0 {
                slog::debug!(log, "reaped exited processes"; "count" => n);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_zombie(pid: i32) -> bool {
        crate::procfs::stat(pid).is_some_and(|s| s.state == 'Z')
    }

    #[test]
    // The stray child is left unwaited on purpose: reaping it is the sweep's job.
    #[allow(clippy::zombie_processes)]
    fn a_zombie_child_is_found_and_reaped_but_an_owned_one_is_left_alone() {
        let stray = std::process::Command::new("true").spawn().unwrap();
        let owned = std::process::Command::new("true").spawn().unwrap();
        OWNED.lock().unwrap().insert(owned.id() as i32);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(is_zombie(stray.id() as i32));
        sweep();
        assert!(
            !std::path::Path::new(&format!("/proc/{}", stray.id())).exists(),
            "stray child reaped"
        );
        assert!(
            is_zombie(owned.id() as i32),
            "owned child left for its waiter"
        );
        release(Some(owned.id()));
        let mut owned = owned;
        owned.wait().unwrap();
    }
}

//! Instant postmaster-death detection through a pidfd: the kernel makes the descriptor readable
//! the moment the process exits, with no polling.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Longest `postmaster.pid` read (it holds eight short lines).
const PID_FILE_CAP: u64 = 4096;

/// Longest wait for the pid file: a hung filesystem must not hold the Monitor.
const PID_FILE_WAIT: Duration = Duration::from_secs(2);

/// The pid on the first line of a `postmaster.pid`. The file is the `postgres` user's: a
/// symlink (to `/dev/zero`), a FIFO or a huge file is refused, never followed or waited on.
pub fn read_pid_file(path: &Path) -> io::Result<i32> {
    parse_pid(
        path,
        crate::fsutil::read_untrusted(path, PID_FILE_CAP).map_err(untrusted)?,
    )
}

/// A missing file stays `NotFound` (the server is down); a refused one is `PermissionDenied`.
fn untrusted(e: crate::fsutil::UntrustedFileError) -> io::Error {
    use crate::fsutil::UntrustedFileError as U;
    let kind = match &e {
        U::Io { source, .. } => source.kind(),
        U::TimedOut { .. } => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::PermissionDenied,
    };
    io::Error::new(kind, e.to_string())
}

fn parse_pid(path: &Path, bytes: Vec<u8>) -> io::Result<i32> {
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: first line is not a pid", path.display()),
            )
        })
}

/// A watch on one process.
pub struct PidWatch {
    pid: i32,
    fd: AsyncFd<PidFd>,
}

struct PidFd(OwnedFd);

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl PidWatch {
    /// Opens a pidfd for `pid`; fails if the process does not exist.
    pub fn open(pid: i32) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        // SAFETY: `PidFd` owns the descriptor and keeps it open for as long as the AsyncFd lives.
        let fd = unsafe { AsyncFd::register(PidFd(owned))? };
        Ok(Self { pid, fd })
    }

    /// Opens a watch on the postmaster named by a pid file, read off the caller's thread and
    /// waited on at most two seconds.
    pub async fn from_pid_file(path: &Path) -> io::Result<Self> {
        let bytes = crate::fsutil::read_untrusted_bounded(path, PID_FILE_CAP, PID_FILE_WAIT)
            .await
            .map_err(untrusted)?;
        Self::open(parse_pid(path, bytes)?)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Resolves when the process exits.
    pub async fn exited(&self) {
        if let Ok(mut guard) = self.fd.readable().await {
            guard.retain_ready();
        }
    }

    /// Resolves when the process exits, is found stopped (SIGSTOP, state `T`), or replaced
    /// its checkpointer (crash recovery), checked every `every`. A stopped postmaster keeps
    /// its pid and its old backends answering on their connections, but accepts no new
    /// client: only its state tells it apart at once. A postmaster whose server process
    /// crashed kills every other one and starts them again, the checkpointer too: its new pid
    /// under the same postmaster is the one trace a crash recovery of a fraction of a second
    /// leaves between two probes.
    pub async fn exited_or_stopped(&self, every: Duration) -> WatchEnd {
        let changed = async {
            // Found at once: a crash right after the watch starts is not missed.
            let mut checkpointer = checkpointer_of(self.pid);
            for tick in 1u64.. {
                tokio::time::sleep(every).await;
                if is_stopped(self.pid) {
                    return WatchEnd::Stopped;
                }
                match checkpointer {
                    // Not found yet (starting up, or not a postmaster): a scan of /proc
                    // every tenth tick only.
                    None if tick % 10 == 0 => checkpointer = checkpointer_of(self.pid),
                    None => {}
                    Some(c) if still_child(self.pid, c) => {}
                    // Gone: a new one under the same postmaster is a crash recovery; none
                    // yet (a shutdown, or a recovery under way), look again next tick.
                    Some((old, _)) => {
                        if let Some((new, _)) = checkpointer_of(self.pid) {
                            return WatchEnd::Reinitialized { old, new };
                        }
                    }
                }
            }
            unreachable!("the loop returns")
        };
        tokio::select! {
            _ = self.exited() => WatchEnd::Exited,
            end = changed => end,
        }
    }
}

/// Whether `(pid, start time)` still runs under `parent`.
fn still_child(parent: i32, (pid, start): (i32, u64)) -> bool {
    crate::procfs::stat(pid).is_some_and(|s| s.ppid == parent && s.start == start && s.state != 'Z')
}

/// The postmaster's checkpointer (pid, start time), found by its process title.
fn checkpointer_of(postmaster: i32) -> Option<(i32, u64)> {
    crate::procfs::children_of(postmaster)
        .into_iter()
        .filter(|(_, s)| s.state != 'Z')
        .find(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("checkpointer"))
        })
        .map(|(pid, s)| (pid, s.start))
}

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    Exited,
    Stopped,
    /// The postmaster lives and replaced its checkpointer `old` with `new`: a server
    /// process crashed and it ran crash recovery.
    Reinitialized {
        old: i32,
        new: i32,
    },
}

/// Whether `pid` is stopped by a signal (`T` in `/proc/<pid>/stat`; the kernel's own text,
/// not the target's, so it is read directly). A traced stop (`t`, a debugger) is not counted.
pub fn is_stopped(pid: i32) -> bool {
    crate::procfs::stat(pid).is_some_and(|s| s.state == 'T')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_checkpointer_is_found_by_its_title() {
        let spawn = || {
            std::process::Command::new("bash")
                .args(["-c", "exec -a 'postgres: checkpointer' sleep 30"])
                .spawn()
                .unwrap()
        };
        let me = std::process::id() as i32;
        let mut first = spawn();
        let found = (0..50).find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            checkpointer_of(me)
        });
        let (pid, start) = found.expect("the checkpointer found");
        assert_eq!(pid, first.id() as i32);
        assert!(still_child(me, (pid, start)));
        first.kill().unwrap();
        first.wait().unwrap();
        assert!(!still_child(me, (pid, start)));
    }

    #[test]
    fn a_sigstopped_child_is_seen_stopped_and_a_continued_one_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(!is_stopped(pid));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !is_stopped(pid) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_stopped(pid), "SIGSTOPped child not seen stopped");
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while is_stopped(pid) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!is_stopped(pid));
        let _ = child.kill();
        let _ = child.wait();
        assert!(!is_stopped(pid), "a reaped pid is not stopped");
    }
}

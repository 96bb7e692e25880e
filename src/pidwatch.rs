//! Instant postmaster-death detection through a pidfd: the kernel makes the descriptor readable
//! the moment the process exits, with no polling.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use tokio::io::unix::AsyncFd;

/// The pid on the first line of a `postmaster.pid`.
pub fn read_pid_file(path: &Path) -> io::Result<i32> {
    let text = std::fs::read_to_string(path)?;
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

    /// Opens a watch on the postmaster named by a pid file.
    pub fn from_pid_file(path: &Path) -> io::Result<Self> {
        Self::open(read_pid_file(path)?)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Resolves when the process exits.
    pub async fn exited(&self) {
        loop {
            match self.fd.readable().await {
                Ok(mut guard) => {
                    guard.retain_ready();
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

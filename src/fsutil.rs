//! The two sides of the daemon's file trust boundary, in one place.
//!
//! Files the targets control (server logs, `postmaster.pid`, anything in a data directory) are
//! written by the `postgres` user or by any database superuser (`COPY … TO PROGRAM`), while the
//! daemon usually runs as root. [`open_untrusted`] and [`read_untrusted`] open them without
//! following a symlink, without blocking on a FIFO, only if regular, never under `/proc` or
//! `/sys`, and read at most a cap; [`read_untrusted_bounded`] also bounds the wait, off the
//! caller's thread.
//!
//! Files the daemon writes (bundles, store, spool, leases, heal logs) hold secrets (copied
//! configuration holds replication passwords): [`private_dir`] and [`create_private`] make
//! them 0700 and 0600 whatever the umask.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Why a file a target controls was not read.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedFileError {
    #[error("{path}: is a symbolic link (not followed)")]
    Symlink { path: String },
    #[error("{path}: is a {kind}, not a regular file (not read)")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path}: under /proc or /sys (never read)")]
    Kernel { path: String },
    #[error("{path}: larger than {cap} bytes")]
    TooLarge { path: String, cap: u64 },
    #[error("{path}: not read within {waited:?} (a hung filesystem?)")]
    TimedOut { path: String, waited: Duration },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

impl UntrustedFileError {
    /// A stable label for metrics and manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Symlink { .. } => "symlink",
            Self::NotRegular { .. } => "not_regular",
            Self::Kernel { .. } => "kernel_fs",
            Self::TooLarge { .. } => "too_large",
            Self::TimedOut { .. } => "timeout",
            Self::Io { .. } => "io",
        }
    }
}

/// The path made absolute and free of `.`/`..` without touching the filesystem, so a
/// `logs/../../proc/self/environ` pattern is seen for what it is.
fn lexical_absolute(path: &Path) -> PathBuf {
    let base = if path.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
    };
    let mut out = PathBuf::from("/");
    for c in base.components().chain(path.components()) {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Whether `path` names something under the kernel's pseudo filesystems.
pub fn is_kernel_path(path: &Path) -> bool {
    let p = lexical_absolute(path);
    p.starts_with("/proc") || p.starts_with("/sys")
}

/// Opens a file a target controls: no symlink as the last component, no blocking open (a FIFO
/// opens at once and is then refused), regular files only, nothing under `/proc` or `/sys`
/// (also when reached through a symlinked directory).
pub fn open_untrusted(path: &Path) -> Result<File, UntrustedFileError> {
    let name = || path.display().to_string();
    if is_kernel_path(path) {
        return Err(UntrustedFileError::Kernel { path: name() });
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => UntrustedFileError::Symlink { path: name() },
            _ => UntrustedFileError::Io {
                path: name(),
                source,
            },
        })?;
    let meta = file.metadata().map_err(|source| UntrustedFileError::Io {
        path: name(),
        source,
    })?;
    let ft = meta.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_fifo() {
            "FIFO"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_block_device() {
            "block device"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_dir() {
            "directory"
        } else {
            "special file"
        };
        return Err(UntrustedFileError::NotRegular { path: name(), kind });
    }
    // A symlinked parent directory can still lead into /proc: check where we landed.
    if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        file.as_raw_fd()
    })) {
        if is_kernel_path(&real) {
            return Err(UntrustedFileError::Kernel { path: name() });
        }
    }
    Ok(file)
}

/// [`open_untrusted`], and also refuses a file reached through a symlinked directory: the
/// owner of a log directory's parent can swap the directory for a link to one of root's. For
/// files whose content leaves the host (forensic bundles); the fix for an administrator's own
/// symlink is to name the real path.
pub fn open_untrusted_exact(path: &Path) -> Result<File, UntrustedFileError> {
    use std::os::fd::AsRawFd;
    let file = open_untrusted(path)?;
    let real =
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|source| {
            UntrustedFileError::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
    if real != lexical_absolute(path) {
        return Err(UntrustedFileError::Symlink {
            path: format!(
                "{} (reached through a symbolic link to {})",
                path.display(),
                real.display()
            ),
        });
    }
    Ok(file)
}

/// Reads a whole file a target controls, refusing one larger than `cap` bytes.
pub fn read_untrusted(path: &Path, cap: u64) -> Result<Vec<u8>, UntrustedFileError> {
    let file = open_untrusted(path)?;
    let mut buf = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|source| UntrustedFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
    if buf.len() as u64 > cap {
        return Err(UntrustedFileError::TooLarge {
            path: path.display().to_string(),
            cap,
        });
    }
    Ok(buf)
}

/// [`read_untrusted`] on a blocking thread, waiting at most `wait`: a read stuck on a hung
/// filesystem costs that thread, never the caller's (an actor serving the whole fleet).
pub async fn read_untrusted_bounded(
    path: &Path,
    cap: u64,
    wait: Duration,
) -> Result<Vec<u8>, UntrustedFileError> {
    let p = path.to_path_buf();
    match tokio::time::timeout(
        wait,
        tokio::task::spawn_blocking(move || read_untrusted(&p, cap)),
    )
    .await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(UntrustedFileError::Io {
            path: path.display().to_string(),
            source: io::Error::other(e.to_string()),
        }),
        Err(_) => Err(UntrustedFileError::TimedOut {
            path: path.display().to_string(),
            waited: wait,
        }),
    }
}

/// Creates `dir` (and missing parents) as 0700, and makes an existing one 0700. Returns
/// whether the mode of an existing directory had to be tightened, so the caller can say so.
/// Refuses a symlink and a directory owned by another user than root: that user could replace
/// its files (fix: remove it, or chown it to the daemon's user).
pub fn private_dir(dir: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if meta.file_type().is_symlink() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symbolic link: refused (make it a real directory)",
                        dir.display()
                    ),
                ));
            }
            if !meta.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", dir.display()),
                ));
            }
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if meta.uid() == 0 && me != 0 {
                // Root's directory (a volume mount): root is trusted anyway, and only it may
                // change the mode; the files we create in it are still 0600.
                return Ok(false);
            }
            if meta.uid() != me {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is owned by uid {}, not by the daemon's uid {me}: refused (remove it or chown it)",
                        dir.display(),
                        meta.uid()
                    ),
                ));
            }
            if meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
                return Ok(true);
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            // `recursive` applies the mode to every directory it creates; the umask may have
            // taken bits away, never added them.
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Why a private lock file could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: locked by another process for more than {waited:?} (a stuck daemon, or someone holding flock on it)")]
    Busy { path: String, waited: Duration },
    #[error("{path}: {why}: not trusted (remove it; the daemon re-creates it private)")]
    Untrusted { path: String, why: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Opens (creating 0600) and exclusively locks a file of the daemon's own, for records that
/// several daemons share (leases, outages): never through a symlink, only a regular file of
/// the daemon's user (a looser mode is tightened), the lock waited on at most `wait` so that
/// someone holding `flock` on it cannot freeze us.
pub fn open_locked(path: &Path, wait: Duration) -> Result<File, LockError> {
    use std::os::fd::AsRawFd;
    let name = || path.display().to_string();
    let io = |source| LockError::Io {
        path: name(),
        source,
    };
    let untrusted = |why: String| LockError::Untrusted { path: name(), why };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => untrusted("a symbolic link".into()),
            _ => io(e),
        })?;
    let meta = file.metadata().map_err(io)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() {
        return Err(untrusted("not a regular file".into()));
    }
    if meta.uid() != me {
        return Err(untrusted(format!(
            "owned by uid {}, not by the daemon's uid {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        // Ours, but readable by others (an older version, a loose umask): make it private.
        // A process that opened it before keeps its descriptor; the bounded wait below is
        // what keeps such a holder from freezing us.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor we own; released when the file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(e));
        }
        if std::time::Instant::now() >= deadline {
            return Err(LockError::Busy {
                path: name(),
                waited: wait,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates (truncating) a private file: 0600, never through a symlink.
pub fn create_private(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    // An existing file keeps its mode on open: make it private too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Opens a private file for appending (a heal log), creating it 0600, never through a symlink.
pub fn append_private(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// openat2(2) of `rel` beneath `root`: no `..` out of it, no symlink (nor /proc magic link)
/// followed anywhere on the way. ENOSYS on kernels before 5.6.
pub fn open_beneath(root: &File, rel: &Path, flags: libc::c_int) -> io::Result<File> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    openat2(Some(root), rel, flags, resolve)
}

/// openat2(2) of `path`, relative to `dir` (the working directory for `None`), with the
/// `resolve` flags; retried when interrupted.
pub fn openat2(
    dir: Option<&File>,
    path: &Path,
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<File> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `open_how` is plain integers, for which all zeroes is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // (openat2 refuses O_PATH with any flag but these three.)
    let extra = match flags & libc::O_PATH {
        0 => libc::O_CLOEXEC | libc::O_NOCTTY,
        _ => libc::O_CLOEXEC,
    };
    how.flags = (flags | extra) as u64;
    how.resolve = resolve;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    loop {
        // SAFETY: the path is NUL-terminated and `how` outlives the call, whose size is given.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a new descriptor that nothing else owns.
            return Ok(unsafe { File::from_raw_fd(fd as libc::c_int) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `(free for unprivileged users, total)` bytes of the filesystem holding `path`: the flight
/// recorder's disk vitals and the disk-full cause read it.
pub fn statvfs(path: &Path) -> Option<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_fifos_kernel_files_and_big_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert_eq!(read_untrusted(&link, 100).unwrap_err().kind(), "symlink");
        let fifo = dir.path().join("fifo.log");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read_untrusted(&fifo, 100).unwrap_err().kind(),
            "not_regular"
        );
        assert_eq!(
            read_untrusted(Path::new("/proc/self/environ"), 100)
                .unwrap_err()
                .kind(),
            "kernel_fs"
        );
        // Through a symlinked directory.
        let procdir = dir.path().join("p");
        std::os::unix::fs::symlink("/proc/self", &procdir).unwrap();
        assert_eq!(
            read_untrusted(&procdir.join("environ"), 1 << 20)
                .unwrap_err()
                .kind(),
            "kernel_fs"
        );
        // A file reached through a symlinked directory: opened, but not for a bundle.
        let linked_dir = dir.path().join("logs");
        std::os::unix::fs::symlink(dir.path(), &linked_dir).unwrap();
        assert!(open_untrusted(&linked_dir.join("secret")).is_ok());
        assert_eq!(
            open_untrusted_exact(&linked_dir.join("secret"))
                .unwrap_err()
                .kind(),
            "symlink"
        );
        assert!(open_untrusted_exact(&secret).is_ok());
        assert_eq!(read_untrusted(&secret, 3).unwrap_err().kind(), "too_large");
        assert_eq!(read_untrusted(&secret, 6).unwrap(), b"s3cr3t");
    }

    #[test]
    fn private_files_and_dirs_are_0600_and_0700_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        private_dir(&d).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir(&d).unwrap(), "loose mode reported");
        assert_eq!(mode(&d), 0o700);
        let f = d.join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_private(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        let link = d.join("l");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(
            create_private(&link).is_err(),
            "never written through a symlink"
        );
    }
}

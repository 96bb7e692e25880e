//! Whether the daemon can still keep its promises on disk, for `/healthz`. Failing closed
//! (no restart without a lease, nothing done without writing it first) must never mean
//! failing silently: a removed lease directory or a full state disk shows here as a 503 with
//! the reason, before an incident finds out. Each check does the real thing (create, lock,
//! write and fsync a small file), because permission bits say nothing to root and a full disk
//! only shows when written.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest a `/healthz` request waits for the disks (a hung NFS mount is a fault too).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// The directories the daemon must be able to write.
#[derive(Debug, Clone)]
pub struct Disks {
    /// `--state-dir`: the incident store, heal logs, the spool.
    pub state_dir: PathBuf,
    /// `lease.dir`: restart leases (a failure here refuses every restart). None in cluster
    /// mode, where the restart leases live in etcd.
    pub lease_dir: Option<PathBuf>,
    /// The S3 upload spool, when there is an S3 sink.
    pub spool_dir: Option<PathBuf>,
}

/// One failed check: which part (`store`, `lease`, `spool`) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub part: &'static str,
    pub problem: String,
}

impl Disks {
    /// Runs every check; blocking, so callers run it off their thread.
    pub fn check(&self) -> Vec<Fault> {
        let mut faults = Vec::new();
        let mut fail = |part, what: &str, dir: &Path, e: String| {
            faults.push(Fault {
                part,
                problem: format!("{what} {}: {e}", dir.display()),
            })
        };
        if let Err(e) = probe_dir(&self.state_dir, false) {
            fail("store", "cannot write the state dir", &self.state_dir, e);
        }
        if let Some(lease_dir) = &self.lease_dir {
            if let Err(e) = own_dir(lease_dir).and_then(|()| probe_dir(lease_dir, true)) {
                fail(
                    "lease",
                    "restarts are refused: cannot lock in the lease dir",
                    lease_dir,
                    e,
                );
            }
        }
        // The spool is created when first needed; until then it is the state dir's fault.
        if let Some(spool) = &self.spool_dir {
            let dir = match spool.parent() {
                Some(parent) if !spool.exists() => parent,
                _ => spool.as_path(),
            };
            if let Err(e) = probe_dir(dir, false) {
                fail("spool", "S3 uploads cannot be staged in", dir, e);
            }
        }
        faults
    }
}

/// The lease store refuses a directory that is a symlink or another user's (root excepted);
/// so does this check, and it writes nothing there.
fn own_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if meta.file_type().is_symlink() {
        return Err("a symbolic link (make it a real directory)".into());
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let owner = std::os::unix::fs::MetadataExt::uid(&meta);
    if owner != me && owner != 0 {
        return Err(format!(
            "owned by uid {owner}, not by the daemon's uid {me} (remove it or chown it)"
        ));
    }
    Ok(())
}

/// Creates, optionally locks, writes 4 KiB to, fsyncs and removes a probe file in `dir`.
pub(crate) fn probe_dir(dir: &Path, lock: bool) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    // Unique, since daemons on other hosts may share the directory (and a pid).
    let path = dir.join(format!(
        ".healthz-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| e.to_string())?;
    let written = (|| {
        // SAFETY: flock on a descriptor we own; released when it closes.
        if lock && unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!("flock: {}", std::io::Error::last_os_error()));
        }
        f.write_all(&[0u8; 4096]).map_err(|e| e.to_string())?;
        f.sync_all().map_err(|e| format!("fsync: {e}"))
    })();
    drop(f);
    let _ = std::fs::remove_file(&path);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_lease_dir_and_a_file_in_place_of_the_state_dir_are_faults() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let mut disks = Disks {
            state_dir: state.clone(),
            lease_dir: Some(state.join("leases")),
            spool_dir: None,
        };
        let faults = disks.check();
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert_eq!(faults[0].part, "lease");
        std::fs::create_dir(disks.lease_dir.as_ref().unwrap()).unwrap();
        assert!(disks.check().is_empty());
        let file = root.path().join("file");
        std::fs::write(&file, "x").unwrap();
        disks.state_dir = file;
        assert_eq!(disks.check()[0].part, "store");
        assert!(
            std::fs::read_dir(&state).unwrap().count() == 1,
            "probe files are removed"
        );
    }
}

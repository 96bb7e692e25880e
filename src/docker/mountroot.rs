//! Opening a container's files on the host without letting the container steer the open.
//!
//! Two inputs have two authors. A mount's host path (`Mounts[].Source`) is the operator's or
//! the Engine's string, but the directories it names may not be: a container that also mounts
//! a parent of that path (or a volume holding it), writable, can move the directory away and
//! put a symlink to any host directory in its place, and root in the container is root on
//! those files. What lies beneath the mount's directory is the container's outright. So every
//! component of both is opened with openat2(2) and no symlink followed, the mount's directory
//! is checked against the one the container really has mounted when that can be seen, and a
//! file is opened for reading only once an `O_PATH` descriptor showed it is regular: opening a
//! FIFO or a device (a watchdog, a tape) has effects of its own.

use crate::fsutil::{open_beneath, openat2};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why a mount's host directory was not opened.
#[derive(Debug)]
pub enum RootError {
    /// Not readable from here for a reason nobody chose (not visible from this process, a
    /// kernel without openat2, a link the host itself has in that path): the Engine reads it.
    Engine,
    /// What is at the host path may be the container's doing; it is not read, and not left to
    /// the Engine either, which mounts the host path as it is, links followed. The text is the
    /// manifest's reason.
    Refused(String),
}

/// A mount's host directory as the daemon may open it.
#[derive(Debug, Clone, Copy)]
pub struct MountRoot<'a> {
    /// The host path the Engine reports.
    pub source: &'a Path,
    /// Where the container sees it, to find the directory it really has mounted.
    pub destination: &'a Path,
    /// A writable mount of the same container covers a parent of `source`: the container can
    /// rename or replace what `source` names.
    pub changeable: bool,
}

impl MountRoot<'_> {
    /// Opens the mount's host directory (`O_PATH`), no symlink followed from `/` on.
    ///
    /// With the container's main process `pid` (a running or paused container) the directory
    /// mounted at `destination` inside it is the authority, which no rename or link on the host
    /// can fake: the host path must lead to it (same device and inode), and when a link in the
    /// host path (the host's own, such as a symlinked /var/lib/docker) stops the walk, that
    /// directory is read instead, opened inside the container's root. A stopped container has
    /// no such view: a link in a host path it can change is then refused.
    pub fn open(&self, pid: Option<u32>) -> Result<File, RootError> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let host = openat2(None, self.source, flags, NO_LINKS);
        let seen = pid.and_then(|p| self.in_container(p).ok());
        match (host, seen) {
            (Ok(host), Some(seen)) => {
                if !same(&host, &seen)? {
                    return Err(RootError::Refused(self.replaced()));
                }
                Ok(host)
            }
            (Ok(host), None) => Ok(host),
            (Err(e), Some(seen)) if e.raw_os_error() == Some(libc::ELOOP) => Ok(seen),
            (Err(e), None) if e.raw_os_error() == Some(libc::ELOOP) && self.changeable => {
                Err(RootError::Refused(self.linked()))
            }
            (Err(_), _) => Err(RootError::Engine),
        }
    }

    /// Why the Engine must not copy through this mount, if it must not. The Engine mounts the
    /// host path as it is, links followed: with the container's view (`pid`), the directory
    /// that path leads to must be the one mounted (it is only looked up here, never read);
    /// without it, a link in a host path the container can change is refused as in [`open`].
    ///
    /// [`open`]: MountRoot::open
    pub fn engine_may_mount(&self, pid: Option<u32>) -> Result<(), String> {
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        match pid.and_then(|p| self.in_container(p).ok()) {
            Some(seen) => {
                let resolve = libc::RESOLVE_NO_MAGICLINKS;
                match openat2(None, self.source, flags, resolve) {
                    Ok(there) if !same(&there, &seen).unwrap_or(false) => Err(self.replaced()),
                    _ => Ok(()),
                }
            }
            None => match openat2(None, self.source, flags, NO_LINKS) {
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) && self.changeable => {
                    Err(self.linked())
                }
                _ => Ok(()),
            },
        }
    }

    /// The manifest's reason when the host path no longer leads to the mounted directory.
    fn replaced(&self) -> String {
        format!(
            "its mount's host directory {} is no longer the directory mounted at {} in the \
             container (moved or replaced since): not read, nor copied through the Engine, \
             which would mount what is there now",
            self.source.display(),
            self.destination.display()
        )
    }

    /// The manifest's reason when a link the container may have put stops the walk.
    fn linked(&self) -> String {
        format!(
            "its mount's host directory {} is reached through a symbolic link, in a path this \
             container can change through another of its mounts: not followed (nor copied \
             through the Engine, which would follow it); mount the directory on its own, not \
             beneath another mount of the container",
            self.source.display()
        )
    }

    /// The directory mounted at `destination`, as the container's process `pid` sees it:
    /// resolved inside its root, no symlink followed. An error (no such process, another pid
    /// namespace, a link in the container's path) means there is nothing to compare with.
    fn in_container(&self, pid: u32) -> io::Result<File> {
        // /proc's magic link to the process's root directory: the kernel's, not the container's.
        let root = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(format!("/proc/{pid}/root"))?;
        let rel = self
            .destination
            .strip_prefix("/")
            .unwrap_or(self.destination);
        let resolve = NO_LINKS | libc::RESOLVE_IN_ROOT;
        openat2(Some(&root), rel, libc::O_PATH | libc::O_DIRECTORY, resolve)
    }
}

/// Two descriptors name the same directory (device and inode); an `fstat` failing, the Engine
/// reads it.
fn same(a: &File, b: &File) -> Result<bool, RootError> {
    let (a, b) = (a.metadata(), b.metadata());
    let (a, b) = (
        a.map_err(|_| RootError::Engine)?,
        b.map_err(|_| RootError::Engine)?,
    );
    Ok((a.dev(), a.ino()) == (b.dev(), b.ino()))
}

/// No symlink, nor /proc magic link, followed anywhere on the way.
const NO_LINKS: u64 = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// Opens the regular file `rel` beneath `root` for reading, with its length. It is looked up
/// with `O_PATH` first (which opens nothing: a FIFO's writer is not woken, a device's driver
/// is not called) and reopened for reading through that descriptor only when it is a regular
/// file, so a file swapped for a FIFO or a device since it was listed is never opened.
pub fn open_regular(root: &File, rel: &Path) -> io::Result<(File, u64)> {
    let found = open_beneath(root, rel, libc::O_PATH)?;
    let meta = found.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("no longer a regular file"));
    }
    // The magic link of an O_PATH descriptor reopens that very inode, whatever the path now.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", found.as_raw_fd()))?;
    Ok((file, meta.len()))
}

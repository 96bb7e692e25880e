//! A container's evidence read from the host side of its volume or bind mount: no Engine
//! request and no mount of the stopped container's filesystem, so its log dir is copied in
//! milliseconds. The files are the container's (a hostile one controls them), and so may be
//! the directories on the way to its mount's host directory: every component, from `/` on, is
//! opened through openat2(2) with no symlink followed ([`super::mountroot`]), and only regular
//! files are opened for reading. Whatever cannot be read here exactly as the Engine's tar would
//! give it (no mount covers the path, another mount lies inside it, its directory is not
//! visible from this process, a symlink beneath the mount, a kernel without openat2) is left to
//! the Engine, untouched; a host path the container may have redirected is refused outright.

use super::container::{MountPoint, Mounts};
use super::mountroot::{open_regular, MountRoot, RootError};
use super::unpack::{self as copy, Extracted, Limits};
use crate::archive::Missing;
use crate::fsutil::open_beneath;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Where a container path lies on this host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPath {
    /// The mount's directory on the host (the Engine's or the operator's: trusted).
    pub source: PathBuf,
    /// The path beneath it, empty for the mount's own directory (the container's: untrusted).
    pub beneath: PathBuf,
    /// Where the container sees the mount.
    pub destination: PathBuf,
    /// Another writable mount of the container covers a parent of `source`, so the container
    /// can move or replace the directory `source` names.
    pub changeable: bool,
}

/// Where `path` lies on the host: beneath the deepest volume or bind mount that covers it,
/// when no other mount lies inside it (only the Engine sees both). `None`: ask the Engine.
pub fn locate(mounts: &[MountPoint], path: &str) -> Option<HostPath> {
    let want = clean(path)?;
    let mut best: Option<(PathBuf, &MountPoint)> = None;
    for m in mounts {
        let dest = clean(&m.destination)?;
        if dest != want && dest.starts_with(&want) {
            return None;
        }
        let deeper = best.as_ref().is_none_or(|(b, _)| dest.starts_with(b));
        if want.starts_with(&dest) && deeper {
            best = Some((dest, m));
        }
    }
    let (dest, m) = best?;
    let source = PathBuf::from(m.source.as_ref()?);
    source.is_absolute().then_some(())?;
    let beneath = want.strip_prefix(&dest).ok()?.to_path_buf();
    Some(HostPath {
        changeable: changeable(mounts, &source),
        source,
        beneath,
        destination: dest,
    })
}

/// Another writable mount of the container covers a parent of `source` (the Engine's host
/// path, compared as written): the container can move or replace what `source` names.
fn changeable(mounts: &[MountPoint], source: &Path) -> bool {
    mounts.iter().any(|o| {
        let within = |s: &String| source.starts_with(s) && source != Path::new(s);
        o.writable && o.source.as_ref().is_some_and(within)
    })
}

/// Why the Engine must not copy `path` either, if it must not. The Engine mounts each volume
/// and bind mount from its host path as that path is now, links followed, so a mount that
/// covers `path` or lies inside it, whose host directory the container redirected, would be
/// copied from wherever it now points ([`MountRoot::engine_may_mount`] tells). Checked on a
/// blocking thread until `until`; not knowing in time is a refusal too.
pub(super) async fn engine_refusal(
    mounts: &Mounts,
    path: &str,
    until: tokio::time::Instant,
) -> Option<Missing> {
    let (mounts, requested) = (mounts.clone(), path.to_string());
    let check = tokio::task::spawn_blocking(move || {
        let want = clean(&requested);
        for m in &mounts.points {
            let (Some(dest), Some(source)) = (clean(&m.destination), m.source.as_ref()) else {
                continue;
            };
            let source = Path::new(source);
            let involved = want
                .as_ref()
                .is_none_or(|w| dest.starts_with(w) || w.starts_with(&dest));
            if !involved || !source.is_absolute() {
                continue;
            }
            let root = MountRoot {
                source,
                destination: &dest,
                changeable: changeable(&mounts.points, source),
            };
            if let Err(why) = root.engine_may_mount(mounts.pid) {
                return Some(why);
            }
        }
        None
    });
    let reason = match tokio::time::timeout_at(until, check).await {
        Ok(Ok(found)) => found?,
        Ok(Err(e)) => format!("its mounts' host directories could not be checked: {e}"),
        Err(_) => "archive.timeout reached while its mounts' host directories were checked".into(),
    };
    Some(Missing {
        pattern: path.to_string(),
        reason,
    })
}

/// What [`copy_path`] did.
#[derive(Debug)]
pub(super) enum HostCopy {
    /// Read on the host.
    Copied(Extracted),
    /// Not read, and not to be read through the Engine either: the reason, for the manifest.
    Refused(Missing),
    /// Left to the Engine (nothing was written).
    Engine,
}

/// `path` when it is absolute and already in its plain form (no `.`, `..`, `//` or trailing
/// slash, each of which the Engine resolves its own way).
fn clean(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let mut comps = p.components();
    (comps.next() == Some(Component::RootDir)).then_some(())?;
    comps
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(())?;
    let plain = p.components().collect::<PathBuf>();
    (plain.components().count() > 1 && plain.as_os_str().as_bytes() == path.as_bytes())
        .then_some(plain)
}

/// Copies `path` from the host side of its mount into `dir`, as the Engine's copy would (same
/// names, manifest entries and bounds), or says why it must go through the Engine or not at
/// all. `pid` is the container's main process when it runs: its view of the mount is what the
/// host directory is checked against ([`MountRoot::open`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn copy_path(
    at: HostPath,
    pid: Option<u32>,
    path: &str,
    dir: &Path,
    limits: &Limits,
    budget: &mut u64,
    used: &mut HashSet<String>,
) -> HostCopy {
    let abandoned = Arc::new(AtomicBool::new(false));
    let (requested, dir2, lim, mut names, mut left, gone) = (
        path.to_string(),
        dir.to_path_buf(),
        limits.clone(),
        used.clone(),
        *budget,
        abandoned.clone(),
    );
    let work = tokio::task::spawn_blocking(move || {
        let until = lim.deadline.into_std();
        let root = MountRoot {
            source: &at.source,
            destination: &at.destination,
            changeable: at.changeable,
        };
        let root = root.open(pid)?;
        let (root, entries) = plan(root, &at, &requested, lim.max_entries, until, MAX_LISTED)
            .map_err(|_| RootError::Engine)?;
        let job = Job {
            root: &root,
            requested: &requested,
            dir: &dir2,
            limits: &lim,
            until,
            abandoned: &gone,
        };
        let out = job.unpack(entries, &mut left, &mut names);
        Ok::<_, RootError>((out, names, left))
    });
    match tokio::time::timeout_at(limits.deadline, work).await {
        Ok(Ok(Ok((out, names, left)))) => {
            *used = names;
            *budget = left;
            HostCopy::Copied(out)
        }
        Ok(Ok(Err(RootError::Refused(reason)))) => HostCopy::Refused(Missing {
            pattern: path.to_string(),
            reason,
        }),
        Ok(_) => HostCopy::Engine,
        Err(_) => {
            // A hung read on the host: the thread removes what it wrote when it returns.
            abandoned.store(true, Ordering::SeqCst);
            HostCopy::Copied(Extracted {
                files: Vec::new(),
                missing: vec![Missing {
                    pattern: format!("{path} (rest)"),
                    reason: copy::stream_end(&io::ErrorKind::TimedOut.into()),
                }],
            })
        }
    }
}

/// What one entry of the walk is, as the Engine's tar would type it.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Dir,
    File,
    /// A second name of a file already listed under this tar name.
    HardLink(String),
    Symlink(String),
    /// A FIFO or a device.
    Other(tar::EntryType),
}

/// One entry, in the order the Engine's tar would list it.
#[derive(Debug)]
struct Entry {
    /// The tar's name: relative to the requested path's parent.
    name: PathBuf,
    /// The path beneath the mount's directory.
    beneath: PathBuf,
    kind: Kind,
}

/// Lists what the Engine's tar of `requested` would hold beneath the mount's directory `root`,
/// in its order (names sorted bytewise, each directory before its contents), up to one entry
/// past `max`, reading at most `max_listed` names. Any error means the Engine must do it.
fn plan(
    root: File,
    at: &HostPath,
    requested: &str,
    max: usize,
    until: Instant,
    max_listed: usize,
) -> io::Result<(File, Vec<Entry>)> {
    let top = open_beneath(&root, &at.beneath, libc::O_PATH)?;
    let meta = top.metadata()?;
    let name = PathBuf::from(Path::new(requested).file_name().unwrap_or_default());
    let kind = if meta.is_dir() {
        Kind::Dir
    } else if meta.is_file() {
        Kind::File
    } else {
        return Err(io::Error::other("neither a directory nor a regular file"));
    };
    let mut walk = Walk {
        root: &root,
        max,
        until,
        inodes: HashMap::new(),
        listed: 0,
        max_listed,
        out: vec![Entry {
            name: name.clone(),
            beneath: at.beneath.clone(),
            kind: kind.clone(),
        }],
    };
    if kind == Kind::Dir {
        walk.dir(&name, &at.beneath)?;
    }
    let entries = walk.out;
    Ok((root, entries))
}

/// The state of [`plan`]'s walk.
struct Walk<'a> {
    root: &'a File,
    max: usize,
    until: Instant,
    /// Files with more than one name, by (device, inode): the tar name they were listed under.
    inodes: HashMap<(u64, u64), String>,
    /// Names read from directories so far, and the most it may read.
    listed: usize,
    max_listed: usize,
    out: Vec<Entry>,
}

/// Names a walk reads before it leaves the path to the Engine: each directory's names are
/// sorted (as the Engine's tar is) before the first is copied, so they are held in memory,
/// and a hostile container can make a directory of millions.
const MAX_LISTED: usize = 20_000;

impl Walk<'_> {
    /// Lists the contents of the directory `beneath` (tar name `name`), depth first.
    fn dir(&mut self, name: &Path, beneath: &Path) -> io::Result<()> {
        let dir = open_beneath(self.root, beneath, libc::O_RDONLY | libc::O_DIRECTORY)?;
        // Listed through the open descriptor: the directory read is the one just opened.
        let at = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        let mut names: Vec<OsString> = Vec::new();
        for e in std::fs::read_dir(&at)? {
            self.listed += 1;
            if self.listed > self.max_listed {
                return Err(io::Error::other("too many names to sort here"));
            }
            if Instant::now() >= self.until {
                return Err(io::ErrorKind::TimedOut.into());
            }
            names.push(e?.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            if self.out.len() > self.max {
                break;
            }
            let meta = std::fs::symlink_metadata(at.join(&n))?; // (lstat: never followed)
            let ft = meta.file_type();
            if ft.is_socket() {
                continue; // the Engine's tar leaves sockets out
            }
            let (name, beneath) = (name.join(&n), beneath.join(&n));
            let kind = self.kind(&meta, &name, || std::fs::read_link(at.join(&n)))?;
            let is_dir = kind == Kind::Dir;
            self.out.push(Entry {
                name: name.clone(),
                beneath: beneath.clone(),
                kind,
            });
            if is_dir {
                self.dir(&name, &beneath)?;
            }
        }
        Ok(())
    }

    /// How the Engine's tar types an entry: a second name of a file is a hard link to the
    /// first listed.
    fn kind(
        &mut self,
        meta: &Metadata,
        name: &Path,
        link: impl FnOnce() -> io::Result<PathBuf>,
    ) -> io::Result<Kind> {
        let ft = meta.file_type();
        if ft.is_dir() {
            return Ok(Kind::Dir);
        }
        if meta.nlink() > 1 {
            let first = self.inodes.entry((meta.dev(), meta.ino()));
            if let std::collections::hash_map::Entry::Occupied(o) = first {
                return Ok(Kind::HardLink(o.get().clone()));
            }
            first.or_insert_with(|| name.display().to_string());
        }
        Ok(if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink(link()?.display().to_string())
        } else if ft.is_fifo() {
            Kind::Other(tar::EntryType::Fifo)
        } else if ft.is_char_device() {
            Kind::Other(tar::EntryType::Char)
        } else {
            Kind::Other(tar::EntryType::Block)
        })
    }
}

/// Where [`Job::unpack`] reads and writes.
struct Job<'a> {
    root: &'a File,
    requested: &'a str,
    dir: &'a Path,
    limits: &'a Limits,
    until: Instant,
    /// Set when the caller stopped waiting: what was written is removed.
    abandoned: &'a AtomicBool,
}

impl Job<'_> {
    /// Writes the planned entries into the bundle as the Engine's tar reader does: the same
    /// names, entries listed as left out, bounds and reasons.
    fn unpack(
        &self,
        entries: Vec<Entry>,
        budget: &mut u64,
        used: &mut HashSet<String>,
    ) -> Extracted {
        let mut out = Extracted::default();
        let parent = Path::new(self.requested).parent().unwrap_or(Path::new("/"));
        let rest = |why: String| Missing {
            pattern: format!("{} (rest)", self.requested),
            reason: why,
        };
        for (seen, entry) in entries.into_iter().enumerate() {
            if seen >= self.limits.max_entries {
                out.missing.push(rest(format!(
                    "more than {} entries: the rest was not read",
                    self.limits.max_entries
                )));
                break;
            }
            if self.abandoned.load(Ordering::SeqCst) {
                break;
            }
            let source = parent.join(&entry.name);
            let reason = match entry.kind {
                Kind::Dir => continue,
                Kind::File => match self.open(&entry.beneath) {
                    Ok((file, len)) => {
                        let mut input = Bounded {
                            file,
                            until: self.until,
                        };
                        let into = copy::Into {
                            dir: self.dir,
                            limits: self.limits,
                            budget: &mut *budget,
                            used: &mut *used,
                        };
                        let r = copy::unpack_file(&mut input, len, &source, into, &mut out.files);
                        if let Err(stop) = r {
                            out.missing.extend(stop.missing);
                            out.missing.extend(stop.rest.map(rest));
                            break;
                        }
                        continue;
                    }
                    Err(e) => format!("could not unpack: {e}"),
                },
                Kind::HardLink(to) => copy::left_out(tar::EntryType::Link, &to),
                Kind::Symlink(to) => copy::left_out(tar::EntryType::Symlink, &to),
                Kind::Other(kind) => copy::left_out(kind, ""),
            };
            out.missing.push(Missing {
                pattern: source.display().to_string(),
                reason,
            });
        }
        if self.abandoned.load(Ordering::SeqCst) {
            for f in &out.files {
                let _ = std::fs::remove_file(self.dir.join(&f.name));
            }
        }
        out
    }

    /// Opens a planned regular file for reading, with its length; a FIFO or a device swapped
    /// in since it was listed is not opened ([`open_regular`]).
    fn open(&self, beneath: &Path) -> io::Result<(File, u64)> {
        open_regular(self.root, beneath)
    }
}

/// A file read until a deadline: past it, reads fail as the Engine's stream would.
struct Bounded {
    file: File,
    until: Instant,
}

impl Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.until {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.file.read(buf)
    }
}

impl copy::Skip for Bounded {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let n = i64::try_from(n).map_err(io::Error::other)?;
        self.file.seek(SeekFrom::Current(n)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mount(destination: &str, source: Option<&Path>) -> MountPoint {
        MountPoint {
            destination: destination.into(),
            source: source.map(|s| s.display().to_string()),
            writable: true,
        }
    }

    fn at(source: &str, beneath: &str, destination: &str) -> Option<HostPath> {
        Some(HostPath {
            source: source.into(),
            beneath: beneath.into(),
            destination: destination.into(),
            changeable: false,
        })
    }

    /// [`plan`] from the mount's host directory, opened as [`copy_path`] does.
    fn plan_at(
        at: &HostPath,
        requested: &str,
        max: usize,
        until: Instant,
        max_listed: usize,
    ) -> io::Result<(File, Vec<Entry>)> {
        let root = MountRoot {
            source: &at.source,
            destination: &at.destination,
            changeable: at.changeable,
        };
        let root = root
            .open(None)
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        plan(root, at, requested, max, until, max_listed)
    }

    impl HostCopy {
        fn copied(self) -> Option<Extracted> {
            match self {
                HostCopy::Copied(x) => Some(x),
                _ => None,
            }
        }
    }

    fn limits(per_file: u64, per_bundle: u64) -> Limits {
        Limits {
            per_file,
            per_bundle,
            max_entries: Limits::MAX_ENTRIES,
            deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(60),
        }
    }

    #[test]
    fn a_path_is_read_beneath_the_deepest_mount_that_covers_it_and_no_other_hides_part_of_it() {
        let mounts = [
            mount("/data", Some(Path::new("/v/data"))),
            mount("/data/log", Some(Path::new("/v/log"))),
            mount("/run", None),
            mount("/cfg", Some(Path::new("/v/cfg"))),
        ];
        let l = |p| locate(&mounts, p);
        assert_eq!(l("/data/log/x.log"), at("/v/log", "x.log", "/data/log"));
        assert_eq!(l("/data/log"), at("/v/log", "", "/data/log"));
        assert_eq!(
            l("/data/pg_hba.conf"),
            at("/v/data", "pg_hba.conf", "/data")
        );
        assert_eq!(l("/cfg/a/b"), at("/v/cfg", "a/b", "/cfg"));
        // Another mount inside the path, a mount with no host directory, none at all.
        assert_eq!(l("/data"), None);
        assert_eq!(l("/run/x"), None);
        assert_eq!(l("/etc/x"), None);
        assert_eq!(l("/cfgx/a"), None);
        // Paths the Engine resolves its own way.
        for p in [
            "/cfg/../etc/shadow",
            "/cfg/a/",
            "/cfg//a",
            "/cfg/./a",
            "cfg/a",
            "/",
        ] {
            assert_eq!(l(p), None, "{p}");
        }
    }

    /// A data directory as a hostile container leaves it: links out of the volume, to a
    /// root-only file, a hard link, a FIFO, a socket, a file named like the manifest.
    fn hostile_volume(vol: &Path) -> PathBuf {
        let data = vol.join("data");
        let log = data.join("log");
        std::fs::create_dir_all(log.join("sub")).unwrap();
        std::fs::write(vol.join("secret.txt"), "HOST-SECRET").unwrap();
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(log.join("a.log"), &big).unwrap();
        std::fs::hard_link(log.join("a.log"), log.join("b.log")).unwrap();
        std::fs::write(log.join("manifest.json"), "FAKE").unwrap();
        std::fs::write(log.join(".hidden"), "h").unwrap();
        std::fs::write(log.join("sub/z.log"), "z").unwrap();
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\n").unwrap();
        symlink("../../secret.txt", log.join("escape.log")).unwrap();
        symlink("/etc/shadow", log.join("shadow.log")).unwrap();
        symlink("../..", log.join("up")).unwrap();
        let fifo = std::ffi::CString::new(log.join("pipe").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::os::unix::net::UnixListener::bind(log.join("sock")).unwrap();
        data
    }

    /// What the Engine's copy of `path` (under `data`, mounted at /pgdata) gives: its tar
    /// stands in as GNU tar's, sorted by name as the Engine's walk is.
    fn through_tar(data: &Path, path: &str, into: &Path) -> (Extracted, u64, HashSet<String>) {
        let rel = path.strip_prefix("/pgdata/").unwrap();
        let tar = std::process::Command::new("tar")
            .args(["--sort=name", "-cf", "-", "-C"])
            .arg(data)
            .arg(rel)
            .output()
            .unwrap();
        let (mut used, mut budget) = (crate::archive::local::reserved_names(), 4_000);
        let out = copy::extract(
            &tar.stdout[..],
            into,
            path,
            &limits(1_000, 4_000),
            &mut budget,
            &mut used,
        );
        (out, budget, used)
    }

    #[tokio::test]
    async fn the_host_copy_is_the_engines_entry_for_entry_and_follows_no_link_out() {
        let vol = tempfile::tempdir().unwrap();
        let data = hostile_volume(vol.path());
        let mounts = [mount("/pgdata", Some(&data))];
        for path in ["/pgdata/log", "/pgdata/pg_hba.conf"] {
            let (engine_dir, host_dir) =
                (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (engine, engine_left, engine_used) = through_tar(&data, path, engine_dir.path());
            let (mut used, mut budget) = (crate::archive::local::reserved_names(), 4_000);
            let lim = limits(1_000, 4_000);
            let place = locate(&mounts, path).unwrap();
            let host = copy_path(
                place,
                None,
                path,
                host_dir.path(),
                &lim,
                &mut budget,
                &mut used,
            )
            .await
            .copied()
            .expect("read on the host");
            assert_eq!(host.files, engine.files, "{path}");
            assert_eq!(host.missing, engine.missing, "{path}");
            assert_eq!((budget, &used), (engine_left, &engine_used));
            for f in &host.files {
                let (h, e) = (
                    host_dir.path().join(&f.name),
                    engine_dir.path().join(&f.name),
                );
                assert_eq!(std::fs::read(h).unwrap(), std::fs::read(e).unwrap());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (mut used, mut budget) = (crate::archive::local::reserved_names(), 4_000);
        let place = locate(&mounts, "/pgdata/log").unwrap();
        let lim = limits(1_000, 4_000);
        let out = copy_path(
            place,
            None,
            "/pgdata/log",
            dir.path(),
            &lim,
            &mut budget,
            &mut used,
        )
        .await
        .copied()
        .unwrap();
        let names: Vec<&str> = out.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["_.hidden", "a.log", "log__manifest.json", "z.log"]);
        let reasons: Vec<String> = out
            .missing
            .iter()
            .map(|m| format!("{}: {}", m.pattern, m.reason))
            .collect();
        for want in [
            "/pgdata/log/b.log: hard link to log/a.log",
            "/pgdata/log/escape.log: symbolic link to ../../secret.txt (not followed)",
            "/pgdata/log/pipe: not a regular file (Fifo)",
            "/pgdata/log/up: symbolic link to ../.. (not followed)",
        ] {
            assert!(
                reasons.iter().any(|r| r.starts_with(want)),
                "{want}: {reasons:?}"
            );
        }
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let body = std::fs::read(f.unwrap().path()).unwrap();
            assert!(!String::from_utf8_lossy(&body).contains("HOST-SECRET"));
        }
    }

    #[tokio::test]
    async fn a_symlink_on_the_way_or_a_missing_source_is_left_to_the_engine() {
        let vol = tempfile::tempdir().unwrap();
        let data = hostile_volume(vol.path());
        let lim = limits(1_000, 4_000);
        let gone = vol.path().join("not-here");
        for (source, path) in [
            (&data, "/pgdata/log/up/secret.txt"),
            (&data, "/pgdata/log/shadow.log"),
            (&data, "/pgdata/log/pipe"),
            (&data, "/pgdata/nothing"),
            (&gone, "/pgdata/log"),
        ] {
            let mounts = [mount("/pgdata", Some(source))];
            let dir = tempfile::tempdir().unwrap();
            let (mut used, mut budget) = (HashSet::new(), 4_000);
            let place = locate(&mounts, path).unwrap();
            let out = copy_path(place, None, path, dir.path(), &lim, &mut budget, &mut used).await;
            assert!(matches!(out, HostCopy::Engine), "{path}: {out:?}");
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                0,
                "nothing written"
            );
        }
    }

    #[test]
    fn a_directory_of_more_names_than_a_walk_sorts_is_left_to_the_engine() {
        let vol = tempfile::tempdir().unwrap();
        let log = vol.path().join("log");
        std::fs::create_dir(&log).unwrap();
        for i in 0..=50 {
            File::create(log.join(i.to_string())).unwrap();
        }
        let place = locate(&[mount("/pgdata", Some(vol.path()))], "/pgdata/log").unwrap();
        let until = Instant::now() + std::time::Duration::from_secs(60);
        assert!(plan_at(&place, "/pgdata/log", 1000, until, 50).is_err());
        let (_, entries) = plan_at(&place, "/pgdata/log", 1000, until, 51).unwrap();
        assert_eq!(entries.len(), 52, "the directory and its files");
        let (_, entries) = plan_at(&place, "/pgdata/log", 10, until, 51).unwrap();
        assert_eq!(entries.len(), 11, "one past the entry limit, which says so");
    }

    /// Copies `path` beneath `mounts` as the container with main process `pid` would have it.
    async fn copy_in(mounts: &[MountPoint], pid: Option<u32>, path: &str) -> (HostCopy, String) {
        let dir = tempfile::tempdir().unwrap();
        let (mut used, mut budget) = (HashSet::new(), 4_000);
        let place = locate(mounts, path).unwrap();
        let lim = limits(1_000, 4_000);
        let out = copy_path(place, pid, path, dir.path(), &lim, &mut budget, &mut used).await;
        let mut bodies = String::new();
        for f in std::fs::read_dir(dir.path()).unwrap() {
            bodies += &String::from_utf8_lossy(&std::fs::read(f.unwrap().path()).unwrap());
        }
        (out, bodies)
    }

    #[tokio::test]
    async fn a_mount_source_the_container_replaced_with_a_link_or_a_directory_is_not_read() {
        // /srv/x is mounted at /pgdata, and /srv, its parent, writable at /srv: the container
        // moved x away and put a link to a root-only host directory in its place.
        let vol = tempfile::tempdir().unwrap();
        let (srv, secret) = (vol.path().join("srv"), vol.path().join("root-only"));
        std::fs::create_dir_all(srv.join("x/log")).unwrap();
        std::fs::write(srv.join("x/log/a.log"), "mine").unwrap();
        std::fs::create_dir_all(secret.join("log")).unwrap();
        std::fs::write(secret.join("log/a.log"), "HOST-SECRET").unwrap();
        std::fs::rename(srv.join("x"), srv.join("x.old")).unwrap();
        symlink(&secret, srv.join("x")).unwrap();
        let data = mount("/pgdata", Some(&srv.join("x")));
        let both = [data.clone(), mount("/srv", Some(&srv))];
        let (out, bodies) = copy_in(&both, None, "/pgdata/log").await;
        let HostCopy::Refused(m) = out else {
            panic!("refused: {out:?}")
        };
        assert!(m.reason.contains("symbolic link"), "{m:?}");
        assert!(!bodies.contains("HOST-SECRET"), "{bodies}");
        // Nor is a path the Engine would copy with that mount inside it (it mounts the host
        // path as it is now); one without it is left to the Engine.
        let upper = vol.path().join("upper");
        std::fs::create_dir(&upper).unwrap();
        let nested = Mounts {
            points: vec![
                mount("/top", Some(&upper)),
                mount("/top/pgdata", Some(&srv.join("x"))),
                both[1].clone(),
            ],
            pid: None,
        };
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        assert_eq!(locate(&nested.points, "/top"), None, "the Engine's to copy");
        let m = engine_refusal(&nested, "/top", until)
            .await
            .expect("refused");
        assert!(m.reason.contains("symbolic link"), "{m:?}");
        assert_eq!(engine_refusal(&nested, "/srv", until).await, None);
        // The parent mounted read-only cannot be changed: the link is the host's, the Engine's.
        let ro = MountPoint {
            writable: false,
            ..both[1].clone()
        };
        let (out, _) = copy_in(&[data.clone(), ro], None, "/pgdata/log").await;
        assert!(matches!(out, HostCopy::Engine), "{out:?}");
        // With the container's view (here this process's own root, where the mounted directory
        // is at x.old): the host path must lead to the very directory mounted there.
        let seen = mount(
            &srv.join("x.old").display().to_string(),
            Some(&srv.join("x")),
        );
        let (out, bodies) = copy_in(
            std::slice::from_ref(&seen),
            Some(std::process::id()),
            &seen.destination,
        )
        .await;
        assert!(bodies.is_empty() || bodies == "mine", "{bodies}");
        let x = out
            .copied()
            .expect("the mounted directory, read in the container's view");
        assert_eq!(x.files.len(), 1, "{x:?}");
        // The Engine, which would follow the link, may not copy through that mount.
        let running = Mounts {
            points: vec![seen.clone()],
            pid: Some(std::process::id()),
        };
        let m = engine_refusal(&running, &srv.display().to_string(), until).await;
        assert!(m
            .expect("refused")
            .reason
            .contains("no longer the directory"));
        // A real directory renamed into place is not the mounted one either.
        std::fs::remove_file(srv.join("x")).unwrap();
        std::fs::rename(&secret, srv.join("x")).unwrap();
        let (out, bodies) = copy_in(
            std::slice::from_ref(&seen),
            Some(std::process::id()),
            &seen.destination,
        )
        .await;
        let HostCopy::Refused(m) = out else {
            panic!("refused: {out:?}")
        };
        assert!(
            m.reason.contains("no longer the directory mounted"),
            "{m:?}"
        );
        assert!(!bodies.contains("HOST-SECRET"), "{bodies}");
    }

    /// Names of the files in `dir` that were opened (for anything but `O_PATH`) while `f` ran.
    fn opened_in(dir: &Path, f: impl FnOnce()) -> Vec<String> {
        // SAFETY: plain syscalls on a descriptor this function owns.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1: {}", io::Error::last_os_error());
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert!(unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN) } >= 0);
        f();
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        // SAFETY: `fd` is ours.
        unsafe { libc::close(fd) };
        let mut names = Vec::new();
        let (mut at, head) = (0, std::mem::size_of::<libc::inotify_event>());
        while n > 0 && at + head <= n as usize {
            let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
            let name = &buf[at + head..at + head + len];
            let name = name.split(|&b| b == 0).next().unwrap_or_default();
            names.push(String::from_utf8_lossy(name).into_owned());
            at += head + len;
        }
        names
    }

    #[test]
    fn a_fifo_or_a_device_swapped_in_after_the_listing_is_never_opened() {
        let vol = tempfile::tempdir().unwrap();
        let log = vol.path().join("log");
        std::fs::create_dir(&log).unwrap();
        for n in ["a.log", "b.log", "c.log"] {
            std::fs::write(log.join(n), n).unwrap();
        }
        let place = locate(&[mount("/pgdata", Some(vol.path()))], "/pgdata/log").unwrap();
        let until = Instant::now() + std::time::Duration::from_secs(60);
        let (root, entries) = plan_at(&place, "/pgdata/log", 1000, until, 100).unwrap();
        // Listed as regular files; then a FIFO (whose open for reading would wake a writer, or
        // block without O_NONBLOCK) and a device (here /dev/null's numbers) take two places.
        std::fs::remove_file(log.join("a.log")).unwrap();
        let fifo = std::ffi::CString::new(log.join("a.log").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::fs::remove_file(log.join("b.log")).unwrap();
        let dev = std::ffi::CString::new(log.join("b.log").as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path (mknod of a device needs root: else a second FIFO).
        let made = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) };
        if made != 0 {
            // SAFETY: as above.
            assert_eq!(unsafe { libc::mkfifo(dev.as_ptr(), 0o644) }, 0);
        }
        let (dir, lim) = (tempfile::tempdir().unwrap(), limits(1_000, 4_000));
        let abandoned = AtomicBool::new(false);
        let job = Job {
            root: &root,
            requested: "/pgdata/log",
            dir: dir.path(),
            limits: &lim,
            until,
            abandoned: &abandoned,
        };
        let mut out = None;
        let started = Instant::now();
        let opened = opened_in(&log, || {
            let (mut budget, mut used) = (4_000, HashSet::new());
            out = Some(job.unpack(entries, &mut budget, &mut used));
        });
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(opened, ["c.log"], "only the regular file was opened");
        let out = out.unwrap();
        let names: Vec<&str> = out.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["c.log"]);
        for n in ["a.log", "b.log"] {
            assert!(
                out.missing
                    .iter()
                    .any(|m| m.pattern == format!("/pgdata/log/{n}")
                        && m.reason.contains("no longer a regular file")),
                "{n}: {:?}",
                out.missing
            );
        }
    }
}

//! Unpacking a container's files into a bundle, shared by the two ways they arrive: the
//! Engine's tar stream (`copy.rs`) and the host side of a mount (`hostpath.rs`). Every bound
//! (bytes per file and per bundle, entries, the deadline) applies while the bytes stream in.

use crate::archive::{FileEntry, Missing};
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

/// What a container's evidence may cost. The container's files are its own (a hostile or
/// broken image can hold a 3 GiB sparse log, a million files, links to anything): every
/// bound applies while the tar streams in, never after it landed on disk.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes kept per file: its newest.
    pub per_file: u64,
    /// Bytes written for the whole container, over all its paths and its log.
    pub per_bundle: u64,
    /// Tar entries looked at per path.
    pub max_entries: usize,
    /// When copying stops, whatever is left: the heal never waits longer than this.
    pub deadline: tokio::time::Instant,
}

impl Limits {
    /// Entries read per path before the rest is left out.
    pub const MAX_ENTRIES: usize = 1000;
    /// The whole container's evidence is at most this many files' worth.
    pub const FILES_PER_BUNDLE: u64 = 4;

    /// Bounds from `archive.max_file_size` and `archive.timeout` (counted from now).
    pub fn new(per_file: u64, wait: Duration) -> Self {
        Self {
            per_file,
            per_bundle: per_file.saturating_mul(Self::FILES_PER_BUNDLE),
            max_entries: Self::MAX_ENTRIES,
            deadline: tokio::time::Instant::now() + wait,
        }
    }
}

/// What one path of a container yielded.
#[derive(Debug, Default)]
pub(super) struct Extracted {
    pub(super) files: Vec<FileEntry>,
    /// Entries left out (links, special files, bounds reached), with paths inside the container.
    pub(super) missing: Vec<Missing>,
}

/// Unpacks the regular files of a tar stream into `dir` under flat unique names, each cut to its
/// newest `limits.per_file` bytes (and to what is left of `budget`) and hashed. Links and
/// special files are listed, not followed; a bound reached ends the stream and is listed too.
pub(super) fn extract(
    input: impl Read,
    dir: &Path,
    requested: &str,
    limits: &Limits,
    budget: &mut u64,
    used: &mut HashSet<String>,
) -> Extracted {
    let mut out = Extracted::default();
    let mut archive = tar::Archive::new(input);
    // The archive's paths are relative to the requested path's parent.
    let parent = Path::new(requested).parent().unwrap_or(Path::new("/"));
    let rest = |why: String| Missing {
        pattern: format!("{requested} (rest)"),
        reason: why,
    };
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            out.missing.push(rest(format!("could not unpack: {e}")));
            return out;
        }
    };
    for (seen, entry) in entries.enumerate() {
        if seen >= limits.max_entries {
            out.missing.push(rest(format!(
                "more than {} entries: the rest was not read",
                limits.max_entries
            )));
            break;
        }
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.missing.push(rest(stream_end(&e)));
                break;
            }
        };
        let rel = entry
            .path()
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| "?".into());
        let source = parent.join(&rel);
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            out.missing.push(Missing {
                pattern: source.display().to_string(),
                reason: not_copied(&entry, kind),
            });
            continue;
        }
        let into = Into {
            dir,
            limits,
            budget: &mut *budget,
            used: &mut *used,
        };
        let len = entry.size();
        if let Err(stop) = unpack_file(&mut entry, len, &source, into, &mut out.files) {
            out.missing.extend(stop.missing);
            if let Some(why) = stop.rest {
                out.missing.push(rest(why));
            }
            break;
        }
    }
    out
}

/// Why a tar entry that is not a regular file was left out.
fn not_copied(entry: &tar::Entry<impl Read>, kind: tar::EntryType) -> String {
    let link = entry
        .link_name()
        .ok()
        .flatten()
        .map(|l| l.display().to_string())
        .unwrap_or_default();
    left_out(kind, &link)
}

/// Why an entry of type `kind` (a link to `link`, or a special file) was left out.
pub(super) fn left_out(kind: tar::EntryType, link: &str) -> String {
    if kind.is_hard_link() {
        format!("hard link to {link} (copied under that name, if it is in the copied paths)")
    } else if kind.is_symlink() {
        format!("symbolic link to {link} (not followed)")
    } else {
        format!("not a regular file ({kind:?}): not copied")
    }
}

/// Where [`unpack_file`] writes, and what it may still write.
pub(super) struct Into<'a> {
    pub(super) dir: &'a Path,
    pub(super) limits: &'a Limits,
    /// Bytes left for the whole container; shrinks by what was written.
    pub(super) budget: &'a mut u64,
    /// Names taken in the bundle; gains the file's.
    pub(super) used: &'a mut HashSet<String>,
}

/// Why [`unpack_file`] ended the stream: entries to list, and the reason for the rest.
pub(super) struct Stop {
    pub(super) missing: Vec<Missing>,
    pub(super) rest: Option<String>,
}

/// A file's bytes, read in order, whose oldest can be passed over.
pub(super) trait Skip: Read {
    /// Passes over the next `n` bytes.
    fn skip(&mut self, n: u64) -> io::Result<()>;
}

impl<R: Read> Skip for tar::Entry<'_, R> {
    /// A stream has no seek: read through, never written.
    fn skip(&mut self, n: u64) -> io::Result<()> {
        io::copy(&mut self.by_ref().take(n), &mut io::sink()).map(|_| ())
    }
}

/// Writes the newest bytes of one regular file (`len` bytes in the tar) into the bundle and
/// lists it in `files`; `Err` when the stream must end here.
pub(super) fn unpack_file(
    entry: &mut impl Skip,
    len: u64,
    source: &Path,
    into: Into<'_>,
    files: &mut Vec<FileEntry>,
) -> Result<(), Stop> {
    let Into {
        dir,
        limits,
        budget,
        used,
    } = into;
    let keep = len.min(limits.per_file).min(*budget);
    let at = || source.display().to_string();
    if keep == 0 && len > 0 {
        return Err(Stop {
            missing: vec![Missing {
                pattern: at(),
                reason: format!(
                    "{len} bytes: the container's evidence already reached {} bytes (4 x archive.max_file_size); not copied",
                    limits.per_bundle
                ),
            }],
            rest: Some("evidence cap reached: the rest was not read".into()),
        });
    }
    let broke = |e: &io::Error| Stop {
        missing: vec![Missing {
            pattern: at(),
            reason: format!("{len} bytes; {}", stream_end(e)),
        }],
        rest: None,
    };
    // Skip to the newest `keep` bytes (the end of a log is what explains the crash).
    if len > keep {
        entry.skip(len - keep).map_err(|e| broke(&e))?;
    }
    let name = crate::archive::local::unique_name(source, used);
    match crate::archive::local::write_hashed(&mut entry.by_ref().take(keep), &dir.join(&name)) {
        Ok((size, sha256)) => {
            *budget -= size.min(*budget);
            files.push(FileEntry {
                name,
                source: at(),
                size,
                sha256,
                truncated: len > size,
                original_size: (len > size).then_some(len),
            });
            if size < keep {
                return Err(Stop {
                    missing: Vec::new(),
                    rest: Some(format!(
                        "{} ended after {size} of {keep} bytes: archive.timeout reached or the stream broke",
                        at()
                    )),
                });
            }
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(dir.join(&name));
            Err(broke(&e))
        }
    }
}

/// Why the tar stream ended early, for the manifest.
pub(super) fn stream_end(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut => {
            "archive.timeout reached while reading: this and the rest were not copied".into()
        }
        _ => format!("could not unpack: {e}"),
    }
}

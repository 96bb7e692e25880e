//! The local-directory sink: `{dir}/{stamp}-{target}/` with each matched file copied whole.
//! Copies stream through a fixed buffer while hashing, so a large log never sits in memory.

use super::manifest::IncidentFacts;
use super::manifest::Manifest;
use super::manifest::SnapshotSummary;
use super::ArchiveReport;
use super::{FileEntry, Missing};
use crate::heal_report::HealReport;
use crate::sql_snapshot::SqlSnapshot;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Why a bundle could not be written at all (single unreadable files are only `Missing`).
#[derive(Debug, thiserror::Error)]
pub enum LocalArchiveError {
    #[error("cannot create bundle directory {dir}: {source}")]
    CreateDir { dir: String, source: io::Error },
    #[error("cannot write {file}: {source}")]
    Write { file: String, source: io::Error },
}

/// The bundle directory for an incident: `{root}/{incident id}` (`{stamp}-{target}`). Only
/// a parsed id is accepted, so the directory is always one component below `root`.
pub fn bundle_dir(root: &Path, id: &crate::ids::IncidentId) -> PathBuf {
    root.join(id.as_str())
}

/// Files already written into the bundle directory by another collector (a container's),
/// and the flight recorder's ring to write as `flight.json` (already JSON: the archive knows
/// no recorder).
#[derive(Debug, Default)]
pub struct Extra {
    pub files: Vec<FileEntry>,
    pub missing: Vec<Missing>,
    pub flight: Option<serde_json::Value>,
}

/// Name of the flight recorder's samples in a bundle.
pub const FLIGHT: &str = "flight.json";

/// Name of the container's own stdout/stderr log in a bundle.
pub const CONTAINER_LOG: &str = "container.log";

/// Names the bundle keeps for itself: a copied file never takes one (a container's file named
/// `manifest.json` or `container.log` must not replace the daemon's own).
pub fn reserved_names() -> HashSet<String> {
    HashSet::from([
        "manifest.json".to_string(),
        "heal.log".to_string(),
        "sql-snapshot.json".to_string(),
        FLIGHT.to_string(),
        CAUSE_FILE.to_string(),
        CONTAINER_LOG.to_string(),
    ])
}

/// Writes the bundle: every file matched by `patterns` (each cut to its newest `cap` bytes),
/// the SQL snapshot, then `manifest.json`, which also lists the `extra` files.
pub fn write_bundle(
    root: &Path,
    facts: &IncidentFacts,
    patterns: &[String],
    cap: u64,
    snapshot: Option<&SqlSnapshot>,
    extra: Extra,
) -> Result<ArchiveReport, LocalArchiveError> {
    let dir = bundle_dir(root, &facts.incident_id);
    create_bundle_dir(root, &dir)?;
    let mut used = reserved_names();
    used.extend(extra.files.iter().map(|f| f.name.clone()));
    let mut files = extra.files;
    let mut missing = extra.missing;
    copy_matches(patterns, &dir, cap, &mut used, &mut files, &mut missing);
    if let Some(flight) = &extra.flight {
        files.push(write_json(&dir, FLIGHT, "flight recorder", flight)?);
    }
    let mut sql = None;
    if let Some(snap) = snapshot {
        let path = dir.join("sql-snapshot.json");
        let body = serde_json::to_vec_pretty(snap).expect("snapshot serializes");
        crate::fsutil::create_private(&path)
            .and_then(|mut f| f.write_all(&body))
            .map_err(|source| LocalArchiveError::Write {
                file: path.display().to_string(),
                source,
            })?;
        let sha256 = hex::encode(Sha256::digest(&body));
        files.push(FileEntry {
            name: "sql-snapshot.json".into(),
            source: "SQL".into(),
            size: body.len() as u64,
            sha256,
            truncated: false,
            original_size: None,
        });
        sql = Some(SnapshotSummary {
            answered: snap.answered,
            captured_at: snap.captured_at,
            error: snap.error.clone(),
            truncated: snap.truncated.clone(),
        });
    }
    let mut manifest = Manifest::new(facts, files.clone(), missing.clone());
    manifest.sql_snapshot = sql.clone();
    manifest
        .write(&dir)
        .map_err(|source| LocalArchiveError::Write {
            file: dir.join("manifest.json").display().to_string(),
            source,
        })?;
    // The bundle's own name in the archive root, durable too before the restart goes ahead
    // (best effort: the root may be the administrator's, and unreadable to us).
    let _ = File::open(root).and_then(|d| d.sync_all());
    Ok(ArchiveReport {
        location: dir.display().to_string(),
        dir: dir.clone(),
        files,
        missing,
        sql_snapshot: sql,
        cause: None,
    })
}

/// Writes `value` as `dir/name` (private), listed as coming from `source`.
fn write_json(
    dir: &Path,
    name: &str,
    source: &str,
    value: &impl serde::Serialize,
) -> Result<FileEntry, LocalArchiveError> {
    let path = dir.join(name);
    let body = serde_json::to_vec_pretty(value).expect("plain data serializes");
    crate::fsutil::create_private(&path)
        .and_then(|mut f| f.write_all(&body))
        .map_err(|source| LocalArchiveError::Write {
            file: path.display().to_string(),
            source,
        })?;
    Ok(FileEntry {
        name: name.into(),
        source: source.into(),
        size: body.len() as u64,
        sha256: hex::encode(Sha256::digest(&body)),
        truncated: false,
        original_size: None,
    })
}

/// Name of the cause in a bundle.
pub const CAUSE_FILE: &str = "cause.json";

/// Adds `cause.json` to a written bundle and lists it in the manifest (which then carries the
/// cause too).
pub fn attach_cause(
    facts: &IncidentFacts,
    report: &mut ArchiveReport,
    cause: &crate::cause::Cause,
) -> Result<(), LocalArchiveError> {
    let path = report.dir.join(CAUSE_FILE);
    let body = serde_json::to_vec_pretty(cause).expect("a cause serializes");
    let fail = |source| LocalArchiveError::Write {
        file: path.display().to_string(),
        source,
    };
    crate::fsutil::create_private(&path)
        .and_then(|mut f| f.write_all(&body).and_then(|_| f.sync_all()))
        .map_err(fail)?;
    report.files.retain(|f| f.name != CAUSE_FILE);
    report.files.push(FileEntry {
        name: CAUSE_FILE.into(),
        source: "sentinel-remedy".into(),
        size: body.len() as u64,
        sha256: hex::encode(Sha256::digest(&body)),
        truncated: false,
        original_size: None,
    });
    report.cause = Some(Box::new(cause.clone()));
    let mut manifest = Manifest::new(facts, report.files.clone(), report.missing.clone());
    manifest.sql_snapshot = report.sql_snapshot.clone();
    manifest.cause = report.cause.as_deref().cloned();
    manifest
        .write(&report.dir)
        .map_err(|source| LocalArchiveError::Write {
            file: report.dir.join("manifest.json").display().to_string(),
            source,
        })
}

/// Copies every file matched by `patterns` into `dir` (each cut to its newest `cap` bytes),
/// listing it in `files`, or in `missing` with the reason.
fn copy_matches(
    patterns: &[String],
    dir: &Path,
    cap: u64,
    used: &mut HashSet<String>,
    files: &mut Vec<FileEntry>,
    missing: &mut Vec<Missing>,
) {
    for pattern in patterns {
        // Everything but directories: a symlink, FIFO or device that matches is refused by
        // `copy_tail` and listed in the manifest, not silently dropped.
        let matches: Vec<PathBuf> = match glob::glob(pattern) {
            Ok(paths) => paths
                .filter_map(Result::ok)
                .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir()))
                .collect(),
            Err(e) => {
                missing.push(Missing {
                    pattern: pattern.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        if matches.is_empty() {
            missing.push(Missing {
                pattern: pattern.clone(),
                reason: "no file matched".into(),
            });
        }
        for src in matches {
            let name = unique_name(&src, used);
            match copy_tail(&src, &dir.join(&name), cap) {
                Ok(c) => files.push(FileEntry {
                    name,
                    source: src.display().to_string(),
                    size: c.size,
                    sha256: c.sha256,
                    truncated: c.original_size.is_some(),
                    original_size: c.original_size,
                }),
                Err(e) => missing.push(Missing {
                    pattern: src.display().to_string(),
                    reason: e.to_string(),
                }),
            }
        }
    }
}

/// Creates the archive root (0700 when new or ours) and the bundle directory (0700, ours, not
/// a symlink): the bundle holds copied configuration and logs that may carry secrets.
pub fn create_bundle_dir(root: &Path, dir: &Path) -> Result<(), LocalArchiveError> {
    let fail = |d: &Path, source| LocalArchiveError::CreateDir {
        dir: d.display().to_string(),
        source,
    };
    if root.exists() {
        // The administrator's directory (maybe a link to a bigger disk, or someone else's):
        // made private when it is ours; the bundle directory below is checked strictly.
        let _ = crate::fsutil::private_dir(root);
    } else {
        crate::fsutil::private_dir(root).map_err(|e| fail(root, e))?;
    }
    crate::fsutil::private_dir(dir)
        .map(|_| ())
        .map_err(|e| fail(dir, e))
}

/// Adds `heal.log` and the heal report to a written bundle.
pub fn attach_heal(
    bundle: &Path,
    facts: &IncidentFacts,
    report: &ArchiveReport,
    heal: &HealReport,
) -> Result<(), LocalArchiveError> {
    let mut files = report.files.clone();
    if let Some(log) = &heal.log_path {
        let dest = bundle.join("heal.log");
        match copy_hashed(log, &dest) {
            Ok((size, sha256)) => files.push(FileEntry {
                name: "heal.log".into(),
                source: log.display().to_string(),
                size,
                sha256,
                truncated: false,
                original_size: None,
            }),
            Err(source) => {
                return Err(LocalArchiveError::Write {
                    file: dest.display().to_string(),
                    source,
                })
            }
        }
    }
    let mut manifest = Manifest::new(facts, files, report.missing.clone());
    manifest.heal = Some(heal.clone());
    manifest.sql_snapshot = report.sql_snapshot.clone();
    manifest.cause = report.cause.as_deref().cloned();
    manifest
        .write(bundle)
        .map_err(|source| LocalArchiveError::Write {
            file: bundle.join("manifest.json").display().to_string(),
            source,
        })
}

/// The file's name, prefixed with its parent directory's when two sources share a name. Names
/// are flat and printable: no separator, no control character, no leading dot (the daemon's
/// temporary files start with one).
pub(crate) fn unique_name(src: &Path, used: &mut HashSet<String>) -> String {
    let base = src
        .file_name()
        .map(|n| sanitize(&n.to_string_lossy()))
        .unwrap_or_else(|| "file".into());
    let mut name = base.clone();
    let mut n = 1;
    while used.contains(&name) {
        let parent = src
            .parent()
            .and_then(|p| p.file_name())
            .map(|p| sanitize(&p.to_string_lossy()))
            .unwrap_or_default();
        name = if n == 1 && !parent.is_empty() {
            format!("{parent}__{base}")
        } else {
            format!("{n}__{base}")
        };
        n += 1;
    }
    used.insert(name.clone());
    name
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_control() || c == '/' { '_' } else { c })
        .collect();
    match s.strip_prefix('.') {
        Some(rest) => format!("_.{rest}"),
        None => s,
    }
}

/// Copies `src` to `dest` through a 64 KiB buffer, returning size and SHA-256 of what was
/// written (a growing log is captured as it was when read).
pub fn copy_hashed(src: &Path, dest: &Path) -> io::Result<(u64, String)> {
    let input = crate::fsutil::open_untrusted(src).map_err(refused)?;
    tail_of(input, dest, u64::MAX).map(|c| (c.size, c.sha256))
}

fn refused(e: crate::fsutil::UntrustedFileError) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())
}

/// What [`copy_tail`] copied.
pub struct Copied {
    pub size: u64,
    pub sha256: String,
    /// Set when the source was larger than the cap.
    pub original_size: Option<u64>,
}

/// Copies at most the last `cap` bytes of `src`: for a huge log, the end is what explains the
/// crash. Streams through a fixed buffer like [`copy_hashed`]. `src` is a file others control:
/// a symlink (also as a directory on the way), a FIFO, a device or anything under `/proc` or
/// `/sys` is refused.
pub fn copy_tail(src: &Path, dest: &Path, cap: u64) -> io::Result<Copied> {
    tail_of(
        crate::fsutil::open_untrusted_exact(src).map_err(refused)?,
        dest,
        cap,
    )
}

fn tail_of(mut input: File, dest: &Path, cap: u64) -> io::Result<Copied> {
    let len = input.metadata()?.len();
    let original_size = (len > cap).then_some(len);
    if len > cap {
        io::Seek::seek(&mut input, io::SeekFrom::Start(len - cap))?;
    }
    let (size, sha256) = write_hashed(&mut Read::take(&mut input, cap), dest)?;
    Ok(Copied {
        size,
        sha256,
        original_size,
    })
}

/// Writes everything `input` yields to a new private (0600) file `dest` through a 64 KiB
/// buffer, synced, returning its size and SHA-256.
pub fn write_hashed(input: &mut impl Read, dest: &Path) -> io::Result<(u64, String)> {
    let mut output = crate::fsutil::create_private(dest)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
        size += n as u64;
    }
    output.sync_all()?;
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_names_never_take_the_daemons_own() {
        let mut used = reserved_names();
        for (src, want) in [
            ("/c/manifest.json", "c__manifest.json"),
            ("/c/container.log", "c__container.log"),
            ("/c/.manifest.json.tmp", "_.manifest.json.tmp"),
            ("/c/a\nb", "a_b"),
        ] {
            assert_eq!(unique_name(Path::new(src), &mut used), want);
        }
    }

    #[test]
    fn a_file_over_the_cap_keeps_its_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("big.log");
        let text: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        std::fs::write(&src, &text).unwrap();
        let c = copy_tail(&src, &dir.path().join("out"), 100).unwrap();
        assert_eq!(c.size, 100);
        assert_eq!(c.original_size, Some(text.len() as u64));
        let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert!(out.ends_with("line 0999\n") && text.ends_with(&out));
        let c = copy_tail(&src, &dir.path().join("out2"), 1 << 20).unwrap();
        assert_eq!((c.size, c.original_size), (text.len() as u64, None));
    }
}

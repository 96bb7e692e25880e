//! One manager at a time: before a restart the daemon takes an exclusive lease on the
//! database server (keyed by host:port, so two registries naming it differently still meet).
//! The lease lives outside the database, which is down when it matters.
//!
//! [`LeaseBackend`] is the seam: [`FileLeases`] keeps leases as small JSON files under a
//! directory, guarded by `flock`, which every daemon on a host (or on hosts sharing the
//! directory over a filesystem with working locks) can share. An etcd lease or an S3
//! conditional write (`If-None-Match`/`If-Match` on the lease object) fits the same trait.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a lease records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseRecord {
    /// `host:pid:random` of the daemon holding it.
    pub owner: String,
    pub expires_at: DateTime<Utc>,
    /// The last restart any daemon made of this server, and for which incident.
    pub last_restart_at: Option<DateTime<Utc>>,
    pub last_incident: Option<String>,
}

/// Why a restart may not go ahead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LeaseRefusal {
    #[error("another SentinelRemedy ({owner}) holds the restart lease until {until}")]
    Held { owner: String, until: DateTime<Utc> },
    #[error("another SentinelRemedy restarted this server at {at} for this outage ({incident}); waiting for it to recover")]
    AlreadyRestarted { at: DateTime<Utc>, incident: String },
    #[error("the lease store failed: {0}")]
    Store(String),
    /// The lease file stayed locked past the bounded wait: fail closed, retry later.
    #[error("the lease file is busy: {0}")]
    Busy(String),
}

/// A lease store.
pub trait LeaseBackend: Send + Sync {
    /// Takes the lease on `key` for `ttl` and records a restart for `incident`, unless another
    /// owner holds it, or already restarted the server after `outage_started`, less than
    /// `settle` ago.
    fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        incident: &str,
        outage_started: DateTime<Utc>,
        settle: Duration,
    ) -> Result<(), LeaseRefusal>;
    /// Ends our lease early (the heal finished); the restart record stays.
    fn release(&self, key: &str, owner: &str);
}

/// Leases as files under one directory.
pub struct FileLeases {
    dir: PathBuf,
    /// Why the directory may not be used: every acquire is then refused (fail closed).
    refused: Option<String>,
}

/// A unique owner id for this process.
pub fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// `host:port` → a safe file name.
fn file_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Longest wait for another process's `flock` on a lease file. The lock is held for one
/// read and one write by a daemon; anything longer is a stuck or hostile holder, and the
/// caller (a Monitor deciding on a restart) must not stall the fleet behind it.
const LOCK_WAIT: Duration = Duration::from_millis(200);

/// Why a lease file could not be opened and locked.
use crate::fsutil::LockError;

struct Locked {
    file: std::fs::File,
}

impl Locked {
    /// Opens (creating 0600) and locks a lease file (see [`crate::fsutil::open_locked`]),
    /// waiting at most [`LOCK_WAIT`].
    fn open(path: &Path) -> Result<Self, LockError> {
        crate::fsutil::open_locked(path, LOCK_WAIT).map(|file| Self { file })
    }

    fn read(&mut self) -> Option<LeaseRecord> {
        let mut text = String::new();
        self.file.rewind().ok()?;
        // A record is a few hundred bytes; a shared directory's file may be anything.
        (&self.file)
            .take(64 * 1024)
            .read_to_string(&mut text)
            .ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write(&mut self, rec: &LeaseRecord) -> std::io::Result<()> {
        let body = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(&body)?;
        self.file.sync_all()
    }
}

impl FileLeases {
    /// Opens the lease directory, creating it 0700. An existing one must be a directory of the
    /// daemon's user (not a symlink); a looser mode is tightened, and `tightened` says so.
    pub fn new(dir: PathBuf) -> std::io::Result<Self> {
        Self::open(dir).map(|(l, _)| l)
    }

    /// [`FileLeases::new`], also telling whether the directory's mode had to be tightened.
    pub fn open(dir: PathBuf) -> std::io::Result<(Self, bool)> {
        let tightened = crate::fsutil::private_dir(&dir)?;
        Ok((Self { dir, refused: None }, tightened))
    }

    /// A store whose directory could not be created or is not trusted: every acquire fails
    /// (closed) with `why`, and nothing is written there.
    pub fn unusable(dir: PathBuf, why: String) -> Self {
        Self {
            dir,
            refused: Some(why),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}.lease", file_key(key)))
    }
}

impl LeaseBackend for FileLeases {
    fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        incident: &str,
        outage_started: DateTime<Utc>,
        settle: Duration,
    ) -> Result<(), LeaseRefusal> {
        if let Some(why) = &self.refused {
            return Err(LeaseRefusal::Store(why.clone()));
        }
        let mut f = Locked::open(&self.path(key)).map_err(|e| match e {
            LockError::Busy { .. } => LeaseRefusal::Busy(e.to_string()),
            _ => LeaseRefusal::Store(e.to_string()),
        })?;
        let now = Utc::now();
        let current = f.read();
        if let Some(cur) = &current {
            if cur.owner != owner && cur.expires_at > now {
                return Err(LeaseRefusal::Held {
                    owner: cur.owner.clone(),
                    until: cur.expires_at,
                });
            }
            if let (Some(at), Some(inc)) = (cur.last_restart_at, &cur.last_incident) {
                let recent = now - at < chrono::Duration::from_std(settle).unwrap_or_default();
                if at >= outage_started && recent && inc != incident {
                    return Err(LeaseRefusal::AlreadyRestarted {
                        at,
                        incident: inc.clone(),
                    });
                }
            }
        }
        let rec = LeaseRecord {
            owner: owner.to_string(),
            expires_at: now + chrono::Duration::from_std(ttl).unwrap_or_default(),
            last_restart_at: Some(now),
            last_incident: Some(incident.to_string()),
        };
        f.write(&rec)
            .map_err(|e| LeaseRefusal::Store(e.to_string()))
    }

    fn release(&self, key: &str, owner: &str) {
        if self.refused.is_some() {
            return;
        }
        if let Ok(mut f) = Locked::open(&self.path(key)) {
            if let Some(mut cur) = f.read() {
                if cur.owner == owner {
                    cur.expires_at = Utc::now();
                    let _ = f.write(&cur);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_while_held_and_after_a_restart_for_the_same_outage() {
        let dir = tempfile::tempdir().unwrap();
        let l = FileLeases::new(dir.path().to_path_buf()).unwrap();
        let outage = Utc::now() - chrono::Duration::seconds(1);
        let ttl = Duration::from_secs(60);
        let settle = Duration::from_secs(120);
        l.acquire("db:5432", "a", ttl, "inc-a", outage, settle)
            .unwrap();
        assert!(matches!(
            l.acquire("db:5432", "b", ttl, "inc-b", outage, settle),
            Err(LeaseRefusal::Held { .. })
        ));
        l.release("db:5432", "a");
        assert!(
            matches!(
                l.acquire("db:5432", "b", ttl, "inc-b", outage, settle),
                Err(LeaseRefusal::AlreadyRestarted { .. })
            ),
            "a restarted it for this outage"
        );
        let later = Utc::now() + chrono::Duration::seconds(1);
        l.acquire("db:5432", "b", ttl, "inc-b2", later, settle)
            .expect("a new outage may be restarted");
        l.acquire("other:5432", "a", ttl, "x", outage, settle)
            .expect("other servers are independent");
    }
}

//! Leases as `flock`-guarded JSON files under one directory: every daemon on a host (or on
//! hosts sharing the directory over a filesystem with working locks) meets there.

use super::{LeaseBackend, LeaseRecord, LeaseRefusal, LeaseRequest};
use chrono::Utc;
use futures::future::BoxFuture;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Leases as files under one directory.
#[derive(Clone)]
pub struct FileLeases {
    dir: PathBuf,
    /// Why the directory may not be used: every acquire is then refused (fail closed).
    refused: Option<String>,
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

/// Longest a Monitor waits for the lease file: the `flock` wait plus a disk that answers
/// slowly. Past it the restart is refused as busy and decided again later.
const ACQUIRE_WAIT: Duration = Duration::from_secs(2);

impl LeaseBackend for FileLeases {
    fn acquire(&self, req: LeaseRequest) -> BoxFuture<'static, Result<(), LeaseRefusal>> {
        let leases = self.clone();
        Box::pin(async move {
            let work = tokio::task::spawn_blocking(move || leases.acquire_blocking(&req));
            match tokio::time::timeout(ACQUIRE_WAIT, work).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(LeaseRefusal::Store(format!("the lease check failed: {e}"))),
                Err(_) => Err(LeaseRefusal::Busy(format!(
                    "no answer from the lease directory within {} s (a slow or hung disk?)",
                    ACQUIRE_WAIT.as_secs()
                ))),
            }
        })
    }

    fn release(&self, key: String, owner: String) -> BoxFuture<'static, ()> {
        let leases = self.clone();
        Box::pin(async move {
            let work = tokio::task::spawn_blocking(move || leases.release_blocking(&key, &owner));
            let _ = tokio::time::timeout(ACQUIRE_WAIT, work).await;
        })
    }
}

impl FileLeases {
    /// [`LeaseBackend::acquire`], on a thread that may block.
    pub fn acquire_blocking(&self, req: &LeaseRequest) -> Result<(), LeaseRefusal> {
        let LeaseRequest {
            key,
            target: _,
            owner,
            ttl,
            incident,
            outage_started,
            settle,
        } = req;
        let (ttl, outage_started, settle) = (*ttl, *outage_started, *settle);
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
            if cur.owner != *owner && cur.expires_at > now {
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
            owner: owner.clone(),
            expires_at: now + chrono::Duration::from_std(ttl).unwrap_or_default(),
            last_restart_at: Some(now),
            last_incident: Some(incident.clone()),
        };
        f.write(&rec)
            .map_err(|e| LeaseRefusal::Store(e.to_string()))
    }

    /// [`LeaseBackend::release`], on a thread that may block.
    pub fn release_blocking(&self, key: &str, owner: &str) {
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

    fn req(key: &str, owner: &str, incident: &str, outage: chrono::DateTime<Utc>) -> LeaseRequest {
        LeaseRequest {
            key: key.into(),
            target: "db".into(),
            owner: owner.into(),
            ttl: Duration::from_secs(60),
            incident: incident.into(),
            outage_started: outage,
            settle: Duration::from_secs(120),
        }
    }

    #[test]
    fn a_second_owner_is_refused_while_held_and_after_a_restart_for_the_same_outage() {
        let dir = tempfile::tempdir().unwrap();
        let l = FileLeases::new(dir.path().to_path_buf()).unwrap();
        let outage = Utc::now() - chrono::Duration::seconds(1);
        l.acquire_blocking(&req("db:5432", "a", "inc-a", outage))
            .unwrap();
        assert!(matches!(
            l.acquire_blocking(&req("db:5432", "b", "inc-b", outage)),
            Err(LeaseRefusal::Held { .. })
        ));
        l.release_blocking("db:5432", "a");
        assert!(
            matches!(
                l.acquire_blocking(&req("db:5432", "b", "inc-b", outage)),
                Err(LeaseRefusal::AlreadyRestarted { .. })
            ),
            "a restarted it for this outage"
        );
        let later = Utc::now() + chrono::Duration::seconds(1);
        l.acquire_blocking(&req("db:5432", "b", "inc-b2", later))
            .expect("a new outage may be restarted");
        l.acquire_blocking(&req("other:5432", "a", "x", outage))
            .expect("other servers are independent");
    }
}

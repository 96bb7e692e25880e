//! One incident per outage, whatever the number of daemons. Daemons that share the lease
//! directory also share, per server (`host:port`), a record of its current outage: who
//! announces it (sends the failure, escalation and recovery notices) and whether that daemon
//! is still alive. Every other daemon follows the outage silently.
//!
//! Alerts fail open: a follower takes the outage over (and sends what it held back) when no
//! daemon announces it within [`Timing::grace`], when the announcer stops refreshing the record
//! for [`Timing::stale`], or when it is still failing `grace` after the announcer recovered.
//! A store that cannot be read or written never silences a daemon.
//!
//! The outage id, `host:port/{start}`, names the server and the start of the outage, so every
//! daemon gives PagerDuty the same `dedup_key` for it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The shared record of one server's latest outage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutageRecord {
    /// `host:port/{stamp of the first failure}`.
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// The daemon (owner id) sending the notices; None until one may.
    pub announcer: Option<String>,
    /// Last time the announcer (or, without one, the opener) said it is alive.
    pub alive_at: DateTime<Utc>,
    /// Set when the announcer saw the server recover.
    pub closed_at: Option<DateTime<Utc>>,
}

/// What a daemon does with its notices for this outage.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Send them, under this outage id.
    Announce(String),
    /// Hold them: another daemon announces this outage.
    Follow(String),
}

/// How long silence is trusted.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often an announcer refreshes the record.
    pub heartbeat: Duration,
    /// An announcer silent this long is presumed dead.
    pub stale: Duration,
    /// A follower waits this long for an announcer, or for its own recovery after the
    /// announcer's.
    pub grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            stale: Duration::from_secs(5),
            grace: Duration::from_secs(10),
        }
    }
}

/// Why the book could not answer (the caller then announces: fail open).
#[derive(Debug, thiserror::Error)]
#[error("outage record {path}: {source}")]
pub struct BookError {
    path: PathBuf,
    source: std::io::Error,
}

/// Outage records as files in the shared lease directory.
#[derive(Debug, Clone)]
pub struct OutageBook {
    dir: PathBuf,
    timing: Timing,
}

/// The outage id for `server` failing since `started_at`.
pub fn outage_id(server: &str, started_at: DateTime<Utc>) -> String {
    format!("{server}/{}", crate::stamp::stamp(started_at))
}

fn secs(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_default()
}

impl OutageBook {
    pub fn new(dir: PathBuf, timing: Timing) -> Self {
        Self { dir, timing }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    fn path(&self, server: &str) -> PathBuf {
        let safe: String = server
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.outage"))
    }

    /// Runs `f` on the record under an exclusive lock and writes back what it returns.
    fn update<T>(
        &self,
        server: &str,
        f: impl FnOnce(Option<OutageRecord>) -> (Option<OutageRecord>, T),
    ) -> Result<T, BookError> {
        let path = self.path(server);
        let err = |source| BookError {
            path: path.clone(),
            source,
        };
        let mut file = open_locked(&self.dir, &path).map_err(err)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(err)?;
        let current = serde_json::from_str(&text).ok();
        let (next, out) = f(current.clone());
        if let Some(rec) = next.filter(|n| Some(n) != current.as_ref()) {
            let body = serde_json::to_vec(&rec).map_err(|e| err(e.into()))?;
            file.set_len(0).map_err(err)?;
            file.rewind().map_err(err)?;
            file.write_all(&body).map_err(err)?;
            file.sync_data().map_err(err)?;
        }
        Ok(out)
    }

    /// Joins the outage of `server` that a failure first seen at `started_at` belongs to, or
    /// opens one. `may_lead` is false for a daemon that did not act (its restart was refused by
    /// the lease): it follows unless nobody announces within the grace period.
    pub fn claim(
        &self,
        server: &str,
        owner: &str,
        started_at: DateTime<Utc>,
        may_lead: bool,
        now: DateTime<Utc>,
    ) -> Result<Role, BookError> {
        let t = self.timing;
        self.update(server, |cur| {
            let same = cur.as_ref().filter(|r| match r.closed_at {
                // Our failure began before the announcer saw it recover.
                Some(closed) => started_at <= closed,
                // Someone was alive in this outage after our failure began.
                None => r.alive_at + secs(t.stale) >= started_at,
            });
            let Some(rec) = same.cloned() else {
                let id = outage_id(server, started_at);
                let rec = OutageRecord {
                    id: id.clone(),
                    started_at,
                    announcer: may_lead.then(|| owner.to_string()),
                    alive_at: now,
                    closed_at: None,
                };
                let role = if may_lead {
                    Role::Announce(id)
                } else {
                    Role::Follow(id)
                };
                return (Some(rec), role);
            };
            let alive = rec.alive_at + secs(t.stale) >= now;
            match &rec.announcer {
                Some(a) if a == owner => (None, Role::Announce(rec.id.clone())),
                Some(_) if alive || rec.closed_at.is_some() => (None, Role::Follow(rec.id.clone())),
                None if !may_lead => (None, Role::Follow(rec.id.clone())),
                _ if may_lead && rec.closed_at.is_none() => {
                    let id = rec.id.clone();
                    let next = OutageRecord {
                        announcer: Some(owner.to_string()),
                        alive_at: now,
                        ..rec
                    };
                    (Some(next), Role::Announce(id))
                }
                _ => (None, Role::Follow(rec.id.clone())),
            }
        })
    }

    /// A follower asks whether it must take over (no announcer within `grace` of `since`, a
    /// silent announcer, or still failing `grace` after the announcer's recovery). When it
    /// must, the record names it the announcer and this returns true.
    pub fn take_over_if_needed(
        &self,
        server: &str,
        id: &str,
        owner: &str,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, BookError> {
        let t = self.timing;
        self.update(server, |cur| {
            let must = match &cur {
                // Our outage was replaced by a newer one (we are failing still): ours to tell.
                Some(r) if r.id != id => now >= since + secs(t.grace),
                None => true,
                Some(r) => match (&r.announcer, r.closed_at) {
                    (Some(a), _) if a == owner => false,
                    (_, Some(closed)) => now >= closed + secs(t.grace),
                    (Some(_), None) => r.alive_at + secs(t.stale) < now,
                    (None, None) => now >= since + secs(t.grace),
                },
            };
            if !must {
                return (None, false);
            }
            let next = match cur {
                Some(r) if r.id == id => OutageRecord {
                    announcer: Some(owner.to_string()),
                    alive_at: now,
                    closed_at: None,
                    ..r
                },
                other => other.unwrap_or(OutageRecord {
                    id: id.to_string(),
                    started_at: since,
                    announcer: Some(owner.to_string()),
                    alive_at: now,
                    closed_at: None,
                }),
            };
            (Some(next), true)
        })
    }

    /// The announcer is alive and still announcing `id`.
    pub fn heartbeat(
        &self,
        server: &str,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<(), BookError> {
        self.update(server, |cur| match cur {
            Some(r) if r.id == id && r.announcer.as_deref() == Some(owner) => {
                (Some(OutageRecord { alive_at: now, ..r }), ())
            }
            _ => (None, ()),
        })
    }

    /// The announcer saw the server recover: the outage is over.
    pub fn close(
        &self,
        server: &str,
        id: &str,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<(), BookError> {
        self.update(server, |cur| match cur {
            Some(r) if r.id == id && r.announcer.as_deref() == Some(owner) => (
                Some(OutageRecord {
                    alive_at: now,
                    closed_at: Some(now),
                    ..r
                }),
                (),
            ),
            _ => (None, ()),
        })
    }
}

/// Opens (creating, 0600) and exclusively locks `path`, waiting at most two seconds for
/// the lock.
/// The directory must be the daemon's own (as for leases): another user's directory is refused
/// and nothing is written into it; the file must be a regular file of ours. A missing
/// directory is not re-created here: the lease store made it at start-up, and one removed
/// since is a lease-store fault (restarts fail closed; this book then fails open).
fn open_locked(dir: &Path, path: &Path) -> std::io::Result<std::fs::File> {
    if !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is missing", dir.display()),
        ));
    }
    crate::fsutil::private_dir(dir)?;
    crate::fsutil::open_locked(path, Duration::from_secs(2)).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> (tempfile::TempDir, OutageBook) {
        let dir = tempfile::tempdir().unwrap();
        let b = OutageBook::new(dir.path().to_path_buf(), Timing::default());
        (dir, b)
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn the_first_daemon_announces_and_the_second_follows_the_same_outage() {
        let (_d, b) = book();
        let a = b.claim("db:5432", "a", at(0), true, at(1)).unwrap();
        let Role::Announce(id) = a else {
            panic!("{a:?}")
        };
        assert_eq!(id, outage_id("db:5432", at(0)));
        assert_eq!(
            b.claim("db:5432", "b", at(1), true, at(2)).unwrap(),
            Role::Follow(id.clone()),
            "a live announcer: b stays silent"
        );
        assert!(!b
            .take_over_if_needed("db:5432", &id, "b", at(2), at(4))
            .unwrap());
        b.close("db:5432", &id, "a", at(5)).unwrap();
        assert!(
            !b.take_over_if_needed("db:5432", &id, "b", at(2), at(6))
                .unwrap(),
            "b recovers soon after a"
        );
        assert_eq!(
            b.claim("db:5432", "b", at(30), true, at(31)).unwrap(),
            Role::Announce(outage_id("db:5432", at(30))),
            "a failure after the recovery is a new outage"
        );
        assert!(matches!(
            b.claim("other:5432", "b", at(1), true, at(2)).unwrap(),
            Role::Announce(_)
        ));
    }

    #[test]
    fn a_follower_takes_over_when_the_announcer_goes_silent_or_never_comes() {
        let (_d, b) = book();
        let Role::Announce(id) = b.claim("db:5432", "a", at(0), true, at(0)).unwrap() else {
            panic!()
        };
        b.claim("db:5432", "b", at(0), false, at(1)).unwrap();
        b.heartbeat("db:5432", &id, "a", at(3)).unwrap();
        assert!(!b
            .take_over_if_needed("db:5432", &id, "b", at(1), at(7))
            .unwrap());
        assert!(
            b.take_over_if_needed("db:5432", &id, "b", at(1), at(9))
                .unwrap(),
            "a silent for more than 5 s"
        );
        assert_eq!(
            b.claim("db:5432", "a", at(0), true, at(10)).unwrap(),
            Role::Follow(id),
            "b announces now"
        );

        let (_d, b) = book();
        let Role::Follow(id) = b.claim("db:5432", "b", at(0), false, at(0)).unwrap() else {
            panic!()
        };
        assert!(!b
            .take_over_if_needed("db:5432", &id, "b", at(0), at(5))
            .unwrap());
        assert!(
            b.take_over_if_needed("db:5432", &id, "b", at(0), at(10))
                .unwrap(),
            "nobody announced within the grace period"
        );
    }

    #[test]
    fn a_follower_still_failing_long_after_the_recovery_speaks() {
        let (_d, b) = book();
        let Role::Announce(id) = b.claim("db:5432", "a", at(0), true, at(0)).unwrap() else {
            panic!()
        };
        b.claim("db:5432", "b", at(0), true, at(1)).unwrap();
        b.close("db:5432", &id, "a", at(2)).unwrap();
        assert!(!b
            .take_over_if_needed("db:5432", &id, "b", at(1), at(11))
            .unwrap());
        assert!(b
            .take_over_if_needed("db:5432", &id, "b", at(1), at(12))
            .unwrap());
    }
}

//! Incident history and per-target state in SQLite under the state dir. Each transition is
//! written (fsynced) before the action it announces, so a daemon killed at any point resumes
//! its open incidents without repeating a restart or an alert, and MTTR statistics survive
//! restarts and upgrades.
//!
//! Writes go to one writer thread (`writer.rs`) through a bounded queue and return a
//! [`Written`] to await when the next action depends on them; reads use a connection of their
//! own (WAL lets them run beside the writer). `restore.rs` rebuilds a target's record.

mod restore;
pub use restore::{record_from, OpenIncident, StoredTarget, Untrusted};
mod writer;

pub use writer::Written;

use crate::incident::{Incident, Phase};
use crate::notify::Notice;
use crate::probe::identity::{LearnedIdentity, SystemIdentifier};
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("incident store {path}: {source}")]
    Sql {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("incident store {path}: {waiting} writes already wait for a slow disk; this one was dropped")]
    QueueFull { path: String, waiting: usize },
    #[error("incident store {path}: the write did not finish within {waited:?} (a slow disk?); going on")]
    Slow {
        path: String,
        waited: std::time::Duration,
    },
    #[error("incident store {path}: the writer thread is gone")]
    WriterGone { path: String },
}

/// A cheap handle: the read connection and the writer thread.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    writer: writer::Writer,
    path: String,
}

/// One incident as stored (the API's and the CLI's view).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct IncidentRow {
    pub id: String,
    pub target: String,
    pub class: String,
    pub hard: bool,
    pub detail: String,
    pub sqlstate: Option<String>,
    pub phase: String,
    pub first_failure_at: DateTime<Utc>,
    pub declared_at: DateTime<Utc>,
    pub archive: Option<String>,
    pub heal_issued_at: Option<DateTime<Utc>>,
    pub heal_succeeded: Option<bool>,
    pub recovered_at: Option<DateTime<Utc>>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub closed: bool,
    pub downtime_seconds: Option<f64>,
    pub time_to_recovery_seconds: Option<f64>,
    pub alerted: bool,
    #[serde(skip)]
    pub notices: Vec<Notice>,
    /// The likely cause (as in the bundle's `cause.json`), once classified.
    #[serde(default)]
    pub cause: Option<crate::cause::Cause>,
}

/// One step of an incident's timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: String,
}

/// One delivery result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotificationEntry {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub channel: String,
    pub result: String,
    pub attempts: u32,
}

/// An incident with its timeline and notifications.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: IncidentRow,
    pub timeline: Vec<TimelineEntry>,
    pub notifications: Vec<NotificationEntry>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, target TEXT NOT NULL, class TEXT NOT NULL, hard INTEGER NOT NULL,
    detail TEXT NOT NULL, sqlstate TEXT, phase TEXT NOT NULL,
    first_failure_at TEXT NOT NULL, declared_at TEXT NOT NULL, archive TEXT,
    heal_issued_at TEXT, heal_succeeded INTEGER, recovered_at TEXT, escalated_at TEXT,
    closed INTEGER NOT NULL DEFAULT 0, downtime_seconds REAL, ttr_seconds REAL,
    alerted INTEGER NOT NULL DEFAULT 0, notices TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS incidents_target ON incidents(target, declared_at);
CREATE TABLE IF NOT EXISTS timeline (incident_id TEXT NOT NULL, at TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS timeline_incident ON timeline(incident_id);
CREATE TABLE IF NOT EXISTS notifications (incident_id TEXT NOT NULL, kind TEXT NOT NULL, channel TEXT NOT NULL,
    result TEXT NOT NULL, attempts INTEGER NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS notifications_incident ON notifications(incident_id);
CREATE TABLE IF NOT EXISTS restarts (target TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS maintenance (target TEXT PRIMARY KEY, until TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS health (k TEXT PRIMARY KEY, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (target TEXT PRIMARY KEY, endpoint TEXT NOT NULL,
    system_identifier TEXT NOT NULL, learned_at TEXT NOT NULL);
PRAGMA user_version = 1;
";

/// The state directory 0700 and the database with its journals 0600 (incident history names
/// endpoints and errors; the directory also holds the spool, leases and heal logs).
fn make_private(state_dir: &Path, db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    crate::fsutil::private_dir(state_dir)?;
    drop(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(db)?,
    );
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

use crate::stamp::wall_at as wall;

impl IncidentRow {
    /// An open incident as it stands, in the stored form (etcd keeps it for a takeover).
    pub fn of(inc: &Incident, phase: Phase) -> Self {
        Self {
            id: inc.id.to_string(),
            target: inc.target.clone(),
            class: inc.failure.class.label().to_string(),
            hard: inc.hard,
            detail: inc.failure.detail.clone(),
            sqlstate: inc.failure.sqlstate.clone(),
            phase: phase.label().to_string(),
            first_failure_at: inc.first_failure_at,
            declared_at: inc.declared_at,
            archive: inc.archive_text(),
            heal_issued_at: inc.heal_started.map(wall),
            heal_succeeded: inc.heal_succeeded,
            recovered_at: None,
            escalated_at: inc.escalated_at.map(wall),
            closed: false,
            downtime_seconds: None,
            time_to_recovery_seconds: None,
            alerted: inc.alerted,
            notices: inc.notices.clone(),
            cause: inc.cause.clone(),
        }
    }
}

impl Store {
    /// Opens (creating) `{state_dir}/sentinel.db`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("sentinel.db");
        let p = path.display().to_string();
        let err = |source| StoreError::Sql {
            path: p.clone(),
            source,
        };
        // Private before SQLite opens it: its -wal and -shm files take the database's mode.
        // (The io::Error rides in a rusqlite error, whose message is the io error's.)
        make_private(state_dir, &path)
            .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(&path)?;
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
            )?;
            Ok(conn)
        };
        let conn = open().map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        add_cause_column(&conn).map_err(err)?;
        let writer = writer::Writer::start(open().map_err(err)?, &p)
            .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            writer,
            path: p,
        })
    }

    /// Where the writer reports failures of writes nobody awaited.
    pub fn set_logger(&self, log: slog::Logger) {
        self.writer.set_logger(log);
    }

    /// The database's path, for error messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn with<R>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> Result<R, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&conn).map_err(|source| StoreError::Sql {
            path: self.path.clone(),
            source,
        })
    }

    /// Reads and writes one row, for `/healthz`: a store that can no longer record (a full
    /// disk, a read-only remount, a removed file) shows before an incident needs it.
    /// Blocks: call it off the actors' threads (the API does, under its own deadline).
    pub fn check(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.query_row("SELECT count(*) FROM incidents", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
        })?;
        self.writer
            .submit("", "healthz", |c| {
                c.execute(
                    "INSERT OR REPLACE INTO health (k, at) VALUES ('healthz', ?1)",
                    params![Utc::now().to_rfc3339()],
                )
                .map(|_| ())
            })
            .blocking(&self.path)
    }

    /// Writes the incident as it stands now (insert or update).
    pub fn save_incident(
        &self,
        inc: &Incident,
        phase: Phase,
        closed: bool,
        recovered: Option<(f64, f64)>,
    ) -> Written {
        let notices = serde_json::to_string(&inc.notices).unwrap_or_else(|_| "[]".into());
        let cause = inc
            .cause
            .as_ref()
            .and_then(|c| serde_json::to_string(c).ok());
        let archive = inc.archive_text();
        let inc = inc.clone();
        self.writer.submit(&inc.target.clone(), "incident", move |c| {
            c.execute(
                "INSERT INTO incidents (id, target, class, hard, detail, sqlstate, phase, first_failure_at, declared_at, archive,
                    heal_issued_at, heal_succeeded, recovered_at, escalated_at, closed, downtime_seconds, ttr_seconds, alerted, notices, cause)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
                 ON CONFLICT(id) DO UPDATE SET phase = ?7, archive = ?10, heal_issued_at = ?11, heal_succeeded = ?12,
                    recovered_at = coalesce(recovered_at, ?13), escalated_at = coalesce(escalated_at, ?14), closed = ?15,
                    downtime_seconds = coalesce(?16, downtime_seconds), ttr_seconds = coalesce(?17, ttr_seconds), alerted = ?18, notices = ?19,
                    cause = coalesce(?20, cause)",
                params![
                    inc.id.as_str(), inc.target, inc.failure.class.label(), inc.hard, inc.failure.detail, inc.failure.sqlstate, phase.label(),
                    inc.first_failure_at, inc.declared_at, archive, inc.heal_started.map(wall), inc.heal_succeeded,
                    recovered.map(|_| Utc::now()), inc.escalated_at.map(wall), closed, recovered.map(|r| r.0), recovered.map(|r| r.1),
                    inc.alerted, notices, cause
                ],
            )
            .map(|_| ())
        })
    }

    /// Appends a step to an incident's timeline.
    pub fn event(&self, target: &str, incident_id: &str, kind: &str, detail: &str) -> Written {
        let (incident_id, kind, detail) = (
            incident_id.to_string(),
            kind.to_string(),
            detail.to_string(),
        );
        self.writer.submit(target, "timeline", move |c| {
            c.execute(
                "INSERT INTO timeline VALUES (?1, ?2, ?3, ?4)",
                params![incident_id, Utc::now(), kind, detail],
            )
            .map(|_| ())
        })
    }

    /// Records a restart against the target's budget.
    pub fn restart(&self, target: &str) -> Written {
        let t = target.to_string();
        self.writer.submit(target, "restart", move |c| {
            c.execute(
                "INSERT INTO restarts VALUES (?1, ?2)",
                params![t, Utc::now()],
            )
            .map(|_| ())
        })
    }

    /// Restarts of `target` since `since`, oldest first.
    pub fn restarts_since(
        &self,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT at FROM restarts WHERE target = ?1 AND at >= ?2 ORDER BY at")?;
            let rows = st.query_map(params![target, since], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Records a delivery result.
    pub fn notification(
        &self,
        incident_id: &str,
        kind: &str,
        channel: &str,
        result: &str,
        attempts: u32,
    ) -> Written {
        let (id, kind, channel, result) = (
            incident_id.to_string(),
            kind.to_string(),
            channel.to_string(),
            result.to_string(),
        );
        let (incident_id, kind, channel, result) = (id, kind, channel, result);
        self.writer.submit("", "notification", move |c| {
            c.execute(
                "INSERT INTO notifications VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![incident_id, kind, channel, result, attempts, Utc::now()],
            )
            .map(|_| ())
        })
    }

    /// Whether this notice already reached this channel (a restarted daemon does not resend).
    pub fn delivered(&self, incident_id: &str, kind: &str, channel: &str) -> bool {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM notifications WHERE incident_id = ?1 AND kind = ?2 AND channel = ?3 AND result = 'sent'",
                params![incident_id, kind, channel],
                |_| Ok(()),
            )
            .optional()
        })
        .map(|o| o.is_some())
        .unwrap_or(false)
    }

    pub fn set_maintenance(&self, target: &str, until: Option<DateTime<Utc>>) -> Written {
        let target = target.to_string();
        self.writer.submit(&target.clone(), "maintenance", move |c| match until {
            Some(u) => c.execute("INSERT INTO maintenance VALUES (?1, ?2) ON CONFLICT(target) DO UPDATE SET until = ?2", params![target, u]).map(|_| ()),
            None => c.execute("DELETE FROM maintenance WHERE target = ?1", params![target]).map(|_| ()),
        })
    }

    pub fn maintenance(&self, target: &str) -> Option<DateTime<Utc>> {
        self.with(|c| {
            c.query_row(
                "SELECT until FROM maintenance WHERE target = ?1",
                params![target],
                |r| r.get(0),
            )
            .optional()
        })
        .ok()
        .flatten()
        .filter(|u: &DateTime<Utc>| *u > Utc::now())
    }

    /// Keeps the identity learned for a target's server (one row per target).
    pub fn save_identity(&self, target: &str, id: &LearnedIdentity) -> Written {
        let (t, id) = (target.to_string(), id.clone());
        self.writer.submit(target, "identity", move |c| {
            c.execute(
                "INSERT INTO identities VALUES (?1, ?2, ?3, ?4) ON CONFLICT(target) DO UPDATE SET endpoint = ?2, system_identifier = ?3, learned_at = ?4",
                params![t, id.endpoint, id.system_identifier.to_string(), id.learned_at],
            )
            .map(|_| ())
        })
    }

    /// Forgets the identity learned for a target (a re-created container is a new server: its
    /// first passing probe is learned again).
    pub fn forget_identity(&self, target: &str) -> Written {
        let t = target.to_string();
        self.writer.submit(target, "identity", move |c| {
            c.execute("DELETE FROM identities WHERE target = ?1", params![t])
                .map(|_| ())
        })
    }

    /// The identity learned for a target's server by a previous run; one that does not
    /// parse is forgotten (learned again).
    pub fn identity(&self, target: &str) -> Option<LearnedIdentity> {
        let row: Option<(String, String, DateTime<Utc>)> = self
            .with(|c| {
                c.query_row(
                    "SELECT endpoint, system_identifier, learned_at FROM identities WHERE target = ?1",
                    params![target],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
            })
            .ok()
            .flatten();
        let (endpoint, sysid, learned_at) = row?;
        Some(LearnedIdentity {
            endpoint,
            system_identifier: SystemIdentifier::parse(&sysid).ok()?,
            learned_at,
        })
    }

    /// The open incident of a target, if any (for a restarted daemon to resume).
    pub fn open_incident(&self, target: &str) -> Option<IncidentRow> {
        self.list(Some(target), None, 1)
            .ok()?
            .into_iter()
            .find(|r| !r.closed)
    }

    /// Incidents, newest first.
    pub fn list(
        &self,
        target: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<IncidentRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, target, class, hard, detail, sqlstate, phase, first_failure_at, declared_at, archive, heal_issued_at,
                    heal_succeeded, recovered_at, escalated_at, closed, downtime_seconds, ttr_seconds, alerted, notices, cause
                 FROM incidents WHERE (?1 IS NULL OR target = ?1) AND (?2 IS NULL OR declared_at >= ?2)
                 ORDER BY declared_at DESC LIMIT ?3",
            )?;
            let rows = st.query_map(params![target, since, limit], row)?;
            rows.collect()
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<IncidentDetail>, StoreError> {
        self.with(|c| {
            let Some(incident) = c
                .query_row(
                    "SELECT id, target, class, hard, detail, sqlstate, phase, first_failure_at, declared_at, archive, heal_issued_at,
                        heal_succeeded, recovered_at, escalated_at, closed, downtime_seconds, ttr_seconds, alerted, notices, cause
                     FROM incidents WHERE id = ?1",
                    params![id],
                    row,
                )
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = c.prepare("SELECT at, kind, detail FROM timeline WHERE incident_id = ?1 ORDER BY rowid")?;
            let timeline = st.query_map(params![id], |r| Ok(TimelineEntry { at: r.get(0)?, kind: r.get(1)?, detail: r.get(2)? }))?.collect::<Result<_, _>>()?;
            let mut st = c.prepare("SELECT at, kind, channel, result, attempts FROM notifications WHERE incident_id = ?1 ORDER BY rowid")?;
            let notifications = st
                .query_map(params![id], |r| Ok(NotificationEntry { at: r.get(0)?, kind: r.get(1)?, channel: r.get(2)?, result: r.get(3)?, attempts: r.get(4)? }))?
                .collect::<Result<_, _>>()?;
            Ok(Some(IncidentDetail { incident, timeline, notifications }))
        })
    }
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<IncidentRow> {
    let notices: String = r.get(18)?;
    Ok(IncidentRow {
        id: r.get(0)?,
        target: r.get(1)?,
        class: r.get(2)?,
        hard: r.get(3)?,
        detail: r.get(4)?,
        sqlstate: r.get(5)?,
        phase: r.get(6)?,
        first_failure_at: r.get(7)?,
        declared_at: r.get(8)?,
        archive: r.get(9)?,
        heal_issued_at: r.get(10)?,
        heal_succeeded: r.get(11)?,
        recovered_at: r.get(12)?,
        escalated_at: r.get(13)?,
        closed: r.get(14)?,
        downtime_seconds: r.get(15)?,
        time_to_recovery_seconds: r.get(16)?,
        alerted: r.get(17)?,
        notices: serde_json::from_str(&notices).unwrap_or_default(),
        cause: r
            .get::<_, Option<String>>(19)?
            .and_then(|c| serde_json::from_str(&c).ok()),
    })
}

/// Stores written before causes existed get the column (NULL: not classified).
fn add_cause_column(c: &Connection) -> rusqlite::Result<()> {
    let has = c
        .prepare("SELECT 1 FROM pragma_table_info('incidents') WHERE name = 'cause'")?
        .exists([])?;
    if !has {
        c.execute_batch("ALTER TABLE incidents ADD COLUMN cause TEXT")?;
    }
    Ok(())
}

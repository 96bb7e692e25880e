//! What SQL can still tell about a struggling server, captured while the target is suspect:
//! sessions, locks with their blockers, database counters, non-default settings, version and
//! uptime. Each section is best effort, and a server that cannot answer is said so. Secrets
//! are masked here, by parsing, before anything is stored: the server's text is whatever its
//! users typed, so SQL-side patterns cannot be trusted.
//!
//! The server is not trusted with the daemon's memory either: the snapshot logs in and reads
//! with the probe's own wire code, within the probe timeout in all, under byte, row and JSON
//! limits that hold while the answers stream (see `read`); what a limit cut is said per
//! section in `truncated`.

mod json;
mod read;

use super::login::{self, Endpoint};
use super::query;
use crate::config::TargetConfig;
use bytes::BytesMut;
use chrono::Utc;
use serde_json::Value;
use std::time::Duration;

pub use crate::sql_snapshot::SqlSnapshot;
pub use read::{READ_LIMIT, ROW_LIMIT, VALUE_LIMIT};

/// Longest query text kept, in characters, after masking.
const QUERY_CHARS: usize = 2000;

/// The snapshot's `application_name`, so its session is told from the probe's.
const APPLICATION: &str = "sentinel-remedy-forensics";

/// A section's answer: one JSON value, or one per row (kept as an array), so that the row
/// limit cuts single sessions and locks rather than the whole section.
#[derive(Clone, Copy)]
enum Shape {
    One,
    Rows,
}

/// Each section: (name, shape, query). Query text comes whole (as far as
/// `track_activity_query_size` keeps it) and is masked and cut by [`mask`].
const SECTIONS: &[(&str, Shape, &str)] = &[
    ("server", Shape::One, "SELECT json_build_object('version', version(), 'started_at', pg_postmaster_start_time(), \
        'uptime_seconds', extract(epoch FROM now() - pg_postmaster_start_time()), 'in_recovery', pg_is_in_recovery(), \
        'now', now())"),
    ("activity", Shape::Rows, "SELECT row_to_json(a) FROM (SELECT pid, usename, datname, application_name, client_addr, \
        backend_type, state, wait_event_type, wait_event, backend_start, xact_start, query_start, state_change, \
        pg_blocking_pids(pid) AS blocked_by, \
        left(query, 65536) AS query \
        FROM pg_stat_activity WHERE pid <> pg_backend_pid()) a"),
    ("locks", Shape::Rows, "SELECT row_to_json(l) FROM (SELECT l.locktype, l.database, l.relation::regclass::text AS relation, \
        l.mode, l.granted, l.pid, pg_blocking_pids(l.pid) AS blocked_by, a.state, a.xact_start, \
        left(a.query, 65536) AS query \
        FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
        WHERE NOT l.granted OR l.pid IN (SELECT unnest(pg_blocking_pids(w.pid)) FROM pg_stat_activity w)) l"),
    ("databases", Shape::Rows, "SELECT row_to_json(d) FROM (SELECT datname, numbackends, xact_commit, xact_rollback, \
        blks_read, blks_hit, tup_inserted, tup_updated, tup_deleted, conflicts, temp_files, temp_bytes, deadlocks, \
        stats_reset FROM pg_stat_database WHERE datname IS NOT NULL) d"),
    ("settings", Shape::Rows, "SELECT row_to_json(s) FROM (SELECT name, \
        CASE WHEN name ~ '(conninfo|password|passphrase)' THEN '***' ELSE setting END AS setting, unit, source \
        FROM pg_settings WHERE source NOT IN ('default', 'override')) s"),
];

/// Captures a snapshot within `target.probe.timeout` in all. Sections answered before the
/// timeout are kept; the others are said to be cut by it.
pub async fn capture(target: &TargetConfig) -> SqlSnapshot {
    let limit = target.probe.timeout;
    let mut snap = SqlSnapshot {
        captured_at: Utc::now(),
        answered: false,
        error: None,
        sections: Default::default(),
        truncated: Default::default(),
    };
    if tokio::time::timeout(limit, fill(&mut snap, target, limit))
        .await
        .is_err()
    {
        let said = format!(
            "no answer within the probe timeout ({})",
            crate::config::duration::format_duration(limit)
        );
        if snap.answered {
            for (name, ..) in SECTIONS {
                if !snap.sections.contains_key(*name) {
                    snap.truncated
                        .insert((*name).to_string(), format!("not read: {said}"));
                }
            }
        }
        snap.error = Some(said);
    }
    snap
}

/// Logs in with every query queued behind the login (one round trip, as the probe does),
/// then reads the answers in order into `snap`, section by section.
async fn fill(snap: &mut SqlSnapshot, target: &TargetConfig, limit: Duration) {
    // statement_timeout comes with the login; lock_timeout is the first query.
    let endpoint = Endpoint::new(&target.dsn, limit).with_application_name(APPLICATION);
    let mut then = BytesMut::new();
    let queries = std::iter::once(format!("SET lock_timeout = {}", limit.as_millis().max(1)))
        .chain(SECTIONS.iter().map(|(_, _, sql)| (*sql).to_string()));
    for sql in queries {
        if let Err(e) = query::push(&sql, &mut then) {
            snap.error = Some(e.detail);
            return;
        }
    }
    postgres_protocol::message::frontend::terminate(&mut then);
    // A key cache of its own: one derivation per snapshot, never the probe's cache.
    let mut keys = super::scram::KeyCache::default();
    let mut wire = match login::login(&endpoint, &mut keys, &then).await {
        Ok(w) => w,
        Err(e) => {
            snap.error = Some(crate::redact::redact_text(&format!(
                "could not connect: {}",
                e.detail
            )));
            return;
        }
    };
    snap.answered = true;
    let mut reader = read::Reader::new(&mut wire);
    reader.answer().await; // SET lock_timeout: nothing to keep; its bytes count all the same
    for (name, shape, _) in SECTIONS {
        let a = reader.answer().await;
        if let Some(cut) = a.cut {
            snap.truncated.insert((*name).to_string(), cut);
        }
        let v = match (a.error, shape) {
            (Some(e), _) => Value::String(e),
            (None, Shape::One) => a.rows.into_iter().next().unwrap_or(Value::Null),
            (None, Shape::Rows) => Value::Array(a.rows),
        };
        snap.sections.insert((*name).to_string(), mask(v, None));
    }
}

/// Every string of a section with secrets masked: `query` fields as SQL, the rest (application
/// names, settings, error texts) as free text.
fn mask(v: Value, key: Option<&str>) -> Value {
    match v {
        Value::String(s) if key == Some("query") => Value::String(crate::notify::clip(
            &crate::redact::redact_text(&crate::redact::redact_sql(&s)),
            QUERY_CHARS,
        )),
        Value::String(s) => Value::String(crate::redact::redact_text(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| mask(x, key)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| {
                    let x = mask(x, Some(&k));
                    (k, x)
                })
                .collect(),
        ),
        other => other,
    }
}

//! What SQL can still tell about a struggling server, captured while the target is suspect:
//! sessions, locks with their blockers, database counters, non-default settings, version and
//! uptime. Bounded by the probe timeout; each section is best effort, and a server that
//! cannot answer is said so. Secrets are masked here, by parsing, before anything is stored:
//! the server's text is whatever its users typed, so SQL-side patterns cannot be trusted.

use super::ProbeFailure;
use crate::config::TargetConfig;
use chrono::Utc;
use serde_json::Value;
use std::time::Duration;

pub use crate::sql_snapshot::SqlSnapshot;

/// Longest query text kept, in characters, after masking.
const QUERY_CHARS: usize = 2000;

/// Each section: (name, query returning one JSON value). Query text comes whole (as far as
/// `track_activity_query_size` keeps it) and is masked and cut by [`mask`].
const SECTIONS: &[(&str, &str)] = &[
    ("server", "SELECT json_build_object('version', version(), 'started_at', pg_postmaster_start_time(), \
        'uptime_seconds', extract(epoch FROM now() - pg_postmaster_start_time()), 'in_recovery', pg_is_in_recovery(), \
        'now', now())"),
    ("activity", "SELECT coalesce(json_agg(a), '[]') FROM (SELECT pid, usename, datname, application_name, client_addr, \
        backend_type, state, wait_event_type, wait_event, backend_start, xact_start, query_start, state_change, \
        pg_blocking_pids(pid) AS blocked_by, \
        left(query, 65536) AS query \
        FROM pg_stat_activity WHERE pid <> pg_backend_pid()) a"),
    ("locks", "SELECT coalesce(json_agg(l), '[]') FROM (SELECT l.locktype, l.database, l.relation::regclass::text AS relation, \
        l.mode, l.granted, l.pid, pg_blocking_pids(l.pid) AS blocked_by, a.state, a.xact_start, \
        left(a.query, 65536) AS query \
        FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
        WHERE NOT l.granted OR l.pid IN (SELECT unnest(pg_blocking_pids(w.pid)) FROM pg_stat_activity w)) l"),
    ("databases", "SELECT coalesce(json_agg(d), '[]') FROM (SELECT datname, numbackends, xact_commit, xact_rollback, \
        blks_read, blks_hit, tup_inserted, tup_updated, tup_deleted, conflicts, temp_files, temp_bytes, deadlocks, \
        stats_reset FROM pg_stat_database WHERE datname IS NOT NULL) d"),
    ("settings", "SELECT coalesce(json_agg(s), '[]') FROM (SELECT name, \
        CASE WHEN name ~ '(conninfo|password|passphrase)' THEN '***' ELSE setting END AS setting, unit, source \
        FROM pg_settings WHERE source NOT IN ('default', 'override')) s"),
];

/// Captures a snapshot within `target.probe.timeout` in all.
pub async fn capture(target: &TargetConfig) -> SqlSnapshot {
    let limit = target.probe.timeout;
    match tokio::time::timeout(limit, capture_inner(target, limit)).await {
        Ok(s) => s,
        Err(_) => SqlSnapshot {
            captured_at: Utc::now(),
            answered: false,
            error: Some(format!(
                "no answer within the probe timeout ({})",
                crate::config::duration::format_duration(limit)
            )),
            sections: Default::default(),
        },
    }
}

async fn capture_inner(target: &TargetConfig, limit: Duration) -> SqlSnapshot {
    let mut cfg = target.dsn.config().clone();
    cfg.application_name("sentinel-remedy-forensics")
        .connect_timeout(limit);
    let mut snap = SqlSnapshot {
        captured_at: Utc::now(),
        answered: false,
        error: None,
        sections: Default::default(),
    };
    let (client, conn) = match super::guard::connect(&cfg, &target.dsn).await {
        Ok(c) => c,
        Err(f) => {
            snap.error = Some(crate::redact::redact_text(&format!(
                "could not connect: {}",
                f.detail
            )));
            return snap;
        }
    };
    actix_rt::spawn(async move {
        let _ = conn.await;
    });
    let ms = limit.as_millis().max(1);
    let _ = client
        .batch_execute(&format!(
            "SET statement_timeout = {ms}; SET lock_timeout = {ms}"
        ))
        .await;
    snap.answered = true;
    for (name, sql) in SECTIONS {
        let v = match client.query_one(*sql, &[]).await {
            Ok(row) => row
                .try_get::<_, Value>(0)
                .unwrap_or_else(|e| Value::String(format!("unreadable: {e}"))),
            Err(e) => Value::String(format!("error: {}", ProbeFailure::from_pg(&e).detail)),
        };
        snap.sections.insert((*name).to_string(), mask(v, None));
    }
    snap
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

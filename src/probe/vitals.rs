//! The flight recorder's SQL half: one query, queued behind the probe's login when a sample is
//! due (see `crate::flight`), answering one row of numbers. What the server answers is its
//! word: each column is parsed as a finite number or dropped, and the row is read under the
//! probe's byte budget like every other answer.
//!
//! Visibility: a probe role without `pg_monitor` (or `pg_read_all_stats`) sees the state and
//! transaction start of its own sessions only, so `active`, `idle in transaction` and the
//! oldest transaction then count those; the counts, locks, WAL position and ages are public.

use super::query;
use super::wire::Wire;
use super::ProbeFailure;
use bytes::BytesMut;

/// How many numbers [`QUERY`] answers, in this order: client connections (other than the
/// probe's), max_connections, active, idle in transaction, oldest open transaction (seconds),
/// waiting locks, WAL position (bytes; the replay position on a standby), the largest
/// `age(datfrozenxid)`, replay lag on a standby (seconds).
pub const COLUMNS: usize = 9;

/// One scan of the backends, of the ungranted locks and of pg_database. The functions behind
/// the `pg_stat_activity` and `pg_locks` views are called directly: a probe's session is new
/// each time, and planning the views' joins in a cold session cost three times the rest
/// (`scripts/bench.sh`, section `recorder`). Both are executable by any role, as the views are.
pub const QUERY: &str = "SELECT a.n, current_setting('max_connections')::int, a.active, a.idle_xact, \
    extract(epoch FROM now() - a.oldest), (SELECT count(*) FROM pg_lock_status() l WHERE NOT l.granted), \
    pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, '0/0'), \
    (SELECT max(age(datfrozenxid)) FROM pg_database), \
    CASE WHEN pg_is_in_recovery() THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END \
    FROM (SELECT count(*) AS n, count(*) FILTER (WHERE s.state = 'active') AS active, \
    count(*) FILTER (WHERE s.state LIKE 'idle in transaction%') AS idle_xact, min(s.xact_start) AS oldest \
    FROM pg_stat_get_activity(NULL) s WHERE s.backend_type = 'client backend' AND s.pid <> pg_backend_pid()) a";

/// The numbers read; NaN where the server gave none (NULL, not a number, an error).
pub type SqlVitals = [f64; COLUMNS];

/// Queues [`QUERY`] (sent with the login).
pub fn push(out: &mut BytesMut) -> Result<(), ProbeFailure> {
    query::push(QUERY, out)
}

/// Reads the answer to [`QUERY`]. An error the server answered with gives no numbers (the
/// probe itself passed); a broken connection is the caller's to judge.
pub async fn read(w: &mut Wire) -> Result<Option<SqlVitals>, ProbeFailure> {
    match query::first_row(w).await {
        Ok(row) => Ok(Some(parse(row))),
        Err(f) if f.sqlstate.is_some() => Ok(None),
        Err(f) => Err(f),
    }
}

/// Each column as a finite number, or NaN.
pub fn parse(row: query::FirstRow) -> SqlVitals {
    let mut out = [f64::NAN; COLUMNS];
    for (slot, col) in out.iter_mut().zip(row.unwrap_or_default()) {
        if let Some(v) = col.and_then(|t| t.trim().parse::<f64>().ok()) {
            if v.is_finite() {
                *slot = v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_kept_and_anything_else_dropped() {
        let row = Some(vec![
            Some("41".into()),
            Some("100".into()),
            None,
            Some("NaN".into()),
            Some("1e400".into()),
            Some("<insufficient privilege>".into()),
        ]);
        let v = super::parse(row);
        assert_eq!((v[0], v[1]), (41.0, 100.0));
        assert!(v[2..].iter().all(|x| x.is_nan()));
    }
}

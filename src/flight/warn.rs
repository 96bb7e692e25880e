//! Early warnings for failures no restart fixes, judged on each new sample: a filesystem of
//! the data directory or pg_wal nearly full, connections nearly exhausted, transaction ID
//! wraparound near (thresholds in `recorder:`, defaults 90 %, 90 % and 1.5 billion). A
//! condition is raised once when its value reaches the threshold and cleared once when it
//! falls below 95 % of it (so a value hovering at the threshold does not page on every
//! sample). Pure: the sample, the thresholds and what is raised already in; changes out.

use super::movers::bytes;
use super::{Sample, Vital};
use crate::config::WarnThresholds;
use std::collections::BTreeSet;

/// Below this share of its threshold a raised condition clears.
const CLEAR_BELOW: f64 = 0.95;

/// A condition heading for a failure a restart cannot fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    DiskNearlyFull,
    ConnectionsNearlyExhausted,
    XidWraparoundNear,
}

impl Condition {
    pub const ALL: [Condition; 3] = [
        Condition::DiskNearlyFull,
        Condition::ConnectionsNearlyExhausted,
        Condition::XidWraparoundNear,
    ];

    /// Stable label for payloads, logs and warning ids.
    pub fn label(self) -> &'static str {
        match self {
            Condition::DiskNearlyFull => "disk_nearly_full",
            Condition::ConnectionsNearlyExhausted => "connections_nearly_exhausted",
            Condition::XidWraparoundNear => "xid_wraparound_near",
        }
    }

    /// What to do about it.
    pub fn fix(self) -> &'static str {
        match self {
            Condition::DiskNearlyFull => "Free space (old WAL held by a replication slot or archive_command, logs, bloat) or grow the volume: a full disk stops the server, and a restart frees nothing.",
            Condition::ConnectionsNearlyExhausted => "Find the pile-up (idle or idle-in-transaction sessions, a pooler misconfigured) before new logins are refused; a restart would only drop every client.",
            Condition::XidWraparoundNear => "VACUUM (FREEZE) the oldest databases (check for long transactions, abandoned replication slots and prepared transactions holding it back): at wraparound the server stops accepting writes, and a restart does not help.",
        }
    }
}

/// A condition raised or cleared, with the sentence that says so.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Raise(Condition, String),
    Clear(Condition, String),
}

/// (value, threshold, what it reads) of `c` in `s`, when known and enabled.
fn reading(c: Condition, s: &Sample, th: &WarnThresholds) -> Option<(f64, f64, String)> {
    match c {
        Condition::DiskNearlyFull => {
            let t = th.disk_percent?;
            let fs = |free: Vital, size: Vital, name: &str| {
                let (f, z) = (s.get(free)?, s.get(size)?);
                (z > 0.0).then(|| (100.0 * (z - f) / z, name.to_string(), f, z))
            };
            let worst = [
                fs(
                    Vital::DataDiskFree,
                    Vital::DataDiskSize,
                    "the data directory's",
                ),
                fs(Vital::WalDiskFree, Vital::WalDiskSize, "pg_wal's"),
            ]
            .into_iter()
            .flatten()
            // The data directory's on a tie (pg_wal on the same filesystem).
            .reduce(|a, b| if b.0 > a.0 { b } else { a })?;
            let (pct, name, free, size) = worst;
            Some((
                pct,
                t,
                format!(
                    "{name} filesystem is {pct:.1} % full ({} free of {}; threshold {t:.0} %)",
                    bytes(free),
                    bytes(size)
                ),
            ))
        }
        Condition::ConnectionsNearlyExhausted => {
            let t = th.connections_percent?;
            let (n, max) = (s.get(Vital::Connections)?, s.get(Vital::MaxConnections)?);
            (max > 0.0).then(|| {
                let pct = 100.0 * n / max;
                (
                    pct,
                    t,
                    format!("{n:.0} of max_connections {max:.0} in use ({pct:.1} %; threshold {t:.0} %)"),
                )
            })
        }
        Condition::XidWraparoundNear => {
            let t = th.xid_age?;
            let age = s.get(Vital::XidAge)?;
            Some((
                age,
                t,
                format!(
                    "transaction ID age {age:.0} (threshold {t:.0}; writes stop near 2147483647)"
                ),
            ))
        }
    }
}

/// What changes with sample `s`, given the conditions raised already.
pub fn changes(s: &Sample, th: &WarnThresholds, raised: &BTreeSet<Condition>) -> Vec<Change> {
    let mut out = Vec::new();
    for c in Condition::ALL {
        let Some((value, threshold, text)) = reading(c, s, th) else {
            continue;
        };
        let on = raised.contains(&c);
        if !on && value >= threshold {
            out.push(Change::Raise(c, text));
        } else if on && value < threshold * CLEAR_BELOW {
            out.push(Change::Clear(c, text));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(n: f64) -> Sample {
        let mut values = [f64::NAN; Vital::COUNT];
        values[Vital::Connections as usize] = n;
        values[Vital::MaxConnections as usize] = 20.0;
        Sample { at_ms: 0, values }
    }

    #[test]
    fn raised_at_the_threshold_cleared_below_it_with_a_margin() {
        let th = crate::config::RecorderConfig::default().warn;
        let mut on = BTreeSet::new();
        assert!(changes(&conns(17.0), &th, &on).is_empty());
        let c = changes(&conns(18.0), &th, &on);
        assert!(
            matches!(&c[..], [Change::Raise(Condition::ConnectionsNearlyExhausted, t)] if t.contains("18 of max_connections 20")),
            "{c:?}"
        );
        on.insert(Condition::ConnectionsNearlyExhausted);
        assert!(changes(&conns(18.0), &th, &on).is_empty());
        assert!(
            changes(&conns(17.5), &th, &on).is_empty(),
            "inside the margin"
        );
        assert!(matches!(
            &changes(&conns(10.0), &th, &on)[..],
            [Change::Clear(Condition::ConnectionsNearlyExhausted, _)]
        ));
        let off = WarnThresholds {
            connections_percent: None,
            ..th
        };
        assert!(changes(&conns(20.0), &off, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn the_fuller_filesystem_and_the_xid_age_are_judged_too() {
        let th = crate::config::RecorderConfig::default().warn;
        let mut values = [f64::NAN; Vital::COUNT];
        let gib = 1024.0 * 1024.0 * 1024.0;
        values[Vital::DataDiskFree as usize] = 5.0 * gib;
        values[Vital::DataDiskSize as usize] = 10.0 * gib;
        values[Vital::WalDiskFree as usize] = 0.5 * gib;
        values[Vital::WalDiskSize as usize] = 10.0 * gib;
        values[Vital::XidAge as usize] = 1.6e9;
        let s = Sample { at_ms: 0, values };
        let c = changes(&s, &th, &BTreeSet::new());
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            matches!(&c[0], Change::Raise(Condition::DiskNearlyFull, t) if t.starts_with("pg_wal's filesystem is 95.0 % full (512 MiB free of 10.0 GiB")),
            "{c:?}"
        );
        assert!(matches!(
            &c[1],
            Change::Raise(Condition::XidWraparoundNear, _)
        ));
    }
}

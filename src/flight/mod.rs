//! The flight recorder: for each target a bounded ring of light vitals over the last minutes
//! (`recorder.window`, default 10 minutes, one sample per `recorder.every`, default 10 s), so
//! an incident can say what moved before it. A sample's SQL half is read on the probe's own
//! session when one is due (`probe::vitals`: connections by state, the oldest transaction,
//! waiting locks, WAL position, transaction ID age, replay lag); its host half beside it
//! (`host`: the data directory's and pg_wal's free space and the postmaster's memory for a
//! server on this host, the cgroup's memory for a container).
//!
//! Memory is fixed per sample: a time and [`Vital::COUNT`] numbers (136 bytes), NaN where a
//! vital is unknown; 61 samples at the defaults, about 8 KiB per target.
//!
//! What uses it: the bundle's `flight.json` ([`Recording`]), the failure alert's line on what
//! moved most ([`movers`]), `/status` and the status page ([`Ring::latest`]), and the early
//! warnings ([`warn`]).

pub mod host;
pub mod movers;
pub mod warn;

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// One vital: its place in a sample, its name in JSON, and its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Vital {
    /// Client connections other than the probe's.
    Connections,
    MaxConnections,
    Active,
    IdleInTransaction,
    /// Age of the oldest open transaction, seconds.
    OldestTransaction,
    WaitingLocks,
    /// WAL position in bytes (the replay position on a standby).
    WalPosition,
    /// The largest `age(datfrozenxid)`.
    XidAge,
    /// Replay lag on a standby, seconds.
    ReplayLag,
    DataDiskFree,
    DataDiskSize,
    WalDiskFree,
    WalDiskSize,
    /// Resident memory of the postmaster, bytes.
    PostmasterRss,
    /// The container's cgroup memory use and limit, bytes.
    ContainerMemory,
    ContainerMemoryLimit,
}

impl Vital {
    pub const COUNT: usize = 16;

    /// Every vital in sample order; the first [`crate::probe::vitals::COLUMNS`] are the SQL
    /// query's columns, in its order.
    pub const ALL: [Vital; Self::COUNT] = [
        Vital::Connections,
        Vital::MaxConnections,
        Vital::Active,
        Vital::IdleInTransaction,
        Vital::OldestTransaction,
        Vital::WaitingLocks,
        Vital::WalPosition,
        Vital::XidAge,
        Vital::ReplayLag,
        Vital::DataDiskFree,
        Vital::DataDiskSize,
        Vital::WalDiskFree,
        Vital::WalDiskSize,
        Vital::PostmasterRss,
        Vital::ContainerMemory,
        Vital::ContainerMemoryLimit,
    ];

    /// Its key in `flight.json` and `/status`.
    pub fn label(self) -> &'static str {
        match self {
            Vital::Connections => "connections",
            Vital::MaxConnections => "max_connections",
            Vital::Active => "active",
            Vital::IdleInTransaction => "idle_in_transaction",
            Vital::OldestTransaction => "oldest_transaction_seconds",
            Vital::WaitingLocks => "waiting_locks",
            Vital::WalPosition => "wal_position_bytes",
            Vital::XidAge => "xid_age",
            Vital::ReplayLag => "replay_lag_seconds",
            Vital::DataDiskFree => "data_disk_free_bytes",
            Vital::DataDiskSize => "data_disk_size_bytes",
            Vital::WalDiskFree => "wal_disk_free_bytes",
            Vital::WalDiskSize => "wal_disk_size_bytes",
            Vital::PostmasterRss => "postmaster_rss_bytes",
            Vital::ContainerMemory => "container_memory_bytes",
            Vital::ContainerMemoryLimit => "container_memory_limit_bytes",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One sample: when, and every vital (NaN where unknown).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub values: [f64; Vital::COUNT],
}

impl Sample {
    /// A sample from the SQL numbers of a probe and what the host told.
    pub fn new(
        at: DateTime<Utc>,
        sql: &crate::probe::vitals::SqlVitals,
        host: &host::HostVitals,
    ) -> Self {
        let mut values = [f64::NAN; Vital::COUNT];
        values[..sql.len()].copy_from_slice(sql);
        for (v, x) in host.values() {
            values[v.index()] = x;
        }
        Self {
            at_ms: at.timestamp_millis(),
            values,
        }
    }

    /// The vital's value, if known.
    pub fn get(&self, v: Vital) -> Option<f64> {
        Some(self.values[v.index()]).filter(|x| x.is_finite())
    }

    pub fn at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.at_ms).unwrap_or_default()
    }

    /// The known vitals by name, with the WAL rate since `before` when there is one.
    fn map(&self, before: Option<&Sample>) -> BTreeMap<&'static str, f64> {
        let mut m: BTreeMap<&'static str, f64> = Vital::ALL
            .iter()
            .filter_map(|v| self.get(*v).map(|x| (v.label(), x)))
            .collect();
        if let Some(r) = before.and_then(|b| wal_rate(b, self)) {
            m.insert("wal_bytes_per_second", r);
        }
        m
    }
}

/// WAL written per second between two samples, if both know the position.
pub fn wal_rate(a: &Sample, b: &Sample) -> Option<f64> {
    let secs = (b.at_ms - a.at_ms) as f64 / 1000.0;
    let d = b.get(Vital::WalPosition)? - a.get(Vital::WalPosition)?;
    (secs > 0.0 && d >= 0.0).then(|| d / secs)
}

/// The ring of one target: the newest samples, at most as many as the window holds.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    samples: VecDeque<Sample>,
}

impl Ring {
    /// Adds a sample, dropping the oldest past `cap`.
    pub fn push(&mut self, s: Sample, cap: usize) {
        while self.samples.len() >= cap.max(1) {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// Drops the samples taken before `at_ms` (the window's far end: with probes sparser than
    /// `recorder.every` the count alone would reach further back).
    pub fn forget_before(&mut self, at_ms: i64) {
        while self.samples.front().is_some_and(|s| s.at_ms < at_ms) {
            self.samples.pop_front();
        }
    }

    pub fn samples(&self) -> &VecDeque<Sample> {
        &self.samples
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The newest sample's vitals by name (with the WAL rate), for `/status`.
    pub fn latest(&self) -> Option<Latest> {
        let last = self.samples.back()?;
        let before = self.samples.len().checked_sub(2).map(|i| &self.samples[i]);
        Some(Latest {
            at: last.at(),
            values: last.map(before),
        })
    }

    /// Everything the ring holds, for the bundle's `flight.json`.
    pub fn recording(&self, every: std::time::Duration, window: std::time::Duration) -> Recording {
        let samples = self
            .samples
            .iter()
            .enumerate()
            .map(|(i, s)| Latest {
                at: s.at(),
                values: s.map(i.checked_sub(1).map(|j| &self.samples[j])),
            })
            .collect();
        Recording {
            every_seconds: every.as_secs_f64(),
            window_seconds: window.as_secs_f64(),
            samples,
        }
    }
}

/// One sample as JSON shows it: the time and the known vitals by name.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latest {
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub values: BTreeMap<&'static str, f64>,
}

/// `flight.json`: the ring when the incident was declared, oldest sample first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recording {
    pub every_seconds: f64,
    pub window_seconds: f64,
    pub samples: Vec<Latest>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_and_a_sample_is_small() {
        let mut r = Ring::default();
        for i in 0..10 {
            let mut v = [f64::NAN; Vital::COUNT];
            v[Vital::WalPosition.index()] = (i * 1000) as f64;
            r.push(
                Sample {
                    at_ms: i * 1000,
                    values: v,
                },
                4,
            );
        }
        assert_eq!(r.samples().len(), 4);
        assert_eq!(r.samples()[0].at_ms, 6000);
        let latest = r.latest().unwrap();
        assert_eq!(latest.values["wal_bytes_per_second"], 1000.0);
        assert_eq!(std::mem::size_of::<Sample>(), 136);
        let rec = r.recording(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3),
        );
        assert_eq!(rec.samples.len(), 4);
        assert!(!rec.samples[0].values.contains_key("wal_bytes_per_second"));
    }
}

//! One manager at a time: before a restart the daemon takes an exclusive lease on the
//! database server (keyed by host:port, so two registries naming it differently still meet).
//! The lease lives outside the database, which is down when it matters.
//!
//! [`LeaseBackend`] is the seam, and it is asynchronous with a bounded wait, so a network
//! lease (etcd, an S3 conditional write) fits it and no backend can stall a Monitor's thread.
//! [`FileLeases`] (`file.rs`) keeps leases as small JSON files under a directory, guarded by
//! `flock`, which every daemon on a host (or on hosts sharing the directory over a filesystem
//! with working locks) can share. A new backend is one file here plus a config variant.

mod file;

pub use file::FileLeases;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
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
    /// Cluster mode: this daemon is not known to own the target now (its etcd lease is not
    /// known to be live, or another daemon owns it): no restart until it owns it again.
    #[error("coordination lost: {0}")]
    Fenced(String),
}

/// What a restart lease is asked for.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// The server, `host:port`.
    pub key: String,
    /// The target the restart is for (cluster mode checks that we still own it).
    pub target: String,
    /// Our owner id ([`owner_id`]).
    pub owner: String,
    pub ttl: Duration,
    /// The incident the restart is for.
    pub incident: String,
    /// When the outage began: a restart by anyone since then, less than `settle` ago, was
    /// this outage's restart.
    pub outage_started: DateTime<Utc>,
    pub settle: Duration,
}

/// A lease store. Both calls answer within a bounded time (a backend that cannot decide in
/// time refuses with [`LeaseRefusal::Busy`]), and never block the caller's thread.
pub trait LeaseBackend: Send + Sync {
    /// Takes the lease on `req.key` for `req.ttl` and records a restart for `req.incident`,
    /// unless another owner holds it, or already restarted the server for this outage.
    fn acquire(&self, req: LeaseRequest) -> BoxFuture<'static, Result<(), LeaseRefusal>>;
    /// Ends our lease early (the heal finished); the restart record stays.
    fn release(&self, key: String, owner: String) -> BoxFuture<'static, ()>;
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

//! `lease:`: where restart leases are kept, so daemons sharing a server never both restart it.

use super::duration::{checked as duration, RawDuration};
use super::error::Problems;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `lease:`: where restart leases are kept; daemons that share the directory never restart
/// the same server twice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLease {
    /// Directory shared by every daemon that may watch the same servers (default: the state dir's `leases/`).
    pub dir: Option<String>,
    /// How long a restart holds the lease at most (default 2m).
    pub ttl: Option<RawDuration>,
}

/// Restart leases.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseConfig {
    /// None: `{state_dir}/leases` (this daemon only).
    pub dir: Option<PathBuf>,
    pub ttl: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            dir: None,
            ttl: Duration::from_secs(120),
        }
    }
}

/// Validates `lease:` over the defaults; a bad key keeps its default.
pub(crate) fn build_lease(l: RawLease, problems: &mut Problems) -> LeaseConfig {
    let mut lease = LeaseConfig::default();
    if let Some(d) = l.dir {
        if d.trim().is_empty() {
            problems.push(
                "lease.dir",
                "the directory is empty",
                "give a directory every daemon watching these servers can lock, or remove it",
            );
        } else {
            lease.dir = Some(PathBuf::from(d));
        }
    }
    if let Some(t) = l
        .ttl
        .as_ref()
        .and_then(|d| duration(d, "lease.ttl", problems))
    {
        lease.ttl = t;
    }
    lease
}

//! `cluster:`: several daemons sharing one fleet through etcd (each target owned by one live
//! daemon, taken over when it dies). Without this section the daemon runs alone, as before.

use super::duration::{checked as duration, format_duration, RawDuration};
use super::error::Problems;
use serde::Deserialize;
use std::time::Duration;

/// `cluster:` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// etcd client URLs (`http://etcd1:2379`); one is enough, all are better.
    pub etcd: Vec<String>,
    /// Key prefix shared by the daemons of one fleet (default `sentinel-remedy`).
    pub prefix: Option<String>,
    /// This daemon's member id (default: the host name); unique per daemon.
    pub member: Option<String>,
    /// Membership lease TTL: a daemon silent this long loses its targets (default 5s, >= 2s).
    pub ttl: Option<RawDuration>,
    /// Targets handed to a joining daemon per second (default 2).
    pub handoffs_per_second: Option<u32>,
    /// A free target is claimed after the claimant's rank times this (default 250ms).
    pub stagger: Option<RawDuration>,
}

/// Validated `cluster:`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub etcd: Vec<String>,
    pub prefix: String,
    pub member: String,
    pub ttl: Duration,
    pub handoffs_per_second: u32,
    pub stagger: Duration,
}

impl ClusterConfig {
    /// How long before the lease could expire a daemon stops remediating: a third of the TTL,
    /// at least 500ms, so a keep-alive in flight or a clock tick never lets two act at once.
    pub fn fence_margin(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(500))
    }
}

/// This host's name, the default member id.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sentinel".into())
}

/// Validates `cluster:`; None when it cannot be used (the problems say why).
pub(crate) fn build_cluster(c: RawCluster, problems: &mut Problems) -> Option<ClusterConfig> {
    let mut ok = true;
    if c.etcd.is_empty() {
        ok = false;
        problems.push(
            "cluster.etcd",
            "no etcd endpoint is given",
            "list the etcd client URLs, e.g. [\"http://etcd1:2379\"], or remove `cluster:` to run one daemon alone",
        );
    }
    for (i, e) in c.etcd.iter().enumerate() {
        let good = url::Url::parse(e)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        if good.is_none() {
            ok = false;
            problems.push(
                format!("cluster.etcd[{i}]"),
                format!("'{e}' is not an etcd client URL"),
                "use http://host:2379 (or https://)",
            );
        }
    }
    let prefix = c.prefix.unwrap_or_else(|| "sentinel-remedy".into());
    let prefix = prefix.trim_matches('/').to_string();
    if prefix.is_empty() || prefix.contains(char::is_whitespace) {
        ok = false;
        problems.push(
            "cluster.prefix",
            format!("'{prefix}' is not a usable key prefix"),
            "use a word such as sentinel-remedy (no spaces)",
        );
    }
    let member = c.member.unwrap_or_else(host_name);
    if member.is_empty() || member.contains(['/', ' ']) {
        ok = false;
        problems.push(
            "cluster.member",
            format!("'{member}' is not a usable member id"),
            "use a name without '/' or spaces, unique per daemon (default: the host name)",
        );
    }
    let ttl = c
        .ttl
        .as_ref()
        .and_then(|d| duration(d, "cluster.ttl", problems))
        .unwrap_or(Duration::from_secs(5));
    if ttl < Duration::from_secs(2) {
        ok = false;
        problems.push(
            "cluster.ttl",
            format!(
                "{} is shorter than etcd can keep a lease",
                format_duration(ttl)
            ),
            "use at least 2s (default 5s)",
        );
    }
    let handoffs_per_second = c.handoffs_per_second.unwrap_or(2);
    if handoffs_per_second == 0 {
        ok = false;
        problems.push(
            "cluster.handoffs_per_second",
            "0 would never give a joining daemon its share",
            "use 1 or more (default 2)",
        );
    }
    let stagger = c
        .stagger
        .as_ref()
        .and_then(|d| duration(d, "cluster.stagger", problems))
        .unwrap_or(Duration::from_millis(250));
    if stagger > ttl {
        ok = false;
        problems.push(
            "cluster.stagger",
            format!(
                "{} is longer than the ttl ({})",
                format_duration(stagger),
                format_duration(ttl)
            ),
            "use a fraction of the ttl (default 250ms)",
        );
    }
    ok.then(|| ClusterConfig {
        etcd: c.etcd,
        prefix,
        member,
        ttl,
        handoffs_per_second,
        stagger,
    })
}

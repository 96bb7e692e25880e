//! Targets found at run time instead of listed: PostgreSQL containers on the Docker Engine,
//! opted in by label (`labels`: labels → a validated target; `docker`: the Engine watcher that
//! keeps the set current). The Supervisor merges the set with the registry's targets.

pub mod docker;
pub mod labels;

use crate::config::TargetConfig;
use std::collections::BTreeMap;

/// One discovered target and the container it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredTarget {
    pub cfg: TargetConfig,
    pub container_id: String,
    /// The container's name.
    pub container: String,
    /// The container's labels under the namespace, as `status` shows them (no secrets).
    pub labels: BTreeMap<String, String>,
    /// Later containers that claim this target's name too and are not watched.
    pub contested_by: Vec<String>,
}

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
    /// The container's id. A target name held by a new id is a re-created container (compose
    /// after a label change): a new container, with a fresh restart budget, not a change.
    pub container_id: String,
    /// The container's name.
    pub container: String,
    /// The container's labels under the namespace, as `status` shows them (no secrets).
    pub labels: BTreeMap<String, String>,
    /// Later containers that claim this target's name too and are not watched.
    pub contested_by: Vec<String>,
    /// The networks the container is on (sorted), for `status` and the unreachable error.
    pub networks: Vec<String>,
}

/// What discovery found: the targets to watch, and the containers it gave up waiting for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiscoveredSet {
    pub targets: Vec<DiscoveredTarget>,
    /// Running, labelled containers whose server did not accept a connection from the daemon
    /// within `defaults.recovery_timeout`: most likely on a network the daemon cannot reach.
    /// Shown by `status` as `unreachable`; not watched (no Monitor) until they answer.
    pub unreachable: Vec<DiscoveredTarget>,
}

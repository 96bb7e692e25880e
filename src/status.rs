//! What `/status`, the status page and `sentinel-remedy status` show for one target: the
//! Supervisor assembles it from each Monitor's record.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What `/status` shows for one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub name: String,
    /// `host:port/db`.
    pub endpoint: String,
    /// healthy, suspect, archiving, healing, recovering, held, escalated, unhealed; for a
    /// discovered container the daemon cannot connect to, unreachable (no Monitor runs).
    pub state: String,
    pub up: Option<bool>,
    pub last_probe_at: Option<DateTime<Utc>>,
    pub last_probe_latency_ms: Option<f64>,
    pub consecutive_failures: u32,
    pub restarts_in_window: usize,
    pub max_restarts: u32,
    pub open_incident: Option<String>,
    /// The open incident's likely cause (its sentence), once classified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub maintenance_until: Option<DateTime<Utc>>,
    pub monitor_alive: bool,
    /// For a discovered target: its container and the container's labels under the namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovered: Option<DiscoveredFrom>,
    /// Cluster mode: the member (daemon) that owns the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The flight recorder's newest sample (`flight`): the time and the known vitals.
    pub vitals: Option<crate::flight::Latest>,
    /// Early warnings raised and not cleared (`disk_nearly_full`, ...).
    pub warnings: Vec<String>,
}

/// Where a discovered target came from, for `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiscoveredFrom {
    pub container: String,
    /// The container's id: a new id under the same target name is a re-created container.
    pub container_id: String,
    /// The networks the container is on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Later containers whose labels claim this target's name too: not watched, the name
    /// stays with `container`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contested_by: Vec<String>,
}

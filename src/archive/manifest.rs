//! `manifest.json`: what a bundle holds and why it exists. Written after the files, and again
//! after the heal, always through a rename so a reader never sees half a manifest.

use super::{FileEntry, Missing};
use crate::failure::ProbeFailure;
use crate::heal_report::HealReport;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// What the manifest says about an incident.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentFacts {
    /// Also the bundle's directory name.
    pub incident_id: crate::ids::IncidentId,
    pub target: String,
    /// The sortable UTC stamp shared by every file of the bundle.
    pub stamp: String,
    pub endpoint: String,
    pub failure: ProbeFailure,
    pub hard_failure: bool,
    pub first_failure_at: DateTime<Utc>,
    pub declared_at: DateTime<Utc>,
    /// What the failure class calls for: `restart` or `alert`.
    pub action: &'static str,
    /// What the failure means and what to do.
    pub diagnosis: &'static str,
}

/// The manifest's word on the SQL snapshot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotSummary {
    /// The server answered SQL (sections may still hold per-section errors).
    pub answered: bool,
    pub captured_at: DateTime<Utc>,
    /// Why the server could not answer.
    pub error: Option<String>,
    /// Section → what the snapshot's limits cut from it (as in `sql-snapshot.json`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub truncated: std::collections::BTreeMap<String, String>,
}

/// The manifest's content.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub incident_id: String,
    pub target: String,
    pub endpoint: String,
    pub failure: ProbeFailure,
    pub failure_class: &'static str,
    pub hard_failure: bool,
    /// `restart` or `alert`, by the target's policy for this failure class.
    pub action: &'static str,
    pub diagnosis: &'static str,
    pub first_failure_at: DateTime<Utc>,
    pub declared_at: DateTime<Utc>,
    pub archived_at: DateTime<Utc>,
    pub files: Vec<FileEntry>,
    pub missing: Vec<Missing>,
    /// Filled in once the heal has run.
    pub heal: Option<HealReport>,
    /// Whether the server could still answer SQL while suspect (`sql-snapshot.json`).
    pub sql_snapshot: Option<SnapshotSummary>,
    /// The likely cause (also `cause.json`), once classified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::cause::Cause>,
    pub sentinel_version: &'static str,
}

impl Manifest {
    pub fn new(facts: &IncidentFacts, files: Vec<FileEntry>, missing: Vec<Missing>) -> Self {
        Self {
            incident_id: facts.incident_id.to_string(),
            target: facts.target.clone(),
            endpoint: facts.endpoint.clone(),
            failure: facts.failure.clone(),
            failure_class: facts.failure.class.label(),
            hard_failure: facts.hard_failure,
            action: facts.action,
            diagnosis: facts.diagnosis,
            first_failure_at: facts.first_failure_at,
            declared_at: facts.declared_at,
            archived_at: Utc::now(),
            files,
            missing,
            heal: None,
            sql_snapshot: None,
            cause: None,
            sentinel_version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Writes `manifest.json` into `dir` atomically and durably: the directory is synced after
    /// the rename, which also makes the names of the files written before it durable.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(".manifest.json.tmp");
        let mut body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        body.push(b'\n');
        let mut f = crate::fsutil::create_private(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join("manifest.json"))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

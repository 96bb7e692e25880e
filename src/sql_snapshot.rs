//! What SQL could still tell about a failing server, as the bundle's `sql-snapshot.json` holds
//! it. The type alone, a leaf: `probe::snapshot` captures it and the archive writes it, and the
//! archive sits below the probe's container-log reading.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The captured evidence, stored as `sql-snapshot.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SqlSnapshot {
    pub captured_at: DateTime<Utc>,
    /// Whether the server answered at all.
    pub answered: bool,
    /// Why it did not, or why a section is missing.
    pub error: Option<String>,
    /// Section name → rows (JSON), or an error string for that section.
    pub sections: serde_json::Map<String, Value>,
    /// Section name → what the snapshot's limits cut from it, naming the limit (rows over the
    /// row limit dropped, the read limit reached, not answered within the probe timeout).
    /// Absent when nothing was cut.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub truncated: BTreeMap<String, String>,
}

impl SqlSnapshot {
    /// A snapshot that was not attempted (the postmaster is gone).
    pub fn not_taken(reason: impl Into<String>) -> Self {
        Self {
            captured_at: Utc::now(),
            answered: false,
            error: Some(reason.into()),
            sections: Default::default(),
            truncated: BTreeMap::new(),
        }
    }
}

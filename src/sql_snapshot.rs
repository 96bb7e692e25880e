//! What SQL could still tell about a failing server, as the bundle's `sql-snapshot.json` holds
//! it. The type alone, a leaf: `probe::snapshot` captures it and the archive writes it, and the
//! archive sits below the probe's container-log reading.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

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
}

impl SqlSnapshot {
    /// A snapshot that was not attempted (the postmaster is gone).
    pub fn not_taken(reason: impl Into<String>) -> Self {
        Self {
            captured_at: Utc::now(),
            answered: false,
            error: Some(reason.into()),
            sections: Default::default(),
        }
    }
}

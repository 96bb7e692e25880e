//! What a heal did, as the Healer reports it to the Monitor and the Archiver (the bundle's
//! heal log and manifest): the attempts, the starts that count against the budget, and why a
//! heal stopped without retrying.
//!
//! Apart from `heal`, whose Docker backend sits above the archive: the archive writes this
//! report into the bundle, so it must be a leaf both can read.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::PathBuf;

/// What the heal did.
#[derive(Debug, Clone, Serialize)]
pub struct HealReport {
    /// The server accepts connections (or is starting up) after the last attempt.
    pub success: bool,
    pub attempts: Vec<HealAttempt>,
    /// The combined output of every attempt.
    #[serde(skip)]
    pub log_path: Option<PathBuf>,
    /// Set when the heal stopped on a failure retrying cannot fix (a missing container, a
    /// forbidden Engine, a restart policy that did not act).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<HealFailure>,
    /// Attempts that started (or restarted) a server: each one counts against the budget.
    pub starts: u32,
}

impl HealReport {
    /// A heal that never ran.
    pub fn none() -> Self {
        Self {
            success: false,
            attempts: vec![],
            log_path: None,
            failure: None,
            starts: 0,
        }
    }
}

/// Why a heal stopped without retrying.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HealFailure {
    /// `container_missing`, `forbidden`, `ambiguous`, `restart_policy_stalled`.
    pub kind: &'static str,
    /// What happened and what to do.
    pub detail: String,
    /// What the incident turns out to be, when the heal learnt it (a missing container).
    #[serde(skip)]
    pub class: Option<crate::failure::FailureClass>,
    /// Why the start failed, from its own output and the server log (a configuration error
    /// with its file and line, a port held by another process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::cause::Cause>,
}

/// One run of the heal action.
#[derive(Debug, Clone, Serialize)]
pub struct HealAttempt {
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// Exit code, when a command ran to completion.
    pub exit_code: Option<i32>,
    /// What was concluded: "accepting connections", "exit 1", "still refusing", "timed out".
    pub verdict: String,
}

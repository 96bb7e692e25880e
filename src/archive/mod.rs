//! Forensic bundles: the files that explain an incident, hashed and listed in `manifest.json`.

pub mod local;
pub mod manifest;

use serde::{Deserialize, Serialize};

/// A file in a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    /// Name inside the bundle.
    pub name: String,
    /// Where it was copied from.
    pub source: String,
    pub size: u64,
    pub sha256: String,
}

/// A pattern that matched nothing, or a file that could not be read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Missing {
    pub pattern: String,
    pub reason: String,
}

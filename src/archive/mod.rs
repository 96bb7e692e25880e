//! Forensic bundles: the files that explain an incident, hashed and listed in `manifest.json`.

pub mod local;
pub mod manifest;
pub mod s3;
pub mod spool;
pub mod uploader;

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
    /// The source was larger than `archive.max_file_size`: only its newest bytes were kept.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The source's size when it was truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_size: Option<u64>,
}

/// A pattern that matched nothing, or a file that could not be read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Missing {
    pub pattern: String,
    pub reason: String,
}

//! Forensic bundles: the files that explain an incident, hashed and listed in `manifest.json`.

pub mod local;
pub mod manifest;
pub mod s3;
pub mod spool;
pub mod uploader;

use serde::{Deserialize, Serialize};

/// Where a bundle went and what it holds.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    /// Where the bundle is, for people: the S3 URL, the local directory, or both, or the spool
    /// path while the upload is pending.
    pub location: String,
    /// The bundle's directory on this host (local sink, or the spool's staging copy).
    pub dir: std::path::PathBuf,
    /// Files copied, with sizes and hashes.
    pub files: Vec<FileEntry>,
    /// Patterns that matched nothing or files that could not be read.
    pub missing: Vec<Missing>,
    /// Whether the SQL snapshot was taken and answered.
    pub sql_snapshot: Option<manifest::SnapshotSummary>,
    /// The likely cause, once classified (`cause.json`).
    pub cause: Option<Box<crate::cause::Cause>>,
}

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

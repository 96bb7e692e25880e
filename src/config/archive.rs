//! `archive:`: where forensic bundles go (a local directory, S3, or both).

use super::duration::{checked as duration, RawDuration};
use super::error::Problems;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `archive:`: where forensic bundles go.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    /// A local directory sink.
    pub local: Option<RawLocalArchive>,
    /// An S3 (or S3-compatible) sink; with `local` too, bundles go to both (local first).
    pub s3: Option<RawS3Archive>,
    /// Longest the heal waits for the bundle (default 30s): a container's evidence and the S3
    /// upload share it; after it, the bundle stays in the spool and is uploaded in the background.
    pub timeout: Option<RawDuration>,
    /// Per-file byte cap (default 64MiB): bigger files keep their newest bytes.
    pub max_file_size: Option<RawSize>,
}

/// `archive.s3:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3Archive {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix; bundles go to `{prefix}/{timestamp}-{target}/` (default `incidents`).
    pub prefix: Option<String>,
    /// AWS region (default: the AWS chain's, else us-east-1).
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible store (MinIO, Ceph, a local test server).
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible stores.
    pub force_path_style: Option<bool>,
    /// Server-side encryption: `AES256` or `aws:kms`.
    pub sse: Option<String>,
    /// KMS key for `sse: aws:kms` (default: the bucket's AWS-managed key).
    pub sse_kms_key_id: Option<String>,
    /// Storage class, e.g. STANDARD, STANDARD_IA, INTELLIGENT_TIERING.
    pub storage_class: Option<String>,
    /// Files of this size or more go up in multipart uploads of this part size (default 8MiB,
    /// at least 5MiB); memory per upload stays at one part.
    pub part_size: Option<RawSize>,
}

/// A byte size: a bare integer of bytes, or `512KiB`, `8MiB`, `1GiB` (also KB, MB, GB).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    /// A number of bytes.
    Bytes(u64),
    /// A number with a unit, judged by `size::parse_size`.
    Text(String),
}

/// `archive.local:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalArchive {
    /// Directory that receives `{timestamp}-{target}/` bundles (created if missing).
    pub dir: String,
}

/// Where bundles go and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveConfig {
    /// The local sink; None when only S3 is configured (bundles are then staged in the spool).
    pub local_dir: Option<PathBuf>,
    pub s3: Option<S3Config>,
    /// Longest the heal waits for a container's evidence and the S3 upload, together.
    pub timeout: Duration,
    /// Per-file cap; the newest bytes are kept.
    pub max_file_size: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            local_dir: Some(PathBuf::from("./incidents")),
            s3: None,
            timeout: Duration::from_secs(30),
            max_file_size: 64 << 20,
        }
    }
}

/// The S3 sink.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Config {
    pub bucket: String,
    /// Without leading or trailing slashes; may be empty.
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub part_size: u64,
}

impl S3Config {
    /// `s3://bucket/prefix/{id}/`.
    pub fn url_for(&self, bundle: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key_for(bundle, ""))
    }

    /// The object key of `file` in the bundle (`file` empty: the bundle's key prefix).
    pub fn key_for(&self, bundle: &str, file: &str) -> String {
        if self.prefix.is_empty() {
            format!("{bundle}/{file}")
        } else {
            format!("{}/{bundle}/{file}", self.prefix)
        }
    }
}

/// Validates `archive:`; without `local` but with `s3`, bundles are only staged locally.
pub(crate) fn build_archive(raw: RawArchive, problems: &mut Problems) -> ArchiveConfig {
    let mut a = ArchiveConfig::default();
    if raw.s3.is_some() && raw.local.is_none() {
        a.local_dir = None;
    }
    if let Some(l) = raw.local {
        if l.dir.trim().is_empty() {
            problems.push(
                "archive.local.dir",
                "the directory is empty",
                "give a directory such as ./incidents",
            );
        }
        a.local_dir = Some(PathBuf::from(l.dir));
    }
    if let Some(t) = raw
        .timeout
        .as_ref()
        .and_then(|d| duration(d, "archive.timeout", problems))
    {
        if t.is_zero() {
            problems.push(
                "archive.timeout",
                "a timeout of 0 would never wait for S3",
                "use a duration such as 30s",
            );
        }
        a.timeout = t;
    }
    if let Some(n) = raw
        .max_file_size
        .as_ref()
        .and_then(|s| size(s, "archive.max_file_size", problems))
    {
        if n < 4096 {
            problems.push(
                "archive.max_file_size",
                format!("{n} bytes would keep almost nothing of a log"),
                "use at least 4KiB (default 64MiB)",
            );
        }
        a.max_file_size = n;
    }
    a.s3 = raw.s3.map(|s3| build_s3(s3, problems));
    a
}

/// Validates `archive.s3:`; the sink is kept even with problems, which fail the load anyway.
fn build_s3(s3: RawS3Archive, problems: &mut Problems) -> S3Config {
    let at = "archive.s3";
    if !valid_bucket(&s3.bucket) {
        problems.push(format!("{at}.bucket"), format!("'{}' is not a valid bucket name", s3.bucket),
            "use 3 to 63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit");
    }
    if let Some(e) = &s3.endpoint {
        match url::Url::parse(e) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => problems.push(
                format!("{at}.endpoint"),
                format!("'{e}' is not an http(s) URL"),
                "use the store's URL, e.g. https://minio.internal:9000, or remove it for AWS",
            ),
        }
    }
    check_encryption(&s3, at, problems);
    check_storage_class(&s3, at, problems);
    let part_size = s3
        .part_size
        .as_ref()
        .and_then(|s| size(s, &format!("{at}.part_size"), problems))
        .unwrap_or(8 << 20);
    if !(5 << 20..=5 << 30).contains(&part_size) {
        problems.push(
            format!("{at}.part_size"),
            format!("{part_size} bytes is outside S3's part limits"),
            "use 5MiB to 5GiB (default 8MiB)",
        );
    }
    let prefix = s3.prefix.unwrap_or_else(|| "incidents".into());
    if let Err(why) = s3_prefix(&prefix) {
        problems.push(
            format!("{at}.prefix"),
            format!("'{prefix}' is not a usable key prefix: {why}"),
            "use segments of letters, digits and ! - _ . * ' ( ) (S3's safe characters) joined by '/', e.g. incidents/prod",
        );
    }
    S3Config {
        bucket: s3.bucket,
        prefix: prefix.trim_end_matches('/').to_string(),
        region: s3.region.filter(|r| !r.is_empty()),
        endpoint: s3.endpoint.filter(|e| !e.is_empty()),
        force_path_style: s3.force_path_style.unwrap_or(false),
        sse: s3.sse,
        sse_kms_key_id: s3.sse_kms_key_id,
        storage_class: s3.storage_class,
        part_size,
    }
}

/// `sse` and `sse_kms_key_id`.
fn check_encryption(s3: &RawS3Archive, at: &str, problems: &mut Problems) {
    if let Some(sse) = &s3.sse {
        if sse != "AES256" && sse != "aws:kms" {
            problems.push(
                format!("{at}.sse"),
                format!("'{sse}' is not a server-side encryption mode"),
                "use AES256 or aws:kms",
            );
        }
    }
    if s3.sse_kms_key_id.is_some() && s3.sse.as_deref() != Some("aws:kms") {
        problems.push(
            format!("{at}.sse_kms_key_id"),
            "a KMS key is set but sse is not aws:kms",
            "set sse: aws:kms or remove sse_kms_key_id",
        );
    }
}

/// `storage_class`: one S3 knows.
fn check_storage_class(s3: &RawS3Archive, at: &str, problems: &mut Problems) {
    const CLASSES: &[&str] = &[
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "GLACIER_IR",
        "EXPRESS_ONEZONE",
    ];
    if let Some(c) = &s3.storage_class {
        if !CLASSES.contains(&c.as_str()) {
            problems.push(
                format!("{at}.storage_class"),
                format!("'{c}' is not an S3 storage class"),
                format!("use one of {}", CLASSES.join(", ")),
            );
        }
    }
}

/// S3's bucket naming rules (the common subset).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// An S3 key prefix that stays where it says (empty: the bucket's root): relative, no `.`,
/// `..` or empty segments, only S3's safe characters (every S3-compatible store takes them).
fn s3_prefix(prefix: &str) -> Result<(), String> {
    if prefix.starts_with('/') {
        return Err("it starts with '/'".into());
    }
    if prefix.len() > 512 {
        return Err(format!(
            "it has {} characters (keys are 1024 at most)",
            prefix.len()
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()/".contains(*c)))
    {
        return Err(format!("'{}' is not allowed", c.escape_default()));
    }
    let trimmed = prefix.trim_end_matches('/');
    if !trimmed.is_empty()
        && trimmed
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("it has an empty, '.' or '..' segment".into());
    }
    Ok(())
}

/// A byte size from the registry, recording a problem at `at` when it does not parse.
fn size(raw: &RawSize, at: &str, problems: &mut Problems) -> Option<u64> {
    let parsed = match raw {
        RawSize::Bytes(n) => Ok(*n),
        RawSize::Text(t) => super::size::parse_size(t),
    };
    parsed
        .map_err(|e| problems.push(at, e, "use 512KiB, 8MiB, 1GiB or a number of bytes"))
        .ok()
}

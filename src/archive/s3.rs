//! The S3 sink: uploads a bundle directory to `{prefix}/{bundle}/` through aws-sdk-s3, with
//! the manifest last so a bundle with a manifest is complete. Small files stream from disk in
//! one PUT; files of `part_size` or more go up in multipart uploads holding one part in memory.
//! It needs only PutObject and the multipart calls (no read or list permission): which files
//! are already up is remembered by the caller, not asked of the bucket.

use crate::config::S3Config;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Why an upload failed, in words an operator acts on; also the metric/log label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S3ErrorKind {
    /// The credentials are valid but not allowed to write there.
    AccessDenied,
    /// The access key is unknown or the signature does not match.
    InvalidCredentials,
    /// No credentials were found in the AWS chain.
    NoCredentials,
    NoSuchBucket,
    Timeout,
    /// The store could not be reached.
    Network,
    /// A local file could not be read.
    LocalFile,
    Other,
}

impl S3ErrorKind {
    pub fn label(self) -> &'static str {
        match self {
            S3ErrorKind::AccessDenied => "access_denied",
            S3ErrorKind::InvalidCredentials => "invalid_credentials",
            S3ErrorKind::NoCredentials => "no_credentials",
            S3ErrorKind::NoSuchBucket => "no_such_bucket",
            S3ErrorKind::Timeout => "timeout",
            S3ErrorKind::Network => "network",
            S3ErrorKind::LocalFile => "local_file",
            S3ErrorKind::Other => "other",
        }
    }

    /// What the operator should do about it.
    pub fn fix(self) -> &'static str {
        match self {
            S3ErrorKind::AccessDenied => "grant s3:PutObject and the multipart actions on the prefix to the daemon's role or user",
            S3ErrorKind::InvalidCredentials => "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile or role) the daemon uses",
            S3ErrorKind::NoCredentials => "provide credentials through the AWS chain: environment, profile, or a container/instance role",
            S3ErrorKind::NoSuchBucket => "create the bucket or correct archive.s3.bucket (and region)",
            S3ErrorKind::Timeout | S3ErrorKind::Network => "check the endpoint, DNS and network path to the store; uploads are retried",
            S3ErrorKind::LocalFile => "check the spool directory's disk and permissions",
            S3ErrorKind::Other => "see the error text",
        }
    }
}

/// One failed S3 call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} s3://{bucket}/{key}: {kind_label}: {message}", kind_label = kind.label())]
pub struct S3Error {
    pub kind: S3ErrorKind,
    pub op: &'static str,
    pub bucket: String,
    pub key: String,
    pub message: String,
}

/// Applies the configured encryption and storage class to a PutObject or
/// CreateMultipartUpload request (two builder types with the same setters).
macro_rules! object_options {
    ($req:expr, $cfg:expr) => {{
        let mut req = $req;
        if let Some(sse) = &$cfg.sse {
            req = req.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        if let Some(k) = &$cfg.sse_kms_key_id {
            req = req.ssekms_key_id(k);
        }
        if let Some(c) = &$cfg.storage_class {
            req = req.storage_class(StorageClass::from(c.as_str()));
        }
        req
    }};
}

/// An S3 client bound to one bucket and prefix.
pub struct S3Sink {
    client: aws_sdk_s3::Client,
    pub cfg: S3Config,
}

/// Files of a bundle directory in upload order: everything, then `manifest.json`.
pub fn upload_order(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort_by_key(|p| {
        (
            p.file_name().is_some_and(|n| n == "manifest.json"),
            p.clone(),
        )
    });
    Ok(files)
}

impl S3Sink {
    /// Builds the client from the AWS chain (environment, profile, container or instance role).
    pub async fn new(cfg: &S3Config) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let shared = loader.load().await;
        // Checksums only where S3 requires them: the SDK's default wraps streamed bodies in
        // aws-chunked encoding with a trailing checksum, which several S3-compatible stores
        // store verbatim. Integrity is kept by the SHA-256 in each object's metadata and the
        // manifest.
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            );
        if shared.region().is_none() {
            b = b.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(e) = &cfg.endpoint {
            b = b.endpoint_url(e);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            cfg: cfg.clone(),
        }
    }

    /// Uploads one file to `{prefix}/{bundle}/{name}`, tagged with its SHA-256.
    pub async fn upload_file(
        &self,
        bundle: &str,
        path: &Path,
        sha256: &str,
    ) -> Result<(), S3Error> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = self.cfg.key_for(bundle, &name);
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| self.local_error("stat", &key, path, e))?
            .len();
        if size >= self.cfg.part_size {
            self.multipart(&key, path, sha256).await
        } else {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| self.err("PutObject", &key, S3ErrorKind::LocalFile, e.to_string()))?;
            let req = self
                .client
                .put_object()
                .bucket(&self.cfg.bucket)
                .key(&key)
                .body(body)
                .metadata("sha256", sha256)
                .content_type(content_type(&name));
            let req = object_options!(req, self.cfg);
            req.send()
                .await
                .map_err(|e| self.sdk_error("PutObject", &key, e))?;
            Ok(())
        }
    }

    async fn multipart(&self, key: &str, path: &Path, sha256: &str) -> Result<(), S3Error> {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .metadata("sha256", sha256)
            .content_type("text/plain");
        let req = object_options!(req, self.cfg);
        let created = req
            .send()
            .await
            .map_err(|e| self.sdk_error("CreateMultipartUpload", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        match self.parts(key, path, &upload_id).await {
            Ok(parts) => {
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("CompleteMultipartUpload", key, e))?;
                Ok(())
            }
            Err(e) => {
                // Abandoned parts cost money until a lifecycle rule removes them: abort now.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.cfg.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    /// Reads and sends one part at a time: memory stays at `part_size`.
    async fn parts(
        &self,
        key: &str,
        path: &Path,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>, S3Error> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| self.local_error("open", key, path, e))?;
        let mut parts = Vec::new();
        let part_size = self.cfg.part_size as usize;
        for number in 1.. {
            let mut buf = Vec::with_capacity(part_size);
            (&mut file)
                .take(part_size as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| self.local_error("read", key, path, e))?;
            if buf.is_empty() && number > 1 {
                break;
            }
            let last = buf.len() < part_size;
            let out = self
                .client
                .upload_part()
                .bucket(&self.cfg.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| self.sdk_error("UploadPart", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
            if last {
                break;
            }
        }
        Ok(parts)
    }

    fn err(&self, op: &'static str, key: &str, kind: S3ErrorKind, message: String) -> S3Error {
        S3Error {
            kind,
            op,
            bucket: self.cfg.bucket.clone(),
            key: key.to_string(),
            message,
        }
    }

    fn local_error(&self, what: &str, key: &str, path: &Path, e: std::io::Error) -> S3Error {
        self.err(
            "upload",
            key,
            S3ErrorKind::LocalFile,
            format!("cannot {what} {}: {e}", path.display()),
        )
    }

    fn sdk_error<E, R>(&self, op: &'static str, key: &str, e: SdkError<E, R>) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let kind = classify(&e);
        let message = match e.code() {
            Some(code) => format!("{code}: {}", e.message().unwrap_or("")),
            None => DisplayErrorContext(&e).to_string(),
        };
        self.err(op, key, kind, message)
    }
}

fn classify<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> S3ErrorKind {
    match e.code() {
        Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem") => {
            return S3ErrorKind::AccessDenied
        }
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "TokenRefreshRequired",
        ) => return S3ErrorKind::InvalidCredentials,
        Some("NoSuchBucket") => return S3ErrorKind::NoSuchBucket,
        Some(_) => return S3ErrorKind::Other,
        None => {}
    }
    match e {
        SdkError::TimeoutError(_) => S3ErrorKind::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => S3ErrorKind::Timeout,
        SdkError::DispatchFailure(d) if d.is_io() => S3ErrorKind::Network,
        SdkError::DispatchFailure(_) => S3ErrorKind::Network,
        other => {
            let text = match other {
                SdkError::ConstructionFailure(c) => format!("{c:?}"),
                _ => String::new(),
            }
            .to_ascii_lowercase();
            if text.contains("credential") || text.contains("identity") {
                S3ErrorKind::NoCredentials
            } else {
                S3ErrorKind::Other
            }
        }
    }
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".json") {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    }
}

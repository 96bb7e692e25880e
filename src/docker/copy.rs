//! Evidence copied out of a container through the Engine API: the files under each path (the
//! tar stream goes to disk, never whole into memory), and the tail of the container's own
//! stdout/stderr log. Works on stopped and paused containers too.

use super::{container, DockerClient, DockerError};
use crate::archive::{FileEntry, Missing};
use crate::config::DockerForensics;
use bollard::container::{DownloadFromContainerOptions, LogOutput, LogsOptions};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// Name of the container log in a bundle.
pub const CONTAINER_LOG: &str = "container.log";

/// Copies the container's evidence into `dir`; `used` holds the names already taken there.
pub async fn collect(
    client: &DockerClient,
    spec: &DockerForensics,
    dir: &Path,
    cap: u64,
    used: &mut HashSet<String>,
) -> (Vec<FileEntry>, Vec<Missing>) {
    let mut files = Vec::new();
    let mut missing = Vec::new();
    let c = &spec.container;
    let id = match client
        .call(|api, ep| async move { container::resolve(&api, &ep, c).await })
        .await
    {
        Ok(id) => id,
        Err(e) => {
            missing.push(Missing {
                pattern: format!("docker:{c}"),
                reason: e.to_string(),
            });
            return (files, missing);
        }
    };
    for path in &spec.paths {
        match copy_path(client, &id, c, path, dir, cap, used).await {
            Ok(found) if found.is_empty() => missing.push(Missing {
                pattern: format!("{c}:{path}"),
                reason: "no regular file there".into(),
            }),
            Ok(found) => files.extend(found.into_iter().map(|mut f| {
                f.source = format!("{c}:{}", f.source);
                f
            })),
            Err(reason) => missing.push(Missing {
                pattern: format!("{c}:{path}"),
                reason,
            }),
        }
    }
    if spec.log_tail > 0 {
        match log_tail(client, &id, c, spec.log_tail, &dir.join(CONTAINER_LOG)).await {
            Ok((size, sha256)) => {
                used.insert(CONTAINER_LOG.into());
                files.push(FileEntry {
                    name: CONTAINER_LOG.into(),
                    source: format!("{c}: docker logs --tail {}", spec.log_tail),
                    size,
                    sha256,
                    truncated: false,
                    original_size: None,
                });
            }
            Err(e) => missing.push(Missing {
                pattern: format!("{c}: docker logs"),
                reason: e.to_string(),
            }),
        }
    }
    (files, missing)
}

/// Copies `path` out of the container into `dir`: the tar goes to disk, then its files are
/// unpacked under names not yet in `used` (which gains them).
async fn copy_path(
    client: &DockerClient,
    id: &str,
    c: &crate::config::ContainerRef,
    path: &str,
    dir: &Path,
    cap: u64,
    used: &mut HashSet<String>,
) -> Result<Vec<FileEntry>, String> {
    let tar = dir.join(format!(".docker-copy-{}.tar", used.len()));
    let r = async {
        download(client, id, c, path, &tar)
            .await
            .map_err(|e| e.to_string())?;
        let (tar, dir, path, mut names) = (
            tar.clone(),
            dir.to_path_buf(),
            path.to_string(),
            used.clone(),
        );
        let (found, names) = tokio::task::spawn_blocking(move || {
            extract(&tar, &dir, &path, cap, &mut names).map(|found| (found, names))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("could not unpack: {e}"))?;
        *used = names;
        Ok(found)
    }
    .await;
    let _ = std::fs::remove_file(&tar);
    r
}

/// Streams `GET /containers/{id}/archive?path=` to `dest`.
async fn download(
    client: &DockerClient,
    id: &str,
    c: &crate::config::ContainerRef,
    path: &str,
    dest: &Path,
) -> Result<(), DockerError> {
    client
        .call(|api, ep| async move {
            let mut out = tokio::fs::File::create(dest)
                .await
                .map_err(|e| DockerError::Api(format!("cannot write {}: {e}", dest.display())))?;
            let mut stream =
                api.download_from_container(id, Some(DownloadFromContainerOptions { path }));
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(
                        |e| match DockerError::from_bollard(e, &ep, &c.to_string()) {
                            // A 404 here is the path, not the container.
                            DockerError::NotFound { .. } => {
                                DockerError::Api(format!("no such file or directory: {path}"))
                            }
                            other => other,
                        },
                    )?;
                out.write_all(&chunk).await.map_err(|e| {
                    DockerError::Api(format!("cannot write {}: {e}", dest.display()))
                })?;
            }
            out.flush()
                .await
                .map_err(|e| DockerError::Api(e.to_string()))?;
            Ok(())
        })
        .await
}

/// Unpacks the regular files of a tar into `dir` under flat unique names, each cut to its newest
/// `cap` bytes and hashed.
fn extract(
    tar: &Path,
    dir: &Path,
    requested: &str,
    cap: u64,
    used: &mut HashSet<String>,
) -> io::Result<Vec<FileEntry>> {
    let mut archive = tar::Archive::new(std::fs::File::open(tar)?);
    let mut out = Vec::new();
    // The archive's paths are relative to the requested path's parent.
    let parent = Path::new(requested).parent().unwrap_or(Path::new("/"));
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let rel = entry.path()?.into_owned();
        let source = parent.join(&rel);
        let name = crate::archive::local::unique_name(&source, used);
        let len = entry.size();
        // Skip to the newest `cap` bytes: the end of a log is what explains the crash.
        if len > cap {
            io::copy(&mut (&mut entry).take(len - cap), &mut io::sink())?;
        }
        let (size, sha256) = crate::archive::local::write_hashed(&mut entry, &dir.join(&name))?;
        out.push(FileEntry {
            name,
            source: source.display().to_string(),
            size,
            sha256,
            truncated: len > cap,
            original_size: (len > cap).then_some(len),
        });
    }
    Ok(out)
}

/// Writes the last `lines` of the container's stdout and stderr, with timestamps.
async fn log_tail(
    client: &DockerClient,
    id: &str,
    c: &crate::config::ContainerRef,
    lines: u32,
    dest: &Path,
) -> Result<(u64, String), DockerError> {
    client
        .call(|api, ep| async move {
            let mut out = tokio::fs::File::create(dest)
                .await
                .map_err(|e| DockerError::Api(format!("cannot write {}: {e}", dest.display())))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut stream = api.logs(
                id,
                Some(LogsOptions::<String> {
                    stdout: true,
                    stderr: true,
                    timestamps: true,
                    tail: lines.to_string(),
                    ..Default::default()
                }),
            );
            while let Some(item) = stream.next().await {
                let item = item.map_err(|e| DockerError::from_bollard(e, &ep, &c.to_string()))?;
                let (tag, bytes): (&[u8], &[u8]) = match &item {
                    LogOutput::StdErr { message } => (b"stderr ", message),
                    LogOutput::StdOut { message } => (b"stdout ", message),
                    LogOutput::Console { message } => (b"", message),
                    LogOutput::StdIn { .. } => continue,
                };
                for part in [tag, bytes] {
                    hasher.update(part);
                    size += part.len() as u64;
                    out.write_all(part).await.map_err(|e| {
                        DockerError::Api(format!("cannot write {}: {e}", dest.display()))
                    })?;
                }
            }
            out.sync_all()
                .await
                .map_err(|e| DockerError::Api(e.to_string()))?;
            Ok((size, hex::encode(hasher.finalize())))
        })
        .await
}

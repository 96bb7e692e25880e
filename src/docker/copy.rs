//! Evidence copied out of a container: the files under each path, read from the host side of
//! its volume where this process can ([`super::hostpath`]), else through the Engine API,
//! unpacked as the tar streams in (never whole on disk or in memory), within [`Limits`] either
//! way; and the tail of the container's own stdout/stderr log. Works on stopped and paused
//! containers too.

use super::hostpath::{self, HostCopy};
use super::{container, DockerClient, DockerError};
use crate::archive::{FileEntry, Missing};
use crate::config::DockerForensics;
use bollard::container::{DownloadFromContainerOptions, LogOutput, LogsOptions};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

pub use super::unpack::Limits;
use super::unpack::{extract, Extracted};
pub use crate::archive::local::CONTAINER_LOG;

/// A container's evidence, and where its paths were read.
#[derive(Debug, Default)]
pub struct Collected {
    pub files: Vec<FileEntry>,
    pub missing: Vec<Missing>,
    /// Paths read from the host side of their mount.
    pub from_host: usize,
    /// Paths copied through the Engine.
    pub from_engine: usize,
}

impl Collected {
    /// Where the paths were read, for the archive's timing log: `host`, `engine`, `host+engine`
    /// or `none`.
    pub fn source(&self) -> &'static str {
        match (self.from_host > 0, self.from_engine > 0) {
            (true, false) => "host",
            (false, true) => "engine",
            (true, true) => "host+engine",
            (false, false) => "none",
        }
    }

    /// Adds what one path (`pattern`, named `c:path`) yielded, with the container's name on
    /// each entry.
    fn add(
        &mut self,
        c: &crate::config::ContainerRef,
        pattern: String,
        copied: Result<Extracted, String>,
    ) {
        match copied {
            Ok(x) => {
                if x.files.is_empty() && x.missing.is_empty() {
                    self.missing.push(Missing {
                        pattern,
                        reason: "no regular file there".into(),
                    });
                }
                self.files.extend(x.files.into_iter().map(|mut f| {
                    f.source = format!("{c}:{}", f.source);
                    f
                }));
                self.missing.extend(x.missing.into_iter().map(|mut m| {
                    m.pattern = format!("{c}:{}", m.pattern);
                    m
                }));
            }
            Err(reason) => self.missing.push(Missing { pattern, reason }),
        }
    }
}

/// Copies the container's evidence into `dir`; `used` holds the names already taken there.
/// Whatever a bound left out is listed in the returned `missing`, with the reason.
///
/// A path inside a volume or bind mount whose directory this process can see is read from the
/// host ([`super::hostpath`]): the same bundle, without the Engine's mount of the container.
/// The others go through the Engine one request at a time, on purpose: it holds the
/// container's lock for as long as an archive stream is open (and mounts its filesystem for
/// each), so a second request waits for the first stream to be read to its end. Started
/// together and read in order, they can wait on each other until the deadline.
pub async fn collect(
    client: &DockerClient,
    spec: &DockerForensics,
    dir: &Path,
    limits: &Limits,
    used: &mut HashSet<String>,
) -> Collected {
    let c = &spec.container;
    let resolved = tokio::time::timeout_at(
        limits.deadline,
        client.call(|api, ep| async move { container::resolve(&api, &ep, c).await }),
    )
    .await;
    let reason = match resolved {
        Ok(Ok(id)) => return collect_from(client, spec, &id, dir, limits, used).await,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "archive.timeout reached before the container was found".into(),
    };
    Collected {
        missing: vec![Missing {
            pattern: format!("docker:{c}"),
            reason,
        }],
        ..Default::default()
    }
}

/// [`collect`] once the container's id is known: its log tail, then each path in order.
async fn collect_from(
    client: &DockerClient,
    spec: &DockerForensics,
    id: &str,
    dir: &Path,
    limits: &Limits,
    used: &mut HashSet<String>,
) -> Collected {
    let mut out = Collected::default();
    let c = &spec.container;
    let mut budget = limits.per_bundle;
    // The container's own log first: it is small, bounded, and often the best evidence, so a
    // huge file in the paths must not eat the time it needs.
    if spec.log_tail > 0 {
        let (file, lost) = container_log(client, id, spec, dir, limits, &mut budget).await;
        if file.is_some() {
            used.insert(CONTAINER_LOG.into());
        }
        out.files.extend(file);
        out.missing.extend(lost);
    }
    // Without its mounts (an error, the deadline), every path goes through the Engine.
    let mounts = if spec.paths.is_empty() {
        container::Mounts::default()
    } else {
        mounts(client, id, limits).await
    };
    for path in &spec.paths {
        let pattern = format!("{c}:{path}");
        if tokio::time::Instant::now() >= limits.deadline {
            out.missing.push(Missing {
                pattern,
                reason: "archive.timeout reached before this path was read".into(),
            });
            continue;
        }
        let on_host = match hostpath::locate(&mounts.points, path) {
            Some(at) => {
                let pid = mounts.pid;
                hostpath::copy_path(at, pid, path, dir, limits, &mut budget, used).await
            }
            None => HostCopy::Engine,
        };
        let copied = match on_host {
            HostCopy::Copied(x) => {
                out.from_host += 1;
                Ok(x)
            }
            // Neither here nor through the Engine: the reason is the manifest's.
            HostCopy::Refused(m) => Err(m.reason),
            HostCopy::Engine => {
                match hostpath::engine_refusal(&mounts, path, limits.deadline).await {
                    Some(m) => Err(m.reason),
                    None => {
                        out.from_engine += 1;
                        copy_path(client, id, c, path, dir, limits, &mut budget, used).await
                    }
                }
            }
        };
        out.add(c, pattern, copied);
    }
    out
}

/// The container's mounts, or none (every path then goes through the Engine).
async fn mounts(client: &DockerClient, id: &str, limits: &Limits) -> container::Mounts {
    let found = tokio::time::timeout_at(
        limits.deadline,
        client.call(|api, ep| async move { container::mounts(&api, &ep, id).await }),
    )
    .await;
    found.ok().and_then(Result::ok).unwrap_or_default()
}

/// The tail of the container's stdout/stderr into [`CONTAINER_LOG`], within the per-file cap
/// and what is left of `budget` (which shrinks by what was written).
async fn container_log(
    client: &DockerClient,
    id: &str,
    spec: &DockerForensics,
    dir: &Path,
    limits: &Limits,
    budget: &mut u64,
) -> (Option<FileEntry>, Option<Missing>) {
    let c = &spec.container;
    let dest = dir.join(CONTAINER_LOG);
    let cap = limits.per_file.min(*budget);
    let r = tokio::time::timeout_at(
        limits.deadline,
        log_tail(client, id, c, spec.log_tail, &dest, cap),
    )
    .await;
    let reason = match r {
        Ok(Ok(t)) => {
            *budget -= t.size.min(*budget);
            let file = FileEntry {
                name: CONTAINER_LOG.into(),
                source: format!("{c}: docker logs --tail {}", spec.log_tail),
                size: t.size,
                sha256: t.sha256,
                truncated: t.cut,
                original_size: None,
            };
            return (Some(file), None);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "archive.timeout reached while reading the container log".into(),
    };
    let missing = Missing {
        pattern: format!("{c}: docker logs"),
        reason,
    };
    (None, Some(missing))
}

/// Copies `path` out of the container into `dir` as the tar streams in: its files are unpacked
/// under names not yet in `used` (which gains them), within `limits` and what is left of
/// `budget` (bytes for the whole container, which shrinks by what was written).
#[allow(clippy::too_many_arguments)]
async fn copy_path(
    client: &DockerClient,
    id: &str,
    c: &crate::config::ContainerRef,
    path: &str,
    dir: &Path,
    limits: &Limits,
    budget: &mut u64,
    used: &mut HashSet<String>,
) -> Result<Extracted, String> {
    // The Engine's stream feeds a blocking tar reader through a small channel: at most 16
    // chunks in flight, and a reader that stops (a bound reached) stops the download.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let timed_out = Arc::new(AtomicBool::new(false));
    let reader = ChannelReader {
        rx,
        buf: bytes::Bytes::new(),
        timed_out: timed_out.clone(),
    };
    let (dir2, requested, mut names, mut left, lim) = (
        dir.to_path_buf(),
        path.to_string(),
        used.clone(),
        *budget,
        limits.clone(),
    );
    let unpack = tokio::task::spawn_blocking(move || {
        let out = extract(reader, &dir2, &requested, &lim, &mut left, &mut names);
        (out, names, left)
    });
    let mut pumping = Box::pin(pump(client, id, c, path, tx));
    let error = tokio::select! {
        r = &mut pumping => r.err().map(|e| e.to_string()),
        _ = tokio::time::sleep_until(limits.deadline) => {
            // Flag first, then drop the sender (with the pump): the reader sees why it ended.
            timed_out.store(true, Ordering::SeqCst);
            None
        }
    };
    drop(pumping);
    let (out, names, left) = unpack.await.map_err(|e| e.to_string())?;
    *used = names;
    *budget = left;
    match error {
        // Nothing came (the path does not exist): say why rather than "no file".
        Some(e) if out.files.is_empty() && out.missing.is_empty() => Err(e),
        _ => Ok(out),
    }
}

/// Sends `GET /containers/{id}/archive?path=` chunk by chunk into `tx`, until the stream ends
/// or the reader hung up.
async fn pump(
    client: &DockerClient,
    id: &str,
    c: &crate::config::ContainerRef,
    path: &str,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Result<(), DockerError> {
    client
        .call(|api, ep| async move {
            let mut stream =
                api.download_from_container(id, Some(DownloadFromContainerOptions { path }));
            loop {
                // The reader hangs up at the tar's end marker (or at a bound): the stream's own
                // end comes only after the Engine unmounted the container, which the bundle's
                // manifest need not wait for.
                let next = tokio::select! {
                    next = stream.next() => next,
                    _ = tx.closed() => break,
                };
                let Some(chunk) = next else { break };
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
                if tx.send(chunk).await.is_err() {
                    break; // the reader stopped: a bound was reached
                }
            }
            Ok(())
        })
        .await
}

/// A blocking `Read` over the chunks the Engine sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    buf: bytes::Bytes,
    /// Set when the sender went away because the deadline passed.
    timed_out: Arc<AtomicBool>,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            // (On a blocking thread: `blocking_recv` parks it until the Engine sends more.)
            match self.rx.blocking_recv() {
                Some(b) => self.buf = b,
                None if self.timed_out.load(Ordering::SeqCst) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "archive.timeout reached",
                    ))
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        bytes::Buf::advance(&mut self.buf, n);
        Ok(n)
    }
}

/// What [`log_tail`] wrote.
struct Tail {
    size: u64,
    sha256: String,
    /// The tail was longer than the cap: the lines after it were left out.
    cut: bool,
}

/// Writes the last `lines` of the container's stdout and stderr, with timestamps, at most `cap`
/// bytes of them (a container can log lines of any length).
async fn log_tail(
    client: &DockerClient,
    id: &str,
    c: &crate::config::ContainerRef,
    lines: u32,
    dest: &Path,
    cap: u64,
) -> Result<Tail, DockerError> {
    client
        .call(|api, ep| async move {
            let cant = |e| DockerError::Api(format!("cannot write {}: {e}", dest.display()));
            let d = dest.to_path_buf();
            let out = tokio::task::spawn_blocking(move || crate::fsutil::create_private(&d))
                .await
                .map_err(|e| cant(io::Error::other(e)))?
                .map_err(cant)?;
            // One write per 64 KiB, not two per log line (each a trip to a blocking thread).
            let mut out =
                tokio::io::BufWriter::with_capacity(64 * 1024, tokio::fs::File::from_std(out));
            let mut cut = false;
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
                if size + (tag.len() + bytes.len()) as u64 > cap {
                    cut = true; // the cap keeps the oldest of the tail: better than nothing
                    break;
                }
                for part in [tag, bytes] {
                    hasher.update(part);
                    size += part.len() as u64;
                    out.write_all(part).await.map_err(cant)?;
                }
            }
            out.flush().await.map_err(cant)?;
            out.get_mut()
                .sync_all()
                .await
                .map_err(|e| DockerError::Api(e.to_string()))?;
            Ok(Tail {
                size,
                sha256: hex::encode(hasher.finalize()),
                cut,
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, body, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            b.append_data(&mut h, name, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn limits(per_file: u64, per_bundle: u64, max_entries: usize) -> Limits {
        Limits {
            per_file,
            per_bundle,
            max_entries,
            deadline: tokio::time::Instant::now() + std::time::Duration::from_secs(60),
        }
    }

    #[test]
    fn a_tar_is_unpacked_within_every_bound_and_links_are_listed() {
        use tar::EntryType as T;
        let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let tar = tar_of(&[
            ("log/big.log", T::Regular, &big, None),
            ("log/manifest.json", T::Regular, b"FAKE", None),
            ("log/hard.log", T::Link, b"", Some("log/big.log")),
            ("log/sym.log", T::Symlink, b"", Some("/etc/shadow")),
            ("log/.hidden", T::Regular, b"x", None),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let mut used = crate::archive::local::reserved_names();
        let mut budget = 2_000;
        let out = extract(
            &tar[..],
            dir.path(),
            "/data/log",
            &limits(1_000, 2_000, 100),
            &mut budget,
            &mut used,
        );
        let names: Vec<&str> = out.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["big.log", "log__manifest.json", "_.hidden"]);
        let kept = std::fs::read(dir.path().join("big.log")).unwrap();
        assert_eq!(kept, big[9_000..], "the newest bytes");
        assert_eq!(out.files[0].original_size, Some(10_000));
        assert_eq!(budget, 2_000 - 1_000 - 4 - 1);
        let reasons: Vec<&str> = out.missing.iter().map(|m| m.reason.as_str()).collect();
        assert!(
            reasons[0].starts_with("hard link to log/big.log"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].starts_with("symbolic link to /etc/shadow"),
            "{reasons:?}"
        );
    }

    #[test]
    fn the_bundle_cap_and_the_entry_limit_stop_the_stream_and_say_so() {
        use tar::EntryType as T;
        let body = [7u8; 600];
        let files: Vec<(String, T, &[u8], Option<&str>)> = (0..10)
            .map(|i| (format!("log/{i}.log"), T::Regular, &body[..], None))
            .collect();
        let entries: Vec<_> = files
            .iter()
            .map(|(n, k, b, l)| (n.as_str(), *k, *b, *l))
            .collect();
        let tar = tar_of(&entries);
        let dir = tempfile::tempdir().unwrap();
        let (mut used, mut budget) = (HashSet::new(), 1_000);
        let out = extract(
            &tar[..],
            dir.path(),
            "/data/log",
            &limits(1_000, 1_000, 100),
            &mut budget,
            &mut used,
        );
        assert_eq!(out.files.len(), 2, "600 + 400 bytes, then the cap");
        assert_eq!(out.files[1].size, 400);
        assert_eq!(budget, 0);
        assert!(out
            .missing
            .iter()
            .any(|m| m.reason.contains("evidence cap reached")));
        let (mut used, mut budget) = (HashSet::new(), 1 << 20);
        let out = extract(
            &tar[..],
            dir.path(),
            "/data/log",
            &limits(1_000, 1 << 20, 3),
            &mut budget,
            &mut used,
        );
        assert_eq!(out.files.len(), 3);
        assert!(out
            .missing
            .iter()
            .any(|m| m.reason.contains("more than 3 entries")));
    }
}

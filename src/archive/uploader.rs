//! Background uploads to S3 that never give up: each bundle is uploaded by one task that
//! retries with backoff (1 s doubling to 5 min) until it is all up. Each error kind is logged
//! once per incident at ERROR (`archive_upload_failed`), so a missing bucket is one clear
//! line, not a storm; the success is `archive_uploaded`.

use super::s3::{upload_order, S3ErrorKind, S3Sink};
use super::spool::{PendingUpload, Spool};
use crate::backoff::Backoff;
use crate::ids::IncidentId;
use sha2::{Digest, Sha256};
use slog::{debug, error, info, warn, Logger};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Where one bundle's upload stands.
#[derive(Debug, Clone, PartialEq)]
pub enum UploadState {
    Pending,
    /// The last attempt failed this way; retrying.
    Failing(S3ErrorKind, String),
    Done(String),
}

struct Job {
    state: watch::Sender<UploadState>,
    /// New files arrived while the job ran: upload once more before finishing.
    again: bool,
}

/// How an upload task ends a successful round.
enum Finish {
    /// New files arrived meanwhile: upload again.
    Again(PendingUpload),
    /// All up; the spool record is gone.
    Done(PendingUpload),
}

/// Runs the uploads.
pub struct Uploader {
    sink: Arc<S3Sink>,
    pub spool: Spool,
    log: Logger,
    jobs: Mutex<HashMap<String, Job>>,
    /// The spool directory existed once: finding it gone later is worth a warning.
    spool_seen: std::sync::atomic::AtomicBool,
}

impl Uploader {
    pub fn new(sink: S3Sink, spool: Spool, log: Logger) -> Arc<Self> {
        Arc::new(Self {
            sink: Arc::new(sink),
            spool,
            log,
            jobs: Mutex::new(HashMap::new()),
            spool_seen: Default::default(),
        })
    }

    /// Saves a spool record, re-creating a spool directory someone removed, and saying so.
    fn save(&self, rec: &PendingUpload) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let gone = !self.spool.root().is_dir();
        self.spool.save(rec)?;
        if gone && self.spool_seen.load(Ordering::SeqCst) {
            warn!(self.log, "the upload spool directory was removed while uploads were pending; re-created it, and the uploads go on";
                "event" => "spool_recreated", "incident" => &rec.incident_id, "spool" => %self.spool.root().display());
        }
        self.spool_seen.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// `s3://bucket/prefix/{id}/`.
    pub fn url_for(&self, id: &str) -> String {
        self.sink.cfg.url_for(id)
    }

    /// Records the bundle in the spool (durably, first) and makes sure a task uploads it.
    /// The receiver reports progress; callers may wait on it as long as they choose. The
    /// spool's fsync runs on a blocking thread, never the caller's.
    pub async fn submit(
        self: &Arc<Self>,
        rec: PendingUpload,
    ) -> std::io::Result<watch::Receiver<UploadState>> {
        let me = self.clone();
        let (rx, start) = tokio::task::spawn_blocking(move || me.submit_blocking(rec))
            .await
            .map_err(std::io::Error::other)??;
        if let Some(id) = start {
            let me = self.clone();
            actix_rt::spawn(async move { me.run(id).await });
        }
        Ok(rx)
    }

    /// [`Uploader::submit`]'s spool write and job registration, under the jobs lock; returns
    /// the incident id when a new upload task must start.
    fn submit_blocking(
        &self,
        rec: PendingUpload,
    ) -> std::io::Result<(watch::Receiver<UploadState>, Option<IncidentId>)> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        // Keep what earlier attempts uploaded.
        let mut rec = rec;
        if let Some(old) = self.spool.load(&rec.incident_id) {
            rec.uploaded = old.uploaded;
        }
        self.save(&rec)?;
        if let Some(job) = jobs.get_mut(rec.incident_id.as_str()) {
            job.again = true;
            let _ = job.state.send(UploadState::Pending);
            return Ok((job.state.subscribe(), None));
        }
        let (tx, rx) = watch::channel(UploadState::Pending);
        jobs.insert(
            rec.incident_id.to_string(),
            Job {
                state: tx,
                again: false,
            },
        );
        Ok((rx, Some(rec.incident_id)))
    }

    /// Re-submits every bundle left in the spool (a previous run was stopped or killed).
    pub fn resume_all(self: &Arc<Self>) -> usize {
        let pending = self.spool.load_all();
        for rec in &pending {
            info!(self.log, "resuming upload left in the spool"; "event" => "archive_upload_resumed", "incident" => &rec.incident_id,
                "target" => &rec.target, "bundle" => %rec.bundle_dir.display());
            let (me, rec) = (self.clone(), rec.clone());
            actix_rt::spawn(async move {
                let id = rec.incident_id.clone();
                if let Err(e) = me
                    .submit(PendingUpload {
                        complete: true,
                        ..rec
                    })
                    .await
                {
                    error!(me.log, "cannot resume upload"; "incident" => &id, "error" => %e);
                }
            });
        }
        pending.len()
    }

    /// Uploads whose last attempt failed, with the error kind (for `/healthz`).
    pub fn failing(&self) -> Vec<(String, S3ErrorKind)> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.iter()
            .filter_map(|(id, j)| match &*j.state.borrow() {
                UploadState::Failing(kind, _) => Some((id.clone(), *kind)),
                _ => None,
            })
            .collect()
    }

    /// Uploads still running or retrying.
    pub fn in_progress(&self) -> usize {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn run(self: Arc<Self>, id: IncidentId) {
        let backoff =
            Backoff::new(Duration::from_secs(1), Duration::from_secs(300)).expect("static bounds");
        let mut reported: HashSet<S3ErrorKind> = HashSet::new();
        let mut attempts = 0u32;
        let mut last: Option<PendingUpload> = None;
        loop {
            let Some(mut rec) = self.record_for(&id, last.take()).await else {
                self.jobs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id.as_str());
                break;
            };
            attempts += 1;
            match self.upload_once(&mut rec).await {
                Ok(()) => {
                    let (me, i) = (self.clone(), id.clone());
                    let done = tokio::task::spawn_blocking(move || me.finish(&i, rec)).await;
                    match done {
                        Ok(Finish::Again(rec)) => {
                            last = Some(rec);
                            continue; // new files (the heal log) arrived meanwhile
                        }
                        Ok(Finish::Done(latest)) => {
                            let url = self.url_for(&id);
                            crate::metrics::global().inc(
                                "sentinel_archives_total",
                                &[("target", latest.target.as_str()), ("result", "uploaded")],
                            );
                            info!(self.log, "bundle uploaded to S3"; "event" => "archive_uploaded", "incident" => &id, "target" => &latest.target,
                                "url" => &url, "attempts" => attempts, "files" => latest.uploaded.len());
                        }
                        Err(e) => {
                            error!(self.log, "the upload's finish failed"; "incident" => &id, "error" => %e)
                        }
                    }
                    break;
                }
                Err(e) => {
                    if reported.insert(e.kind) {
                        crate::metrics::global().inc(
                            "sentinel_archives_total",
                            &[("target", rec.target.as_str()), ("result", "upload_failed")],
                        );
                        error!(self.log, "bundle upload to S3 failed; kept in the spool and retried"; "event" => "archive_upload_failed",
                            "incident" => &id, "target" => &rec.target, "error_kind" => e.kind.label(), "error" => %e,
                            "fix" => e.kind.fix(), "spool" => %rec.bundle_dir.display());
                    } else {
                        debug!(self.log, "upload retry failed"; "incident" => &id, "error_kind" => e.kind.label(), "attempt" => attempts);
                    }
                    if let Some(job) = self
                        .jobs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(id.as_str())
                    {
                        let _ = job.state.send(UploadState::Failing(e.kind, e.to_string()));
                    }
                    last = Some(rec);
                    tokio::time::sleep(backoff.delay(attempts.saturating_sub(1))).await;
                }
            }
        }
    }

    /// The upload's spool record; if someone removed the spool (a cleanup script, a disk
    /// swap) while the bundle is still on disk, the record is written again from `known`
    /// rather than the upload dropped. None: record and bundle are gone (said at ERROR).
    async fn record_for(
        self: &Arc<Self>,
        id: &IncidentId,
        known: Option<PendingUpload>,
    ) -> Option<PendingUpload> {
        let (me, i) = (self.clone(), id.clone());
        let stored = tokio::task::spawn_blocking(move || me.spool.load(&i))
            .await
            .ok()
            .flatten();
        match (stored, known) {
            (Some(rec), _) => Some(rec),
            (None, Some(known)) if known.bundle_dir.is_dir() => {
                let (me, k) = (self.clone(), known.clone());
                let saved = tokio::task::spawn_blocking(move || me.save(&k))
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r);
                if let Err(e) = saved {
                    error!(self.log, "the upload spool was removed and cannot be re-created; the upload is retried from memory only";
                        "event" => "spool_recreate_failed", "incident" => id, "spool" => %self.spool.root().display(), "error" => %e);
                }
                Some(known)
            }
            (None, known) => {
                error!(self.log, "the spool record and the bundle are gone; upload abandoned"; "event" => "archive_upload_abandoned",
                    "incident" => id, "bundle" => %known.map(|k| k.bundle_dir.display().to_string()).unwrap_or_default());
                None
            }
        }
    }

    /// Under the jobs lock, which `submit` also holds while it records new files: either they
    /// arrived (go round again) or the record is finished and the job removed with no submit
    /// in between. Blocks (the spool's files): call it on a blocking thread.
    fn finish(&self, id: &IncidentId, rec: PendingUpload) -> Finish {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if jobs
            .get_mut(id.as_str())
            .is_some_and(|job| std::mem::take(&mut job.again))
        {
            return Finish::Again(rec);
        }
        // Re-read: a submit may have marked it complete while we uploaded.
        let latest = self.spool.load(id).unwrap_or(rec);
        if let Err(e) = self.spool.finish(&latest) {
            warn!(self.log, "uploaded, but the spool record could not be removed"; "incident" => id, "error" => %e);
        }
        if let Some(job) = jobs.remove(id.as_str()) {
            let _ = job.state.send(UploadState::Done(self.url_for(id)));
        }
        Finish::Done(latest)
    }

    /// Uploads the files not yet up (or changed), manifest last, recording each as it lands.
    async fn upload_once(
        self: &Arc<Self>,
        rec: &mut PendingUpload,
    ) -> Result<(), super::s3::S3Error> {
        let (bucket, id) = (self.sink.cfg.bucket.clone(), rec.incident_id.clone());
        let local = |m: String| super::s3::S3Error {
            kind: S3ErrorKind::LocalFile,
            op: "spool",
            bucket: bucket.clone(),
            key: id.to_string(),
            message: m,
        };
        let files = upload_order(&rec.bundle_dir)
            .map_err(|e| local(format!("cannot list {}: {e}", rec.bundle_dir.display())))?;
        for path in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let p = path.clone();
            let sha = tokio::task::spawn_blocking(move || sha256_file(&p))
                .await
                .map_err(|e| local(e.to_string()))?
                .map_err(|e| local(format!("cannot read {}: {e}", path.display())))?;
            if rec.uploaded.get(&name) == Some(&sha) {
                continue;
            }
            self.sink.upload_file(&rec.incident_id, &path, &sha).await?;
            // Merge with the record on disk: a submit may have changed `complete` meanwhile.
            let (me, known) = (self.clone(), rec.clone());
            let recorded = tokio::task::spawn_blocking(move || {
                let mut latest = me.spool.load(&known.incident_id).unwrap_or(known);
                latest.uploaded.insert(name, sha);
                me.save(&latest).map(|()| latest)
            })
            .await
            .map_err(|e| local(e.to_string()))?;
            *rec = recorded.map_err(|e| local(format!("cannot update the spool record: {e}")))?;
        }
        Ok(())
    }
}

fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

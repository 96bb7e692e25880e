//! The Archiver: writes one forensic bundle per incident, off the actor's thread, and adds the
//! heal log afterwards. A repeated request for the same incident gets the first result.
//! With S3 configured, the bundle is written locally first (the local sink, or the spool's
//! staging dir) and then uploaded; the reply waits for the whole bundle (a container's evidence
//! and the upload included) at most `archive.timeout`, after which the upload goes on in the
//! background and the heal proceeds.

use super::messages::{Archive, AttachHeal, Drain};
use crate::archive::local;
use crate::archive::spool::{PendingUpload, Spool};
use crate::archive::uploader::{UploadState, Uploader};
use crate::archive::{manifest::IncidentFacts, ArchiveReport};
use crate::config::ArchiveConfig;
use actix::prelude::*;
use slog::{debug, error, info, warn, Logger};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

type Outcome = Result<ArchiveReport, String>;

enum Slot {
    InFlight(Vec<oneshot::Sender<Outcome>>),
    Done(Outcome, Box<IncidentFacts>),
}

/// Change where bundles go (registry reload); a new uploader when the S3 sink changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetArchive {
    pub cfg: ArchiveConfig,
    /// `Some`: the S3 sink changed and this replaces the uploader (`Some(None)`: no S3 now).
    pub uploader: Option<Option<Arc<Uploader>>>,
}

pub struct Archiver {
    log: Logger,
    cfg: ArchiveConfig,
    spool: Spool,
    uploader: Option<Arc<Uploader>>,
    /// Copies evidence out of containers (`forensics.docker`).
    docker: Arc<crate::docker::DockerClient>,
    slots: HashMap<String, Slot>,
    /// Bundles (and heal attachments) being written now; shutdown waits for them.
    pending: Arc<AtomicUsize>,
}

impl Archiver {
    pub fn new(
        log: Logger,
        cfg: ArchiveConfig,
        spool: Spool,
        uploader: Option<Arc<Uploader>>,
        docker: Arc<crate::docker::DockerClient>,
    ) -> Self {
        Self {
            log: log.new(slog::o!("actor" => "archiver")),
            cfg,
            spool,
            uploader,
            docker,
            slots: HashMap::new(),
            pending: Arc::default(),
        }
    }

    /// Where bundles are written on this host.
    fn root(&self) -> (PathBuf, bool) {
        match &self.cfg.local_dir {
            Some(d) => (d.clone(), false),
            None => (self.spool.staging_root(), true),
        }
    }

    /// Keeps the dedup table bounded: finished incidents older than the newest 1000 go.
    fn prune(&mut self) {
        if self.slots.len() <= 1000 {
            return;
        }
        let mut done: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Done(..)))
            .map(|(k, _)| k.clone())
            .collect();
        done.sort(); // ids start with a sortable stamp
        for k in done.iter().take(self.slots.len() - 1000) {
            self.slots.remove(k);
        }
    }
}

impl Actor for Archiver {
    type Context = Context<Self>;
}

impl Handler<Archive> for Archiver {
    type Result = ResponseFuture<Outcome>;

    fn handle(&mut self, msg: Archive, ctx: &mut Self::Context) -> Self::Result {
        let id = msg.incident.incident_id.to_string();
        let (tx, rx) = oneshot::channel();
        match self.slots.get_mut(&id) {
            Some(Slot::Done(outcome, _)) => {
                let o = outcome.clone();
                return Box::pin(async move { o });
            }
            Some(Slot::InFlight(waiters)) => waiters.push(tx),
            None => {
                self.slots.insert(id.clone(), Slot::InFlight(vec![tx]));
                self.pending.fetch_add(1, Ordering::SeqCst);
                let (root, staged) = self.root();
                let job = Job {
                    root,
                    staged,
                    cap: self.cfg.max_file_size,
                    wait: self.cfg.timeout,
                    uploader: self.uploader.clone(),
                    docker: self.docker.clone(),
                    log: self.log.clone(),
                };
                let facts = msg.incident.clone();
                let started = std::time::Instant::now();
                let work = job.run(
                    msg.incident,
                    msg.target,
                    msg.snapshot,
                    msg.flight,
                    msg.clues,
                );
                ctx.spawn(work.into_actor(self).map(move |res, act, _| {
                    act.finish(facts, res, started.elapsed());
                }));
            }
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("archiver stopped".into())) })
    }
}

impl Archiver {
    /// Logs and counts a finished bundle, and answers everyone waiting for it.
    fn finish(&mut self, facts: IncidentFacts, res: Outcome, took: std::time::Duration) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        let duration_ms = took.as_millis() as u64;
        let outcome: Outcome = match res {
            Ok(report) => {
                info!(self.log, "forensic bundle written"; "event" => "archive_written", "target" => &facts.target,
                    "incident" => &facts.incident_id, "location" => &report.location, "files" => report.files.len(),
                    "missing" => report.missing.len(), "duration_ms" => duration_ms);
                for m in &report.missing {
                    warn!(self.log, "forensic file not archived"; "target" => &facts.target, "incident" => &facts.incident_id,
                        "pattern" => &m.pattern, "reason" => &m.reason);
                }
                Ok(report)
            }
            Err(e) => Err(e),
        };
        let result = if outcome.is_ok() { "written" } else { "failed" };
        crate::metrics::global().inc(
            "sentinel_archives_total",
            &[("target", facts.target.as_str()), ("result", result)],
        );
        if let Err(e) = &outcome {
            error!(self.log, "forensic bundle could not be written; healing goes ahead without it";
                "event" => "archive_failed", "target" => &facts.target, "incident" => &facts.incident_id, "error" => e,
                "duration_ms" => duration_ms);
        }
        if let Some(Slot::InFlight(waiters)) = self.slots.remove(facts.incident_id.as_str()) {
            for w in waiters {
                let _ = w.send(outcome.clone());
            }
        }
        self.slots.insert(
            facts.incident_id.to_string(),
            Slot::Done(outcome, Box::new(facts)),
        );
        self.prune();
    }
}

/// Where and how one bundle is written: the archiver's settings when it was asked.
struct Job {
    root: PathBuf,
    /// `root` is the spool's staging dir (no local sink): the upload is the bundle's home.
    staged: bool,
    /// `archive.max_file_size`.
    cap: u64,
    /// `archive.timeout`.
    wait: std::time::Duration,
    uploader: Option<Arc<Uploader>>,
    docker: Arc<crate::docker::DockerClient>,
    log: Logger,
}

impl Job {
    /// Writes the bundle (the SQL snapshot and a container's evidence gathered at once, then
    /// the target's files and the manifest) and uploads it when S3 is configured.
    async fn run(
        self,
        facts: IncidentFacts,
        target: Arc<crate::config::TargetConfig>,
        snapshot: Option<crate::probe::snapshot::SqlSnapshot>,
        flight: Option<Box<crate::flight::Recording>>,
        clues: crate::cause::Evidence,
    ) -> Outcome {
        // A container's evidence gets archive.timeout from now; the upload has what is left of
        // archive.timeout past the SQL snapshot (bounded by the probe timeout). Local files
        // take milliseconds; a hung filesystem gets archive.timeout too.
        let deadline = tokio::time::Instant::now() + self.wait;
        // Nothing captured while suspect (threshold 1): ask now, within the probe timeout,
        // while the container's evidence streams in (neither waits on the other).
        let snapshot = async {
            let s = match snapshot {
                Some(s) => s,
                None => crate::probe::snapshot::capture(&target).await,
            };
            (s, tokio::time::Instant::now())
        };
        let t0 = tokio::time::Instant::now();
        let from_container = async {
            let r = self.container_evidence(&facts, &target, deadline).await;
            (r, tokio::time::Instant::now())
        };
        let ((snapshot, snapshot_done), (from_container, container_done)) =
            futures::join!(snapshot, from_container);
        let (from_container, read_from) = from_container?;
        let files_started = tokio::time::Instant::now();
        let (root, cap, f) = (self.root.clone(), self.cap, facts.clone());
        let patterns = target.forensic_files.clone();
        let write = tokio::task::spawn_blocking(move || {
            let extra = local::Extra {
                flight: flight.and_then(|f| serde_json::to_value(f).ok()),
                ..from_container
            };
            local::write_bundle(&root, &f, &patterns, cap, Some(&snapshot), extra)
        });
        // A hung filesystem under the target's logs must not hold the heal. (Its own
        // timeout, not what the container left: the manifest must always be written.)
        let mut report = tokio::time::timeout(self.wait, write)
            .await
            .map_err(|_| {
                format!(
                    "the forensic files were not read within archive.timeout ({} s): a hung filesystem?",
                    self.wait.as_secs_f64()
                )
            })?
            .map_err(|e| format!("archive task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        self.explain(&facts, &target, &mut report, clues).await;
        let ms = |a: tokio::time::Instant, b: tokio::time::Instant| (b - a).as_millis() as u64;
        debug!(self.log, "bundle written locally"; "event" => "archive_timing", "incident" => &facts.incident_id,
            "snapshot_ms" => ms(t0, snapshot_done), "container_ms" => ms(t0, container_done),
            "files_ms" => ms(files_started, tokio::time::Instant::now()), "container_source" => read_from);
        if let Some(up) = &self.uploader {
            // The upload's share counts from the snapshot, as the heal's wait always did.
            let until = deadline.max(snapshot_done + self.wait);
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            report.location = upload(up, &facts, &report, self.staged, left, &self.log).await;
        }
        Ok(report)
    }

    /// Classifies the likely cause from the bundle's logs and what the Monitor knows, and adds
    /// `cause.json` to the bundle; within archive.timeout (a cause is evidence, not control).
    async fn explain(
        &self,
        facts: &IncidentFacts,
        target: &crate::config::TargetConfig,
        report: &mut ArchiveReport,
        mut clues: crate::cause::Evidence,
    ) {
        if let Some(c) = target.container().cloned() {
            self.engine_clues(c, &mut clues).await;
        }
        let data_dir = target
            .pid_file
            .as_deref()
            .and_then(crate::cause::gather::data_dir_of);
        let container_pid = clues.container_pid;
        let (mut r, f) = (report.clone(), facts.clone());
        let work = tokio::task::spawn_blocking(move || {
            let names: Vec<String> = r.files.iter().map(|f| f.name.clone()).collect();
            let cause = crate::cause::gather::death(
                &r.dir,
                &names,
                data_dir.as_deref(),
                container_pid,
                clues,
            );
            local::attach_cause(&f, &mut r, &cause).map(|_| r)
        });
        match tokio::time::timeout(self.wait, work).await {
            Ok(Ok(Ok(r))) => {
                let c = r.cause.as_ref();
                info!(self.log, "likely cause classified"; "event" => "cause_found", "incident" => &facts.incident_id,
                    "cause" => c.map(|c| c.class.label()).unwrap_or(""), "sentence" => c.map(|c| c.sentence.as_str()).unwrap_or(""));
                *report = r;
            }
            Ok(Ok(Err(e))) => {
                warn!(self.log, "cause.json not written"; "incident" => &facts.incident_id, "error" => %e)
            }
            Ok(Err(e)) => {
                warn!(self.log, "cause task failed"; "incident" => &facts.incident_id, "error" => %e)
            }
            Err(_) => {
                warn!(self.log, "the cause was not classified within archive.timeout"; "incident" => &facts.incident_id)
            }
        }
    }

    /// The Engine's word on the container: `OOMKilled` and the exit code of a dead one, and
    /// the main process's pid (whose cgroup counts OOM kills). Best effort, within 5 s.
    async fn engine_clues(
        &self,
        c: crate::config::ContainerRef,
        clues: &mut crate::cause::Evidence,
    ) {
        let call = self
            .docker
            .call(|api, ep| async move { crate::docker::container::inspect(&api, &ep, &c).await });
        let Ok(Ok(state)) = tokio::time::timeout(std::time::Duration::from_secs(5), call).await
        else {
            return;
        };
        if !clues.postmaster_alive && state.status != "running" {
            clues.engine_oom_killed = Some(state.oom_killed);
            clues.exit = Some(crate::cause::Exit::Code(state.exit_code));
            clues.exit_source = "Docker Engine State.ExitCode".into();
            clues.postmaster_dead = true;
        }
        if state.pid > 0 {
            clues.container_pid = u32::try_from(state.pid).ok();
        }
    }

    /// Copies the container's evidence (`forensics.docker`) into the bundle directory, which
    /// it creates, with where its paths were read (`host`, `engine`, ...); nothing when the
    /// target has no container.
    async fn container_evidence(
        &self,
        facts: &IncidentFacts,
        target: &crate::config::TargetConfig,
        deadline: tokio::time::Instant,
    ) -> Result<(local::Extra, &'static str), String> {
        let Some(spec) = &target.forensic_docker else {
            return Ok((local::Extra::default(), "none"));
        };
        let dir = local::bundle_dir(&self.root, &facts.incident_id);
        let (r, d) = (self.root.clone(), dir.clone());
        tokio::task::spawn_blocking(move || local::create_bundle_dir(&r, &d))
            .await
            .map_err(|e| format!("archive task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        let mut used = local::reserved_names();
        // The heal never waits on a container's evidence longer than archive.timeout.
        let limits = crate::docker::copy::Limits {
            deadline,
            ..crate::docker::copy::Limits::new(self.cap, self.wait)
        };
        let got = crate::docker::copy::collect(&self.docker, spec, &dir, &limits, &mut used).await;
        let source = got.source();
        let (files, missing) = (got.files, got.missing);
        let extra = local::Extra {
            files,
            missing,
            flight: None,
        };
        Ok((extra, source))
    }
}

impl Handler<AttachHeal> for Archiver {
    type Result = ();

    fn handle(&mut self, msg: AttachHeal, ctx: &mut Self::Context) {
        let Some(Slot::Done(Ok(report), facts)) = self.slots.get(&msg.incident_id) else {
            return; // no bundle to attach to (archive failed, or it was pruned)
        };
        let (report, facts) = (report.clone(), facts.clone());
        let dir = report.dir.clone();
        let staged = self.cfg.local_dir.is_none();
        self.pending.fetch_add(1, Ordering::SeqCst);
        let f = facts.clone();
        let work =
            tokio::task::spawn_blocking(move || local::attach_heal(&dir, &f, &report, &msg.report));
        let id = msg.incident_id;
        ctx.spawn(work.into_actor(self).map(move |res, act, _| {
            act.pending.fetch_sub(1, Ordering::SeqCst);
            if let (Some(up), Some(Slot::Done(Ok(report), _))) = (&act.uploader, act.slots.get(&id)) {
                // The heal log and the new manifest follow the bundle to S3 (in the background).
                let rec = PendingUpload { incident_id: facts.incident_id.clone(), target: facts.target.clone(), bundle_dir: report.dir.clone(), staged, complete: true, uploaded: Default::default() };
                let (up, log, id) = (up.clone(), act.log.clone(), id.clone());
                actix_rt::spawn(async move {
                    if let Err(e) = up.submit(rec).await {
                        error!(log, "cannot spool the heal log for upload"; "incident" => &id, "error" => %e);
                    }
                });
            }
            match res {
                Ok(Ok(())) => info!(act.log, "heal log added to bundle"; "event" => "heal_log_archived", "incident" => &id),
                Ok(Err(e)) => error!(act.log, "heal log not added to bundle"; "incident" => &id, "error" => %e),
                Err(e) => error!(act.log, "heal log task failed"; "incident" => &id, "error" => %e),
            }
        }));
    }
}

impl Handler<SetArchive> for Archiver {
    type Result = ();
    fn handle(&mut self, msg: SetArchive, _: &mut Self::Context) {
        self.cfg = msg.cfg;
        if let Some(up) = msg.uploader {
            self.uploader = up;
        }
    }
}

/// Spools the bundle for S3 and waits for the upload at most `wait`; returns the location
/// text for the alert.
async fn upload(
    up: &Arc<Uploader>,
    facts: &IncidentFacts,
    report: &ArchiveReport,
    staged: bool,
    wait: std::time::Duration,
    log: &Logger,
) -> String {
    let url = up.url_for(&facts.incident_id);
    let rec = PendingUpload {
        incident_id: facts.incident_id.clone(),
        target: facts.target.clone(),
        bundle_dir: report.dir.clone(),
        staged,
        complete: false,
        uploaded: Default::default(),
    };
    let mut rx = match up.submit(rec).await {
        Ok(rx) => rx,
        Err(e) => {
            error!(log, "cannot write the spool record; the bundle is only on local disk"; "event" => "archive_upload_failed",
                "incident" => &facts.incident_id, "error_kind" => "local_file", "error" => %e);
            return format!(
                "{} (NOT uploaded to {url}: spool unwritable: {e})",
                report.dir.display()
            );
        }
    };
    let done = tokio::time::timeout(wait, rx.wait_for(|s| matches!(s, UploadState::Done(_))))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    match done {
        true if staged => url,
        true => format!("{url} (local copy: {})", report.dir.display()),
        _ => {
            let why = match &*rx.borrow() {
                UploadState::Failing(kind, _) => format!(", last error: {}", kind.label()),
                _ => String::new(),
            };
            crate::metrics::global().inc(
                "sentinel_archives_total",
                &[
                    ("target", facts.target.as_str()),
                    ("result", "upload_pending"),
                ],
            );
            warn!(log, "S3 upload not finished within archive.timeout; the heal goes ahead, the upload continues in the background";
                "event" => "archive_upload_pending", "incident" => &facts.incident_id, "timeout_s" => wait.as_secs_f64());
            format!("{} (upload to {url} pending{why})", report.dir.display())
        }
    }
}

impl Handler<Drain> for Archiver {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, msg: Drain, _: &mut Self::Context) -> Self::Result {
        let uploads = self.uploader.as_ref().map_or(0, |u| u.in_progress());
        if uploads > 0 {
            warn!(self.log, "uploads still pending stay in the spool and resume at the next start"; "event" => "archive_uploads_spooled",
                "count" => uploads, "spool" => %self.spool.staging_root().parent().map(|p| p.display().to_string()).unwrap_or_default());
        }
        Box::pin(super::wait_for_zero(self.pending.clone(), msg.deadline))
    }
}

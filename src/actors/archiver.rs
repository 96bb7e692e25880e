//! The Archiver: writes one forensic bundle per incident, off the actor's thread, and adds the
//! heal log afterwards. A repeated request for the same incident gets the first result.

use super::messages::{Archive, ArchiveReport, AttachHeal, Drain, IncidentFacts};
use crate::archive::local;
use actix::prelude::*;
use slog::{error, info, warn, Logger};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

type Outcome = Result<ArchiveReport, String>;

enum Slot {
    InFlight(Vec<oneshot::Sender<Outcome>>),
    Done(Outcome, IncidentFacts),
}

/// Change where bundles go (registry reload).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetArchiveDir(pub PathBuf);

pub struct Archiver {
    log: Logger,
    root: PathBuf,
    slots: HashMap<String, Slot>,
    /// Bundles (and heal attachments) being written now; shutdown waits for them.
    pending: Arc<AtomicUsize>,
}

impl Archiver {
    pub fn new(log: Logger, root: PathBuf) -> Self {
        Self { log: log.new(slog::o!("actor" => "archiver")), root, slots: HashMap::new(), pending: Arc::default() }
    }

    /// Keeps the dedup table bounded: finished incidents older than the newest 1000 go.
    fn prune(&mut self) {
        if self.slots.len() <= 1000 {
            return;
        }
        let mut done: Vec<String> = self.slots.iter().filter(|(_, s)| matches!(s, Slot::Done(..))).map(|(k, _)| k.clone()).collect();
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
        let id = msg.incident.incident_id.clone();
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
                let root = self.root.clone();
                let facts = msg.incident.clone();
                let patterns = msg.target.forensic_files.clone();
                let work = tokio::task::spawn_blocking(move || local::write_bundle(&root, &facts, &patterns));
                let facts = msg.incident;
                ctx.spawn(work.into_actor(self).map(move |res, act, _| {
                    act.pending.fetch_sub(1, Ordering::SeqCst);
                    let outcome: Outcome = match res {
                        Ok(Ok(report)) => {
                            info!(act.log, "forensic bundle written"; "event" => "archive_written", "target" => &facts.target,
                                "incident" => &facts.incident_id, "location" => &report.location, "files" => report.files.len(),
                                "missing" => report.missing.len());
                            for m in &report.missing {
                                warn!(act.log, "forensic file not archived"; "target" => &facts.target, "incident" => &facts.incident_id,
                                    "pattern" => &m.pattern, "reason" => &m.reason);
                            }
                            Ok(report)
                        }
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(e) => Err(format!("archive task failed: {e}")),
                    };
                    if let Err(e) = &outcome {
                        error!(act.log, "forensic bundle could not be written; healing goes ahead without it";
                            "event" => "archive_failed", "target" => &facts.target, "incident" => &facts.incident_id, "error" => e);
                    }
                    if let Some(Slot::InFlight(waiters)) = act.slots.remove(&facts.incident_id) {
                        for w in waiters {
                            let _ = w.send(outcome.clone());
                        }
                    }
                    act.slots.insert(facts.incident_id.clone(), Slot::Done(outcome, facts));
                    act.prune();
                }));
            }
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("archiver stopped".into())) })
    }
}

impl Handler<AttachHeal> for Archiver {
    type Result = ();

    fn handle(&mut self, msg: AttachHeal, ctx: &mut Self::Context) {
        let Some(Slot::Done(Ok(report), facts)) = self.slots.get(&msg.incident_id) else {
            return; // no bundle to attach to (archive failed, or it was pruned)
        };
        let (report, facts) = (report.clone(), facts.clone());
        let dir = PathBuf::from(&report.location);
        self.pending.fetch_add(1, Ordering::SeqCst);
        let work = tokio::task::spawn_blocking(move || local::attach_heal(&dir, &facts, &report, &msg.report));
        let id = msg.incident_id;
        ctx.spawn(work.into_actor(self).map(move |res, act, _| {
            act.pending.fetch_sub(1, Ordering::SeqCst);
            match res {
                Ok(Ok(())) => info!(act.log, "heal log added to bundle"; "event" => "heal_log_archived", "incident" => &id),
                Ok(Err(e)) => error!(act.log, "heal log not added to bundle"; "incident" => &id, "error" => %e),
                Err(e) => error!(act.log, "heal log task failed"; "incident" => &id, "error" => %e),
            }
        }));
    }
}

impl Handler<SetArchiveDir> for Archiver {
    type Result = ();
    fn handle(&mut self, msg: SetArchiveDir, _: &mut Self::Context) {
        self.root = msg.0;
    }
}

impl Handler<Drain> for Archiver {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, msg: Drain, _: &mut Self::Context) -> Self::Result {
        Box::pin(super::wait_for_zero(self.pending.clone(), msg.deadline))
    }
}

//! The Supervisor: starts one Monitor per target, replaces a Monitor that dies (a panic drops
//! the actor; its address then reports disconnected), applies registry reloads, and shuts
//! down in order: monitors first, then drain the archiver, healer and notifier under one
//! deadline.

use super::archiver::{Archiver, SetArchive};
use crate::archive::s3::S3Sink;
use crate::archive::spool::Spool;
use crate::archive::uploader::Uploader;
use super::healer::Healer;
use super::messages::{Drain, Reload, Retire, Shutdown};
use super::monitor::{Monitor, Peers};
use super::notifier::{Notifier, SetChannels};
use crate::config::{self, Registry, TargetConfig, VarSource};
use crate::incident::SharedRecord;
use actix::prelude::*;
use slog::{error, info, warn, Logger};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How the Supervisor was started.
pub struct SupervisorSettings {
    pub registry: Registry,
    /// Re-read on SIGHUP (None: env-only or generated registry, reload re-reads the environment).
    pub config_path: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub shutdown_timeout: Duration,
}

struct Slot {
    cfg: Arc<TargetConfig>,
    record: SharedRecord,
    addr: Addr<Monitor>,
}

pub struct Supervisor {
    log: Logger,
    /// The root logger: monitors get their own `actor` key, not the supervisor's.
    root: Logger,
    settings: SupervisorSettings,
    peers: Peers,
    slots: BTreeMap<String, Slot>,
    stopping: bool,
    done: Option<oneshot::Sender<()>>,
}

impl Supervisor {
    /// Builds the S3 uploader when the registry has an S3 sink, and resumes what the spool
    /// holds from an earlier run.
    pub async fn uploader(log: &Logger, settings: &SupervisorSettings) -> Option<Arc<Uploader>> {
        let s3 = settings.registry.archive.s3.as_ref()?;
        let sink = S3Sink::new(s3).await;
        let up = Uploader::new(sink, Spool::new(&settings.state_dir), log.new(slog::o!("actor" => "uploader")));
        let resumed = up.resume_all();
        info!(log, "S3 archive configured"; "event" => "s3_configured", "bucket" => &s3.bucket, "prefix" => &s3.prefix,
            "endpoint" => s3.endpoint.as_deref().unwrap_or("AWS"), "resumed_uploads" => resumed);
        Some(up)
    }

    /// Starts the shared actors and the Supervisor; `done` fires once shutdown has finished.
    pub fn launch(log: Logger, settings: SupervisorSettings, uploader: Option<Arc<Uploader>>) -> (Addr<Supervisor>, oneshot::Receiver<()>) {
        let spool = Spool::new(&settings.state_dir);
        let archiver = Archiver::new(log.clone(), settings.registry.archive.clone(), spool, uploader).start();
        let healer = Healer::new(log.clone(), settings.state_dir.clone()).start();
        let notifier = Notifier::new(log.clone(), &settings.registry.notify).start();
        let (tx, rx) = oneshot::channel();
        let sup = Supervisor {
            log: log.new(slog::o!("actor" => "supervisor")),
            root: log,
            settings,
            peers: Peers { archiver, healer, notifier },
            slots: BTreeMap::new(),
            stopping: false,
            done: Some(tx),
        };
        (sup.start(), rx)
    }

    fn spawn_monitor(&self, cfg: Arc<TargetConfig>, record: SharedRecord) -> Addr<Monitor> {
        let peers = self.peers.clone();
        let log = self.root.clone();
        actix::Supervisor::start(move |_| Monitor::new(cfg, record, peers, &log))
    }

    fn add(&mut self, cfg: TargetConfig, record: SharedRecord) {
        let cfg = Arc::new(cfg);
        let addr = self.spawn_monitor(cfg.clone(), record.clone());
        self.slots.insert(cfg.name.clone(), Slot { cfg, record, addr });
    }

    /// Replaces Monitors that died; the new one resumes from the same record.
    fn check_monitors(&mut self) {
        if self.stopping {
            return;
        }
        let dead: Vec<String> = self.slots.iter().filter(|(_, s)| !s.addr.connected()).map(|(n, _)| n.clone()).collect();
        for name in dead {
            let slot = &self.slots[&name];
            error!(self.log, "monitor died; starting a replacement that resumes its state"; "event" => "monitor_replaced", "target" => &name,
                "phase" => slot.record.lock().phase.label());
            let addr = self.spawn_monitor(slot.cfg.clone(), slot.record.clone());
            if let Some(s) = self.slots.get_mut(&name) {
                s.addr = addr;
            }
        }
    }

    fn reload(&mut self) {
        let vars = VarSource::from_env_and_dotenv(&std::env::current_dir().unwrap_or_default());
        let new = match config::load(self.settings.config_path.as_deref(), &vars) {
            Ok(r) => r,
            Err(e) => {
                error!(self.log, "reload rejected; the previous registry keeps running"; "event" => "reload_rejected", "error" => %e);
                return;
            }
        };
        let mut wanted: HashMap<String, TargetConfig> = new.targets.iter().map(|t| (t.name.clone(), t.clone())).collect();
        let (mut added, mut removed, mut changed, mut unchanged) = (vec![], vec![], vec![], 0);
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            match wanted.remove(&name) {
                None => {
                    if let Some(slot) = self.slots.remove(&name) {
                        slot.addr.do_send(Retire);
                    }
                    removed.push(name);
                }
                Some(cfg) if *self.slots[&name].cfg != cfg => {
                    let slot = self.slots.remove(&name).expect("present");
                    slot.addr.do_send(Retire);
                    // Same record: an open incident and the restart budget carry over.
                    self.add(cfg, slot.record);
                    changed.push(name);
                }
                Some(_) => unchanged += 1,
            }
        }
        for t in new.targets.iter().filter(|t| wanted.contains_key(&t.name)) {
            added.push(t.name.clone());
            self.add(t.clone(), SharedRecord::default());
        }
        if new.archive != self.settings.registry.archive {
            let archiver = self.peers.archiver.clone();
            let cfg = new.archive.clone();
            let log = self.root.clone();
            let state_dir = self.settings.state_dir.clone();
            actix_rt::spawn(async move {
                let settings = SupervisorSettings { registry: Registry { archive: cfg.clone(), ..Registry::empty() }, config_path: None, state_dir, shutdown_timeout: Duration::ZERO };
                let up = Supervisor::uploader(&log, &settings).await;
                archiver.do_send(SetArchive(cfg, up));
            });
        }
        if new.notify != self.settings.registry.notify {
            self.peers.notifier.do_send(SetChannels(new.notify.clone()));
        }
        self.settings.registry = new;
        info!(self.log, "registry reloaded"; "event" => "reload_applied", "added" => added.join(","), "removed" => removed.join(","),
            "changed" => changed.join(","), "unchanged" => unchanged);
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let targets = self.settings.registry.targets.clone();
        info!(self.log, "starting"; "event" => "daemon_started", "registry" => %self.settings.registry.source,
            "targets" => targets.len(), "archive_dir" => self.settings.registry.archive.local_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "(S3 only)".into()),
            "version" => env!("CARGO_PKG_VERSION"));
        for t in targets {
            self.add(t, SharedRecord::default());
        }
        ctx.run_interval(Duration::from_millis(250), |act, _| act.check_monitors());
    }
}

impl Handler<Reload> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Reload, _: &mut Context<Self>) {
        if !self.stopping {
            self.reload();
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        if self.stopping {
            warn!(self.log, "already shutting down"; "signal" => msg.signal);
            return;
        }
        self.stopping = true;
        info!(self.log, "shutting down: monitors stop, in-flight work drains"; "event" => "shutdown_started", "signal" => msg.signal,
            "deadline_s" => self.settings.shutdown_timeout.as_secs_f64());
        // Dropping the slots drops the only addresses of the monitors: actix's Supervisor then
        // lets a retired monitor stay stopped instead of restarting it.
        for slot in std::mem::take(&mut self.slots).into_values() {
            slot.addr.do_send(Retire);
        }
        let deadline = self.settings.shutdown_timeout;
        let (a, h, n) = (self.peers.archiver.clone(), self.peers.healer.clone(), self.peers.notifier.clone());
        let drain = async move {
            let (a, h, n) = futures::join!(a.send(Drain { deadline }), h.send(Drain { deadline }), n.send(Drain { deadline }));
            (a.unwrap_or(0), h.unwrap_or(0), n.unwrap_or(0))
        };
        ctx.spawn(drain.into_actor(self).map(|(a, h, n), act, _| {
            if a + h + n > 0 {
                error!(act.log, "shutdown deadline passed with work undone"; "event" => "shutdown_incomplete",
                    "archives" => a, "heals" => h, "notifications" => n);
            }
            info!(act.log, "stopped"; "event" => "shutdown_complete");
            if let Some(done) = act.done.take() {
                let _ = done.send(());
            }
        }));
    }
}

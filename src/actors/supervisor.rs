//! The Supervisor: starts one Monitor per target, replaces a Monitor that dies (a panic drops
//! the actor; its address then reports disconnected), applies registry reloads, and shuts
//! down in order: monitors first, then drain the archiver, healer and notifier under one
//! deadline.

use super::archiver::{Archiver, SetArchive};
use super::healer::Healer;
use super::messages::{
    Discovered, Drain, GetStatus, Reload, Replaced, Retire, SetMaintenance, Shutdown,
};
use super::monitor::{Monitor, Peers};
use super::notifier::{Notifier, SetChannels};
use crate::archive::s3::S3Sink;
use crate::archive::spool::Spool;
use crate::archive::uploader::Uploader;
use crate::config::{self, DockerDiscovery, Registry, TargetConfig, TargetDefaults, VarSource};
use crate::discovery::DiscoveredTarget;
use crate::docker::events::ContainerEvent;
use crate::docker::DockerClient;
use crate::incident::SharedRecord;
use crate::status::{DiscoveredFrom, TargetStatus};
use crate::store::Store;
use actix::prelude::*;
use slog::{error, info, warn, Logger};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

mod orphans;
mod ownership;
mod rejoin;

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
    /// A discovered target: its container (id) and labels.
    discovered: Option<(String, DiscoveredFrom)>,
    /// Removed while an incident was open: retired once the incident is over.
    retiring: bool,
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
    docker: Arc<DockerClient>,
    /// The Docker events follower runs (started once a target runs in a container).
    following_events: bool,
    /// The discovery watcher and what it was started with.
    discovery: Option<(SpawnHandle, DockerDiscovery, TargetDefaults)>,
    /// The targets discovery found last, by target name.
    discovered: BTreeMap<String, DiscoveredTarget>,
    /// The containers discovery gave up connecting to (`status` lists them as unreachable).
    unreachable: Vec<DiscoveredTarget>,
    /// The container (id) each discovered target name last ran in: a new id is a new
    /// container, with a fresh record (see [`Supervisor::sync`]).
    container_of: HashMap<String, String>,
    /// Name clashes already reported (target name, container).
    clashes: HashSet<(String, String)>,
    /// Cluster mode: the targets this daemon owns (only these run here).
    owned: std::collections::BTreeSet<String>,
    /// Cluster mode: the state the last owner kept for a target just gained.
    handed_state: HashMap<String, crate::store::StoredTarget>,
    /// Cluster mode: the notices about lost coordination share this id until it comes back.
    coordination_incident: Option<String>,
    /// Cluster mode, fenced: the targets last owned here, still probed (never restarted).
    orphans: orphans::Orphans,
    /// Cluster mode: the cluster the API shows, and the stream of its agent's events (both
    /// replaced when a reload changes `cluster:`).
    current: crate::cluster::Current,
    cluster_stream: Option<SpawnHandle>,
    /// Cluster mode: a sync is due once the events queued now are handled.
    sync_pending: bool,
}

impl Supervisor {
    /// Builds the S3 uploader when the registry has an S3 sink, and resumes what the spool
    /// holds from an earlier run.
    pub async fn uploader(
        log: &Logger,
        archive: &crate::config::ArchiveConfig,
        state_dir: &std::path::Path,
    ) -> Option<Arc<Uploader>> {
        let s3 = archive.s3.as_ref()?;
        let sink = S3Sink::new(s3).await;
        let up = Uploader::new(
            sink,
            Spool::new(state_dir),
            log.new(slog::o!("actor" => "uploader")),
        );
        let resumed = up.resume_all();
        info!(log, "S3 archive configured"; "event" => "s3_configured", "bucket" => &s3.bucket, "prefix" => &s3.prefix,
            "endpoint" => s3.endpoint.as_deref().unwrap_or("AWS"), "resumed_uploads" => resumed);
        Some(up)
    }

    /// Starts the shared actors and the Supervisor; `done` fires once shutdown has finished.
    pub fn launch(
        log: Logger,
        settings: SupervisorSettings,
        uploader: Option<Arc<Uploader>>,
        store: Option<Store>,
        docker: Arc<DockerClient>,
        (cluster, current): (Option<crate::cluster::Started>, crate::cluster::Current),
    ) -> (Addr<Supervisor>, oneshot::Receiver<()>) {
        crate::metrics::set_logger(log.new(slog::o!("actor" => "metrics")));
        let spool = Spool::new(&settings.state_dir);
        let archiver = Archiver::new(
            log.clone(),
            settings.registry.archive.clone(),
            spool,
            uploader,
            docker.clone(),
        )
        .start();
        let (cluster, cluster_events) = cluster.unzip();
        let healer = Healer::new(log.clone(), settings.state_dir.clone(), docker.clone()).start();
        let fleet = Arc::new(crate::fleet::FleetGuard::new(
            settings.registry.fleet_guard.clone(),
            settings.registry.targets.len(),
        ));
        let lease_dir = lease_dir_of(&settings);
        let lease_ttl = settings.registry.lease.ttl;
        let leases = restart_leases(&log, cluster.as_ref(), &lease_dir);
        let notifier = notifier_for(
            &log,
            &settings.registry.notify,
            store.clone(),
            cluster.as_ref(),
            &lease_dir,
        );
        let (tx, rx) = oneshot::channel();
        let sup = Supervisor {
            log: log.new(slog::o!("actor" => "supervisor")),
            root: log,
            settings,
            peers: Peers {
                archiver,
                healer,
                notifier,
                store,
                fleet,
                leases,
                lease_owner: crate::lease::owner_id().into(),
                lease_ttl,
                docker: docker.clone(),
                cluster,
            },
            slots: BTreeMap::new(),
            stopping: false,
            done: Some(tx),
            docker,
            following_events: false,
            discovery: None,
            discovered: BTreeMap::new(),
            unreachable: Vec::new(),
            container_of: HashMap::new(),
            clashes: HashSet::new(),
            owned: Default::default(),
            handed_state: HashMap::new(),
            coordination_incident: None,
            orphans: Default::default(),
            current,
            cluster_stream: None,
            sync_pending: false,
        };
        let addr = Supervisor::create(move |ctx| {
            let mut sup = sup;
            sup.cluster_stream = cluster_events.map(|events| ctx.add_stream(events));
            sup
        });
        (addr, rx)
    }

    fn spawn_monitor(&self, cfg: Arc<TargetConfig>, record: SharedRecord) -> Addr<Monitor> {
        let peers = self.peers.clone();
        let log = self.root.clone();
        actix::Supervisor::start(move |_| Monitor::new(cfg, record, peers, &log))
    }

    fn add(
        &mut self,
        cfg: TargetConfig,
        record: SharedRecord,
        discovered: Option<(String, DiscoveredFrom)>,
    ) {
        let cfg = Arc::new(cfg);
        if let Some((id, _)) = &discovered {
            self.container_of.insert(cfg.name.clone(), id.clone());
        }
        let addr = self.spawn_monitor(cfg.clone(), record.clone());
        self.slots.insert(
            cfg.name.clone(),
            Slot {
                cfg,
                record,
                addr,
                discovered,
                retiring: false,
            },
        );
    }

    /// The targets to run: the registry's, then the discovered ones whose names are free.
    fn wanted(&mut self) -> Vec<(TargetConfig, Option<(String, DiscoveredFrom)>)> {
        let mut out: Vec<_> = self
            .settings
            .registry
            .targets
            .iter()
            .map(|t| (t.clone(), None))
            .collect();
        for d in self.discovered.values() {
            if self
                .settings
                .registry
                .targets
                .iter()
                .any(|t| t.name == d.cfg.name)
            {
                if self
                    .clashes
                    .insert((d.cfg.name.clone(), d.container.clone()))
                {
                    error!(self.log, "discovered container not watched: its target name is already a target of the registry";
                        "event" => "discovery_name_clash", "target" => &d.cfg.name, "container" => &d.container,
                        "registry" => %self.settings.registry.source,
                        "fix" => "rename the registry's target, or give the container another name label");
                }
                continue;
            }
            let from = DiscoveredFrom {
                container: d.container.clone(),
                container_id: d.container_id.clone(),
                networks: d.networks.clone(),
                labels: d.labels.clone(),
                contested_by: d.contested_by.clone(),
            };
            out.push((d.cfg.clone(), Some((d.container_id.clone(), from))));
        }
        if let Some(c) = &self.peers.cluster {
            // The daemons share out the whole fleet; only what we own runs here.
            c.set_targets(out.iter().map(|(t, _)| t.name.clone()));
            out.retain(|(t, _)| self.owned.contains(&t.name));
        }
        out
    }

    /// Brings the running monitors in line with `wanted()`: added targets start, removed ones
    /// stop (after their open incident), changed ones restart with the same record (an open
    /// incident and the budget carry over: a new address, name or label is the same
    /// container). A discovered target whose container id changed is a re-created container
    /// (compose after a label change): a new container, so a fresh record (budget, backoff),
    /// and the old Monitor closes its open incident as replaced. Returns (added, removed,
    /// changed, unchanged); a replaced target counts as changed.
    fn sync(&mut self) -> (Vec<String>, Vec<String>, Vec<String>, usize) {
        let list = self.wanted();
        let order: Vec<String> = list.iter().map(|(t, _)| t.name.clone()).collect();
        let mut wanted: HashMap<String, (TargetConfig, Option<(String, DiscoveredFrom)>)> = list
            .into_iter()
            .map(|(t, d)| (t.name.clone(), (t, d)))
            .collect();
        let (mut added, mut removed, mut changed, mut unchanged) = (vec![], vec![], vec![], 0);
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            match wanted.remove(&name) {
                None => {
                    let slot = &self.slots[&name];
                    if slot.retiring {
                        continue;
                    }
                    if slot.record.lock().incident.is_some() {
                        warn!(self.log, "target removed while an incident is open: it is retired once the incident is over";
                            "event" => "target_retiring", "target" => &name);
                        if let Some(s) = self.slots.get_mut(&name) {
                            s.retiring = true;
                        }
                        continue;
                    }
                    if let Some(slot) = self.slots.remove(&name) {
                        slot.addr.do_send(Retire);
                    }
                    removed.push(name);
                }
                Some((cfg, Some((id, from)))) if self.replaced(&name, &id) => {
                    self.replace(&name, cfg, id, from);
                    changed.push(name);
                }
                Some((cfg, from)) if *self.slots[&name].cfg != cfg => {
                    let slot = self.slots.remove(&name).expect("present");
                    slot.addr.do_send(Retire);
                    // Same record: an open incident and the restart budget carry over.
                    self.add(cfg, slot.record, from);
                    changed.push(name);
                }
                Some((_, from)) => {
                    if let Some(s) = self.slots.get_mut(&name) {
                        s.retiring = false;
                        s.discovered = from;
                    }
                    unchanged += 1;
                }
            }
        }
        for name in order {
            if let Some((t, from)) = wanted.remove(&name) {
                added.push(t.name.clone());
                // A target name seen before in another container: that one's budget is not
                // this one's.
                let record = match (&from, self.container_of.get(&name)) {
                    (Some((id, _)), Some(old)) if old != id => {
                        self.forget_identity(&name);
                        SharedRecord::default()
                    }
                    _ => self.record_for(&t),
                };
                self.add(t, record, from);
            }
        }
        for name in &removed {
            crate::metrics::global().forget_target(name);
        }
        let names: Vec<String> = self.slots.keys().cloned().collect();
        self.peers
            .fleet
            .reconfigure(self.settings.registry.fleet_guard.clone(), &names);
        (added, removed, changed, unchanged)
    }

    /// Starts, restarts (new settings or defaults) or stops the discovery watcher.
    fn start_discovery(&mut self, ctx: &mut Context<Self>) {
        let want = self
            .settings
            .registry
            .discovery
            .clone()
            .map(|d| (d, self.settings.registry.defaults.clone()));
        let same = match (&self.discovery, &want) {
            (Some((_, d, def)), Some((wd, wdef))) => d == wd && def == wdef,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        if let Some((handle, _, _)) = self.discovery.take() {
            ctx.cancel_future(handle);
        }
        let Some((cfg, defaults)) = want else {
            self.discovered.clear();
            return;
        };
        let log = self.root.new(slog::o!("actor" => "discovery"));
        let fut = crate::discovery::docker::follow(
            self.docker.clone(),
            cfg.clone(),
            defaults.clone(),
            ctx.address().recipient::<Discovered>(),
            log,
        );
        let handle = ctx.spawn(fut.into_actor(self));
        self.discovery = Some((handle, cfg, defaults));
    }

    /// Retires the removed targets whose incident is over (recovered, escalated or waiting
    /// for a person): nothing more would be done for them.
    fn retire_finished(&mut self) {
        use crate::incident::Phase;
        let done: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| s.retiring)
            .filter(|(_, s)| {
                let rec = s.record.lock();
                rec.incident.is_none()
                    || matches!(rec.phase, Phase::Escalated | Phase::Unhealed | Phase::Held)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in done {
            if let Some(slot) = self.slots.remove(&name) {
                slot.addr.do_send(Retire);
            }
            crate::metrics::global().forget_target(&name);
            let names: Vec<String> = self.slots.keys().cloned().collect();
            self.peers
                .fleet
                .reconfigure(self.settings.registry.fleet_guard.clone(), &names);
            info!(self.log, "removed target retired after its incident"; "event" => "target_retired", "target" => &name);
        }
    }

    /// A discovered container was removed: its target goes (no incident for it).
    fn container_removed(&mut self, id: &str, ctx: &mut Context<Self>) {
        let before = self.discovered.len();
        self.discovered.retain(|_, d| d.container_id != id);
        if self.discovered.len() != before {
            let (_, removed, _, _) = self.sync();
            info!(self.log, "discovered container removed"; "event" => "discovery_applied", "added" => "", "removed" => removed.join(","), "changed" => "");
            self.start_docker(ctx);
        }
    }

    /// A target's record: restored from the store (open incident, budget, maintenance).
    fn record_for(&mut self, t: &TargetConfig) -> SharedRecord {
        if self.peers.cluster.is_some() {
            return self.record_from_cluster(t);
        }
        match &self.peers.store {
            Some(store) => {
                let heal_logs = self.settings.state_dir.join("heal-logs");
                let (rec, refused) = store.restore_record(&t.name, &t.budget, &heal_logs);
                if let Some(u) = refused {
                    u.report(&self.log, "store");
                    self.say_untrusted(t, &u);
                }
                SharedRecord::new(rec)
            }
            None => SharedRecord::default(),
        }
    }

    /// Replaces Monitors that died; the new one resumes from the same record.
    fn check_monitors(&mut self) {
        if self.stopping {
            return;
        }
        self.retire_finished();
        self.prune_orphans();
        let dead: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.addr.connected())
            .map(|(n, _)| n.clone())
            .collect();
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

    /// For registries with container targets: says at once whether the Engine answers, and
    /// follows its events (the fast path for dying containers).
    fn start_docker(&mut self, ctx: &mut Context<Self>) {
        let containers: Vec<String> = self
            .slots
            .values()
            .filter_map(|s| s.cfg.container().map(|c| format!("{}={c}", s.cfg.name)))
            .collect();
        if containers.is_empty() || self.following_events {
            return;
        }
        let (docker, log) = (self.docker.clone(), self.log.clone());
        actix_rt::spawn(async move {
            match docker.check().await {
                Ok(v) => {
                    info!(log, "Docker Engine reachable"; "event" => "docker_ready", "endpoint" => docker.endpoint(), "api_version" => v,
                    "containers" => containers.join(","))
                }
                Err(e) => {
                    error!(log, "Docker Engine not usable: container targets are still probed and alerted, but cannot be restarted or archived from inside until it is";
                    "event" => "docker_unavailable", "kind" => e.kind(), "endpoint" => docker.endpoint(), "error" => %e)
                }
            }
        });
        if self.settings.registry.docker.events {
            self.following_events = true;
            let sink = ctx.address().recipient();
            let log = self.root.new(slog::o!("actor" => "docker-events"));
            ctx.spawn(
                crate::docker::events::follow(self.docker.clone(), sink, log).into_actor(self),
            );
        }
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        let new = match VarSource::from_env_and_dotenv(&std::env::current_dir().unwrap_or_default())
            .and_then(|vars| config::load(self.settings.config_path.as_deref(), &vars))
        {
            Ok(r) => r,
            Err(e) => {
                error!(self.log, "reload rejected; the previous registry keeps running"; "event" => "reload_rejected", "error" => %e);
                return;
            }
        };
        if new.archive.s3 != self.settings.registry.archive.s3 {
            // A new S3 sink needs a new client (built asynchronously); an unchanged one keeps
            // its uploader, whose jobs would otherwise be resumed twice from the same spool.
            let archiver = self.peers.archiver.clone();
            let cfg = new.archive.clone();
            let log = self.root.clone();
            let state_dir = self.settings.state_dir.clone();
            actix_rt::spawn(async move {
                let up = Supervisor::uploader(&log, &cfg, &state_dir).await;
                archiver.do_send(SetArchive {
                    cfg,
                    uploader: Some(up),
                });
            });
        } else if new.archive != self.settings.registry.archive {
            self.peers.archiver.do_send(SetArchive {
                cfg: new.archive.clone(),
                uploader: None,
            });
        }
        if new.cluster != self.settings.registry.cluster {
            // All or nothing: a refused cluster change refuses the whole reload.
            if let Err(why) = self.rejoin(new.cluster.clone(), ctx) {
                error!(self.log, "reload rejected; the previous registry keeps running"; "event" => "reload_rejected", "error" => &why);
                return;
            }
        }
        // Always: with the same channels the Notifier only revives dead or gone ones.
        self.peers.notifier.do_send(SetChannels(new.notify.clone()));
        self.settings.registry = new;
        self.start_discovery(ctx);
        let (added, removed, changed, unchanged) = self.sync();
        self.start_docker(ctx);
        info!(self.log, "registry reloaded"; "event" => "reload_applied", "added" => added.join(","), "removed" => removed.join(","),
            "changed" => changed.join(","), "unchanged" => unchanged);
    }
}

/// The Notifier. The outage book lives beside the leases: daemons sharing one share the other.
/// In cluster mode only a target's owner runs it, and the incident moves with the target: no
/// book, but the deliveries are recorded in the target's state for its next owner.
fn notifier_for(
    log: &Logger,
    notify: &crate::config::NotifyConfig,
    store: Option<Store>,
    cluster: Option<&Arc<crate::cluster::Cluster>>,
    lease_dir: &std::path::Path,
) -> Addr<Notifier> {
    let notifier = Notifier::new(log.clone(), notify, store);
    let notifier = match cluster {
        Some(c) => notifier.with_ledger(c.ledger()),
        None => notifier.with_outages(
            crate::outage::OutageBook::new(lease_dir.to_path_buf(), Default::default()),
            crate::lease::owner_id(),
        ),
    };
    notifier.start()
}

/// The restart lease backend: in cluster mode a compare-and-swap on the target's owner key
/// in etcd; else lease files in `lease_dir` (an unusable directory refuses every restart).
fn restart_leases(
    log: &Logger,
    cluster: Option<&Arc<crate::cluster::Cluster>>,
    lease_dir: &std::path::Path,
) -> Arc<dyn crate::lease::LeaseBackend> {
    if let Some(c) = cluster {
        return c.leases();
    }
    match crate::lease::FileLeases::open(lease_dir.to_path_buf()) {
        Ok((l, tightened)) => {
            if tightened {
                warn!(log, "the lease directory was readable or writable by others: made it private (0700)"; "event" => "lease_dir_tightened", "dir" => %lease_dir.display());
            }
            Arc::new(l)
        }
        Err(e) => {
            error!(log, "cannot create the lease directory: restarts will be refused (fail closed)"; "event" => "lease_unavailable", "dir" => %lease_dir.display(), "error" => %e);
            Arc::new(crate::lease::FileLeases::unusable(
                lease_dir.to_path_buf(),
                e.to_string(),
            ))
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let targets = self.settings.registry.targets.clone();
        info!(self.log, "starting"; "event" => "daemon_started", "registry" => %self.settings.registry.source,
            "targets" => targets.len(), "archive_dir" => self.settings.registry.archive.local_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_else(|| "(S3 only)".into()),
            "version" => env!("CARGO_PKG_VERSION"));
        if self.peers.cluster.is_some() {
            // Targets start as the cluster gives them to this daemon.
            self.sync();
        }
        let alone = self.peers.cluster.is_none();
        for t in targets.into_iter().filter(|_| alone) {
            let record = self.record_for(&t);
            {
                let rec = record.lock();
                if let Some(inc) = &rec.incident {
                    warn!(self.log, "resuming an incident left open by the previous run"; "event" => "incident_restored", "target" => &t.name,
                        "incident" => &inc.id, "phase" => rec.phase.label());
                }
            }
            self.add(t, record, None);
        }
        ctx.run_interval(Duration::from_millis(250), |act, _| act.check_monitors());
        self.start_docker(ctx);
        self.start_discovery(ctx);
    }
}

impl Handler<ContainerEvent> for Supervisor {
    type Result = ();
    /// Routes a container event to the Monitors whose target runs in that container. A
    /// discovered container being removed (`docker rm -f` kills it first) retires its target
    /// instead: removing a container is not a failure.
    fn handle(&mut self, ev: ContainerEvent, ctx: &mut Context<Self>) {
        let discovered = self
            .slots
            .values()
            .any(|s| s.discovered.as_ref().is_some_and(|(id, _)| *id == ev.id));
        if discovered && ev.action == "destroy" {
            return self.container_removed(&ev.id, ctx);
        }
        if discovered && ev.action == "die" {
            // Ask the Engine whether the death is a removal before the Monitor hears of it.
            let (docker, id) = (self.docker.clone(), ev.id.clone());
            let fut = async move {
                let c = crate::config::ContainerRef::Name(id.clone());
                docker
                    .call(|api, ep| async move {
                        crate::docker::container::inspect(&api, &ep, &c).await
                    })
                    .await
            };
            ctx.spawn(fut.into_actor(self).map(move |r, act, ctx| {
                let removing = match &r {
                    Ok(st) => matches!(st.status.as_str(), "removing" | "dead"),
                    Err(e) => matches!(e, crate::docker::DockerError::NotFound { .. }),
                };
                if removing {
                    act.container_removed(&ev.id, ctx);
                } else {
                    act.route(&ev);
                }
            }));
            return;
        }
        self.route(&ev);
    }
}

/// The first 12 characters of a container id, as `docker ps` shows it.
fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// The record of a new container under a known target name: nothing of the old container's
/// (incident, budget, backoff, failures), but the operator's maintenance window, which is
/// about the target.
fn fresh_record(old: &SharedRecord) -> SharedRecord {
    let maintenance_until = old.lock().maintenance_until;
    SharedRecord::new(crate::incident::TargetRecord {
        maintenance_until,
        ..Default::default()
    })
}

impl Supervisor {
    /// A new container under a known name is a new server: the identity stored for the old
    /// one is dropped, so a restart of the daemon before the new one's first passing probe
    /// does not judge it `wrong_server` (its first pass is learned, as for any new target).
    fn forget_identity(&self, name: &str) {
        if let Some(store) = &self.peers.store {
            drop(store.forget_identity(name)); // failures are logged by the writer
        }
    }

    /// A re-created container: the old Monitor closes its incident as replaced, and a new one
    /// starts with a fresh record (only a maintenance window carries over).
    fn replace(&mut self, name: &str, cfg: TargetConfig, id: String, from: DiscoveredFrom) {
        let slot = self.slots.remove(name).expect("present");
        info!(self.log, "container re-created: a new container (fresh restart budget); the old one's incident closes as replaced";
            "event" => "target_replaced", "target" => name, "container" => &from.container, "container_id" => short(&id),
            "old_container_id" => slot.discovered.as_ref().map(|(old, _)| short(old)).unwrap_or_default());
        slot.addr.do_send(Replaced {
            container: from.container.clone(),
            container_id: id.clone(),
        });
        let record = fresh_record(&slot.record);
        self.forget_identity(name);
        self.add(cfg, record, Some((id, from)));
    }

    /// Whether the discovered target `name` now runs in another container than its Monitor's.
    fn replaced(&self, name: &str, id: &str) -> bool {
        self.slots
            .get(name)
            .and_then(|s| s.discovered.as_ref())
            .is_some_and(|(old, _)| old != id)
    }

    fn route(&self, ev: &ContainerEvent) {
        for slot in self.slots.values() {
            if slot.cfg.container().is_some_and(|c| ev.concerns(c)) {
                slot.addr.do_send(ev.clone());
            }
        }
    }
}

impl Handler<Discovered> for Supervisor {
    type Result = ();
    /// The discovered set changed: applied like a reload of those targets.
    fn handle(&mut self, msg: Discovered, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        self.unreachable = msg.0.unreachable;
        self.discovered = msg
            .0
            .targets
            .into_iter()
            .map(|d| (d.cfg.name.clone(), d))
            .collect();
        let (added, removed, changed, unchanged) = self.sync();
        if !(added.is_empty() && removed.is_empty() && changed.is_empty()) {
            info!(self.log, "discovered targets applied"; "event" => "discovery_applied", "added" => added.join(","), "removed" => removed.join(","),
                "changed" => changed.join(","), "unchanged" => unchanged, "discovered" => self.discovered.len());
        }
        self.start_docker(ctx);
    }
}

impl Handler<Reload> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Reload, ctx: &mut Context<Self>) {
        if !self.stopping {
            self.reload(ctx);
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
        let (a, h, n) = (
            self.peers.archiver.clone(),
            self.peers.healer.clone(),
            self.peers.notifier.clone(),
        );
        let leave = self.peers.cluster.as_ref().map(|c| c.leave());
        let drain = async move {
            if let Some(leave) = leave {
                // Our lease revoked: the other daemons take our targets over at once.
                leave.await;
            }
            let (a, h, n) = futures::join!(
                a.send(Drain { deadline }),
                h.send(Drain { deadline }),
                n.send(Drain { deadline })
            );
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

impl Handler<GetStatus> for Supervisor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let now = std::time::Instant::now();
        let listed = self
            .settings
            .registry
            .targets
            .iter()
            .filter_map(|t| self.slots.get(&t.name));
        // Registry order first, then discovered (and retiring) targets by name.
        let others = self.slots.values().filter(|s| {
            !self
                .settings
                .registry
                .targets
                .iter()
                .any(|t| t.name == s.cfg.name)
        });
        let out = listed
            .chain(others)
            .map(|slot| {
                let mut rec = slot.record.lock();
                let in_window = rec
                    .restarts
                    .iter()
                    .filter(|r| now.duration_since(**r) < slot.cfg.budget.window)
                    .count();
                let maintenance_until = rec.maintenance_until.filter(|u| *u > chrono::Utc::now());
                if maintenance_until.is_none() {
                    rec.maintenance_until = None;
                }
                TargetStatus {
                    name: slot.cfg.name.clone(),
                    endpoint: slot.cfg.dsn.endpoint(),
                    // Failing in a window (suspect, never acted on) is down on purpose.
                    state: if maintenance_until.is_some()
                        && matches!(
                            rec.phase,
                            crate::incident::Phase::Healthy | crate::incident::Phase::Suspect
                        ) {
                        "maintenance".into()
                    } else {
                        rec.phase.label().into()
                    },
                    up: rec.last_ok,
                    last_probe_at: rec.last_probe.map(|p| p.0),
                    last_probe_latency_ms: rec.last_probe.map(|p| p.1.as_secs_f64() * 1000.0),
                    consecutive_failures: rec.failures,
                    restarts_in_window: in_window,
                    max_restarts: slot.cfg.budget.max_restarts,
                    open_incident: rec.incident.as_ref().map(|i| i.id.to_string()),
                    cause: rec
                        .incident
                        .as_ref()
                        .and_then(|i| i.cause.as_ref())
                        .map(|c| c.sentence.clone()),
                    maintenance_until,
                    monitor_alive: slot.addr.connected(),
                    discovered: slot.discovered.as_ref().map(|(_, d)| d.clone()),
                    owner: self.peers.cluster.as_ref().map(|c| c.member().to_string()),
                    vitals: rec.flight.latest(),
                    warnings: rec.warnings.keys().map(|c| c.label().to_string()).collect(),
                }
            })
            .collect::<Vec<_>>();
        let unreachable = self.unreachable_status(&out);
        MessageResult(out.into_iter().chain(unreachable).collect())
    }
}

impl Supervisor {
    /// The containers discovery gave up connecting to, for `status`: state `unreachable`,
    /// no Monitor, nothing probed (unless a target of that name is listed already).
    fn unreachable_status(&self, listed: &[TargetStatus]) -> Vec<TargetStatus> {
        self.unreachable
            .iter()
            .filter(|d| !listed.iter().any(|t| t.name == d.cfg.name))
            .map(|d| TargetStatus {
                name: d.cfg.name.clone(),
                endpoint: d.cfg.dsn.endpoint(),
                state: "unreachable".into(),
                up: None,
                last_probe_at: None,
                last_probe_latency_ms: None,
                consecutive_failures: 0,
                restarts_in_window: 0,
                max_restarts: d.cfg.budget.max_restarts,
                open_incident: None,
                cause: None,
                maintenance_until: None,
                monitor_alive: false,
                discovered: Some(DiscoveredFrom {
                    container: d.container.clone(),
                    container_id: d.container_id.clone(),
                    networks: d.networks.clone(),
                    labels: d.labels.clone(),
                    contested_by: d.contested_by.clone(),
                }),
                owner: None,
                vitals: None,
                warnings: Vec::new(),
            })
            .collect()
    }
}

impl Handler<SetMaintenance> for Supervisor {
    type Result = ResponseFuture<Result<(), String>>;

    /// Applies the window at once; answers once the store has it (off this thread).
    fn handle(&mut self, msg: SetMaintenance, _: &mut Context<Self>) -> Self::Result {
        let Some(slot) = self.slots.get(&msg.target) else {
            let e = format!("no target named '{}'", msg.target);
            return Box::pin(async move { Err(e) });
        };
        {
            let mut rec = slot.record.lock();
            rec.maintenance_until = msg.until;
            rec.maintenance_noted = false;
        }
        let written = self.peers.store.as_ref().map(|s| {
            (
                s.set_maintenance(&msg.target, msg.until),
                s.path().to_string(),
            )
        });
        crate::metrics::global().set(
            "sentinel_target_maintenance",
            &[("target", msg.target.as_str())],
            if msg.until.is_some() { 1.0 } else { 0.0 },
        );
        match msg.until {
            Some(u) => {
                warn!(self.log, "maintenance window opened: no archive, restart or alert"; "event" => "maintenance_started", "target" => &msg.target, "until" => %u)
            }
            None => {
                info!(self.log, "maintenance ended: healing re-enabled"; "event" => "maintenance_ended", "target" => &msg.target)
            }
        }
        Box::pin(async move {
            match written {
                Some((w, path)) => w
                    .wait(Duration::from_secs(10), &path)
                    .await
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })
    }
}

/// Where restart leases are kept: `lease.dir`, or `leases/` in the state directory.
fn lease_dir_of(settings: &SupervisorSettings) -> std::path::PathBuf {
    settings
        .registry
        .lease
        .dir
        .clone()
        .unwrap_or_else(|| settings.state_dir.join("leases"))
}

//! Watches the Docker Engine for containers to discover: lists them once, then again after
//! every event that can change the set or an address (container create, start, rename, die,
//! destroy; network connect and disconnect) and after every reconnect, and sends the whole
//! set to the Supervisor, which applies the difference through its reload path.
//!
//! Three cases are decided here (README, "Discovery"):
//! - moves: a container moved to another network (`docker network connect` then `disconnect`)
//!   or given another address by a restart gets a target with the new address at the next
//!   listing; the Supervisor applies it as a changed target (same incident, same budget).
//! - re-creation: compose renames the old container `<its id[..12]>_<name>` before creating
//!   the new one. Such a leftover (that name pattern, with the compose project and service of
//!   a target) is never a target of its own: it keeps the target it had, unchanged, until a
//!   new container claims the name. The target carries its container id, so the Supervisor
//!   tells the new container (a new id) from a changed one.
//! - unreachable: a running container whose server accepts no connection from the daemon
//!   within `defaults.recovery_timeout` is reported once at ERROR (its networks and the fix)
//!   and listed as `unreachable` by `status`, until it answers.

use super::labels::{self, ContainerFacts};
use super::{DiscoveredSet, DiscoveredTarget};
use crate::backoff::Backoff;
use crate::config::{DiscoveryMode, DockerDiscovery, Problem, TargetConfig, TargetDefaults};
use crate::docker::{DockerClient, DockerError};
use actix::prelude::*;
use bollard::container::{InspectContainerOptions, ListContainersOptions};
use bollard::models::{ContainerSummary, EventMessage};
use bollard::system::EventsOptions;
use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use slog::{debug, error, info, warn, Logger};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Container events after which the set or an address may have changed. A stopped container
/// stays a target (and is healed); `die` is here so that the address is read again at once.
const RESYNC_ON: [&str; 5] = ["create", "start", "rename", "die", "destroy"];

/// Network events that change a container's addresses (the event names the container).
const NETWORK_EVENTS: [&str; 2] = ["connect", "disconnect"];

/// The compose labels naming a container's project and service.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// Waits between attempts to reach the Engine again: from 1 s up to 2 s. Short: an attempt
/// costs one connection, while each second spent waiting after the Engine is back (a restart
/// takes seconds) leaves containers added or removed in the meantime unseen.
const RECONNECT: Backoff = Backoff::fixed(Duration::from_secs(1), Duration::from_secs(2));

/// What an inspect adds to a listing; fixed for a container's life, so asked once per id.
#[derive(Clone)]
struct Inspected {
    pgdata: Option<String>,
    cmd: Vec<String>,
    /// `log_directory` from postgresql.conf / postgresql.auto.conf in the container.
    conf_log_directory: Option<String>,
    created: Option<DateTime<Utc>>,
    /// The labels of the container's image, which every container of it inherits.
    image_labels: BTreeMap<String, String>,
}

/// A container and its target, or the problems with its labels.
type Built = (ContainerFacts, Result<TargetConfig, Vec<Problem>>);

/// A skipped container's name and why.
pub type Skipped = (String, Vec<Problem>);

struct Watcher {
    client: Arc<DockerClient>,
    cfg: DockerDiscovery,
    defaults: TargetDefaults,
    /// Hands a changed set of targets on (to the Supervisor); None: only look.
    sink: Option<SendTargets>,
    log: Logger,
    inspected: HashMap<String, Inspected>,
    /// The last address seen per container: a stopped container has none, and its target
    /// must not change while it is down.
    last_address: HashMap<String, String>,
    /// The problem last reported per container, so each is said once, not at every resync.
    reported: HashMap<String, String>,
    /// Which container (id) holds each discovered target name: a later container claiming
    /// the name never takes it over.
    holders: HashMap<String, String>,
    /// The networks of the daemon's own container; None: the daemon runs on the host.
    own_networks: Option<Vec<String>>,
    /// The last set sent.
    sent: Option<DiscoveredSet>,
    /// The networks of each container seen (sorted).
    networks_of: HashMap<String, Vec<String>>,
    /// Compose (project, service) of every container that was a target in this run: a
    /// `<id>_<name>` leftover of one of them is a re-creation in progress.
    compose_targets: HashSet<(String, String)>,
    /// Compose leftovers (the old container, renamed during a re-creation): never targets.
    leftovers: HashSet<String>,
    /// A leftover's target as it was before the rename, kept until a new container takes
    /// the name (so the Supervisor sees the new id replace the old one).
    frozen: HashMap<String, DiscoveredTarget>,
    /// Running containers whose server has not accepted a connection yet, since when.
    waiting_since: HashMap<String, std::time::Instant>,
    /// Those reported unreachable (one ERROR each, until they answer).
    unreachable_said: HashSet<String>,
    /// Those past the deadline at the last listing.
    unreachable: Vec<DiscoveredTarget>,
    /// Containers whose main process runs now.
    running: HashSet<String>,
    /// Containers that are targets: their server accepted a connection once, or they were
    /// found stopped. Before that a container is initialising (initdb, init scripts), and a
    /// restart would leave it half made.
    armed: HashSet<String>,
    /// Some running container is not armed yet.
    waiting: bool,
}

/// Sends the whole set of targets found now, replacing the previous set.
type SendTargets = Box<dyn Fn(DiscoveredSet)>;

/// Follows the Engine until the daemon stops (its receiver is gone), sending each changed set
/// of targets as an `M` (the Supervisor's `Discovered`: the protocol stays in the actors).
pub async fn follow<M>(
    client: Arc<DockerClient>,
    cfg: DockerDiscovery,
    defaults: TargetDefaults,
    sink: Recipient<M>,
    log: Logger,
) where
    M: Message<Result = ()> + From<DiscoveredSet> + Send + 'static,
{
    let send: SendTargets = {
        let sink = sink.clone();
        Box::new(move |targets| {
            let _ = sink.try_send(M::from(targets));
        })
    };
    let mut w = Watcher::new(client, cfg, defaults, Some(send), log).await;
    info!(w.log, "discovering PostgreSQL containers on the Docker Engine"; "event" => "discovery_started",
        "namespace" => &w.cfg.namespace, "mode" => match w.cfg.mode { DiscoveryMode::Label => "label", DiscoveryMode::All => "all" },
        "endpoint" => w.client.endpoint(), "in_container" => w.own_networks.is_some());
    // Reconnect attempts since the stream last opened: the wait grows with each.
    let mut attempt = 0u32;
    let mut said_broken = false;
    loop {
        let api = match w.client.streaming().await {
            Ok(api) => api,
            Err(e) => {
                if !said_broken {
                    error!(w.log, "cannot follow the Docker Engine: discovered targets stay as they are until it answers";
                        "event" => "discovery_unavailable", "kind" => e.kind(), "error" => %e);
                    said_broken = true;
                }
                tokio::time::sleep(RECONNECT.delay(attempt)).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
        };
        let stream = api.events(Some(events_options()));
        // Whatever happened while the stream was closed is found by listing again.
        if w.resync().await.is_err() {
            tokio::time::sleep(RECONNECT.delay(attempt)).await;
            continue;
        }
        if said_broken {
            info!(w.log, "following the Docker Engine again"; "event" => "discovery_resumed");
            said_broken = false;
        }
        attempt = 0;
        if !w.watch(stream, &|| sink.connected()).await {
            return;
        }
        if !sink.connected() {
            return;
        }
        tokio::time::sleep(RECONNECT.delay(attempt)).await;
    }
}

/// The events that may call for a new listing. No label filter: a network event carries the
/// network's labels, not the container's; [`Watcher::concerns`] picks the relevant ones.
fn events_options() -> EventsOptions<String> {
    let filters = HashMap::from([
        (
            "type".to_string(),
            vec!["container".to_string(), "network".to_string()],
        ),
        (
            "event".to_string(),
            RESYNC_ON
                .iter()
                .chain(NETWORK_EVENTS.iter())
                .map(|s| s.to_string())
                .collect(),
        ),
    ]);
    EventsOptions::<String> {
        since: None,
        until: None,
        filters,
    }
}

/// Whether `name` is what compose calls a container it is replacing: `<id[..12]>_<name>`,
/// with its own id.
fn leftover_name(id: &str, name: &str) -> bool {
    id.get(..12)
        .and_then(|prefix| name.strip_prefix(prefix))
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| !rest.is_empty())
}

/// The container's compose project and service, when it has both labels.
fn compose_pair(labels: &BTreeMap<String, String>) -> Option<(String, String)> {
    Some((
        labels.get(COMPOSE_PROJECT)?.clone(),
        labels.get(COMPOSE_SERVICE)?.clone(),
    ))
}

/// One look at the Engine, for `check-config --discover`: what would be discovered now, and
/// which containers would be skipped and why.
pub async fn discover_once(
    client: Arc<DockerClient>,
    cfg: DockerDiscovery,
    defaults: TargetDefaults,
    log: Logger,
) -> Result<(Vec<DiscoveredTarget>, Vec<Skipped>), DockerError> {
    let mut w = Watcher::new(client, cfg, defaults, None, log).await;
    let built = w.scan().await?;
    Ok(w.partition(built))
}

impl Watcher {
    /// A watcher that knows nothing yet but the networks the daemon itself is on.
    async fn new(
        client: Arc<DockerClient>,
        cfg: DockerDiscovery,
        defaults: TargetDefaults,
        sink: Option<SendTargets>,
        log: Logger,
    ) -> Self {
        let mut w = Watcher {
            client,
            cfg,
            defaults,
            sink,
            log,
            inspected: HashMap::new(),
            last_address: HashMap::new(),
            reported: HashMap::new(),
            holders: HashMap::new(),
            own_networks: None,
            sent: None,
            networks_of: HashMap::new(),
            compose_targets: HashSet::new(),
            leftovers: HashSet::new(),
            frozen: HashMap::new(),
            waiting_since: HashMap::new(),
            unreachable_said: HashSet::new(),
            unreachable: Vec::new(),
            running: HashSet::new(),
            armed: HashSet::new(),
            waiting: false,
        };
        w.own_networks = w.own_networks().await;
        w
    }

    /// The networks of the container the daemon runs in, if it runs in one.
    async fn own_networks(&self) -> Option<Vec<String>> {
        if !tokio::fs::try_exists("/.dockerenv").await.unwrap_or(false) {
            return None;
        }
        let host = tokio::fs::read_to_string("/etc/hostname").await.ok()?;
        let host = host.trim().to_string();
        let r = self
            .client
            .call(|api, ep| async move {
                api.inspect_container(&host, None::<InspectContainerOptions>)
                    .await
                    .map_err(|e| DockerError::from_bollard(e, &ep, &host))
            })
            .await
            .ok()?;
        let mut nets: Vec<String> = r
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default();
        nets.sort();
        Some(nets)
    }

    /// Lists again after each burst of events (and every half second while a container
    /// initialises) until the stream ends or breaks: true then, false once the receiver of the
    /// targets is gone.
    async fn watch<S>(&mut self, mut stream: S, connected: &dyn Fn() -> bool) -> bool
    where
        S: futures::Stream<Item = Result<EventMessage, bollard::errors::Error>> + Unpin,
    {
        loop {
            // While a container is initialising, look again every half second: no event
            // says when its server starts accepting connections.
            let item = if self.waiting {
                match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
                    Ok(item) => item,
                    Err(_) => {
                        if self.resync().await.is_err() {
                            return true;
                        }
                        continue;
                    }
                }
            } else {
                stream.next().await
            };
            let Some(item) = item else { return true };
            let mut relevant = match item {
                Ok(m) => self.concerns(&m),
                Err(e) => {
                    warn!(self.log, "Docker events stream broke; reopening"; "event" => "discovery_events_broken", "error" => %e);
                    return true;
                }
            };
            // A burst (a compose stack coming up) costs one listing.
            while let Some(Some(Ok(m))) = stream.next().now_or_never() {
                relevant |= self.concerns(&m);
            }
            if !relevant {
                continue;
            }
            if self.resync().await.is_err() {
                return true;
            }
            if !connected() {
                return false;
            }
        }
    }

    /// Whether an event may change the set: a container event of a container the mode
    /// selects (in `label` mode, one with the enable label), or a network event about a
    /// container seen before.
    fn concerns(&self, m: &EventMessage) -> bool {
        let attrs = m.actor.as_ref().and_then(|a| a.attributes.as_ref());
        match m.typ {
            Some(bollard::models::EventMessageTypeEnum::NETWORK) => attrs
                .and_then(|a| a.get("container"))
                .is_some_and(|id| self.networks_of.contains_key(id)),
            _ => {
                self.cfg.mode == DiscoveryMode::All
                    || attrs
                        .is_some_and(|a| a.contains_key(&format!("{}.enable", self.cfg.namespace)))
            }
        }
    }

    /// Lists the containers, builds their targets, and sends the set if it changed.
    async fn resync(&mut self) -> Result<(), DockerError> {
        let built = self.scan().await?;
        let built = self.armed_only(built).await;
        let (mut targets, _) = self.partition(built);
        // A leftover of a re-creation keeps its target until a new container takes the name.
        for t in self.frozen.values() {
            if !targets.iter().any(|x| x.cfg.name == t.cfg.name) {
                targets.push(t.clone());
            }
        }
        targets.sort_by(|a, b| a.cfg.name.cmp(&b.cfg.name));
        let set = DiscoveredSet {
            targets,
            unreachable: self.unreachable.clone(),
        };
        if self.sent.as_ref() != Some(&set) {
            debug!(self.log, "discovered"; "targets" => set.targets.len(), "unreachable" => set.unreachable.len());
            self.sent = Some(set.clone());
            if let Some(send) = &self.sink {
                send(set);
            }
        }
        Ok(())
    }

    /// The selected containers, each with its target or the problems with its labels.
    async fn scan(&mut self) -> Result<Vec<Built>, DockerError> {
        let listed = match self.list().await {
            Ok(l) => l,
            Err(e) => {
                warn!(self.log, "cannot list containers; discovered targets stay as they are"; "event" => "discovery_list_failed", "kind" => e.kind(), "error" => %e);
                return Err(e);
            }
        };
        // Every container listed, selected or not: what the Engine no longer has is forgotten.
        let present: HashSet<String> = listed.iter().filter_map(|s| s.id.clone()).collect();
        let mut facts = Vec::new();
        for s in listed {
            if let Some(f) = self.facts_of(s).await {
                facts.push(f);
            }
        }
        self.inspected.retain(|id, _| present.contains(id));
        self.last_address.retain(|id, _| present.contains(id));
        self.reported.retain(|id, _| present.contains(id));
        self.running.retain(|id| present.contains(id));
        self.armed.retain(|id| present.contains(id));
        self.networks_of.retain(|id, _| present.contains(id));
        self.leftovers.retain(|id| present.contains(id));
        self.frozen.retain(|id, _| present.contains(id));
        self.waiting_since.retain(|id, _| present.contains(id));
        self.unreachable_said.retain(|id| present.contains(id));

        // Pure: the credentials were read at load, and labels are never expanded.
        let built = facts
            .into_iter()
            .map(|f| {
                let r = labels::target(&f, &self.cfg, &self.defaults).map(TargetConfig::discovered);
                (f, r)
            })
            .collect();
        Ok(built)
    }

    /// Every container the mode looks at (in `label` mode, those enabled by label), stopped
    /// ones included.
    async fn list(&self) -> Result<Vec<ContainerSummary>, DockerError> {
        let mut filters = HashMap::new();
        if self.cfg.mode == DiscoveryMode::Label {
            filters.insert(
                "label".to_string(),
                vec![format!("{}.enable=true", self.cfg.namespace)],
            );
        }
        self.client
            .call(|api, ep| async move {
                api.list_containers(Some(ListContainersOptions::<String> {
                    all: true,
                    filters,
                    ..Default::default()
                }))
                .await
                .map_err(|e| DockerError::from_bollard(e, &ep, ""))
            })
            .await
    }

    /// What one listed container is, when discovery selects it (and notes whether it runs);
    /// None for a container that is not a database yet, is going away, or is not ours.
    async fn facts_of(&mut self, s: ContainerSummary) -> Option<ContainerFacts> {
        // Never started (`docker create`): not a database yet, nothing to heal. Being
        // removed: retired, not failed.
        let state = s.state.clone().unwrap_or_default();
        if matches!(state.as_str(), "created" | "removing" | "dead") {
            return None;
        }
        let id = s.id.clone()?;
        let inspected = match self.inspected.get(&id) {
            Some(i) => i.clone(),
            None => {
                // None: gone between the listing and the inspect.
                let i = self.inspect(&id).await?;
                self.inspected.insert(id.clone(), i.clone());
                i
            }
        };
        let name = s
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| id.chars().take(12).collect());
        let mut labels: BTreeMap<String, String> =
            s.labels.clone().unwrap_or_default().into_iter().collect();
        if !self.cfg.trust_image_labels {
            labels = labels::own_labels(labels, &inspected.image_labels);
        }
        if self.is_leftover(&id, &name, &labels) {
            return None;
        }
        let mut f = ContainerFacts {
            id: id.clone(),
            name,
            image: s.image.clone().unwrap_or_default(),
            labels,
            pgdata: inspected.pgdata,
            cmd: inspected.cmd,
            conf_log_directory: inspected.conf_log_directory,
            address: None,
            created: inspected.created,
        };
        if !labels::selected(&f, &self.cfg) {
            return None;
        }
        let mut networks: Vec<String> = s
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default();
        networks.sort();
        self.networks_of.insert(f.id.clone(), networks);
        f.address = self.address(&s, &f);
        // In `all` mode a PostgreSQL container the daemon shares no network with is
        // someone else's, not a mistake to report.
        if self.cfg.mode == DiscoveryMode::All && f.address.is_none() {
            return None;
        }
        if state == "running" {
            self.running.insert(f.id.clone());
        } else {
            self.running.remove(&f.id);
        }
        Some(f)
    }

    /// Usable targets, and the containers skipped with why; each problem is logged once.
    /// Of two containers claiming one target name, the one that holds it keeps it (at
    /// start-up: the older); the other is skipped with an error naming both, and the holder's
    /// target lists it (`status` shows it).
    fn partition(&mut self, mut built: Vec<Built>) -> (Vec<DiscoveredTarget>, Vec<Skipped>) {
        built.sort_by_cached_key(|b| claim_order(b, &self.holders));
        let mut skipped = Vec::new();
        let mut targets: Vec<DiscoveredTarget> = Vec::new();
        for (f, r) in built {
            match r {
                Ok(cfg) => {
                    if let Some(holder) = targets.iter_mut().find(|t| t.cfg.name == cfg.name) {
                        holder.contested_by.push(f.name.clone());
                        let problem = self.clash(&f, &cfg.name, &holder.container);
                        skipped.push((f.name, vec![problem]));
                        continue;
                    }
                    if self.reported.remove(&f.id).is_some() {
                        info!(self.log, "container's labels are usable again"; "event" => "discovery_fixed", "container" => &f.name);
                    }
                    if let Some(pair) = compose_pair(&f.labels) {
                        self.compose_targets.insert(pair);
                    }
                    targets.push(self.discovered(f, cfg));
                }
                Err(problems) => {
                    self.report(&f, &problems);
                    skipped.push((f.name, problems));
                }
            }
        }
        self.holders = targets
            .iter()
            .map(|t| (t.cfg.name.clone(), t.container_id.clone()))
            .collect();
        targets.sort_by(|a, b| a.cfg.name.cmp(&b.cfg.name));
        (targets, skipped)
    }

    /// A container refused a target name another container holds: one ERROR naming both.
    fn clash(&mut self, f: &ContainerFacts, name: &str, holder: &str) -> Problem {
        let label = format!("{}.name", self.cfg.namespace);
        let msg = format!("target name {name} is held by container {holder}; it stays with it");
        if self.reported.get(&f.id) != Some(&msg) {
            error!(self.log, "container skipped: its target name is held by another discovered container, which keeps it"; "event" => "discovery_skipped",
                "container" => &f.name, "label" => &label, "target" => name, "other_container" => holder,
                "fix" => format!("give one of them another {label} label"));
            self.reported.insert(f.id.clone(), msg.clone());
        }
        Problem::new(label, msg, "give one of them another name label")
    }

    /// A container skipped for its labels: one ERROR, again only when the problems change.
    fn report(&mut self, f: &ContainerFacts, problems: &[Problem]) {
        let text = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if self.reported.get(&f.id) != Some(&text) {
            let first = problems.first();
            error!(self.log, "container skipped: its labels are not usable (the other containers are watched)"; "event" => "discovery_skipped",
                "container" => &f.name, "label" => first.map(|p| p.path.as_str()).unwrap_or(""),
                "problem" => first.map(|p| p.message.as_str()).unwrap_or(""),
                "fix" => first.map(|p| p.fix.as_str()).unwrap_or(""), "problems" => &text);
            self.reported.insert(f.id.clone(), text);
        }
    }

    /// Keeps the containers that are targets already, or whose server now accepts a TCP
    /// connection, or that are stopped; a running one whose server does not answer yet is
    /// initialising and waits, up to `defaults.recovery_timeout`: then it is unreachable
    /// (one ERROR, and `status` lists it). Containers with bad labels pass, to be reported.
    async fn armed_only(&mut self, built: Vec<Built>) -> Vec<Built> {
        let mut out = Vec::with_capacity(built.len());
        self.waiting = false;
        self.unreachable.clear();
        for (f, r) in built {
            let ready = match &r {
                _ if self.armed.contains(&f.id) => true,
                _ if !self.running.contains(&f.id) => true,
                Err(_) => {
                    out.push((f, r));
                    continue;
                }
                Ok(t) => accepts(t).await,
            };
            if ready {
                self.waiting_since.remove(&f.id);
                if self.unreachable_said.remove(&f.id) {
                    info!(self.log, "container's server accepts connections now: watched"; "event" => "discovery_reachable", "container" => &f.name);
                }
                self.armed.insert(f.id.clone());
                out.push((f, r));
            } else if let Ok(t) = r {
                self.waiting = true;
                self.not_yet(f, t);
            }
        }
        out
    }

    /// A running container whose server does not accept a connection yet: initialising
    /// until the deadline, unreachable after it.
    fn not_yet(&mut self, f: ContainerFacts, t: TargetConfig) {
        let since = *self
            .waiting_since
            .entry(f.id.clone())
            .or_insert_with(std::time::Instant::now);
        let deadline = self.defaults.recovery_timeout;
        if since.elapsed() < deadline {
            debug!(self.log, "container initialising: a target once its server accepts connections"; "event" => "discovery_waiting", "container" => &f.name);
            return;
        }
        let d = self.discovered(f, t);
        if self.unreachable_said.insert(d.container_id.clone()) {
            let ns = &self.cfg.namespace;
            error!(self.log, "labelled container not watched: the daemon cannot connect to its server (a network it cannot reach?)"; "event" => "discovery_unreachable",
                "container" => &d.container, "target" => &d.cfg.name, "endpoint" => d.cfg.dsn.endpoint(), "networks" => d.networks.join(","),
                "waited_s" => deadline.as_secs(),
                "fix" => format!("put the daemon on one of the container's networks ({}), or set discovery.docker.network (or the {ns}.network label) to a network both are on", d.networks.join(", ")));
        }
        self.unreachable.push(d);
    }

    /// The target of a usable container, as sent to the Supervisor.
    fn discovered(&self, f: ContainerFacts, cfg: TargetConfig) -> DiscoveredTarget {
        DiscoveredTarget {
            labels: labels::shown_labels(&f, &self.cfg.namespace),
            networks: self.networks_of.get(&f.id).cloned().unwrap_or_default(),
            container_id: f.id,
            container: f.name,
            cfg,
            contested_by: Vec::new(),
        }
    }

    /// Whether the container is the old one of a compose re-creation: named `<its
    /// id[..12]>_<name>` and carrying the compose project and service of a target (or being
    /// a target itself). Never a target of its own; its target, if it had one, is kept as it
    /// was until a new container claims the name.
    fn is_leftover(&mut self, id: &str, name: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.leftovers.contains(id) {
            return true;
        }
        if !leftover_name(id, name) {
            return false;
        }
        let Some(pair) = compose_pair(labels) else {
            return false;
        };
        let had = self
            .sent
            .as_ref()
            .and_then(|s| s.targets.iter().find(|t| t.container_id == id))
            .cloned();
        if had.is_none() && !self.compose_targets.contains(&pair) {
            return false;
        }
        info!(self.log, "compose is re-creating a container: the old one is not a target of its own"; "event" => "discovery_recreating",
            "container" => name, "project" => &pair.0, "service" => &pair.1);
        self.leftovers.insert(id.to_string());
        if let Some(t) = had {
            self.frozen.insert(id.to_string(), t);
        }
        true
    }

    async fn inspect(&self, id: &str) -> Option<Inspected> {
        let id = id.to_string();
        let wanted = id.clone();
        let r = self
            .client
            .call(|api, ep| async move {
                api.inspect_container(&id, None::<InspectContainerOptions>)
                    .await
                    .map_err(|e| DockerError::from_bollard(e, &ep, &id))
            })
            .await
            .ok()?;
        let created = r
            .created
            .as_deref()
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map(|c| c.with_timezone(&Utc));
        let image_labels = match r.image.clone() {
            Some(image) if !self.cfg.trust_image_labels => self.image_labels(&image).await?,
            _ => BTreeMap::new(),
        };
        let config = r.config.unwrap_or_default();
        let pgdata = config
            .env
            .unwrap_or_default()
            .iter()
            .find_map(|e| e.strip_prefix("PGDATA=").map(String::from))
            .filter(|p| !p.is_empty());
        let cmd = config.cmd.unwrap_or_default();
        // The configuration files as the server reads them: postgresql.conf, then
        // postgresql.auto.conf (ALTER SYSTEM), the later winning.
        let data = pgdata
            .clone()
            .unwrap_or_else(|| "/var/lib/postgresql/data".into());
        let conf = labels::setting_of(&cmd, "config_file")
            .unwrap_or_else(|| format!("{data}/postgresql.conf"));
        let mut conf_log_directory = None;
        for path in [conf, format!("{data}/postgresql.auto.conf")] {
            if let Some(text) = self.read_small(&wanted, &path).await {
                if let Some(v) = labels::conf_setting(&text, "log_directory") {
                    conf_log_directory = Some(v);
                }
            }
        }
        Some(Inspected {
            pgdata,
            cmd,
            conf_log_directory,
            created,
            image_labels,
        })
    }

    /// The labels of an image (by id), which its containers inherit; None when the Engine
    /// cannot say (the container is then looked at again at the next listing, never taken
    /// with labels that might be the image's).
    async fn image_labels(&self, image: &str) -> Option<BTreeMap<String, String>> {
        let image = image.to_string();
        let r = self
            .client
            .call(|api, ep| async move {
                api.inspect_image(&image)
                    .await
                    .map_err(|e| DockerError::from_bollard(e, &ep, &image))
            })
            .await;
        match r {
            Ok(i) => Some(
                i.config
                    .and_then(|c| c.labels)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            ),
            // Fail closed: without the image's labels, the container's own cannot be told
            // apart; it is looked at again at the next listing.
            Err(e) => {
                debug!(self.log, "cannot inspect a container's image"; "event" => "discovery_image_unknown", "error" => %e);
                None
            }
        }
    }

    /// A small text file inside the container (through the Engine's archive endpoint; also
    /// from a stopped container), None if absent or over 1 MiB.
    async fn read_small(&self, id: &str, path: &str) -> Option<String> {
        use bollard::container::DownloadFromContainerOptions;
        use std::io::Read;
        const CAP: usize = 1 << 20;
        let (id, path) = (id.to_string(), path.to_string());
        let tar = self
            .client
            .call(|api, _| async move {
                let mut stream =
                    api.download_from_container(&id, Some(DownloadFromContainerOptions { path }));
                let mut buf = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| DockerError::Api(e.to_string()))?;
                    if buf.len() + chunk.len() > CAP + 4096 {
                        return Err(DockerError::Api("file too large".into()));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(buf)
            })
            .await
            .ok()?;
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entry = archive.entries().ok()?.next()?.ok()?;
        let mut text = String::new();
        entry.read_to_string(&mut text).ok()?;
        Some(text)
    }

    /// Where the daemon reaches the container: on the network a label or the registry names,
    /// else one the daemon's own container shares, else the container's first network. In a
    /// container on a user-defined network, by name (Docker's DNS follows restarts); on the
    /// host, by address (the host routes to bridge networks; no published port needed).
    fn address(&mut self, s: &ContainerSummary, f: &ContainerFacts) -> Option<String> {
        let mode = s
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone())
            .unwrap_or_default();
        if mode == "host" {
            // The host's network: no address of its own, and a port label would then reach
            // whatever listens on the host.
            return None;
        }
        let networks = s
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.clone())
            .unwrap_or_default();
        let mut names: Vec<&String> = networks.keys().collect();
        names.sort();
        let wanted = f
            .labels
            .get(&format!("{}.network", self.cfg.namespace))
            .or(self.cfg.network.as_ref());
        let chosen = match wanted {
            Some(w) => names.iter().find(|n| **n == w).copied(),
            None => match &self.own_networks {
                Some(own) => names.iter().find(|n| own.contains(n)).copied(),
                None => names.first().copied(),
            },
        }?;
        if self.own_networks.is_some() && chosen != "bridge" {
            return Some(f.name.clone());
        }
        let ip = networks
            .get(chosen)
            .and_then(|e| e.ip_address.clone())
            .filter(|ip| !ip.is_empty());
        match ip {
            Some(ip) => {
                self.last_address.insert(f.id.clone(), ip.clone());
                Some(ip)
            }
            // Stopped: where it was; never seen running: its name (resolvable in a network).
            None => Some(
                self.last_address
                    .get(&f.id)
                    .cloned()
                    .unwrap_or_else(|| f.name.clone()),
            ),
        }
    }
}

/// The order in which containers claim target names: those holding a name first, then the
/// older, then by id (so the order never depends on how the Engine lists them).
fn claim_order((f, r): &Built, holders: &HashMap<String, String>) -> (bool, DateTime<Utc>, String) {
    let holds = matches!(r, Ok(t) if holders.get(&t.name) == Some(&f.id));
    // Unknown creation times sort last.
    (
        !holds,
        f.created.unwrap_or(DateTime::<Utc>::MAX_UTC),
        f.id.clone(),
    )
}

/// Whether the target's server accepts a TCP connection now (within half a second).
async fn accepts(t: &TargetConfig) -> bool {
    use tokio_postgres::config::Host;
    let cfg = t.dsn.config();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    // The container's address (hostaddr when discovery.docker.tls.server_name names the host).
    let host = match (cfg.get_hostaddrs().first(), cfg.get_hosts().first()) {
        (Some(ip), _) => ip.to_string(),
        (None, Some(Host::Tcp(h))) => h.clone(),
        _ => return true, // a unix socket: nothing to wait for from here
    };
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect((host.as_str(), port))
        )
        .await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compose_leftover_is_named_with_its_own_id_prefix() {
        let id = "0123456789abcdef0123";
        assert!(leftover_name(id, "0123456789ab_db"));
        assert!(
            !leftover_name(id, "0123456789ab_"),
            "no name after the prefix"
        );
        assert!(!leftover_name(id, "db"));
        assert!(
            !leftover_name(id, "ffffffffffff_db"),
            "another container's id prefix"
        );
        assert!(!leftover_name("0123", "0123_db"), "an id too short");
        let labels: BTreeMap<String, String> = [
            (COMPOSE_PROJECT.to_string(), "shop".to_string()),
            (COMPOSE_SERVICE.to_string(), "db".to_string()),
        ]
        .into();
        assert_eq!(compose_pair(&labels), Some(("shop".into(), "db".into())));
        assert_eq!(compose_pair(&BTreeMap::new()), None);
    }
}

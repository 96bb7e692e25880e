//! Several daemons, one fleet: each target owned by exactly one live daemon, through etcd.
//!
//! - Membership: each daemon holds one etcd lease and registers `members/{id}` on it; the
//!   keep-alives run on this module's own thread and runtime, so probe work can never starve
//!   them.
//! - Listings: each daemon publishes the target names it lists (`targets/{id}`, with their hash
//!   under `listed/{id}`) on its lease; a target is placed on, handed to and claimed by only a
//!   daemon that lists it.
//! - Ownership: `owner/{target}` is created by compare-and-swap on the daemon's lease, so a dead
//!   daemon's keys vanish with its lease. Rendezvous ranking only says who tries first
//!   (`rendezvous.rs`); the rules are pure (`ownership.rs`); what the daemon knows of etcd is
//!   kept by one full read and then a watch (`view.rs`, `watch.rs`); the agent (`agent.rs`)
//!   claims, hands off and tells the Supervisor what it gained and lost.
//! - Fencing: a daemon whose last renewal is older than the TTL minus a margin stops every
//!   remediation ([`Cluster::fenced`]), and every restart is a compare-and-swap on the owner
//!   key (`restart.rs`, the [`crate::lease::LeaseBackend`] of cluster mode).
//! - State that must survive a takeover (budget, backoff, the open incident) is kept in etcd
//!   by the owner (`state.rs`), with how each notice of the open incident was delivered
//!   (`deliveries.rs`), so a new owner sends only what was not.

mod agent;
pub mod announce;
pub mod connect;
mod deliveries;
mod keys;
mod ownership;
pub mod rendezvous;
mod restart;
pub mod session_token;
pub mod state;
mod view;
mod watch;

pub use ownership::{Member, OwnerKey};
pub use session_token::SessionToken;
pub use state::TargetState;

use crate::config::ClusterConfig;
use etcd_client::Client;
use keys::Keys;
use slog::Logger;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a target stays unmovable after its incident closed: the Monitor queues the
/// closing state right after it says so, and a hand-off in between would leave the next owner
/// the incident as still open (a second recovery notice).
const SETTLE: Duration = Duration::from_secs(2);

/// What the agent tells the Supervisor.
#[derive(Debug)]
pub enum ClusterEvent {
    /// Ours now: start its Monitor from the state the last owner kept (None: none kept).
    Gained {
        target: String,
        state: Option<Box<crate::store::StoredTarget>>,
    },
    /// Another daemon's now (or nobody's): stop its Monitor at once, whatever it was doing.
    Lost { target: String, why: &'static str },
    /// Coordination was lost for longer than the TTL (every target dropped, no restarts), or
    /// came back.
    Coordination { lost: bool, reason: String },
}

/// Where the agent sends what the Supervisor must act on.
pub type Events = futures::channel::mpsc::UnboundedSender<ClusterEvent>;

/// A started cluster: the handle, and the events the Supervisor is to act on.
pub type Started = (
    Arc<Cluster>,
    futures::channel::mpsc::UnboundedReceiver<ClusterEvent>,
);

/// A live etcd session: the client and our lease.
#[derive(Clone)]
struct Session {
    client: Client,
    lease: i64,
    /// Bumped per session, so an old session's keep-alive task stops.
    generation: u64,
}

impl Session {
    /// Runs `ops` only while `target`'s owner key is still ours (our id, our current lease);
    /// answers whether they ran. Not answered within a second: not run.
    async fn while_owner(
        &self,
        keys: &Keys,
        target: &str,
        me: &str,
        ops: Vec<etcd_client::TxnOp>,
    ) -> Result<bool, etcd_client::Error> {
        Ok(self.while_owner_at(keys, target, me, ops).await?.is_some())
    }

    /// [`Session::while_owner`], answering the revision they ran at.
    async fn while_owner_at(
        &self,
        keys: &Keys,
        target: &str,
        me: &str,
        ops: Vec<etcd_client::TxnOp>,
    ) -> Result<Option<i64>, etcd_client::Error> {
        use etcd_client::{Compare, CompareOp, Txn};
        let owner = keys.owner(target);
        let txn = Txn::new()
            .when([
                Compare::value(owner.clone(), CompareOp::Equal, me),
                Compare::lease(owner, CompareOp::Equal, self.lease),
            ])
            .and_then(ops);
        let mut client = self.client.clone();
        match tokio::time::timeout(Duration::from_secs(1), client.txn(txn)).await {
            Ok(r) => {
                let r = r?;
                Ok(r.succeeded()
                    .then(|| r.header().map_or(0, |h| h.revision())))
            }
            Err(_) => Ok(None),
        }
    }
}

/// What the status page shows of the cluster.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterView {
    pub member: String,
    pub members: Vec<String>,
    /// target → member.
    pub owners: BTreeMap<String, String>,
    /// Owner keys naming no live member (target → the member named): free, taken over by a
    /// member that lists the target within the TTL; one that stays names a target nobody lists.
    pub ghost_owners: BTreeMap<String, String>,
    /// Targets only some live members list (target → the members that list it): their
    /// registries differ (a rolling config change, one daemon's reload).
    pub disputed: BTreeMap<String, Vec<String>>,
    pub fenced: Option<String>,
    pub lease_age_seconds: Option<f64>,
}

impl ClusterView {
    /// What /healthz shows: no per-target list.
    pub fn summary(&self) -> serde_json::Value {
        let owned = self.owners.values().filter(|m| **m == self.member).count();
        serde_json::json!({
            "member": self.member, "members": self.members, "owned_targets": owned,
            "ghost_owners": self.ghost_owners.len(), "disputed_targets": self.disputed.len(),
            "fenced": self.fenced, "lease_age_seconds": self.lease_age_seconds,
        })
    }
}

#[derive(Default)]
struct Shared {
    session: Option<Session>,
    /// Members, owners and listings as followed in etcd.
    view: view::View,
    /// The session generation whose full read `view` holds (None: none yet).
    view_ready: Option<u64>,
    /// What we list; `targets_gen` counts its changes (0: the Supervisor has not said yet).
    targets: BTreeSet<String>,
    targets_gen: u64,
    /// Targets only some live members list, with who lists each.
    disputed: BTreeMap<String, Vec<String>>,
    busy: BTreeSet<String>,
    /// When each target stopped being busy: it is kept a moment longer (`SETTLE`), so the
    /// state its Monitor writes on closing the incident lands before a hand-off.
    settling: std::collections::HashMap<String, Instant>,
    owned: BTreeSet<String>,
    /// Outages announced while coordination was lost, not yet written to etcd.
    announced: BTreeMap<String, state::IncidentState>,
}

/// The handle every part of the daemon shares. Cheap to query from an actor's thread; every
/// etcd call runs on the cluster thread's runtime.
pub struct Cluster {
    cfg: ClusterConfig,
    keys: Keys,
    rt: tokio::runtime::Handle,
    shared: Mutex<Shared>,
    epoch: Instant,
    /// When the lease was last renewed (ms since `epoch`, taken when the renewal was sent);
    /// 0: never.
    renewed_ms: AtomicU64,
    /// Serializes state writes, so a later state never lands before an earlier one.
    state_lock: tokio::sync::Mutex<()>,
    /// Shutting down: the agent does nothing more (no claims, no "coordination lost").
    leaving: std::sync::atomic::AtomicBool,
    /// Proves at join that a live member key of our name is this daemon's previous session.
    token: SessionToken,
    /// etcd's last refusal of our TLS or login (`connect.rs`).
    refusals: Mutex<connect::Refusals>,
    /// Fired when a reload replaced this cluster: its thread ends.
    ended: tokio::sync::Notify,
    log: Logger,
}

/// The cluster running now, shared by the Supervisor and the API: a reload that changes
/// `cluster:` replaces it. Empty when the daemon runs alone.
#[derive(Clone, Default)]
pub struct Current(Arc<std::sync::RwLock<Option<Arc<Cluster>>>>);

impl Current {
    pub fn new(c: Option<Arc<Cluster>>) -> Self {
        Self(Arc::new(std::sync::RwLock::new(c)))
    }
    pub fn get(&self) -> Option<Arc<Cluster>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set(&self, c: Arc<Cluster>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
    }
}

impl Cluster {
    /// Starts the cluster thread (its own runtime: keep-alives, reads, claims) and returns
    /// the shared handle; `events` receives what the Supervisor must act on; `token` proves
    /// this daemon's previous session ([`session_token`]).
    pub fn start(
        cfg: ClusterConfig,
        log: &Logger,
        events: Events,
        token: SessionToken,
    ) -> std::io::Result<Arc<Self>> {
        Self::start_after(cfg, log, events, token, None)
    }

    /// As [`Cluster::start`], but the agent joins only once `gate` fires (or is dropped): a
    /// reload starts the new cluster first, so a failure leaves the old one untouched, and
    /// lets it join once the old session has left.
    pub fn start_after(
        cfg: ClusterConfig,
        log: &Logger,
        events: Events,
        token: SessionToken,
        gate: Option<futures::channel::oneshot::Receiver<()>>,
    ) -> std::io::Result<Arc<Self>> {
        let log = log.new(slog::o!("actor" => "cluster", "member" => cfg.member.clone()));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let cluster = Arc::new(Cluster {
                    keys: Keys::new(&cfg.prefix),
                    cfg,
                    rt: rt.handle().clone(),
                    shared: Mutex::new(Shared::default()),
                    epoch: Instant::now(),
                    renewed_ms: AtomicU64::new(0),
                    state_lock: tokio::sync::Mutex::new(()),
                    leaving: std::sync::atomic::AtomicBool::new(false),
                    token,
                    refusals: Mutex::default(),
                    ended: tokio::sync::Notify::new(),
                    log,
                });
                let _ = tx.send(Ok(cluster.clone()));
                rt.block_on(async move {
                    if let Some(gate) = gate {
                        let _ = gate.await;
                    }
                    let ended = cluster.clone();
                    tokio::select! {
                        _ = agent::Agent::new(cluster, events).run() => {}
                        _ = ended.ended.notified() => {}
                    }
                });
            })?;
        rx.recv()
            .map_err(|_| std::io::Error::other("the cluster thread ended at start"))?
    }

    /// Ends the cluster thread (after [`Cluster::leave`]: a reload replaced this cluster).
    pub fn end(&self) {
        self.ended.notify_one();
    }

    /// The token this daemon proves its sessions with: a reload's new session keeps it.
    pub fn token(&self) -> SessionToken {
        self.token.clone()
    }

    pub fn member(&self) -> &str {
        &self.cfg.member
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long since the lease was last renewed; None before the first renewal.
    pub fn lease_age(&self) -> Option<Duration> {
        match self.renewed_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    fn renewed(&self, sent: Instant) {
        let ms = sent.duration_since(self.epoch).as_millis().max(1) as u64;
        self.renewed_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// Why this daemon may not remediate now, if it may not: no etcd session, or a lease not
    /// renewed for the TTL minus the margin (it may have expired: another daemon may own our
    /// targets already).
    pub fn fenced(&self) -> Option<String> {
        let limit = self.cfg.ttl.saturating_sub(self.cfg.fence_margin());
        match self.lease_age() {
            None => Some("not yet joined the cluster (etcd)".into()),
            Some(_) if self.lock().session.is_none() => {
                Some("no etcd session (coordination lost)".into())
            }
            Some(age) if age > limit => Some(format!(
                "the etcd lease was last renewed {:.1} s ago (limit {:.1} s)",
                age.as_secs_f64(),
                limit.as_secs_f64()
            )),
            Some(_) => None,
        }
    }

    /// The fleet's targets (registry and discovered): what the daemons share out.
    pub fn set_targets(&self, names: impl IntoIterator<Item = String>) {
        let names: BTreeSet<String> = names.into_iter().collect();
        let mut s = self.lock();
        if s.targets_gen == 0 || s.targets != names {
            s.targets = names;
            s.targets_gen += 1;
        }
    }

    /// Marks a target as mid-incident (never handed off) or not.
    pub fn set_busy(&self, target: &str, busy: bool) {
        let mut s = self.lock();
        if busy {
            s.busy.insert(target.to_string());
            s.settling.remove(target);
        } else if s.busy.remove(target) {
            s.settling.insert(target.to_string(), Instant::now());
        }
    }

    /// Targets not to be handed off or released now: mid-incident, or just out of one.
    fn held(&self) -> BTreeSet<String> {
        let mut s = self.lock();
        s.settling.retain(|_, at| at.elapsed() < SETTLE);
        let mut held = s.busy.clone();
        held.extend(s.settling.keys().cloned());
        held
    }

    /// Members, owners and lease health, for `status` and the status page.
    pub fn view(&self) -> ClusterView {
        let s = self.lock();
        let view = ClusterView {
            member: self.cfg.member.clone(),
            members: s.view.members.iter().map(|m| m.id.clone()).collect(),
            owners: s
                .view
                .owners
                .iter()
                .map(|(t, k)| (t.clone(), k.member.clone()))
                .collect(),
            ghost_owners: s
                .view
                .owners
                .iter()
                .filter(|(_, k)| !k.is_live(&s.view.members))
                .map(|(t, k)| (t.clone(), k.member.clone()))
                .collect(),
            disputed: s.disputed.clone(),
            fenced: None,
            lease_age_seconds: self.lease_age().map(|a| a.as_secs_f64()),
        };
        drop(s);
        ClusterView {
            fenced: self.fenced(),
            ..view
        }
    }

    /// Keeps `state` as the target's state in etcd, if we still own it. The answer says
    /// whether it was kept; a caller about to restart waits for it.
    pub fn save_state(
        self: &Arc<Self>,
        target: &str,
        state: TargetState,
    ) -> futures::channel::oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = futures::channel::oneshot::channel();
        let me = self.clone();
        let target = target.to_string();
        self.rt.spawn(async move {
            let _order = me.state_lock.lock().await;
            let r = tokio::time::timeout(Duration::from_secs(2), me.put_state(&target, &state))
                .await
                .unwrap_or_else(|_| Err("etcd did not answer within 2 s".into()));
            let _ = tx.send(r);
        });
        rx
    }

    /// Writes the record's state, with the delivery marks already kept for the same
    /// incident (the record does not hold them: the Notifier writes them).
    async fn put_state(&self, target: &str, state: &TargetState) -> Result<(), String> {
        let Some(s) = self.lock().session.clone() else {
            return Err("no etcd session".into());
        };
        let mut state = state.clone();
        if let Some(inc) = state.incident.as_mut() {
            let kept = self.read_state(&s, target).await?.and_then(|k| k.incident);
            if let Some(k) = kept.filter(|k| k.row.id == inc.row.id) {
                inc.deliveries = k.deliveries;
            }
        }
        self.write_state(&s, target, &state).await
    }

    /// Writes `state` as `target`'s while we own it.
    async fn write_state(
        &self,
        s: &Session,
        target: &str,
        state: &TargetState,
    ) -> Result<(), String> {
        let json = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        let put = etcd_client::TxnOp::put(self.keys.state(target), json, None);
        match s
            .while_owner(&self.keys, target, &self.cfg.member, vec![put])
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "{target} is no longer owned by this daemon (or etcd did not answer)"
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Where the Notifier records deliveries: the target's state in etcd.
    pub fn ledger(self: &Arc<Self>) -> Arc<dyn crate::notify::ledger::DeliveryLedger> {
        Arc::new(deliveries::EtcdLedger(self.clone()))
    }

    /// The restart lease backend of cluster mode.
    pub fn leases(self: &Arc<Self>) -> Arc<dyn crate::lease::LeaseBackend> {
        Arc::new(restart::RestartIntents::new(self.clone()))
    }

    /// Ends our session at shutdown: revoking the lease frees our targets at once. Answers
    /// whether it was revoked, within 2 s.
    pub fn leave(&self) -> impl std::future::Future<Output = bool> {
        self.leaving.store(true, Ordering::SeqCst);
        let session = {
            let mut s = self.lock();
            s.owned.clear();
            s.session.take()
        };
        let (tx, rx) = futures::channel::oneshot::channel();
        if let Some(s) = session {
            self.rt.spawn(async move {
                let mut c = s.client;
                let r = tokio::time::timeout(Duration::from_secs(2), c.lease_revoke(s.lease)).await;
                let _ = tx.send(matches!(r, Ok(Ok(_))));
            });
        }
        async move { rx.await.unwrap_or(false) }
    }
}

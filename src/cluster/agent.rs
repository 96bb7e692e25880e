//! The cluster thread's loop: join (lease + member key), keep the lease alive on its own task,
//! read members and owners every tick, and carry out `ownership::plan`: claim, hand off,
//! release, and tell the Supervisor what it gained and lost. Losing etcd for longer than the
//! TTL drops every target (another daemon may own them by now) and says so once.

use super::ownership::{self, Member, OwnerKey, Plan, Reading};
use super::state::Decoded;
use super::{Cluster, ClusterEvent, Session, TargetState};
use crate::ids::{MemberId, TargetName};
use crate::store::Untrusted;
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use slog::{debug, error, info, warn};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest one read or write to etcd may take before the tick gives up on it.
const CALL_LIMIT: Duration = Duration::from_secs(1);

pub(super) struct Agent {
    c: Arc<Cluster>,
    events: super::Events,
    free_since: HashMap<String, Instant>,
    generation: u64,
    started: Instant,
    /// Our previous session's lease, revoked if its member key is still there at rejoin.
    last_lease: Option<i64>,
    /// The "coordination lost" alert went out and no "restored" since.
    said_lost: bool,
    said_join_error: Option<String>,
    handoff_tokens: f64,
    last_tick: Instant,
    /// Member and owner keys refused (key, value), said once each: they are read every tick.
    refused: std::collections::HashSet<(String, String)>,
}

type Snapshot = (Vec<Member>, BTreeMap<String, OwnerKey>);

impl Agent {
    pub(super) fn new(c: Arc<Cluster>, events: super::Events) -> Self {
        Self {
            c,
            events,
            free_since: HashMap::new(),
            generation: 0,
            started: Instant::now(),
            last_lease: None,
            said_lost: false,
            said_join_error: None,
            handoff_tokens: 0.0,
            last_tick: Instant::now(),
            refused: Default::default(),
        }
    }

    /// A closed channel means the Supervisor is gone (shutdown): nothing left to tell.
    fn send(&self, ev: ClusterEvent) {
        let _ = self.events.unbounded_send(ev);
    }

    pub(super) async fn run(mut self) {
        let tick =
            (self.c.cfg.ttl / 8).clamp(Duration::from_millis(100), Duration::from_millis(250));
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.step().await;
            self.publish_metrics();
        }
    }

    async fn step(&mut self) {
        if self.c.leaving.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let dropped = self.stand_down_if_fenced();
        self.end_session_if_expired(dropped);
        if self.c.lock().session.is_none() {
            match tokio::time::timeout(self.c.cfg.ttl, self.join()).await {
                Ok(Ok(())) => self.joined(),
                Ok(Err(e)) => return self.join_failed(e),
                Err(_) => return self.join_failed("etcd did not answer".into()),
            }
        }
        let Some(s) = self.c.lock().session.clone() else {
            return;
        };
        match tokio::time::timeout(CALL_LIMIT, read(&self.c, s.client.clone())).await {
            Ok(Ok((snap, refused))) => {
                self.say_refused(refused);
                self.reconcile(&s, snap).await
            }
            Ok(Err(e)) => debug!(self.c.log, "cluster read failed"; "error" => %e),
            Err(_) => debug!(self.c.log, "cluster read timed out"),
        }
    }

    /// Fenced (no session, or the lease may expire before it is renewed): stop running our
    /// targets now, before another daemon can own them, so two Monitors never act on one
    /// target. The keys stay ours: if the lease is renewed in time, the next reading gives
    /// them back. Answers whether any target was dropped.
    fn stand_down_if_fenced(&mut self) -> bool {
        let Some(why) = self.c.fenced() else {
            return false;
        };
        let dropped: Vec<String> = std::mem::take(&mut self.c.lock().owned)
            .into_iter()
            .collect();
        if dropped.is_empty() {
            return false;
        }
        warn!(self.c.log, "fenced: this daemon stops running its targets until its lease is renewed"; "event" => "cluster_fenced",
            "targets" => dropped.len(), "why" => why);
        for t in dropped {
            self.send(ClusterEvent::Lost {
                target: t,
                why: "fenced",
            });
        }
        true
    }

    /// A lease not renewed for the whole TTL is gone as far as the other daemons know: the
    /// session ends (a new one is joined) and the loss is said once. So is a session etcd
    /// ended while we ran targets (`dropped`: the lease expired there).
    fn end_session_if_expired(&mut self, dropped: bool) {
        let expired = self.c.lease_age().is_some_and(|a| a > self.c.cfg.ttl);
        let (old, none_left) = {
            let mut s = self.c.lock();
            let old = s.session.take_if(|_| expired);
            (old, s.session.is_none())
        };
        match old {
            Some(old) => self.last_lease = Some(old.lease),
            // Still live; or never joined, or already said.
            None if !(dropped && none_left) => return,
            None => {}
        }
        error!(self.c.log, "coordination lost: the etcd lease could not be renewed for the whole TTL; no target is run and no restart made until this daemon joins again";
            "event" => "cluster_session_lost");
        self.say_lost("the etcd lease could not be renewed within its TTL".into());
    }

    /// Reports each refused member or owner key once (while it stays as it is).
    fn say_refused(&mut self, refused: Vec<(Untrusted, String)>) {
        for (u, value) in refused {
            if self.refused.insert((u.key.clone(), value)) {
                u.report(&self.c.log, "etcd");
            }
        }
    }

    fn say_lost(&mut self, reason: String) {
        if !self.said_lost {
            self.said_lost = true;
            self.send(ClusterEvent::Coordination { lost: true, reason });
        }
    }

    fn join_failed(&mut self, e: String) {
        if self.said_join_error.as_deref() != Some(e.as_str()) {
            warn!(self.c.log, "cannot join the cluster: no target is run and no restart made until etcd answers"; "event" => "cluster_join_failed", "error" => &e, "etcd" => self.c.cfg.etcd.join(","));
            self.said_join_error = Some(e.clone());
        }
        if self.started.elapsed() >= self.c.cfg.ttl {
            self.say_lost(format!("cannot reach etcd: {e}"));
        }
    }

    fn joined(&mut self) {
        self.said_join_error = None;
        let lease = self.c.lock().session.as_ref().map(|s| s.lease);
        info!(self.c.log, "joined the cluster"; "event" => "cluster_joined", "lease" => lease, "ttl_s" => self.c.cfg.ttl.as_secs_f64());
        if std::mem::take(&mut self.said_lost) {
            self.send(ClusterEvent::Coordination {
                lost: false,
                reason: "joined the cluster again".into(),
            });
        }
    }

    /// Connects, takes a lease and registers `members/{id}` on it (only if no live daemon
    /// has that id), then starts the keep-alive task.
    async fn join(&mut self) -> Result<(), String> {
        let mut client = self.c.connect().await?;
        let sent = Instant::now();
        let ttl = self.c.cfg.ttl.as_secs().max(2) as i64;
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| e.to_string())?
            .id();
        let key = self.c.keys.member(&self.c.cfg.member);
        let value = serde_json::json!({
            "member": self.c.cfg.member, "lease": lease, "since": chrono::Utc::now(),
        })
        .to_string();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let r = client.txn(txn).await.map_err(|e| e.to_string())?;
        if !r.succeeded() {
            let held_by = first_kv_lease(&r);
            let _ = client.lease_revoke(lease).await;
            if held_by.is_some() && held_by == self.last_lease {
                // Our own previous session, not yet expired: end it and join next tick.
                let _ = client.lease_revoke(held_by.unwrap_or_default()).await;
                return Err("ending this daemon's previous session".into());
            }
            return Err(format!(
                "another live daemon is registered as member '{}' (give each daemon its own cluster.member)",
                self.c.cfg.member
            ));
        }
        self.generation += 1;
        let session = Session {
            client: client.clone(),
            lease,
            generation: self.generation,
        };
        self.c.lock().session = Some(session);
        self.c.renewed(sent);
        let c = self.c.clone();
        let generation = self.generation;
        tokio::spawn(keep_alive(c, client, lease, generation));
        Ok(())
    }

    async fn reconcile(&mut self, s: &Session, (members, owners): Snapshot) {
        let now = Instant::now();
        let rate = self.c.cfg.handoffs_per_second as f64;
        let dt = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        self.handoff_tokens = (self.handoff_tokens + rate * dt).min(rate.max(1.0));
        let plan = {
            let mut sh = self.c.lock();
            sh.members = members.clone();
            sh.owners = owners.clone();
            let r = Reading {
                me: &self.c.cfg.member,
                my_lease: s.lease,
                members: &members,
                owners: &owners,
                targets: &sh.targets,
                owned: &sh.owned,
                busy: &sh.busy,
                now,
                stagger: self.c.cfg.stagger,
                handoffs: self.handoff_tokens as usize,
            };
            ownership::plan(&r, &mut self.free_since)
        };
        let plan = if self.c.fenced().is_some() {
            // Nothing new while fenced: only what etcd already gave to others is let go.
            Plan {
                lost: plan.lost,
                ..Plan::default()
            }
        } else {
            plan
        };
        if plan != Plan::default() {
            self.carry_out(s, plan).await;
        }
    }

    async fn carry_out(&mut self, s: &Session, plan: Plan) {
        let me = self.c.cfg.member.clone();
        for t in &plan.lost {
            self.c.lock().owned.remove(t);
            self.send(ClusterEvent::Lost {
                target: t.clone(),
                why: "owned by another daemon",
            });
        }
        for t in &plan.release {
            let delete = TxnOp::delete(self.c.keys.owner(t), None);
            let _ = s.while_owner(&self.c.keys, t, &me, vec![delete]).await;
        }
        let mut gained = vec![];
        for t in plan.gained {
            let state = get_state(s, &self.c.keys.state(&t)).await;
            gained.push((t, state, false));
        }
        for t in plan.claim {
            match claim(s, &self.c, &t).await {
                Ok(Some(state)) => gained.push((t, state, true)),
                Ok(None) => {}
                Err(e) => debug!(self.c.log, "claim failed"; "target" => &t, "error" => %e),
            }
        }
        let mut takeovers = 0;
        let mut names = vec![];
        for (t, value, claimed) in gained {
            let state = value.map(|v| self.decode_state(&t, &v));
            if claimed && state.as_ref().is_some_and(|st| st.written_by != me) {
                takeovers += 1;
            }
            {
                let mut sh = self.c.lock();
                sh.owned.insert(t.clone());
                // The status page shows it at once, not after the next reading.
                let key = OwnerKey {
                    member: me.clone(),
                    lease: s.lease,
                };
                sh.owners.insert(t.clone(), key);
            }
            names.push(t.clone());
            self.send(ClusterEvent::Gained {
                target: t,
                state: state.map(|d| Box::new(d.stored)),
            });
        }
        if takeovers > 0 {
            crate::metrics::global().inc_by("sentinel_cluster_takeovers_total", &[], takeovers);
        }
        let handed = self.hand_off(s, plan.hand_off).await;
        if !names.is_empty() || !plan.lost.is_empty() || !handed.is_empty() {
            let gained = names.len();
            names.truncate(10);
            info!(self.c.log, "ownership changed"; "event" => "cluster_ownership",
                "gained" => gained, "takeovers" => takeovers, "lost" => plan.lost.len(), "handed_off" => handed.len(),
                "gained_names" => names.join(","), "lost_names" => plan.lost.join(","), "handed" => handed.join(","));
        }
    }

    /// The state kept for `target`, checked against its key; a refused one is said (ERROR,
    /// counted) and the target starts fresh (with only the refusal, for the alert): none of
    /// a value no daemon wrote is trusted, and the first state the new Monitor saves
    /// replaces it.
    fn decode_state(&self, target: &str, value: &[u8]) -> Decoded {
        let key = self.c.keys.state(target);
        TargetState::decode(value, &key, target).unwrap_or_else(|u| {
            u.report(&self.c.log, "etcd");
            Decoded {
                stored: crate::store::StoredTarget {
                    refused: Some(u),
                    ..Default::default()
                },
                // Unknown: not counted as a takeover.
                written_by: self.c.cfg.member.clone(),
            }
        })
    }

    /// Moves each target's owner key onto the lease of the member that should own it, while
    /// it is still ours; returns "target→member" for each moved.
    async fn hand_off(&mut self, s: &Session, list: Vec<(String, String, i64)>) -> Vec<String> {
        let me = self.c.cfg.member.clone();
        let mut handed = vec![];
        for (t, to, lease) in list {
            let op = TxnOp::put(
                self.c.keys.owner(&t),
                to.clone(),
                Some(PutOptions::new().with_lease(lease)),
            );
            if let Ok(true) = s.while_owner(&self.c.keys, &t, &me, vec![op]).await {
                self.handoff_tokens -= 1.0;
                let mut sh = self.c.lock();
                sh.owned.remove(&t);
                let key = OwnerKey {
                    member: to.clone(),
                    lease,
                };
                sh.owners.insert(t.clone(), key);
                drop(sh);
                self.send(ClusterEvent::Lost {
                    target: t.clone(),
                    why: "handed off",
                });
                handed.push(format!("{t}→{to}"));
            }
        }
        handed
    }

    fn publish_metrics(&self) {
        let m = crate::metrics::global();
        let (owned, members) = {
            let s = self.c.lock();
            (s.owned.len(), s.members.len())
        };
        m.set("sentinel_cluster_owned_targets", &[], owned as f64);
        m.set("sentinel_cluster_members", &[], members as f64);
        m.set(
            "sentinel_cluster_lease_age_seconds",
            &[],
            self.c.lease_age().map_or(-1.0, |a| a.as_secs_f64()),
        );
        m.set(
            "sentinel_cluster_fenced",
            &[],
            if self.c.fenced().is_some() { 1.0 } else { 0.0 },
        );
    }
}

/// Renews the lease every third of the TTL on its own task; a renewal counts from when it
/// was sent. A lease etcd no longer knows ends the session.
async fn keep_alive(c: Arc<Cluster>, mut client: Client, lease: i64, generation: u64) {
    let every = c.cfg.ttl / 3;
    let current = |c: &Cluster| {
        c.lock()
            .session
            .as_ref()
            .is_some_and(|s| s.generation == generation)
    };
    while current(&c) {
        let Ok(Ok((mut keeper, mut stream))) =
            tokio::time::timeout(CALL_LIMIT, client.lease_keep_alive(lease)).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while current(&c) {
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(every, stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => c.renewed(sent),
                Ok(Ok(Some(_))) => {
                    warn!(c.log, "etcd no longer knows this daemon's lease (it expired): joining again"; "event" => "cluster_lease_expired", "lease" => lease);
                    let mut s = c.lock();
                    if s.session
                        .as_ref()
                        .is_some_and(|s| s.generation == generation)
                    {
                        s.session = None;
                    }
                    return;
                }
                _ => break,
            }
            tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
        }
    }
}

/// Members and owners, read at one revision; with the keys refused (and their values): a
/// member id or owner value that is not a member id, an owner key whose target is not a
/// target name. A refused key is left out of the reading, as if it were not there.
async fn read(
    c: &Cluster,
    mut client: Client,
) -> Result<(Snapshot, Vec<(Untrusted, String)>), etcd_client::Error> {
    let txn = Txn::new().and_then([
        TxnOp::get(c.keys.members(), Some(GetOptions::new().with_prefix())),
        TxnOp::get(c.keys.owners(), Some(GetOptions::new().with_prefix())),
    ]);
    let r = client.txn(txn).await?;
    let mut members = vec![];
    let mut owners = BTreeMap::new();
    let mut refused = vec![];
    let (mp, op) = (c.keys.members(), c.keys.owners());
    for resp in r.op_responses() {
        let TxnOpResponse::Get(g) = resp else {
            continue;
        };
        for kv in g.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            let value = String::from_utf8_lossy(kv.value()).to_string();
            let refuse = |what: String| {
                (
                    Untrusted {
                        key: key.clone(),
                        what,
                    },
                    value.clone(),
                )
            };
            if let Some(id) = super::keys::Keys::strip(&key, &mp) {
                match MemberId::parse(id) {
                    Ok(_) => members.push(Member {
                        id: id.to_string(),
                        lease: kv.lease(),
                    }),
                    Err(e) => refused.push(refuse(e.to_string())),
                }
            } else if let Some(t) = super::keys::Keys::strip(&key, &op) {
                let checked = TargetName::parse(t).and_then(|_| MemberId::parse(&value));
                match checked {
                    Ok(m) => {
                        let key = OwnerKey {
                            member: m.to_string(),
                            lease: kv.lease(),
                        };
                        owners.insert(t.to_string(), key);
                    }
                    Err(e) => refused.push(refuse(e.to_string())),
                }
            }
        }
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(((members, owners), refused))
}

/// Claims a free target: creates its owner key on our lease if nobody has. Some(state kept
/// for it) when we own it now.
async fn claim(
    s: &Session,
    c: &Cluster,
    target: &str,
) -> Result<Option<Option<Vec<u8>>>, etcd_client::Error> {
    let key = c.keys.owner(target);
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(
                key,
                c.cfg.member.clone(),
                Some(PutOptions::new().with_lease(s.lease)),
            ),
            TxnOp::get(c.keys.state(target), None),
        ]);
    let mut client = s.client.clone();
    let r = tokio::time::timeout(CALL_LIMIT, client.txn(txn))
        .await
        .map_err(|_| etcd_client::Error::InvalidArgs("etcd did not answer".into()))??;
    if !r.succeeded() {
        return Ok(None);
    }
    let state = r.op_responses().into_iter().find_map(|o| match o {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    });
    Ok(Some(state))
}

/// The value kept under `key` (decoded by the caller, which knows the target).
async fn get_state(s: &Session, key: &str) -> Option<Vec<u8>> {
    let mut client = s.client.clone();
    let r = tokio::time::timeout(CALL_LIMIT, client.get(key, None))
        .await
        .ok()?
        .ok()?;
    Some(r.kvs().first()?.value().to_vec())
}

fn first_kv_lease(r: &etcd_client::TxnResponse) -> Option<i64> {
    r.op_responses().into_iter().find_map(|o| match o {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.lease()),
        _ => None,
    })
}

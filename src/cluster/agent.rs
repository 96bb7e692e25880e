//! The cluster thread's loop: join (lease + member key), keep the lease alive on its own task,
//! follow etcd with a watch (`watch.rs`), publish what we list, and carry out
//! `ownership::plan` on every change and every tick: claim, hand off, release, and tell the
//! Supervisor what it gained and lost. Losing etcd for longer than the TTL drops every target
//! (another daemon may own them by now) and says so once.

use super::ownership::{self, Claim, OwnerKey, Plan, Reading};
use super::state::Decoded;
use super::view::Listing;
use super::{Cluster, ClusterEvent, Session, TargetState};
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use futures::stream::{self, StreamExt};
use slog::{debug, error, info, warn};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest one read or write to etcd may take before the tick gives up on it.
const CALL_LIMIT: Duration = Duration::from_secs(1);
/// Claims (and state reads of targets handed to us) kept in flight at once: enough to cover
/// etcd's round trip during a takeover of thousands, few enough not to queue past CALL_LIMIT.
const CLAIMS_IN_FLIGHT: usize = 64;

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
    /// Notified by the watch after every change it applied.
    wake: Arc<tokio::sync::Notify>,
    /// The session generation a watch was started for.
    following: u64,
    /// (session generation, targets generation) of the listing last published.
    published: Option<(u64, u64)>,
    /// Who should own what, and for which (view placement, targets) generations.
    placement: Option<((u64, u64), HashMap<String, String>)>,
    /// When the current fence began.
    fenced_since: Option<Instant>,
}

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
            wake: Arc::new(tokio::sync::Notify::new()),
            following: 0,
            published: None,
            placement: None,
            fenced_since: None,
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
            // A watched change is acted on at once; the tick paces turns and hand-offs.
            tokio::select! {
                _ = every.tick() => {}
                _ = self.wake.notified() => {}
            }
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
        if self.following != s.generation {
            self.following = s.generation;
            tokio::spawn(super::watch::follow(
                self.c.clone(),
                s.clone(),
                self.wake.clone(),
            ));
        }
        // Nothing is planned before our listing is out and the first full read is in.
        if !self.publish(&s).await || self.c.lock().view_ready != Some(s.generation) {
            return;
        }
        // Before any claim: whoever gains those targets continues their outages.
        self.c.publish_announcements(&s).await;
        self.reconcile(&s).await
    }

    /// Publishes what we list (`targets/{me}` and its hash, on our lease) once the
    /// Supervisor has said it, and again after each change; answers whether it is out.
    async fn publish(&mut self, s: &Session) -> bool {
        let (gen, targets) = {
            let sh = self.c.lock();
            let current = Some((s.generation, sh.targets_gen));
            if sh.targets_gen == 0 || self.published == current {
                return sh.targets_gen != 0;
            }
            (sh.targets_gen, sh.targets.clone())
        };
        let (value, hash) = Listing::encode(&targets);
        let me = &self.c.cfg.member;
        let on_lease = || Some(PutOptions::new().with_lease(s.lease));
        let txn = Txn::new().and_then([
            TxnOp::put(self.c.keys.listing(me), value, on_lease()),
            TxnOp::put(self.c.keys.listed(me), hash, on_lease()),
        ]);
        let mut client = s.client.clone();
        match tokio::time::timeout(CALL_LIMIT, client.txn(txn)).await {
            Ok(Ok(_)) => {
                self.published = Some((s.generation, gen));
                info!(self.c.log, "published the targets this daemon lists"; "event" => "cluster_listing_published", "targets" => targets.len());
                true
            }
            Ok(Err(e)) => {
                debug!(self.c.log, "cluster listing not published"; "error" => %e);
                false
            }
            Err(_) => false,
        }
    }

    /// Fenced (no session, or the lease may expire before it is renewed): stop running our
    /// targets now, before another daemon can own them, so two Monitors never act on one
    /// target. The keys stay ours: if the lease is renewed in time, the next reading gives
    /// them back. Answers whether any target was dropped.
    fn stand_down_if_fenced(&mut self) -> bool {
        let Some(why) = self.c.fenced() else {
            self.fenced_since = None;
            return false;
        };
        let since = *self.fenced_since.get_or_insert_with(Instant::now);
        if since.elapsed() < crate::faults::standdown_delay() {
            return false;
        }
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
    /// has that id, or the one that has it is our own previous session: this process's, or
    /// the previous run's, proved by the session token), then starts the keep-alive task.
    async fn join(&mut self) -> Result<(), String> {
        let mut client = self.c.connect().await?;
        let sent = Instant::now();
        let ttl = self.c.cfg.ttl.as_secs().max(2) as i64;
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(|e| e.to_string())?
            .id();
        if let Err(e) = self.register(&mut client, lease).await {
            let _ = client.lease_revoke(lease).await;
            return Err(e);
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

    /// Creates our member key on `lease`. A live key of our name that is our own previous
    /// session is ended first (its lease revoked: its owner keys go with it, and are claimed
    /// again), quietly; any other refuses the join.
    async fn register(&mut self, client: &mut Client, lease: i64) -> Result<(), String> {
        let key = self.c.keys.member(&self.c.cfg.member);
        let value = serde_json::json!({
            "member": self.c.cfg.member, "lease": lease, "since": chrono::Utc::now(),
            "session": self.c.token.proof(),
        })
        .to_string();
        for attempt in 0..2 {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(key.clone(), None)]);
            let r = client.txn(txn).await.map_err(|e| e.to_string())?;
            if r.succeeded() {
                return Ok(());
            }
            let (held_lease, held_value) = first_kv(&r).unwrap_or_default();
            let ours = (held_lease != 0 && Some(held_lease) == self.last_lease)
                || self.c.token.proves(&held_value);
            if !ours || attempt > 0 {
                break;
            }
            info!(self.c.log, "this daemon's previous session still holds its member key: ending it and taking its place"; "event" => "cluster_session_resumed",
                "old_lease" => held_lease);
            client
                .lease_revoke(held_lease)
                .await
                .map_err(|e| format!("cannot end this daemon's previous session: {e}"))?;
        }
        Err(format!(
            "another live daemon is registered as member '{}' (give each daemon its own cluster.member)",
            self.c.cfg.member
        ))
    }

    async fn reconcile(&mut self, s: &Session) {
        let now = Instant::now();
        let rate = self.c.cfg.handoffs_per_second as f64;
        let dt = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        self.handoff_tokens = (self.handoff_tokens + rate * dt).min(rate.max(1.0));
        let me = self.c.cfg.member.clone();
        let held = self.c.held();
        let (plan, disputed) = {
            let sh = self.c.lock();
            let mut listings = sh.view.live_listings();
            listings.insert(me.as_str(), &sh.targets);
            // Placement changes only with the members or a listing: not computed every tick.
            let key = (sh.view.placement_gen, sh.targets_gen);
            let mut disputed = None;
            if self.placement.as_ref().map(|p| p.0) != Some(key) {
                self.placement = Some((key, super::rendezvous::place(&listings)));
                disputed = Some(ownership::disputed(&listings));
            }
            let Some((_, desired)) = &self.placement else {
                return;
            };
            let r = Reading {
                me: &me,
                my_lease: s.lease,
                members: &sh.view.members,
                owners: &sh.view.owners,
                targets: &sh.targets,
                listings: &listings,
                desired,
                owned: &sh.owned,
                busy: &held,
                now,
                stagger: self.c.cfg.stagger,
                handoffs: self.handoff_tokens as usize,
            };
            (ownership::plan(&r, &mut self.free_since), disputed)
        };
        if let Some(d) = disputed {
            self.say_disputed(d);
        }
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

    /// Registries that differ are said once per change (WARN, naming the targets and who
    /// lists them) and shown in `/status` and the metrics until they agree again.
    fn say_disputed(&self, now: BTreeMap<String, Vec<String>>) {
        let mut sh = self.c.lock();
        let same = sh.disputed.len() == now.len() && sh.disputed.keys().eq(now.keys());
        let before = std::mem::replace(&mut sh.disputed, now);
        drop(sh);
        if same {
            return;
        }
        let sh = self.c.lock();
        if sh.disputed.is_empty() {
            info!(self.c.log, "every member lists the same targets again"; "event" => "cluster_targets_agreed", "were_disputed" => before.len());
            return;
        }
        let named: Vec<String> = sh
            .disputed
            .iter()
            .take(20)
            .map(|(t, ms)| format!("{t} (listed by {})", ms.join(" ")))
            .collect();
        warn!(self.c.log, "the daemons' registries differ: some targets are listed by only some members (each is run only by a member that lists it)";
            "event" => "cluster_targets_disputed", "disputed" => sh.disputed.len(), "targets" => named.join(", "),
            "fix" => "give every daemon the same registry once the change is rolled out");
    }

    /// The targets handed to us with their kept state, and the claims that won with theirs.
    /// Many at once: a takeover of thousands of targets is bound by etcd's round trips, not by
    /// its work, so they are kept in flight together (CLAIMS_IN_FLIGHT at most).
    async fn gather(
        &self,
        s: &Session,
        handed: Vec<String>,
        claims: Vec<Claim>,
    ) -> Vec<super::announce::Gain> {
        let c = &self.c;
        let mut gained: Vec<super::announce::Gain> = stream::iter(handed)
            .map(|t| async move {
                let state = get_state(s, &c.keys.state(&t)).await;
                (t, state, None)
            })
            .buffer_unordered(CLAIMS_IN_FLIGHT)
            .collect()
            .await;
        let claims: Vec<_> = stream::iter(claims)
            .map(|cl| async move { (claim(s, c, &cl).await, cl.target) })
            .buffer_unordered(CLAIMS_IN_FLIGHT)
            .collect()
            .await;
        for (result, target) in claims {
            match result {
                Ok(Some((state, revision))) => gained.push((target, state, Some(revision))),
                Ok(None) => {}
                Err(e) => debug!(self.c.log, "claim failed"; "target" => &target, "error" => %e),
            }
        }
        gained
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
        let mut released = vec![];
        for t in &plan.release {
            let delete = TxnOp::delete(self.c.keys.owner(t), None);
            if let Ok(Some(rev)) = s.while_owner_at(&self.c.keys, t, &me, vec![delete]).await {
                self.c.lock().view.wrote_owner(t, None, rev);
                released.push(t.as_str());
            }
        }
        let mut gained = self.gather(s, plan.gained, plan.claim).await;
        self.c.adopt_announcements(s, &mut gained).await;
        let mut takeovers = 0;
        let mut names = vec![];
        for (t, value, claimed) in gained {
            let state = value.map(|v| self.decode_state(&t, &v));
            if claimed.is_some() && state.as_ref().is_some_and(|st| st.written_by != me) {
                takeovers += 1;
            }
            {
                let mut sh = self.c.lock();
                sh.owned.insert(t.clone());
                // The plan and the status page see a claim at once, before its echo.
                if let Some(revision) = claimed {
                    let key = OwnerKey {
                        member: me.clone(),
                        lease: s.lease,
                        revision,
                    };
                    sh.view.wrote_owner(&t, Some(key), revision);
                }
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
        let handed = if plan.hand_off.is_empty() {
            vec![]
        } else {
            // State writes already queued (a closing incident's) land before the key moves.
            let c = self.c.clone();
            let _order = c.state_lock.lock().await;
            self.hand_off(s, plan.hand_off).await
        };
        if !names.is_empty() || !plan.lost.is_empty() || !handed.is_empty() || !released.is_empty()
        {
            let gained = names.len();
            names.truncate(10);
            info!(self.c.log, "ownership changed"; "event" => "cluster_ownership",
                "gained" => gained, "takeovers" => takeovers, "lost" => plan.lost.len(), "handed_off" => handed.len(),
                "gained_names" => names.join(","), "lost_names" => plan.lost.join(","), "handed" => handed.join(","),
                "released" => released.join(","));
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
            if let Ok(Some(revision)) = s.while_owner_at(&self.c.keys, &t, &me, vec![op]).await {
                self.handoff_tokens -= 1.0;
                let mut sh = self.c.lock();
                sh.owned.remove(&t);
                let key = OwnerKey {
                    member: to.clone(),
                    lease,
                    revision,
                };
                sh.view.wrote_owner(&t, Some(key), revision);
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
        let (owned, members, disputed, ghosts) = {
            let s = self.c.lock();
            let v = &s.view;
            let ghosts = v.owners.values().filter(|k| !k.is_live(&v.members)).count();
            (s.owned.len(), v.members.len(), s.disputed.len(), ghosts)
        };
        m.set("sentinel_cluster_owned_targets", &[], owned as f64);
        m.set("sentinel_cluster_members", &[], members as f64);
        m.set("sentinel_cluster_targets_disputed", &[], disputed as f64);
        m.set("sentinel_cluster_ghost_owners", &[], ghosts as f64);
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

/// Claims a free target: creates its owner key on our lease if nobody has, or takes a ghost's
/// key over if it is unchanged since it was read. Some((state kept for it, the claim's
/// revision)) when we own it now.
async fn claim(
    s: &Session,
    c: &Cluster,
    cl: &Claim,
) -> Result<Option<(Option<Vec<u8>>, i64)>, etcd_client::Error> {
    let (target, key) = (&cl.target, c.keys.owner(&cl.target));
    let unchanged = match cl.over {
        None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        Some(rev) => Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
    };
    let txn = Txn::new().when([unchanged]).and_then([
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
    let revision = r.header().map_or(0, |h| h.revision());
    let state = r.op_responses().into_iter().find_map(|o| match o {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    });
    Ok(Some((state, revision)))
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

/// The lease and value of the first key a transaction's reads found.
fn first_kv(r: &etcd_client::TxnResponse) -> Option<(i64, Vec<u8>)> {
    r.op_responses().into_iter().find_map(|o| match o {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| (kv.lease(), kv.value().to_vec())),
        _ => None,
    })
}

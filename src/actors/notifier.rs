//! The Notifier: one queue and worker per channel, so a slow or dead webhook delays nothing
//! but itself, and notices on one channel arrive in order (an alert before its recovery).
//! Each notice is delivered once per channel; a delivery given up is logged at ERROR. A
//! worker that dies is started again on its queue and says so.

use super::messages::{Drain, Notify};
use crate::backoff::Backoff;
use crate::config::NotifyConfig;
use crate::notify::delivery::Policy;
use crate::notify::ledger::{self, Decision, DeliveryLedger, Mark};
use crate::notify::{Channel, EscalationReason, Notice, NoticeKind};
use actix::prelude::*;
use futures::FutureExt;
use slog::{error, info, warn, Logger};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One channel's queue. The worker behind it is supervised: if it dies it is started again
/// on the same queue, and a reload revives one whose supervisor is gone too.
struct Queue {
    tx: mpsc::UnboundedSender<Notice>,
    /// Set when the webhook answered 404/410; cleared by a reload.
    gone: Arc<AtomicBool>,
}

/// Replace the channels (registry reload). Queued notices on old channels are still delivered.
/// With the same configuration the channels are kept (a Discord incident message is still
/// edited), gone ones are enabled again and dead workers are started again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetChannels(pub NotifyConfig);

pub struct Notifier {
    log: Logger,
    client: reqwest::Client,
    cfg: NotifyConfig,
    /// The queues of the channels that deliver to a service, in [`crate::notify::channels`]'
    /// order.
    channels: Vec<Queue>,
    /// Channels written at once (the console).
    local: Vec<Arc<dyn Channel>>,
    sent: HashSet<(String, NoticeKind, Option<EscalationReason>)>,
    sent_order: VecDeque<(String, NoticeKind, Option<EscalationReason>)>,
    pending: Arc<AtomicUsize>,
    /// Delivery results persist here; a restarted daemon skips what was already delivered.
    store: Option<crate::store::Store>,
    /// The outage book shared with other daemons, and our owner id in it (until started).
    outages: Option<(crate::outage::OutageBook, String)>,
    /// Notices about a server outage pass the gate first (one incident per outage).
    gate: Option<mpsc::UnboundedSender<Notice>>,
    /// Cluster mode: deliveries recorded where the target's next owner reads them.
    ledger: Option<Arc<dyn DeliveryLedger>>,
}

/// Longest a worker waits for the delivery ledger before it sends anyway (fail open).
const LEDGER_WAIT: Duration = Duration::from_secs(3);

impl Notifier {
    pub fn new(log: Logger, cfg: &NotifyConfig, store: Option<crate::store::Store>) -> Self {
        let mut n = Self {
            log: log.new(slog::o!("actor" => "notifier")),
            client: crate::notify::http::client(None),
            cfg: cfg.clone(),
            channels: Vec::new(),
            local: Vec::new(),
            sent: HashSet::new(),
            sent_order: VecDeque::new(),
            pending: Arc::default(),
            store,
            outages: None,
            gate: None,
            ledger: None,
        };
        n.configure(cfg);
        n
    }

    /// Shares outages with the daemons using `book`: only one of them announces each.
    pub fn with_outages(mut self, book: crate::outage::OutageBook, owner: String) -> Self {
        self.outages = Some((book, owner));
        self
    }

    /// Records deliveries in `ledger` too, and skips what it says was delivered (cluster mode:
    /// a new owner resuming an incident sends only what was not delivered).
    pub fn with_ledger(mut self, ledger: Arc<dyn DeliveryLedger>) -> Self {
        self.ledger = Some(ledger);
        let cfg = self.cfg.clone();
        self.configure(&cfg);
        self
    }

    /// Writes `n` on the local channels and queues it on every other.
    fn dispatch(&self, n: Notice) {
        info!(self.log, "notice queued"; "event" => "notice_queued", "kind" => n.kind.label(), "target" => &n.target,
            "incident" => &n.incident_id, "channels" => self.channels.len() + self.local.len());
        let policy = Self::policy(&self.cfg);
        for ch in &self.local {
            // A local channel waits on nothing ([`Channel::is_local`]): its first poll is all.
            if ch.send(&self.client, &n, policy).now_or_never().is_none() {
                error!(self.log, "local channel did not finish at once; notice not shown"; "event" => "notification_failed",
                    "channel" => ch.name(), "incident" => &n.incident_id);
            }
        }
        for ch in &self.channels {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if ch.tx.send(n.clone()).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                error!(self.log, "notification channel worker is gone; notice not delivered"; "event" => "notification_failed", "incident" => &n.incident_id);
            }
        }
    }

    fn policy(cfg: &NotifyConfig) -> Policy {
        Policy {
            max_attempts: cfg.max_attempts,
            backoff: Backoff::new(
                Duration::from_millis(500).min(cfg.max_backoff),
                cfg.max_backoff,
            )
            .unwrap_or_else(|_| {
                Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
                    .expect("static bounds")
            }),
            request_timeout: Duration::from_secs(10),
        }
    }

    fn configure(&mut self, cfg: &NotifyConfig) {
        let policy = Self::policy(cfg);
        self.cfg = cfg.clone();
        let (local, remote): (Vec<_>, Vec<_>) = crate::notify::channels(cfg)
            .into_iter()
            .partition(|c| c.is_local());
        self.local = local;
        self.channels = remote
            .into_iter()
            .map(|ch| self.spawn_worker(ch, policy))
            .collect();
    }

    /// Same configuration on reload: enable gone channels, start again any dead worker.
    fn revive(&mut self) {
        let policy = Self::policy(&self.cfg);
        let remote = crate::notify::channels(&self.cfg)
            .into_iter()
            .filter(|c| !c.is_local());
        for (i, ch) in remote.enumerate() {
            let Some(q) = self.channels.get(i) else {
                break;
            };
            q.gone.store(false, Ordering::SeqCst);
            if q.tx.is_closed() {
                warn!(self.log, "notification worker was dead; started again on reload"; "event" => "notification_worker_restarted",
                    "channel" => ch.name(), "cause" => "reload");
                crate::metrics::global().inc(
                    "sentinel_notification_worker_restarts_total",
                    &[("channel", channel_label(ch.name()))],
                );
                self.channels[i] = self.spawn_worker(ch, policy);
            }
        }
    }

    fn spawn_worker(&self, channel: Arc<dyn Channel>, policy: Policy) -> Queue {
        let (tx, rx) = mpsc::unbounded_channel::<Notice>();
        let gone = Arc::new(AtomicBool::new(false));
        let worker = Arc::new(Worker {
            log: self
                .log
                .new(slog::o!("channel" => channel.name().to_string(), "host" => channel.host())),
            client: self.client.clone(),
            channel,
            policy,
            pending: self.pending.clone(),
            store: self.store.clone(),
            ledger: self.ledger.clone(),
            gone: gone.clone(),
            queue: tokio::sync::Mutex::new(rx),
            current: std::sync::Mutex::new(None),
        });
        actix_rt::spawn(supervise(worker));
        Queue { tx, gone }
    }
}

/// Everything one channel's worker needs; it outlives a worker that dies.
struct Worker {
    log: Logger,
    client: reqwest::Client,
    channel: Arc<dyn Channel>,
    policy: Policy,
    pending: Arc<AtomicUsize>,
    store: Option<crate::store::Store>,
    ledger: Option<Arc<dyn DeliveryLedger>>,
    gone: Arc<AtomicBool>,
    /// Held by the running worker; a dying one releases it as it unwinds.
    queue: tokio::sync::Mutex<mpsc::UnboundedReceiver<Notice>>,
    /// The notice being delivered, so the one a dead worker held is reported, not lost.
    current: std::sync::Mutex<Option<Notice>>,
}

impl Worker {
    fn set_current(&self, n: Option<Notice>) -> Option<Notice> {
        let mut slot = self.current.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *slot, n)
    }

    /// Counts, stores and forgets one notice's outcome.
    fn finish(&self, n: &Notice, result: &'static str, attempts: u32) {
        crate::metrics::global().inc(
            "sentinel_notifications_total",
            &[
                ("target", n.target.as_str()),
                ("channel", channel_label(self.channel.name())),
                ("result", result),
            ],
        );
        if let Some(s) = &self.store {
            // Queued, not awaited: the store's writer logs a failure itself.
            drop(s.notification(
                &n.incident_id,
                &ledger::kind_key(n),
                self.channel.name(),
                result,
                attempts,
            ));
        }
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// Asks the ledger (cluster mode, a target's notice) what was delivered of `n` here and
    /// records the send as started: None when it was delivered already, else the notice to
    /// send (a repeat says so where the channel does not fold repeats).
    async fn check_ledger(&self, mut n: Notice) -> Option<Notice> {
        let Some(book) = self.ledger.as_ref().filter(|_| n.outage.is_some()) else {
            return Some(n);
        };
        let prior = tokio::time::timeout(LEDGER_WAIT, book.begin(&n, self.channel.name()))
            .await
            .unwrap_or_else(|_| Err("the delivery record did not answer in time".into()));
        match ledger::decide(&prior, self.channel.dedups_by_key()) {
            Decision::Skip => {
                info!(self.log, "notice already delivered by this incident's previous owner; not sent again"; "event" => "notification_skipped",
                    "kind" => n.kind.label(), "target" => &n.target, "incident" => &n.incident_id);
                return None;
            }
            Decision::Repeat { say_so } => {
                warn!(self.log, "the previous owner's send of this notice has no known outcome: sent again"; "event" => "notification_repeated",
                    "kind" => n.kind.label(), "target" => &n.target, "incident" => &n.incident_id, "noted" => say_so);
                if say_so {
                    n.summary = format!("{} {}", n.summary, ledger::REPEAT_NOTE);
                }
            }
            Decision::Send => {
                if let Err(e) = &prior {
                    warn!(self.log, "delivery record unavailable: sending anyway (fail open)"; "event" => "delivery_record_failed",
                        "incident" => &n.incident_id, "error" => e);
                }
            }
        }
        Some(n)
    }

    /// Records how the send ended, for the target's next owner.
    async fn record(&self, n: &Notice, delivered: bool) {
        let Some(book) = self.ledger.as_ref().filter(|_| n.outage.is_some()) else {
            return;
        };
        let mark = if delivered {
            Mark::Delivered
        } else {
            Mark::Failed
        };
        let r = tokio::time::timeout(LEDGER_WAIT, book.finish(n, self.channel.name(), mark))
            .await
            .unwrap_or_else(|_| Err("the delivery record did not answer in time".into()));
        if let Err(e) = r {
            warn!(self.log, "delivery not recorded: a new owner of the target may send this notice again"; "event" => "delivery_record_failed",
                "kind" => n.kind.label(), "incident" => &n.incident_id, "error" => e);
        }
    }
}

/// Runs the channel's worker and starts it again each time it dies (a panic: a bug or an
/// answer nobody foresaw), so one bad answer never silences the channel until a restart. The
/// notice it died on is reported as failed and not retried, since it may kill it again.
async fn supervise(w: Arc<Worker>) {
    loop {
        match actix_rt::spawn(run_worker(w.clone())).await {
            Ok(()) => return, // the queue closed: the channel was replaced
            Err(e) => {
                let cause = if e.is_panic() { "panic" } else { "cancelled" };
                error!(w.log, "notification worker died; started again"; "event" => "notification_worker_restarted", "cause" => cause);
                crate::metrics::global().inc(
                    "sentinel_notification_worker_restarts_total",
                    &[("channel", channel_label(w.channel.name()))],
                );
                if let Some(n) = w.set_current(None) {
                    error!(w.log, "notification NOT delivered; the worker died on it"; "event" => "notification_failed", "kind" => n.kind.label(),
                        "target" => &n.target, "incident" => &n.incident_id, "error_kind" => "worker_died");
                    w.finish(&n, "failed", 0);
                }
            }
        }
    }
}

async fn run_worker(w: Arc<Worker>) {
    let mut rx = w.queue.lock().await;
    let (log, channel, policy) = (&w.log, &w.channel, w.policy);
    while let Some(n) = rx.recv().await {
        let kind = ledger::kind_key(&n);
        if w.gone.load(Ordering::SeqCst) {
            warn!(log, "channel disabled (the webhook answered 404/410); notice not sent"; "event" => "notification_skipped_gone",
                "kind" => n.kind.label(), "target" => &n.target, "incident" => &n.incident_id);
            crate::metrics::global().inc(
                "sentinel_notifications_total",
                &[
                    ("target", n.target.as_str()),
                    ("channel", channel_label(channel.name())),
                    ("result", "disabled"),
                ],
            );
            w.pending.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        if w.store
            .as_ref()
            .is_some_and(|s| s.delivered(&n.incident_id, &kind, channel.name()))
        {
            info!(log, "notice already delivered before a restart; not sent again"; "event" => "notification_skipped",
                "kind" => n.kind.label(), "target" => &n.target, "incident" => &n.incident_id);
            w.pending.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let Some(n) = w.check_ledger(n).await else {
            w.pending.fetch_sub(1, Ordering::SeqCst);
            continue;
        };
        w.set_current(Some(n.clone()));
        // Tests make a worker die here (`SENTINEL_FAULT_PANIC=<target>:notify_worker`).
        crate::faults::maybe_panic(&n.target, "notify_worker");
        let outcome = channel.send(&w.client, &n, policy).await;
        let (result, attempts) = match outcome {
            Ok(attempts) => {
                info!(log, "notification delivered"; "event" => "notification_sent", "kind" => n.kind.label(),
                    "target" => &n.target, "incident" => &n.incident_id, "attempts" => attempts);
                ("sent", attempts)
            }
            Err(e) => {
                error!(log, "notification NOT delivered; giving up"; "event" => "notification_failed", "kind" => n.kind.label(),
                    "target" => &n.target, "incident" => &n.incident_id, "error" => %e, "error_kind" => e.kind());
                if matches!(e, crate::notify::delivery::DeliveryError::Gone { .. }) {
                    w.gone.store(true, Ordering::SeqCst);
                    error!(log, "webhook is gone: this channel is disabled until the registry is reloaded"; "event" => "channel_disabled");
                }
                ("failed", policy.max_attempts)
            }
        };
        w.set_current(None);
        w.record(&n, result == "sent").await;
        w.finish(&n, result, attempts);
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some((book, owner)) = self.outages.take() {
            self.gate = Some(crate::notify::gate::spawn(
                book,
                owner,
                self.log.clone(),
                ctx.address().recipient(),
                self.pending.clone(),
            ));
        }
    }
}

impl Handler<Notify> for Notifier {
    type Result = ();

    fn handle(&mut self, Notify(n): Notify, _: &mut Self::Context) {
        let key = n.key();
        if !self.sent.insert(key.clone()) {
            return; // already queued for this incident: never twice
        }
        self.sent_order.push_back(key);
        while self.sent_order.len() > 10_000 {
            if let Some(old) = self.sent_order.pop_front() {
                self.sent.remove(&old);
            }
        }
        match &self.gate {
            Some(gate) if n.outage.is_some() => {
                self.pending.fetch_add(1, Ordering::SeqCst);
                if let Err(mpsc::error::SendError(n)) = gate.send(n) {
                    self.pending.fetch_sub(1, Ordering::SeqCst);
                    self.dispatch(n); // the gate is gone: alert anyway (fail open)
                }
            }
            _ => self.dispatch(n),
        }
    }
}

impl Handler<crate::notify::gate::Release> for Notifier {
    type Result = ();
    fn handle(&mut self, msg: crate::notify::gate::Release, _: &mut Self::Context) {
        self.dispatch(msg.0);
        self.pending.fetch_sub(1, Ordering::SeqCst); // counted by the gate until dispatched
    }
}

impl Handler<SetChannels> for Notifier {
    type Result = ();
    fn handle(&mut self, msg: SetChannels, _: &mut Self::Context) {
        if msg.0 == self.cfg {
            self.revive();
        } else {
            self.configure(&msg.0);
        }
    }
}

impl Handler<Drain> for Notifier {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, msg: Drain, _: &mut Self::Context) -> Self::Result {
        Box::pin(super::wait_for_zero(self.pending.clone(), msg.deadline))
    }
}

/// `webhook[3]` → `webhook`: metric labels stay low-cardinality.
fn channel_label(channel: &str) -> &str {
    channel.split('[').next().unwrap_or(channel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GenericWebhook, Secret};

    /// A channel whose worker and its supervisor are both gone (the state a panicking worker
    /// left behind before workers were supervised) is started again by a reload with the same
    /// configuration, and a gone webhook is enabled again.
    #[actix_rt::test]
    async fn a_reload_with_the_same_channels_starts_a_dead_worker_again() {
        let cfg = NotifyConfig {
            webhooks: vec![GenericWebhook {
                url: Secret::new("http://127.0.0.1:9/hook"),
                headers: Default::default(),
            }],
            ..Default::default()
        };
        let log = Logger::root(slog::Discard, slog::o!());
        let mut n = Notifier::new(log, &cfg, None);
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        n.channels[0].tx = tx;
        n.channels[0].gone.store(true, Ordering::SeqCst);
        assert!(n.channels[0].tx.is_closed());
        n.revive();
        assert!(!n.channels[0].tx.is_closed(), "the worker runs again");
        assert!(!n.channels[0].gone.load(Ordering::SeqCst));
    }
}

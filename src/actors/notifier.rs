//! The Notifier: one queue and worker per channel, so a slow or dead webhook delays nothing
//! but itself, and notices on one channel arrive in order (an alert before its recovery).
//! Each notice is delivered once per channel; a delivery given up is logged at ERROR.

use super::messages::{Drain, Notify};
use crate::backoff::Backoff;
use crate::config::NotifyConfig;
use crate::notify::delivery::{self, Endpoint, Policy};
use crate::notify::{console, EscalationReason, Notice, NoticeKind};
use actix::prelude::*;
use slog::{error, info, warn, Logger};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Payload format of a channel.

struct Channel {
    tx: mpsc::UnboundedSender<Notice>,
}

/// Replace the channels (registry reload). Queued notices on old channels are still delivered.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetChannels(pub NotifyConfig);

pub struct Notifier {
    log: Logger,
    client: reqwest::Client,
    channels: Vec<Channel>,
    console: bool,
    sent: HashSet<(String, NoticeKind, Option<EscalationReason>)>,
    sent_order: VecDeque<(String, NoticeKind, Option<EscalationReason>)>,
    pending: Arc<AtomicUsize>,
    /// Delivery results persist here; a restarted daemon skips what was already delivered.
    store: Option<crate::store::Store>,
    /// The outage book shared with other daemons, and our owner id in it (until started).
    outages: Option<(crate::outage::OutageBook, String)>,
    /// Notices about a server outage pass the gate first (one incident per outage).
    gate: Option<mpsc::UnboundedSender<Notice>>,
}

/// The key a delivery is recorded under: the kind, and the escalation reason if any.
fn store_kind(n: &Notice) -> String {
    match n.reason {
        Some(r) => format!("{}:{}", n.kind.label(), r.label()),
        None => n.kind.label().to_string(),
    }
}

impl Notifier {
    pub fn new(log: Logger, cfg: &NotifyConfig, store: Option<crate::store::Store>) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("sentinel-remedy/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client with default TLS settings builds");
        let mut n = Self {
            log: log.new(slog::o!("actor" => "notifier")),
            client,
            channels: Vec::new(),
            console: false,
            sent: HashSet::new(),
            sent_order: VecDeque::new(),
            pending: Arc::default(),
            store,
            outages: None,
            gate: None,
        };
        n.configure(cfg);
        n
    }

    /// Shares outages with the daemons using `book`: only one of them announces each.
    pub fn with_outages(mut self, book: crate::outage::OutageBook, owner: String) -> Self {
        self.outages = Some((book, owner));
        self
    }

    /// Sends `n` to the console and every channel.
    fn dispatch(&self, n: Notice) {
        info!(self.log, "notice queued"; "event" => "notice_queued", "kind" => n.kind.label(), "target" => &n.target,
            "incident" => &n.incident_id, "channels" => self.channels.len() + usize::from(self.console));
        if self.console {
            println!("{}", console::line(&n));
        }
        for ch in &self.channels {
            self.pending.fetch_add(1, Ordering::SeqCst);
            if ch.tx.send(n.clone()).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                error!(self.log, "notification channel worker is gone; notice not delivered"; "event" => "notification_failed", "incident" => &n.incident_id);
            }
        }
    }

    fn configure(&mut self, cfg: &NotifyConfig) {
        let policy = Policy {
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
        };
        let endpoints = crate::notify::endpoints(cfg);
        self.console = cfg.console;
        self.channels = endpoints
            .into_iter()
            .map(|(format, ep)| self.spawn_worker(format, ep, policy))
            .collect();
    }

    fn spawn_worker(&self, format: crate::notify::Format, ep: Endpoint, policy: Policy) -> Channel {
        let (tx, mut rx) = mpsc::unbounded_channel::<Notice>();
        let client = self.client.clone();
        let pending = self.pending.clone();
        let log = self.log.new(slog::o!("channel" => ep.channel.clone(), "host" => crate::redact::url_host(ep.url.expose())));
        let store = self.store.clone();
        actix_rt::spawn(async move {
            // Set when the webhook answers 404/410: it is gone, and calling it again is noise.
            let mut gone = false;
            // Discord: the message of each open incident, edited as the incident moves.
            let mut messages: std::collections::HashMap<String, (String, Vec<Notice>)> =
                Default::default();
            while let Some(n) = rx.recv().await {
                let kind = store_kind(&n);
                if gone {
                    warn!(log, "channel disabled (the webhook answered 404/410); notice not sent"; "event" => "notification_skipped_gone",
                        "kind" => n.kind.label(), "target" => &n.target, "incident" => &n.incident_id);
                    crate::metrics::global().inc(
                        "sentinel_notifications_total",
                        &[
                            ("target", n.target.as_str()),
                            ("channel", channel_label(&ep.channel)),
                            ("result", "disabled"),
                        ],
                    );
                    pending.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                if store
                    .as_ref()
                    .is_some_and(|s| s.delivered(&n.incident_id, &kind, &ep.channel))
                {
                    info!(log, "notice already delivered before a restart; not sent again"; "event" => "notification_skipped",
                        "kind" => n.kind.label(), "target" => &n.target, "incident" => &n.incident_id);
                    pending.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let outcome = match format {
                    crate::notify::Format::Discord if n.kind != NoticeKind::Test => {
                        discord_one_message(&client, &ep, &n, policy, &mut messages).await
                    }
                    _ => delivery::deliver(&client, &ep, &format.payload(&n), policy).await,
                };
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
                            gone = true;
                            error!(log, "webhook is gone: this channel is disabled until the registry is reloaded"; "event" => "channel_disabled");
                        }
                        ("failed", policy.max_attempts)
                    }
                };
                crate::metrics::global().inc(
                    "sentinel_notifications_total",
                    &[
                        ("target", n.target.as_str()),
                        ("channel", channel_label(&ep.channel)),
                        ("result", result),
                    ],
                );
                if let Some(s) = &store {
                    if let Err(e) =
                        s.notification(&n.incident_id, &kind, &ep.channel, result, attempts)
                    {
                        error!(log, "delivery result not written to the store"; "event" => "store_failed", "error" => %e);
                    }
                }
                pending.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Channel { tx }
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
        self.configure(&msg.0);
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

/// Discord allows editing a webhook's message: the first notice of an incident is posted with
/// `?wait=true` (the answer carries the message id), later ones PATCH that message with the
/// whole timeline. If the edit fails (the message was deleted), a new message is posted.
async fn discord_one_message(
    client: &reqwest::Client,
    ep: &Endpoint,
    n: &Notice,
    policy: Policy,
    messages: &mut std::collections::HashMap<String, (String, Vec<Notice>)>,
) -> Result<u32, delivery::DeliveryError> {
    let Ok(base) = url::Url::parse(ep.url.expose()) else {
        return delivery::deliver(client, ep, &crate::notify::discord::payload(n), policy).await;
    };
    let closing = n.kind == NoticeKind::Recovery;
    if let Some((id, history)) = messages.get_mut(&n.incident_id) {
        history.push(n.clone());
        let mut url = base.clone();
        url.set_path(&format!(
            "{}/messages/{id}",
            base.path().trim_end_matches('/')
        ));
        let body = crate::notify::discord::edited_payload(history);
        let r = delivery::send(
            client,
            reqwest::Method::PATCH,
            url.as_str(),
            ep,
            &body,
            policy,
        )
        .await;
        if closing {
            messages.remove(&n.incident_id);
        }
        match r {
            Ok((attempts, _)) => return Ok(attempts),
            Err(delivery::DeliveryError::Gone { .. }) => {} // the message is gone: post anew
            Err(e) => return Err(e),
        }
    }
    let mut url = base.clone();
    url.query_pairs_mut().append_pair("wait", "true");
    let (attempts, text) = delivery::send(
        client,
        reqwest::Method::POST,
        url.as_str(),
        ep,
        &crate::notify::discord::payload(n),
        policy,
    )
    .await?;
    let id = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string));
    if let (Some(id), false) = (id, closing) {
        if messages.len() > 1000 {
            messages.clear(); // bounded: very old incidents lose editing, nothing else
        }
        messages.insert(n.incident_id.clone(), (id, vec![n.clone()]));
    }
    Ok(attempts)
}

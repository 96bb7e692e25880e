//! The outage gate: between the Notifier's queue and its channels. For each incident it asks
//! the shared [`OutageBook`] whether this daemon announces the server's outage; an announcer's
//! notices go out under the shared outage id, a follower's are held, and dropped when its own
//! recovery comes. A follower whose announcer never comes or dies sends what it held (fail
//! open). Every file access runs off the actor threads, bounded in time.

use super::Notice;
use crate::outage::{OutageBook, Role};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use slog::{info, warn, Logger};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A notice the gate lets through, for the Notifier's channels.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release(pub Notice);

/// Longest a book access may take before the gate fails open.
const BOOK_DEADLINE: Duration = Duration::from_secs(3);
/// An announced outage with no recovery (escalated, closed unrecovered) is forgotten after this.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

struct Tracked {
    server: String,
    id: String,
    announce: bool,
    held: Vec<Notice>,
    /// When this daemon joined the outage (a follower's grace counts from here).
    joined_at: DateTime<Utc>,
    opened: Instant,
}

/// Starts the gate; `pending` counts notices not yet released or held (the Notifier's drain).
pub fn spawn(
    book: OutageBook,
    owner: String,
    log: Logger,
    out: Recipient<Release>,
    pending: Arc<AtomicUsize>,
) -> mpsc::UnboundedSender<Notice> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Notice>();
    let mut gate = Gate {
        book,
        owner,
        log,
        out,
        open: HashMap::new(),
        pending: pending.clone(),
    };
    actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(gate.book.timing().heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = rx.recv() => {
                    let Some(n) = n else { break };
                    gate.on_notice(n).await;
                    pending.fetch_sub(1, Ordering::SeqCst);
                }
                _ = tick.tick() => gate.on_tick().await,
            }
        }
    });
    tx
}

struct Gate {
    book: OutageBook,
    owner: String,
    log: Logger,
    out: Recipient<Release>,
    /// By incident id.
    open: HashMap<String, Tracked>,
    /// The Notifier's count of notices in flight: a released notice counts until the
    /// Notifier has handed it to its channels ([`Release`]).
    pending: Arc<AtomicUsize>,
}

/// Runs `f` on the book in a blocking thread, within [`BOOK_DEADLINE`].
async fn with_book<T: Send + 'static>(
    book: &OutageBook,
    f: impl FnOnce(&OutageBook) -> Result<T, crate::outage::BookError> + Send + 'static,
) -> Result<T, String> {
    let b = book.clone();
    match tokio::time::timeout(BOOK_DEADLINE, tokio::task::spawn_blocking(move || f(&b))).await {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("outage book task failed: {e}")),
        Err(_) => Err(format!(
            "outage book did not answer within {} s",
            BOOK_DEADLINE.as_secs()
        )),
    }
}

impl Gate {
    async fn on_notice(&mut self, n: Notice) {
        let Some(o) = n.outage.clone() else {
            self.release(n, None);
            return;
        };
        let recovery = n.kind.closes();
        let known = self.open.get(&n.incident_id).map(|t| t.announce);
        if known == Some(false) && (o.may_lead || recovery) {
            // A follower that now acts, or recovers: it announces unless another daemon did
            // (an outage nobody announced is still told, fail open).
            self.reclaim(&n, &o).await;
        }
        if known.is_none() {
            let (server, owner, started, may_lead) = (
                o.server.clone(),
                self.owner.clone(),
                o.started_at,
                o.may_lead,
            );
            let now = Utc::now();
            let role = with_book(&self.book, move |b| {
                b.claim(&server, &owner, started, may_lead, now)
            })
            .await
            .unwrap_or_else(|e| {
                warn!(self.log, "outage record unavailable: this daemon alerts (fail open)"; "event" => "outage_book_failed",
                    "incident" => &n.incident_id, "error" => e);
                Role::Announce(crate::outage::outage_id(&o.server, o.started_at))
            });
            let (announce, id) = match role {
                Role::Announce(id) => (true, id),
                Role::Follow(id) => (false, id),
            };
            if !announce {
                info!(self.log, "another daemon announces this outage: notices held"; "event" => "outage_followed",
                    "incident" => &n.incident_id, "outage" => &id);
            }
            self.open.insert(
                n.incident_id.clone(),
                Tracked {
                    server: o.server.clone(),
                    id,
                    announce,
                    held: vec![],
                    joined_at: now,
                    opened: Instant::now(),
                },
            );
        }
        let Some(t) = self.open.get_mut(&n.incident_id) else {
            return;
        };
        if t.announce {
            let (server, id) = (t.server.clone(), t.id.clone());
            if recovery {
                self.open.remove(&n.incident_id);
                let owner = self.owner.clone();
                let (s, i) = (server.clone(), id.clone());
                if let Err(e) =
                    with_book(&self.book, move |b| b.close(&s, &i, &owner, Utc::now())).await
                {
                    warn!(self.log, "outage record not closed"; "event" => "outage_book_failed", "error" => e);
                }
            }
            self.release(n, Some(id));
        } else if recovery {
            info!(self.log, "recovered; the outage was announced by another daemon, so no notice"; "event" => "notice_left_to_peer",
                "incident" => &n.incident_id, "outage" => &t.id, "held" => t.held.len());
            self.open.remove(&n.incident_id);
        } else {
            t.held.push(n);
        }
    }

    /// Claims the outage again as a daemon that may lead; on success, sends what was held.
    async fn reclaim(&mut self, n: &Notice, o: &super::OutageRef) {
        let (server, owner, started) = (o.server.clone(), self.owner.clone(), o.started_at);
        let now = Utc::now();
        let role = with_book(&self.book, move |b| {
            b.claim(&server, &owner, started, true, now)
        })
        .await;
        let id = match role {
            Ok(Role::Follow(_)) => return,
            Ok(Role::Announce(id)) => id,
            Err(e) => {
                warn!(self.log, "outage record unavailable: this daemon alerts (fail open)"; "event" => "outage_book_failed", "error" => e);
                crate::outage::outage_id(&o.server, o.started_at)
            }
        };
        let Some(t) = self.open.get_mut(&n.incident_id) else {
            return;
        };
        t.announce = true;
        t.id = id.clone();
        let held = std::mem::take(&mut t.held);
        warn!(self.log, "no other daemon announced this outage: this one does"; "event" => "outage_taken_over",
            "incident" => &n.incident_id, "outage" => &id, "held" => held.len());
        for h in held {
            self.release(h, Some(id.clone()));
        }
    }

    async fn on_tick(&mut self) {
        self.open
            .retain(|_, t| t.opened.elapsed() < FORGET_AFTER || !t.announce);
        let keys: Vec<String> = self.open.keys().cloned().collect();
        for key in keys {
            let Some(t) = self.open.get(&key) else {
                continue;
            };
            let (server, id, owner, since, announce) = (
                t.server.clone(),
                t.id.clone(),
                self.owner.clone(),
                t.joined_at,
                t.announce,
            );
            let now = Utc::now();
            if announce {
                let r =
                    with_book(&self.book, move |b| b.heartbeat(&server, &id, &owner, now)).await;
                if let Err(e) = r {
                    warn!(self.log, "outage record not refreshed"; "event" => "outage_book_failed", "error" => e);
                }
                continue;
            }
            let r = with_book(&self.book, move |b| {
                b.take_over_if_needed(&server, &id, &owner, since, now)
            })
            .await;
            let take = match r {
                Ok(take) => take,
                Err(e) => {
                    warn!(self.log, "outage record unavailable: this daemon alerts (fail open)"; "event" => "outage_book_failed", "error" => e);
                    true
                }
            };
            if !take {
                continue;
            }
            let Some(t) = self.open.get_mut(&key) else {
                continue;
            };
            t.announce = true;
            let held = std::mem::take(&mut t.held);
            let id = t.id.clone();
            warn!(self.log, "the daemon announcing this outage went silent or never acted: this one alerts"; "event" => "outage_taken_over",
                "incident" => &key, "outage" => &id, "held" => held.len());
            for n in held {
                self.release(n, Some(id.clone()));
            }
        }
    }

    fn release(&self, mut n: Notice, id: Option<String>) {
        if let (Some(o), Some(id)) = (n.outage.as_mut(), id) {
            o.id = Some(id);
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.out.do_send(Release(n));
    }
}

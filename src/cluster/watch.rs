//! Follows the cluster's keys in etcd for one session: one full read, then a watch on the
//! fleet's prefix from the revision after it. Changes are applied to the shared
//! [`View`](super::view::View) as they come and the agent is woken to act on them, so the
//! steady state costs etcd no read at all, however many targets there are.
//!
//! - A broken stream (etcd restarting, a network cut) is watched again from the revision after
//!   the last one applied: nothing is missed and nothing is read again.
//! - A watch etcd cancels because that revision was compacted away is followed by one full
//!   read, then a new watch from there.
//! - No periodic re-read: etcd's watch delivers every change once, in revision order, or
//!   cancels; a lost session (lease expired) starts over with a new full read.

use super::view::{Kv, Refused};
use super::{Cluster, Session};
use etcd_client::{EventType, GetOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use slog::{debug, info};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Longest a full read may take (at 10,000 targets the owner keys are about half a megabyte).
const READ_LIMIT: Duration = Duration::from_secs(5);
/// Largest answer taken from etcd (the client's default is 4 MiB: about 40,000 owner keys in
/// one full read). etcd's own request limit (1.5 MiB by default) bounds a listing anyway.
const MAX_ANSWER: usize = 64 << 20;
/// Pause before watching again after a broken stream.
const RETRY: Duration = Duration::from_millis(200);

/// Why following stopped for a while.
enum Break {
    /// The session ended: stop.
    SessionOver,
    /// The revision to resume from was compacted (or the watch canceled): read everything.
    Reread,
}

/// Follows etcd for session `s` until it ends; `wake` is notified after every change.
pub(super) async fn follow(c: Arc<Cluster>, s: Session, wake: Arc<tokio::sync::Notify>) {
    let mut said: HashSet<(String, String)> = HashSet::new();
    loop {
        if !current(&c, &s) {
            return;
        }
        let revision = match tokio::time::timeout(READ_LIMIT, full_read(&c, &s)).await {
            Ok(Ok((revision, refused))) => {
                say_refused(&c, &mut said, refused);
                revision
            }
            Ok(Err(e)) => {
                debug!(c.log, "cluster full read failed"; "error" => %e);
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(_) => {
                debug!(c.log, "cluster full read timed out");
                continue;
            }
        };
        wake.notify_one();
        match watch_from(&c, &s, revision, &wake, &mut said).await {
            Break::SessionOver => return,
            Break::Reread => continue,
        }
    }
}

fn current(c: &Cluster, s: &Session) -> bool {
    locked_if_current(c, s).is_some()
}

/// The shared state, while `s` is still the session: a session's follower never writes
/// into the next one's view.
fn locked_if_current<'a>(
    c: &'a Cluster,
    s: &Session,
) -> Option<std::sync::MutexGuard<'a, super::Shared>> {
    let sh = c.lock();
    let ours = sh
        .session
        .as_ref()
        .is_some_and(|x| x.generation == s.generation);
    ours.then_some(sh)
}

/// Reads members, announced listing hashes and owner keys at one revision, then the
/// listings whose hash changed, at that same revision; replaces the view with them.
async fn full_read(c: &Cluster, s: &Session) -> Result<(i64, Vec<Refused>), etcd_client::Error> {
    let mut client = s.client.kv_client().max_decoding_message_size(MAX_ANSWER);
    let prefix = || Some(GetOptions::new().with_prefix());
    let k = &c.keys;
    let txn = Txn::new().and_then([
        TxnOp::get(k.members(), prefix()),
        TxnOp::get(k.listed_all(), prefix()),
        TxnOp::get(k.owners(), prefix()),
    ]);
    let r = client.txn(txn).await?;
    let revision = r.header().map_or(0, |h| h.revision());
    let mut kvs = vec![];
    for resp in r.op_responses() {
        if let TxnOpResponse::Get(g) = resp {
            kvs.extend(g.kvs().to_vec());
        }
    }
    let read: Vec<Kv> = kvs.iter().map(as_kv).collect();
    let mut listings = vec![];
    let fetch = {
        let Some(mut sh) = locked_if_current(c, s) else {
            return Ok((revision, vec![]));
        };
        // Not planned from until the listings below are in too.
        sh.view_ready = None;
        sh.view.listings_to_read(k, &read)
    };
    for m in fetch {
        let opts = GetOptions::new().with_revision(revision);
        let g = client.get(k.listing(&m), Some(opts)).await?;
        listings.extend(g.kvs().first().cloned());
    }
    let Some(mut sh) = locked_if_current(c, s) else {
        return Ok((revision, vec![]));
    };
    let mut refused = sh.view.load(k, &read, revision);
    for kv in &listings {
        refused.extend(sh.view.put(k, as_kv(kv)));
    }
    sh.view_ready = Some(s.generation);
    crate::metrics::global().inc("sentinel_cluster_full_reads_total", &[]);
    Ok((revision, refused))
}

fn as_kv(kv: &etcd_client::KeyValue) -> Kv<'_> {
    Kv {
        key: std::str::from_utf8(kv.key()).unwrap_or(""),
        value: kv.value(),
        lease: kv.lease(),
        revision: kv.mod_revision(),
    }
}

/// Watches the fleet's prefix from `revision + 1`, applying each change, until the session
/// ends or a full read is needed; a broken stream is watched again from where it was.
async fn watch_from(
    c: &Arc<Cluster>,
    s: &Session,
    mut revision: i64,
    wake: &tokio::sync::Notify,
    said: &mut HashSet<(String, String)>,
) -> Break {
    loop {
        if !current(c, s) {
            return Break::SessionOver;
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1)
            .with_progress_notify();
        let mut client = s
            .client
            .watch_client()
            .max_decoding_message_size(MAX_ANSWER);
        let mut stream = match client.watch(c.keys.root(), Some(opts)).await {
            Ok(st) => st,
            Err(e) => {
                debug!(c.log, "cluster watch failed"; "error" => %e, "revision" => revision);
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                // The session can end with the stream quiet: look every second.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if !current(c, s) {
                        return Break::SessionOver;
                    }
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => break,
            };
            if resp.canceled() {
                info!(c.log, "the cluster watch was canceled: reading the cluster again";
                    "event" => "cluster_watch_reread", "compact_revision" => resp.compact_revision(),
                    "resume_revision" => revision + 1, "reason" => resp.cancel_reason());
                if resp.compact_revision() == 0 {
                    // Not a compaction (a permission, a server limit): not at full speed.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                return Break::Reread;
            }
            let refused = apply(c, s, &resp, &mut revision);
            say_refused(c, said, refused);
            wake.notify_one();
        }
        debug!(c.log, "cluster watch broken: watching again"; "revision" => revision);
        tokio::time::sleep(RETRY).await;
    }
}

/// Applies one watch response to the view; `revision` follows what is applied.
fn apply(
    c: &Cluster,
    s: &Session,
    resp: &etcd_client::WatchResponse,
    revision: &mut i64,
) -> Vec<Refused> {
    let mut refused = vec![];
    let Some(mut sh) = locked_if_current(c, s) else {
        return refused;
    };
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let kv = as_kv(kv);
        match ev.event_type() {
            EventType::Put => refused.extend(sh.view.put(&c.keys, kv)),
            EventType::Delete => sh.view.delete(&c.keys, kv.key, kv.revision),
        }
        *revision = (*revision).max(kv.revision);
    }
    // A progress notice (no events): everything up to its revision was sent.
    if resp.events().is_empty() && !resp.created() {
        if let Some(h) = resp.header() {
            *revision = (*revision).max(h.revision());
        }
    }
    sh.view.applied(*revision);
    refused
}

/// Reports each refused key once (while it keeps that value).
fn say_refused(c: &Cluster, said: &mut HashSet<(String, String)>, refused: Vec<Refused>) {
    for (u, value) in refused {
        if said.insert((u.key.clone(), value)) {
            u.report(&c.log, "etcd");
        }
    }
}

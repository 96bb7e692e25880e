//! Deliveries recorded where the next sender of an incident's notices reads them: in cluster
//! mode the target's state in etcd, which a daemon taking the target over resumes from. A
//! resumed incident re-sends its notices; each channel then sends only what was not delivered.
//!
//! A send whose outcome is unknown (recorded as started, never as finished: the daemon died
//! mid-request) is sent again, to every channel. A lost page is an outage nobody hears of; a
//! repeated one is noise, and short-lived: the window is one request's retries. Channels that
//! deduplicate by key (PagerDuty's `dedup_key`) fold the repeat into the same alert; for the
//! others (Slack, Discord, webhooks) the repeat says it may be one, so a reader (or a
//! receiver keyed on the incident id and event) can tell it from a new outage.

use super::Notice;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// What is known of one notice on one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mark {
    /// The send started; its outcome is not known (yet).
    InFlight,
    /// The service accepted it.
    Delivered,
    /// Every attempt failed: the sender gave up (and said so at ERROR).
    Failed,
}

/// Where deliveries are recorded and read (one per daemon; the Notifier's workers share it).
pub trait DeliveryLedger: Send + Sync {
    /// Records that `n` is about to go out on `channel` (unless it was delivered already) and
    /// answers what was recorded before; Err when the record cannot be read or written.
    fn begin<'a>(
        &'a self,
        n: &'a Notice,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<Mark>, String>>;

    /// Records how the send ended.
    fn finish<'a>(
        &'a self,
        n: &'a Notice,
        channel: &'a str,
        mark: Mark,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// What a worker does with a notice, given what was recorded of it on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Delivered already (by this incident's previous sender).
    Skip,
    /// The previous send's outcome is unknown: send again, saying so unless the channel
    /// folds repeats by key.
    Repeat {
        say_so: bool,
    },
}

/// The rule, apart from the I/O: see the module comment for why an unknown outcome is sent
/// again. An unreadable record (`Err`) sends: fail open.
pub fn decide(prior: &Result<Option<Mark>, String>, dedups_by_key: bool) -> Decision {
    match prior {
        Ok(Some(Mark::Delivered)) => Decision::Skip,
        Ok(Some(Mark::InFlight)) => Decision::Repeat {
            say_so: !dedups_by_key,
        },
        Ok(Some(Mark::Failed) | None) | Err(_) => Decision::Send,
    }
}

/// The note a repeated notice carries on channels that do not fold repeats.
pub const REPEAT_NOTE: &str =
    "(Possibly a repeat: the daemon that sent this stopped before it knew whether it arrived.)";

/// The key a delivery is recorded under: the kind, and the escalation reason if any
/// (`failure`, `escalation:recovery_timeout`).
pub fn kind_key(n: &Notice) -> String {
    match n.reason {
        Some(r) => format!("{}:{}", n.kind.label(), r.label()),
        None => n.kind.label().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_was_delivered_is_skipped_and_an_unknown_outcome_is_sent_again() {
        let cases = [
            (Ok(None), false, Decision::Send),
            (Ok(Some(Mark::Failed)), false, Decision::Send),
            (Err("etcd down".to_string()), false, Decision::Send),
            (Ok(Some(Mark::Delivered)), false, Decision::Skip),
            (Ok(Some(Mark::Delivered)), true, Decision::Skip),
            (
                Ok(Some(Mark::InFlight)),
                true,
                Decision::Repeat { say_so: false },
            ),
            (
                Ok(Some(Mark::InFlight)),
                false,
                Decision::Repeat { say_so: true },
            ),
        ];
        for (prior, dedups, want) in cases {
            assert_eq!(decide(&prior, dedups), want, "{prior:?} dedups={dedups}");
        }
    }
}

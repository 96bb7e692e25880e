//! The console channel: one readable line per notice on standard output (the demo uses it).

use super::channel::Channel;
use super::delivery::{DeliveryError, Policy};
use super::Notice;
use futures::future::BoxFuture;

/// Standard output (`notify.console`): written at once, nothing to retry or record.
pub struct Console;

impl Channel for Console {
    fn name(&self) -> &str {
        "console"
    }
    fn host(&self) -> String {
        "stdout".into()
    }
    fn is_local(&self) -> bool {
        true
    }
    /// Prints one [`line`]; done on the first poll (see [`Channel::is_local`]).
    fn send<'a>(
        &'a self,
        _client: &'a reqwest::Client,
        n: &'a Notice,
        _policy: Policy,
    ) -> BoxFuture<'a, Result<u32, DeliveryError>> {
        Box::pin(async move {
            println!("{}", line(n));
            Ok(1)
        })
    }
}

/// The notice on one line, with control characters escaped.
pub fn line(n: &Notice) -> String {
    let facts: Vec<String> = n
        .facts()
        .into_iter()
        .skip(1)
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    // A terminal reads this: the server's text must not move the cursor or start a line.
    crate::logging::escape_controls_str(&format!(
        "[{}] {} — {} | {}",
        n.timestamp.format("%H:%M:%S"),
        n.title(),
        n.summary,
        facts.join(" | ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// The Notifier runs a local channel in line: the console's send is done on its first poll.
    #[test]
    fn the_console_finishes_on_its_first_poll() {
        let now = chrono::Utc::now();
        let n = Notice {
            kind: super::super::NoticeKind::Test,
            target: "orders".into(),
            endpoint: "h:5432/db".into(),
            incident_id: "i".into(),
            timestamp: now,
            failure: None,
            archive: None,
            reason: None,
            downtime_seconds: None,
            time_to_recovery_seconds: None,
            summary: "s".into(),
            outage: None,
            cause: None,
        };
        let client = super::super::http::client(None);
        let policy = Policy {
            max_attempts: 1,
            backoff: crate::backoff::Backoff::new(
                std::time::Duration::from_millis(1),
                std::time::Duration::from_millis(1),
            )
            .unwrap(),
            request_timeout: std::time::Duration::from_secs(1),
        };
        let sent = Console.send(&client, &n, policy).now_or_never();
        assert!(matches!(sent, Some(Ok(1))));
        assert!(Console.is_local());
    }
}

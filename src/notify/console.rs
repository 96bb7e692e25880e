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

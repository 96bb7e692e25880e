//! The seam between the Notifier and the services notices go to. The Notifier's queueing,
//! deduplication, outage gate, delivery records and metrics are the same for every channel; a
//! channel says what its service accepts and how it is delivered.

use super::delivery::{DeliveryError, Endpoint, Policy};
use super::Notice;
use futures::future::BoxFuture;

/// Where notices go: one implementation per file in `notify/`, made by [`super::channels`]
/// from the notify configuration.
///
/// The Notifier holds channels as `Arc<dyn Channel>`, so the trait must be object safe; `send`
/// returns `futures`' `BoxFuture` (a crate the daemon already uses) rather than going through
/// the `async-trait` macro, which would add a dependency to write the same boxing.
pub trait Channel: Send + Sync {
    /// Its name in logs, metrics and delivery records: `slack`, `discord`, `pagerduty`,
    /// `webhook[0]`, `console`.
    fn name(&self) -> &str;

    /// Where its notices go, for logs: a URL's host only (the URL is a secret).
    fn host(&self) -> String;

    /// True for a channel on the daemon's own output (the console). It has nothing to retry
    /// or record, so it gets no queue or worker: the Notifier runs its `send` in line, which
    /// must therefore complete without waiting on anything.
    fn is_local(&self) -> bool {
        false
    }

    /// True when the service folds two sends of one notice into one alert (PagerDuty's
    /// `dedup_key`): a send whose outcome is unknown is then repeated without a note
    /// ([`super::ledger`]).
    fn dedups_by_key(&self) -> bool {
        false
    }

    /// Delivers one notice with `client` under the retry `policy`; returns the attempts used.
    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        n: &'a Notice,
        policy: Policy,
    ) -> BoxFuture<'a, Result<u32, DeliveryError>>;
}

/// A webhook channel's [`Channel::host`].
pub(crate) fn host_of(ep: &Endpoint) -> String {
    crate::redact::url_host(ep.url.expose())
}

/// A channel that posts one JSON body per notice to its endpoint (Slack, PagerDuty, generic
/// webhooks): it says only what the body is; name, host and delivery come with it.
pub(crate) trait JsonPost: Send + Sync {
    fn endpoint(&self) -> &Endpoint;
    fn body(&self, n: &Notice) -> serde_json::Value;
    /// [`Channel::dedups_by_key`].
    fn dedups_by_key(&self) -> bool {
        false
    }
}

impl<T: JsonPost> Channel for T {
    fn name(&self) -> &str {
        &self.endpoint().channel
    }
    fn host(&self) -> String {
        host_of(self.endpoint())
    }
    fn dedups_by_key(&self) -> bool {
        JsonPost::dedups_by_key(self)
    }
    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        n: &'a Notice,
        policy: Policy,
    ) -> BoxFuture<'a, Result<u32, DeliveryError>> {
        let body = self.body(n);
        Box::pin(
            async move { super::delivery::deliver(client, self.endpoint(), &body, policy).await },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ChatWebhook, GenericWebhook, NotifyConfig, PagerDutyConfig, Secret};

    #[test]
    fn every_configured_channel_is_made_once_in_a_fixed_order() {
        let chat = |url: &str| ChatWebhook {
            url: Secret::new(url),
        };
        let cfg = NotifyConfig {
            slack: Some(chat("https://slack.example/hook/s3cr3t")),
            discord: Some(chat("https://discord.example/api/webhooks/1/x")),
            pagerduty: Some(PagerDutyConfig {
                routing_key: Secret::new("k"),
                url: Secret::new("https://events.example/v2/enqueue"),
            }),
            webhooks: vec![GenericWebhook {
                url: Secret::new("http://127.0.0.1:9/hook"),
                headers: Default::default(),
            }],
            console: true,
            ..Default::default()
        };
        let channels = super::super::channels(&cfg);
        let names: Vec<&str> = channels.iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            ["console", "slack", "discord", "pagerduty", "webhook[0]"]
        );
        let local: Vec<bool> = channels.iter().map(|c| c.is_local()).collect();
        assert_eq!(local, [true, false, false, false, false]);
        assert_eq!(channels[1].host(), "https://slack.example");
    }
}

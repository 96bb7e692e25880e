//! `notify:`: alert channels (Slack, Discord, PagerDuty, generic webhooks) and delivery policy.

use super::duration::{checked as duration, RawDuration};
use super::error::Problems;
use super::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `notify:`: alert channels.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// Slack incoming webhook.
    pub slack: Option<RawChatWebhook>,
    /// Discord webhook.
    pub discord: Option<RawChatWebhook>,
    /// Generic JSON webhooks.
    pub webhooks: Option<Vec<RawGenericWebhook>>,
    /// PagerDuty Events API v2.
    pub pagerduty: Option<RawPagerDuty>,
    /// Print notices on standard output too (the demo turns this on).
    pub console: Option<bool>,
    /// Delivery attempts per notice before giving up (default 6).
    pub max_attempts: Option<i64>,
    /// Upper bound on the wait between attempts (default 30s).
    pub max_backoff: Option<RawDuration>,
}

/// `notify.pagerduty:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPagerDuty {
    /// The integration's routing key (a secret).
    pub routing_key: String,
    /// Events API URL (default PagerDuty's v2 enqueue endpoint; EU accounts use their own).
    pub url: Option<String>,
}

/// A Slack or Discord webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChatWebhook {
    /// The webhook URL (a secret: it is never logged).
    pub webhook_url: String,
}

/// A generic JSON webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGenericWebhook {
    /// Where the JSON is POSTed (a secret: only its host is ever logged).
    pub url: String,
    /// Extra request headers, for example an Authorization token.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A chat webhook (Slack or Discord).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatWebhook {
    pub url: Secret,
}

/// PagerDuty Events v2.
#[derive(Debug, Clone, PartialEq)]
pub struct PagerDutyConfig {
    pub routing_key: Secret,
    pub url: Secret,
}

/// A generic JSON webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct GenericWebhook {
    pub url: Secret,
    pub headers: BTreeMap<String, Secret>,
}

/// Alert channels and delivery policy.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub slack: Option<ChatWebhook>,
    pub discord: Option<ChatWebhook>,
    pub webhooks: Vec<GenericWebhook>,
    pub pagerduty: Option<PagerDutyConfig>,
    pub console: bool,
    pub max_attempts: u32,
    pub max_backoff: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            slack: None,
            discord: None,
            webhooks: Vec::new(),
            pagerduty: None,
            console: false,
            max_attempts: 6,
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// Validates `notify:`; a channel whose URL is wrong is left out (and reported).
pub(crate) fn build_notify(raw: RawNotify, problems: &mut Problems) -> NotifyConfig {
    let chat = |w: Option<RawChatWebhook>, at: &str, problems: &mut Problems| {
        w.filter(|w| webhook_url(&w.webhook_url, at, problems))
            .map(|w| ChatWebhook {
                url: Secret::new(w.webhook_url),
            })
    };
    let mut n = NotifyConfig {
        console: raw.console.unwrap_or(false),
        ..NotifyConfig::default()
    };
    n.slack = chat(raw.slack, "notify.slack.webhook_url", problems);
    n.discord = chat(raw.discord, "notify.discord.webhook_url", problems);
    for (i, w) in raw.webhooks.unwrap_or_default().into_iter().enumerate() {
        if webhook_url(&w.url, &format!("notify.webhooks[{i}].url"), problems) {
            let headers: BTreeMap<_, _> = w
                .headers
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect();
            n.webhooks.push(GenericWebhook {
                url: Secret::new(w.url),
                headers,
            });
        }
    }
    n.pagerduty = raw.pagerduty.and_then(|p| pagerduty(p, problems));
    if let Some(a) = raw.max_attempts {
        if !(1..=100).contains(&a) {
            problems.push(
                "notify.max_attempts",
                format!("{a} is out of range"),
                "use a number from 1 to 100",
            );
        } else {
            n.max_attempts = a as u32;
        }
    }
    if let Some(d) = raw
        .max_backoff
        .as_ref()
        .and_then(|d| duration(d, "notify.max_backoff", problems))
    {
        n.max_backoff = d;
    }
    n
}

/// `notify.pagerduty`: a routing key, and the Events API URL (PagerDuty's by default).
fn pagerduty(p: RawPagerDuty, problems: &mut Problems) -> Option<PagerDutyConfig> {
    let url = p
        .url
        .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".into());
    if p.routing_key.trim().is_empty() {
        problems.push(
            "notify.pagerduty.routing_key",
            "the routing key is empty",
            "copy the Events API v2 integration key of the PagerDuty service",
        );
        None
    } else if webhook_url(&url, "notify.pagerduty.url", problems) {
        Some(PagerDutyConfig {
            routing_key: Secret::new(p.routing_key),
            url: Secret::new(url),
        })
    } else {
        None
    }
}

/// Checks a webhook URL; the message shows only scheme and host, since the path is the secret.
pub(crate) fn webhook_url(text: &str, path: &str, problems: &mut Problems) -> bool {
    let fix = if path.contains("slack") {
        "use the full https URL Slack gave for the incoming webhook (https://hooks.slack.com/services/...)"
    } else if path.contains("discord") {
        "use the full https URL Discord gave for the webhook (https://discord.com/api/webhooks/...)"
    } else {
        "use a full http(s) URL such as https://ops.example.com/hook"
    };
    if text.trim().is_empty() {
        problems.push(path, "the URL is empty", format!("{fix}, or remove the channel (an unset ${{VAR}} expands to nothing only if you set it to empty)"));
        return false;
    }
    match url::Url::parse(text) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => true,
        Ok(u) => {
            problems.push(
                path,
                format!("'{}://…' is not an http(s) URL with a host", u.scheme()),
                fix,
            );
            false
        }
        Err(e) => {
            problems.push(path, format!("not a URL ({e})"), fix);
            false
        }
    }
}

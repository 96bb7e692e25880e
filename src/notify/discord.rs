//! Discord webhook payload: `content` plus one embed coloured by severity. No payload may
//! mention anyone (`allowed_mentions` is empty), and text that is not ours (a server's error
//! message) has its markdown escaped, so it cannot ping `@everyone` or disguise a link.

use super::channel::{host_of, Channel};
use super::delivery::{self, DeliveryError, Endpoint, Policy};
use super::{clip, Notice, NoticeKind};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Most incident messages remembered for editing; past it, older incidents lose editing
/// (their next notice is a new message), nothing else.
const MAX_MESSAGES: usize = 1000;

/// A Discord webhook (`notify.discord`): one message per incident, edited as it moves.
pub struct Discord {
    pub ep: Endpoint,
    /// By incident: the message id and every notice it shows so far. Locked for a whole
    /// delivery; the channel's one worker delivers one notice at a time anyway.
    messages: tokio::sync::Mutex<HashMap<String, (String, Vec<Notice>)>>,
}

impl Discord {
    pub fn new(ep: Endpoint) -> Self {
        Self {
            ep,
            messages: Default::default(),
        }
    }

    /// Discord allows editing a webhook's message: the first notice of an incident is posted
    /// with `?wait=true` (the answer carries the message id), later ones PATCH that message
    /// with the whole timeline. If the edit fails (the message was deleted), a new message is
    /// posted.
    async fn one_message(
        &self,
        client: &reqwest::Client,
        n: &Notice,
        policy: Policy,
    ) -> Result<u32, DeliveryError> {
        let ep = &self.ep;
        let Ok(base) = url::Url::parse(ep.url.expose()) else {
            return delivery::deliver(client, ep, &payload(n), policy).await;
        };
        let mut messages = self.messages.lock().await;
        let closing = n.kind.closes();
        if let Some((id, history)) = messages.get_mut(&n.incident_id) {
            history.push(n.clone());
            let mut url = base.clone();
            url.set_path(&format!(
                "{}/messages/{id}",
                base.path().trim_end_matches('/')
            ));
            let body = edited_payload(history);
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
                Err(DeliveryError::Gone { .. }) => {} // the message is gone: post anew
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
            &payload(n),
            policy,
        )
        .await?;
        let id = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string));
        if let (Some(id), false) = (id, closing) {
            if messages.len() > MAX_MESSAGES {
                messages.clear(); // bounded: very old incidents lose editing, nothing else
            }
            messages.insert(n.incident_id.clone(), (id, vec![n.clone()]));
        }
        Ok(attempts)
    }
}

impl Channel for Discord {
    fn name(&self) -> &str {
        &self.ep.channel
    }
    fn host(&self) -> String {
        host_of(&self.ep)
    }
    /// An incident's notices edit its one message; a test notice is a message of its own.
    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        n: &'a Notice,
        policy: Policy,
    ) -> BoxFuture<'a, Result<u32, DeliveryError>> {
        Box::pin(async move {
            if n.kind == NoticeKind::Test {
                delivery::deliver(client, &self.ep, &payload(n), policy).await
            } else {
                self.one_message(client, n, policy).await
            }
        })
    }
}

pub const RED: u32 = 0xE7_4C_3C;
pub const GREEN: u32 = 0x2E_CC_71;
pub const ORANGE: u32 = 0xE6_7E_22;
/// A closed incident that did not recover (its container was replaced).
pub const GREY: u32 = 0x95_A5_A6;

/// Discord's limits: content 2000, title 256, description 4096, field name 256, value 1024.
pub fn payload(n: &Notice) -> Value {
    let color = match n.kind {
        NoticeKind::Failure => RED,
        NoticeKind::Recovery => GREEN,
        NoticeKind::Replaced => GREY,
        NoticeKind::Escalation | NoticeKind::UnannouncedRestart | NoticeKind::Warning => ORANGE,
        NoticeKind::Test | NoticeKind::WarningCleared => GREEN,
    };
    let fields: Vec<Value> = n
        .facts()
        .into_iter()
        .take(25)
        .map(|(k, v)| json!({ "name": clip(k, 256), "value": clip(&escape(&v), 1024), "inline": false }))
        .collect();
    json!({
        "content": clip(&escape(&n.title()), 2000),
        "embeds": [{
            "title": clip(&escape(&n.title()), 256),
            "description": clip(&escape(&n.summary), 4096),
            "color": color,
            "fields": fields,
            "timestamp": n.timestamp.to_rfc3339(),
            "footer": { "text": "sentinel-remedy" }
        }],
        "allowed_mentions": { "parse": [] }
    })
}

/// The one message of an incident, edited as it moves: the latest state's colour and title,
/// and every phase so far in the description (detected, archived, restarting, recovered).
pub fn edited_payload(history: &[Notice]) -> Value {
    let last = history.last().expect("an edit follows at least one notice");
    let mut v = payload(last);
    let timeline: Vec<String> = history
        .iter()
        .map(|n| {
            format!(
                "`{}` **{}**: {}",
                n.timestamp.format("%H:%M:%S"),
                n.kind.label(),
                escape(&n.summary)
            )
        })
        .collect();
    v["embeds"][0]["description"] = Value::String(clip(&timeline.join("\n"), 4096));
    v
}

/// Discord markdown made literal: each character that formats, quotes, links or mentions
/// gets a backslash, which Discord shows as the character itself; control characters other
/// than line breaks and tabs become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in super::printable(s).chars() {
        if "\\*_~`|[]()<>@#:".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn mentions_and_links_are_inert() {
        assert_eq!(
            super::escape("@everyone [click](https://evil)"),
            "\\@everyone \\[click\\]\\(https\\://evil\\)"
        );
    }
}

//! Slack incoming-webhook payload: `text` (the fallback shown in notifications) plus blocks.
//! Every text that is not ours (a server's error message, an application name) is escaped for
//! mrkdwn, so a database cannot post `<!channel>` or a disguised `<https://...|link>`.

use super::channel::JsonPost;
use super::delivery::Endpoint;
use super::{clip, Notice};
use serde_json::{json, Value};

/// A Slack incoming webhook (`notify.slack`).
pub struct Slack {
    pub ep: Endpoint,
}

impl JsonPost for Slack {
    fn endpoint(&self) -> &Endpoint {
        &self.ep
    }
    fn body(&self, n: &Notice) -> Value {
        payload(n)
    }
}

/// Slack's limits: header text 150 characters, section text 3000.
pub fn payload(n: &Notice) -> Value {
    let facts: String = n
        .facts()
        .iter()
        .map(|(k, v)| format!("*{k}:* {}\n", escape(v)))
        .collect();
    let summary = escape(&n.summary);
    json!({
        "text": clip(&format!("{}: {summary}", escape(&n.title())), 3000),
        "blocks": [
            { "type": "header", "text": { "type": "plain_text", "text": clip(&n.title(), 150), "emoji": true } },
            { "type": "section", "text": { "type": "mrkdwn", "text": clip(&format!("{summary}\n{facts}"), 3000) } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": clip(&format!("sentinel-remedy · {} · {}", n.kind.label(), n.timestamp.to_rfc3339()), 3000) } ] }
        ]
    })
}

/// Slack's three control characters, escaped as its docs ask: `&`, `<` and `>`. Mentions
/// (`<!channel>`, `<@U123>`) and links (`<https://x|y>`) are then shown as text.
/// Control characters other than line breaks and tabs become U+FFFD.
pub fn escape(s: &str) -> String {
    super::printable(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn mentions_and_links_are_inert() {
        assert_eq!(
            super::escape("<!channel> & <https://evil|click>"),
            "&lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
        );
    }
}

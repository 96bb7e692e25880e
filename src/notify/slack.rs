//! Slack incoming-webhook payload: `text` (the fallback shown in notifications) plus blocks.

use super::{clip, Notice};
use serde_json::{json, Value};

/// Slack's limits: header text 150 characters, section text 3000.
pub fn payload(n: &Notice) -> Value {
    let facts: String = n
        .facts()
        .iter()
        .map(|(k, v)| format!("*{k}:* {v}\n"))
        .collect();
    json!({
        "text": clip(&format!("{}: {}", n.title(), n.summary), 3000),
        "blocks": [
            { "type": "header", "text": { "type": "plain_text", "text": clip(&n.title(), 150), "emoji": true } },
            { "type": "section", "text": { "type": "mrkdwn", "text": clip(&format!("{}\n{}", n.summary, facts), 3000) } },
            { "type": "context", "elements": [ { "type": "mrkdwn", "text": clip(&format!("sentinel-remedy · {} · {}", n.kind.label(), n.timestamp.to_rfc3339()), 3000) } ] }
        ]
    })
}

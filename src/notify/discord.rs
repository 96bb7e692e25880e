//! Discord webhook payload: `content` plus one embed coloured by severity. No payload may
//! mention anyone (`allowed_mentions` is empty), and text that is not ours (a server's error
//! message) has its markdown escaped, so it cannot ping `@everyone` or disguise a link.

use super::{clip, Notice, NoticeKind};
use serde_json::{json, Value};

pub const RED: u32 = 0xE7_4C_3C;
pub const GREEN: u32 = 0x2E_CC_71;
pub const ORANGE: u32 = 0xE6_7E_22;

/// Discord's limits: content 2000, title 256, description 4096, field name 256, value 1024.
pub fn payload(n: &Notice) -> Value {
    let color = match n.kind {
        NoticeKind::Failure => RED,
        NoticeKind::Recovery => GREEN,
        NoticeKind::Escalation => ORANGE,
        NoticeKind::Test => GREEN,
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
            "title": clip(&n.title(), 256),
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

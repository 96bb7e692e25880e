//! Generic JSON webhook payload: flat, stable field names for any receiver.

use super::channel::JsonPost;
use super::delivery::Endpoint;
use super::Notice;
use serde_json::{json, Value};

/// A generic JSON webhook (`notify.webhooks[i]`), with its custom headers.
pub struct Webhook {
    pub ep: Endpoint,
}

impl JsonPost for Webhook {
    fn endpoint(&self) -> &Endpoint {
        &self.ep
    }
    fn body(&self, n: &Notice) -> Value {
        payload(n)
    }
}

pub fn payload(n: &Notice) -> Value {
    let mut v = json!({
        "event": n.kind.label(),
        "target": n.target,
        "endpoint": n.endpoint,
        "incident_id": n.incident_id,
        "timestamp": n.timestamp.to_rfc3339(),
        "failure": n.failure.as_ref().map(|f| json!({ "class": f.class.label(), "sqlstate": f.sqlstate, "detail": f.detail })),
        "archive": n.archive,
        "summary": n.summary,
    });
    if let Some(c) = &n.cause {
        // The first line a person reads, and the cause itself for any receiver's rules.
        v["title"] = json!(n.title());
        v["cause"] = json!(c);
    }
    if let Some(r) = n.reason {
        v["reason"] = json!(r.label());
    }
    if let Some(d) = n.downtime_seconds {
        v["downtime_seconds"] = json!(d);
    }
    if let Some(t) = n.time_to_recovery_seconds {
        v["time_to_recovery_seconds"] = json!(t);
    }
    v
}

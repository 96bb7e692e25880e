//! Generic JSON webhook payload: flat, stable field names for any receiver.

use super::channel::{host_of, Channel};
use super::delivery::{self, DeliveryError, Endpoint, Policy};
use super::Notice;
use futures::future::BoxFuture;
use serde_json::{json, Value};

/// A generic JSON webhook (`notify.webhooks[i]`), with its custom headers.
pub struct Webhook {
    pub ep: Endpoint,
}

impl Channel for Webhook {
    fn name(&self) -> &str {
        &self.ep.channel
    }
    fn host(&self) -> String {
        host_of(&self.ep)
    }
    fn send<'a>(
        &'a self,
        client: &'a reqwest::Client,
        n: &'a Notice,
        policy: Policy,
    ) -> BoxFuture<'a, Result<u32, DeliveryError>> {
        Box::pin(async move { delivery::deliver(client, &self.ep, &payload(n), policy).await })
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

//! PagerDuty Events API v2: a `trigger` per failure or escalation and a `resolve` on recovery,
//! deduplicated by server and outage (the same key from every daemon watching the server), so
//! an outage is one PagerDuty incident.

use super::channel::JsonPost;
use super::delivery::Endpoint;
use super::{Notice, NoticeKind};
use crate::config::Secret;
use serde_json::{json, Value};

/// The PagerDuty Events API (`notify.pagerduty`), with the integration's routing key.
pub struct PagerDuty {
    pub ep: Endpoint,
    pub routing_key: Secret,
}

impl JsonPost for PagerDuty {
    fn endpoint(&self) -> &Endpoint {
        &self.ep
    }
    fn body(&self, n: &Notice) -> Value {
        payload(n, self.routing_key.expose())
    }
    /// The same outage has the same `dedup_key` whichever daemon sends it.
    fn dedups_by_key(&self) -> bool {
        true
    }
}

/// The Events v2 body for `n`, with the integration's routing key.
pub fn payload(n: &Notice, routing_key: &str) -> Value {
    let dedup_key = dedup_key(n);
    if n.kind.closes() {
        return json!({ "routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key });
    }
    let severity = match n.kind {
        NoticeKind::Escalation => "critical",
        NoticeKind::Test => "info",
        // Over already: a person should look, nobody need wake.
        NoticeKind::UnannouncedRestart | NoticeKind::Warning => "warning",
        _ => "error",
    };
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "SentinelRemedy",
        "payload": {
            "summary": super::clip(&format!("{}: {}", n.title(), n.summary), 1024),
            "source": n.endpoint,
            "severity": severity,
            "timestamp": n.timestamp.to_rfc3339(),
            "component": n.target,
            "group": "postgresql",
            "class": n.failure.as_ref().map(|f| f.class.label()).unwrap_or(n.kind.label()),
            "custom_details": {
                "incident_id": n.incident_id,
                "outage_id": n.outage.as_ref().and_then(|o| o.id.as_deref()),
                "failure": n.failure.as_ref().map(|f| json!({"class": f.class.label(), "sqlstate": f.sqlstate, "detail": f.detail})),
                "archive": n.archive,
                "reason": n.reason.map(|r| r.label()),
                "cause": n.cause,
            }
        }
    })
}

/// `sentinel-remedy/{host:port}/{outage start}`: derived from the server and the outage, not
/// from one daemon's incident id. Notices without an outage (fleet, test) use their incident.
fn dedup_key(n: &Notice) -> String {
    let outage = n.outage.as_ref().map(|o| {
        o.id.clone()
            .unwrap_or_else(|| crate::outage::outage_id(&o.server, o.started_at))
    });
    let key = match outage {
        Some(id) => format!("sentinel-remedy/{id}"),
        None => format!("sentinel-remedy/{}/{}", n.target, n.incident_id),
    };
    super::clip(&key, 255)
}

//! PagerDuty Events API v2: a `trigger` per failure or escalation and a `resolve` on recovery,
//! deduplicated by target and incident, so an incident is one PagerDuty alert.

use super::{Notice, NoticeKind};
use serde_json::{json, Value};

/// The Events v2 body for `n`, with the integration's routing key.
pub fn payload(n: &Notice, routing_key: &str) -> Value {
    let dedup_key = format!("sentinel-remedy/{}/{}", n.target, n.incident_id);
    if n.kind == NoticeKind::Recovery {
        return json!({ "routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key });
    }
    let severity = match n.kind {
        NoticeKind::Escalation => "critical",
        NoticeKind::Test => "info",
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
                "failure": n.failure.as_ref().map(|f| json!({"class": f.class.label(), "sqlstate": f.sqlstate, "detail": f.detail})),
                "archive": n.archive,
                "reason": n.reason.map(|r| r.label()),
            }
        }
    })
}

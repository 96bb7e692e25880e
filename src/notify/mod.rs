//! Notices and their channels. A [`Notice`] is channel-neutral; each channel (one file per
//! service, each a [`Channel`]) turns it into the payload its service accepts and delivers it,
//! through [`delivery`]'s retries; [`channels`] makes them from the configuration.

pub mod channel;
pub mod console;
pub mod delivery;
pub mod discord;
pub mod gate;
pub mod http;
pub mod ledger;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

pub use channel::Channel;

use crate::config::NotifyConfig;
use crate::failure::ProbeFailure;
use chrono::{DateTime, Utc};
use delivery::Endpoint;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Every configured channel, the console first, then the services in a fixed order: the one
/// place that turns the notify configuration into [`Channel`]s.
pub fn channels(cfg: &NotifyConfig) -> Vec<Arc<dyn Channel>> {
    let endpoint = |channel: &str, url: &crate::config::Secret| Endpoint {
        channel: channel.into(),
        url: url.clone(),
        headers: Default::default(),
    };
    let mut out: Vec<Arc<dyn Channel>> = Vec::new();
    if cfg.console {
        out.push(Arc::new(console::Console));
    }
    if let Some(s) = &cfg.slack {
        out.push(Arc::new(slack::Slack {
            ep: endpoint("slack", &s.url),
        }));
    }
    if let Some(d) = &cfg.discord {
        out.push(Arc::new(discord::Discord::new(endpoint("discord", &d.url))));
    }
    if let Some(p) = &cfg.pagerduty {
        out.push(Arc::new(pagerduty::PagerDuty {
            ep: endpoint("pagerduty", &p.url),
            routing_key: p.routing_key.clone(),
        }));
    }
    for (i, w) in cfg.webhooks.iter().enumerate() {
        out.push(Arc::new(webhook::Webhook {
            ep: Endpoint {
                headers: w.headers.clone(),
                ..endpoint(&format!("webhook[{i}]"), &w.url)
            },
        }));
    }
    out
}

/// `sentinel-remedy notify-test`: one test notice to every channel; each channel's result.
pub async fn send_test(cfg: &NotifyConfig) -> Vec<(String, Result<u32, delivery::DeliveryError>)> {
    let client = http::client(None);
    let policy = delivery::Policy {
        max_attempts: cfg.max_attempts.min(3),
        backoff: crate::backoff::Backoff::new(
            std::time::Duration::from_millis(500),
            std::time::Duration::from_secs(5),
        )
        .expect("static bounds"),
        request_timeout: std::time::Duration::from_secs(10),
    };
    let notice = Notice::about_daemon(
        NoticeKind::Test,
        None,
        "notify-test".into(),
        "-".into(),
        format!("{}-notify-test", crate::stamp::stamp(Utc::now())),
        "This is a test message from sentinel-remedy notify-test: this channel works.".into(),
    );
    let mut out = Vec::new();
    for ch in channels(cfg).iter().filter(|c| !c.is_local()) {
        let r = ch.send(&client, &notice, policy).await;
        out.push((ch.name().to_string(), r));
    }
    out
}

/// What a notice announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The target failed; the bundle is archived and the heal issued.
    Failure,
    /// A probe passes again.
    Recovery,
    /// The target's container was re-created (new id, same target name): the incident is
    /// closed, not recovered.
    Replaced,
    /// A person must act: recovery timed out, or the restart budget is spent.
    Escalation,
    /// `sentinel-remedy notify-test`: proves a channel works.
    Test,
    /// The server was restarted by something else between two passing probes: one notice,
    /// over when sent (the server is up; nothing follows it).
    UnannouncedRestart,
    /// Early warning: the target is heading for a failure no restart fixes (disk, connections,
    /// transaction ID wraparound). One per condition while it lasts.
    Warning,
    /// The condition of an early warning ended (same incident id as the warning).
    WarningCleared,
}

impl NoticeKind {
    /// Whether the notice ends the incident's outage (a recovery, or the container replaced).
    pub fn closes(self) -> bool {
        matches!(
            self,
            NoticeKind::Recovery | NoticeKind::Replaced | NoticeKind::WarningCleared
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            NoticeKind::Failure => "failure",
            NoticeKind::Recovery => "recovery",
            NoticeKind::Replaced => "replaced",
            NoticeKind::Escalation => "escalation",
            NoticeKind::Test => "test",
            NoticeKind::UnannouncedRestart => "unannounced_restart",
            NoticeKind::Warning => "warning",
            NoticeKind::WarningCleared => "warning_cleared",
        }
    }
}

/// Why an escalation was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationReason {
    RecoveryTimeout,
    RestartBudgetExhausted,
    NoHealAction,
    /// Many targets failed at once: restarts are held fleet-wide.
    FleetGuard,
    /// The heal stopped on a failure retrying cannot fix (a missing container, a forbidden
    /// Docker Engine, a restart policy that did not act).
    HealRefused,
    /// Cluster mode: this daemon lost etcd and restarts nothing.
    CoordinationLost,
    /// Another server answers on the address of a target already down (`wrong_server`).
    WrongServer,
}

impl EscalationReason {
    pub fn label(self) -> &'static str {
        match self {
            EscalationReason::RecoveryTimeout => "recovery_timeout",
            EscalationReason::RestartBudgetExhausted => "restart_budget_exhausted",
            EscalationReason::NoHealAction => "no_heal_action",
            EscalationReason::FleetGuard => "fleet_guard",
            EscalationReason::HealRefused => "heal_refused",
            EscalationReason::CoordinationLost => "coordination_lost",
            EscalationReason::WrongServer => "wrong_server",
        }
    }
}

/// One announcement about one incident.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub target: String,
    /// `host:port/db`, never with credentials.
    pub endpoint: String,
    pub incident_id: String,
    pub timestamp: DateTime<Utc>,
    pub failure: Option<ProbeFailure>,
    /// Bundle location, or why it is missing.
    pub archive: Option<String>,
    pub reason: Option<EscalationReason>,
    pub downtime_seconds: Option<f64>,
    pub time_to_recovery_seconds: Option<f64>,
    /// One human sentence on what happened and what the daemon did.
    pub summary: String,
    /// The server outage this notice is about, so daemons sharing a lease directory send one
    /// incident per outage ([`gate`]); None for fleet and test notices.
    #[serde(default)]
    pub outage: Option<OutageRef>,
    /// The likely cause: its sentence is the notice's first line (see [`Notice::title`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::cause::Cause>,
}

/// Which outage of which server a notice belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutageRef {
    /// `host:port`.
    pub server: String,
    /// The first failure this daemon saw.
    pub started_at: DateTime<Utc>,
    /// False when this daemon did not act (its restart was refused by the lease): it then
    /// stays silent while another daemon announces the outage.
    pub may_lead: bool,
    /// The shared outage id, set by the gate: `host:port/{start}`.
    pub id: Option<String>,
}

impl Notice {
    /// A notice about the daemon or the fleet rather than one target's outage (a test
    /// message, the fleet guard, lost coordination): no failure, archive, timing or outage.
    pub fn about_daemon(
        kind: NoticeKind,
        reason: Option<EscalationReason>,
        target: String,
        endpoint: String,
        incident_id: String,
        summary: String,
    ) -> Self {
        Self {
            kind,
            target,
            endpoint,
            incident_id,
            timestamp: Utc::now(),
            failure: None,
            archive: None,
            reason,
            downtime_seconds: None,
            time_to_recovery_seconds: None,
            outage: None,
            summary,
            cause: None,
        }
    }

    /// Deduplication key: one delivery per incident, kind and reason.
    pub fn key(&self) -> (String, NoticeKind, Option<EscalationReason>) {
        (self.incident_id.clone(), self.kind, self.reason)
    }

    /// The first line of every channel's message: the title, then the likely cause's sentence
    /// when one is known ("🔴 orders failed: process_exited — Killed by signal 9 ...").
    pub fn title(&self) -> String {
        let title = self.short_title();
        match (&self.cause, self.kind) {
            (Some(c), NoticeKind::Failure | NoticeKind::Escalation) => {
                format!("{title} — {}", printable(&c.sentence))
            }
            _ => title,
        }
    }

    /// A short title, e.g. "🔴 orders failed: connection_refused".
    pub fn short_title(&self) -> String {
        match self.kind {
            NoticeKind::Failure => format!(
                "🔴 {} failed: {}",
                self.target,
                self.failure
                    .as_ref()
                    .map(|f| f.class.label())
                    .unwrap_or("unknown")
            ),
            NoticeKind::Recovery => format!("🟢 {} recovered", self.target),
            NoticeKind::Replaced => format!(
                "🔁 {}: container re-created, incident closed as replaced",
                self.target
            ),
            NoticeKind::Escalation => format!("🚨 {} needs manual intervention", self.target),
            NoticeKind::Test => "✅ SentinelRemedy test message".to_string(),
            NoticeKind::UnannouncedRestart => {
                format!("🟠 {} restarted without sentinel-remedy", self.target)
            }
            NoticeKind::Warning => format!("⚠️ {}: early warning", self.target),
            NoticeKind::WarningCleared => format!("✅ {}: warning cleared", self.target),
        }
    }

    /// Key facts as (label, value) pairs, shared by the chat formats.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("Target", format!("{} ({})", self.target, self.endpoint)),
            ("Incident", self.incident_id.clone()),
        ];
        if let Some(f) = &self.failure {
            v.push(("Failure", f.to_string()));
        }
        if let Some(r) = self.reason {
            v.push(("Reason", r.label().to_string()));
        }
        if let Some(c) = &self.cause {
            v.push(("Cause", format!("{} ({})", c.sentence, c.class.label())));
            if !c.evidence.is_empty() {
                v.push(("Evidence", c.evidence_text()));
            }
            if let Some(fix) = &c.fix {
                v.push(("Fix", fix.clone()));
            }
        }
        if let Some(a) = &self.archive {
            v.push(("Archive", a.clone()));
        }
        if let Some(d) = self.downtime_seconds {
            v.push(("Downtime", format!("{d:.1} s")));
        }
        if let Some(t) = self.time_to_recovery_seconds {
            v.push(("Time to recovery", format!("{t:.1} s")));
        }
        v
    }
}

/// `s` with control characters (an ANSI escape, a carriage return) replaced by U+FFFD; line
/// breaks and tabs are kept. Chat services show text from a database with this.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// Truncates to at most `max` characters, marking the cut (chat services reject long fields).
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

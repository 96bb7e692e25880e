//! Follows the Engine's container events, so a Monitor learns at once that its container died,
//! was paused or was removed, instead of after `failure_threshold` probes. The stream is
//! reopened after any break, from the time of the last event seen, so nothing in between is
//! missed.

use super::DockerClient;
use crate::config::ContainerRef;
use crate::probe::FailureClass;
use actix::prelude::*;
use bollard::system::EventsOptions;
use futures::StreamExt;
use slog::{debug, info, warn, Logger};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The container actions that mean the database is gone or hung.
pub const WATCHED: [&str; 4] = ["die", "oom", "pause", "destroy"];

/// A watched container event, as the Engine reported it.
#[derive(Message, Debug, Clone, PartialEq)]
#[rtype(result = "()")]
pub struct ContainerEvent {
    /// `die`, `oom`, `pause` or `destroy`.
    pub action: String,
    pub id: String,
    pub name: String,
    /// Compose project and service, from the container's labels.
    pub project: Option<String>,
    pub service: Option<String>,
    /// For `die`: the main process's exit code.
    pub exit_code: Option<i64>,
}

impl ContainerEvent {
    /// Whether this event concerns the container `c` names.
    pub fn concerns(&self, c: &ContainerRef) -> bool {
        match c {
            ContainerRef::Name(n) => {
                self.name == *n || (n.len() >= 12 && self.id.starts_with(n.as_str()))
            }
            ContainerRef::Compose { project, service } => {
                self.project.as_deref() == Some(project) && self.service.as_deref() == Some(service)
            }
        }
    }

    /// One line for logs and failure details.
    pub fn describe(&self) -> String {
        match (self.action.as_str(), self.exit_code) {
            ("die", Some(code)) => format!("container {} exited (code {code})", self.name),
            ("oom", _) => format!("container {} ran out of memory", self.name),
            ("pause", _) => format!(
                "container {} was paused (frozen: it cannot answer)",
                self.name
            ),
            ("destroy", _) => format!("container {} was removed", self.name),
            (a, _) => format!("container {}: {a}", self.name),
        }
    }

    /// The incident class the event implies; None for a pause, whose probe's own class (a
    /// timeout) says it.
    pub fn failure_class(&self) -> Option<FailureClass> {
        match self.action.as_str() {
            "die" | "oom" => Some(FailureClass::ProcessExited),
            "destroy" => Some(FailureClass::ContainerMissing),
            _ => None,
        }
    }

    fn from_message(m: bollard::models::EventMessage) -> Option<Self> {
        let action = m.action?;
        // Newer Engines add details ("exec_die", "health_status: ..."); only the bare ones count.
        if !WATCHED.contains(&action.as_str()) {
            return None;
        }
        let actor = m.actor?;
        let attrs: HashMap<String, String> = actor.attributes.unwrap_or_default();
        Some(Self {
            action,
            id: actor.id.unwrap_or_default(),
            name: attrs.get("name").cloned().unwrap_or_default(),
            project: attrs.get("com.docker.compose.project").cloned(),
            service: attrs.get("com.docker.compose.service").cloned(),
            exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
        })
    }
}

/// Follows events until the daemon stops, sending each watched one to `sink`.
pub async fn follow(client: Arc<DockerClient>, sink: Recipient<ContainerEvent>, log: Logger) {
    let mut since: Option<i64> = None;
    let mut delay = Duration::from_secs(1);
    let mut said_broken = false;
    loop {
        let api = match client.streaming().await {
            Ok(api) => api,
            Err(e) => {
                if !said_broken {
                    warn!(log, "cannot follow Docker events; dying containers are found by probes only until the Engine answers";
                        "event" => "docker_events_unavailable", "kind" => e.kind(), "error" => %e);
                    said_broken = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                WATCHED.iter().map(|s| s.to_string()).collect(),
            ),
        ]);
        let mut stream = api.events(Some(EventsOptions::<String> {
            since: since.map(|s| s.to_string()),
            until: None,
            filters,
        }));
        if said_broken {
            info!(log, "following Docker events again"; "event" => "docker_events_resumed");
            said_broken = false;
        } else {
            debug!(log, "following Docker events"; "event" => "docker_events_following");
        }
        delay = Duration::from_secs(1);
        while let Some(item) = stream.next().await {
            match item {
                Ok(m) => {
                    if let Some(t) = m.time {
                        since = Some(t);
                    }
                    if let Some(ev) = ContainerEvent::from_message(m) {
                        debug!(log, "docker event"; "action" => &ev.action, "container" => &ev.name);
                        if sink.try_send(ev).is_err() {
                            return; // the Supervisor is gone: the daemon is stopping
                        }
                    }
                }
                Err(e) => {
                    warn!(log, "Docker events stream broke; reopening"; "event" => "docker_events_broken", "error" => %e);
                    break;
                }
            }
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, project: Option<&str>, service: Option<&str>) -> ContainerEvent {
        ContainerEvent {
            action: "die".into(),
            id: "0123456789abcdef0123".into(),
            name: name.into(),
            project: project.map(Into::into),
            service: service.map(Into::into),
            exit_code: Some(137),
        }
    }

    #[test]
    fn events_match_by_name_id_prefix_or_compose_labels() {
        let e = ev("pg1", Some("fleet"), Some("db"));
        assert!(e.concerns(&ContainerRef::Name("pg1".into())));
        assert!(!e.concerns(&ContainerRef::Name("pg".into())));
        assert!(e.concerns(&ContainerRef::Name("0123456789ab".into())));
        assert!(!e.concerns(&ContainerRef::Name("0123".into())));
        let svc = |p: &str, s: &str| ContainerRef::Compose {
            project: p.into(),
            service: s.into(),
        };
        assert!(e.concerns(&svc("fleet", "db")));
        assert!(!e.concerns(&svc("fleet", "db2")));
        assert!(!ev("pg1", None, None).concerns(&svc("fleet", "db")));
        assert_eq!(e.describe(), "container pg1 exited (code 137)");
    }
}

//! Follows the Engine's container events, so a Monitor learns at once that its container died,
//! was paused or was removed, instead of after `failure_threshold` probes. The stream is
//! reopened after any break, from the time of the last event seen, so nothing in between is
//! missed.

use super::DockerClient;
use crate::backoff::Backoff;
use crate::config::ContainerRef;
use crate::failure::FailureClass;
use actix::prelude::*;
use bollard::system::EventsOptions;
use futures::StreamExt;
use slog::{debug, info, warn, Logger};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The container actions that mean the database is gone or hung.
pub const WATCHED: [&str; 4] = ["die", "oom", "pause", "destroy"];

/// Waits between attempts to reach the Engine again: from 1 s up to 2 s. Short: each second
/// of it after the Engine is back delays hearing of a container that died meanwhile.
const RECONNECT: Backoff = Backoff::fixed(Duration::from_secs(1), Duration::from_secs(2));

/// The Engine's clock (unix seconds), where `since` is counted; None if it does not say.
async fn engine_now(api: &bollard::Docker) -> Option<i64> {
    let info = tokio::time::timeout(Duration::from_secs(10), api.info())
        .await
        .ok()?
        .ok()?;
    let t = chrono::DateTime::parse_from_rfc3339(&info.system_time?).ok()?;
    Some(t.timestamp())
}

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
    /// For `die`: the container is being removed (`docker rm -f` kills it first, so `die`
    /// comes before `destroy`) or already gone. A restart cannot help.
    pub removing: bool,
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
            ("die", _) if self.removing => format!(
                "container {} is being removed (docker rm): it no longer exists",
                self.name
            ),
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
            "die" if self.removing => Some(FailureClass::ContainerMissing),
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
            removing: false,
        })
    }
}

/// Whether the container `id` is being removed or is gone: the Engine marks a container
/// "removing" before `docker rm -f` kills it, and answers 404 once it is gone. Unknown (the
/// Engine did not answer in time) counts as not removed: the heal finds out.
async fn being_removed(api: &bollard::Docker, id: &str) -> bool {
    let inspect = api.inspect_container(id, None::<bollard::container::InspectContainerOptions>);
    match tokio::time::timeout(Duration::from_secs(2), inspect).await {
        Ok(Ok(c)) => c.state.and_then(|s| s.status).is_some_and(|s| {
            matches!(
                s,
                bollard::models::ContainerStateStatusEnum::REMOVING
                    | bollard::models::ContainerStateStatusEnum::DEAD
            )
        }),
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => true,
        _ => false,
    }
}

/// Follows events until the daemon stops, sending each watched one to `sink`.
pub async fn follow(client: Arc<DockerClient>, sink: Recipient<ContainerEvent>, log: Logger) {
    let mut since: Option<i64> = None;
    // Reconnect attempts since the stream last opened: the wait grows with each.
    let mut attempt = 0u32;
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
                tokio::time::sleep(RECONNECT.delay(attempt)).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
        };
        // With no event seen yet, replay from the Engine's clock now: a death while the stream
        // is down (an Engine restart) is then heard once it is back, not lost.
        if since.is_none() {
            since = engine_now(&api).await;
        }
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
        attempt = 0;
        while let Some(item) = stream.next().await {
            match item {
                Ok(m) => {
                    if let Some(t) = m.time {
                        since = Some(t);
                    }
                    if let Some(mut ev) = ContainerEvent::from_message(m) {
                        if ev.action == "die" {
                            ev.removing = being_removed(&api, &ev.id).await;
                        }
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
        tokio::time::sleep(RECONNECT.delay(attempt)).await;
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
            removing: false,
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
        assert_eq!(e.failure_class(), Some(FailureClass::ProcessExited));
    }

    #[test]
    fn a_die_of_a_container_being_removed_is_a_missing_container() {
        let e = ContainerEvent {
            removing: true,
            ..ev("pg1", None, None)
        };
        assert_eq!(e.failure_class(), Some(FailureClass::ContainerMissing));
        assert!(e.describe().contains("being removed"), "{}", e.describe());
    }
}

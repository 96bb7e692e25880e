//! Finding a target's container (by name, or by compose's labels) and reading its state.

use super::DockerError;
use crate::config::ContainerRef;
use bollard::container::{InspectContainerOptions, ListContainersOptions};
use bollard::Docker;
use std::collections::HashMap;

/// What the healer needs to know about a container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerState {
    pub id: String,
    pub name: String,
    /// `running`, `paused`, `restarting`, `exited`, `created`, `dead`, `removing`.
    pub status: String,
    pub exit_code: i64,
    pub oom_killed: bool,
    /// `no`, `always`, `unless-stopped`, `on-failure` (empty: none).
    pub restart_policy: String,
    /// When the main process last started.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The main process's pid in the Engine's pid namespace (0: not running).
    pub pid: i64,
}

impl ContainerState {
    /// The Engine's own restart policy will bring it back: restarting now would race it.
    pub fn policy_will_restart(&self) -> bool {
        match self.status.as_str() {
            "restarting" => true,
            // A crash exits non-zero; `on-failure` ignores a clean exit.
            "exited" => {
                self.restarts_after_crash()
                    && (self.exit_code != 0 || self.restart_policy != "on-failure")
            }
            _ => false,
        }
    }

    /// The container has a policy under which the Engine restarts it after a crash.
    pub fn restarts_after_crash(&self) -> bool {
        matches!(
            self.restart_policy.as_str(),
            "always" | "unless-stopped" | "on-failure"
        )
    }
}

/// The compose labels that identify a service's containers.
pub fn compose_filters(project: &str, service: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![
            format!("com.docker.compose.project={project}"),
            format!("com.docker.compose.service={service}"),
        ],
    )])
}

/// The container's id (a name is resolved by the Engine; a compose service by its labels).
pub async fn resolve(
    api: &Docker,
    endpoint: &str,
    c: &ContainerRef,
) -> Result<String, DockerError> {
    match c {
        ContainerRef::Name(n) => Ok(n.clone()),
        ContainerRef::Compose { project, service } => {
            let found = api
                .list_containers(Some(ListContainersOptions::<String> {
                    all: true,
                    filters: compose_filters(project, service),
                    ..Default::default()
                }))
                .await
                .map_err(|e| DockerError::from_bollard(e, endpoint, &c.to_string()))?;
            match found.as_slice() {
                [] => Err(DockerError::NotFound {
                    container: c.to_string(),
                }),
                [one] => Ok(one.id.clone().unwrap_or_default()),
                many => Err(DockerError::Ambiguous {
                    container: c.to_string(),
                    count: many.len(),
                }),
            }
        }
    }
}

/// Resolves and inspects the container.
pub async fn inspect(
    api: &Docker,
    endpoint: &str,
    c: &ContainerRef,
) -> Result<ContainerState, DockerError> {
    let id = resolve(api, endpoint, c).await?;
    let r = api
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| DockerError::from_bollard(e, endpoint, &c.to_string()))?;
    let state = r.state.unwrap_or_default();
    let policy = r
        .host_config
        .and_then(|h| h.restart_policy)
        .and_then(|p| p.name)
        .map(|n| n.to_string())
        .unwrap_or_default();
    Ok(ContainerState {
        id: r.id.unwrap_or(id),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        started_at: state
            .started_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
        exit_code: state.exit_code.unwrap_or_default(),
        oom_killed: state.oom_killed.unwrap_or_default(),
        restart_policy: policy,
        pid: state.pid.unwrap_or_default(),
    })
}

/// The container's cgroup memory use and limit in bytes (the Engine's one-shot stats).
pub async fn memory(
    api: &Docker,
    endpoint: &str,
    c: &ContainerRef,
) -> Result<(Option<u64>, Option<u64>), DockerError> {
    use futures::StreamExt;
    let id = resolve(api, endpoint, c).await?;
    let opts = bollard::container::StatsOptions {
        stream: false,
        one_shot: true,
    };
    let mut stats = api.stats(&id, Some(opts));
    match stats.next().await {
        Some(Ok(s)) => Ok((s.memory_stats.usage, s.memory_stats.limit)),
        Some(Err(e)) => Err(DockerError::from_bollard(e, endpoint, &c.to_string())),
        None => Ok((None, None)),
    }
}

/// The newest `lines` lines of the container's own output (stdout and stderr), at most
/// 64 KiB: what a server that failed to start said.
pub async fn log_tail(
    api: &Docker,
    endpoint: &str,
    c: &ContainerRef,
    lines: usize,
) -> Result<String, DockerError> {
    use futures::StreamExt;
    let id = resolve(api, endpoint, c).await?;
    let mut stream = api.logs(
        &id,
        Some(bollard::container::LogsOptions::<String> {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        }),
    );
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        let item = item.map_err(|e| DockerError::from_bollard(e, endpoint, &c.to_string()))?;
        out.extend_from_slice(&item.into_bytes());
        if out.len() > 64 * 1024 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A mount of a container: where the container sees it, and for a volume or bind mount where
/// its files are on the Engine's host (which may not be this process's view of the host).
#[derive(Debug, Clone, PartialEq)]
pub struct MountPoint {
    /// The path inside the container.
    pub destination: String,
    /// The directory (or file) on the Engine's host; `None` for tmpfs and the like.
    pub source: Option<String>,
    /// The container can write it (and so rename what lies beneath its source on the host).
    pub writable: bool,
}

/// A container's mounts, and its main process while it runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mounts {
    pub points: Vec<MountPoint>,
    /// The main process's pid on the Engine's host, for a running or paused container.
    pub pid: Option<u32>,
}

/// The container's mounts (`inspect` → `Mounts`) and its main process (`State.Pid`).
pub async fn mounts(api: &Docker, endpoint: &str, id: &str) -> Result<Mounts, DockerError> {
    use bollard::models::MountPointTypeEnum as T;
    let r = api
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| DockerError::from_bollard(e, endpoint, id))?;
    let found = r.mounts.unwrap_or_default().into_iter().filter_map(|m| {
        let on_host = matches!(m.typ, Some(T::VOLUME | T::BIND));
        Some(MountPoint {
            destination: m.destination?,
            source: m.source.filter(|s| on_host && !s.is_empty()),
            // Unsaid: assume the worst.
            writable: m.rw.unwrap_or(true),
        })
    });
    let pid = r
        .state
        .and_then(|s| s.pid)
        .and_then(|p| u32::try_from(p).ok());
    Ok(Mounts {
        points: found.collect(),
        pid: pid.filter(|&p| p > 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, policy: &str, exit: i64) -> ContainerState {
        ContainerState {
            id: "x".into(),
            name: "pg".into(),
            status: status.into(),
            exit_code: exit,
            oom_killed: false,
            restart_policy: policy.into(),
            pid: 0,
            started_at: None,
        }
    }

    #[test]
    fn only_a_policy_that_will_act_defers_the_restart() {
        assert!(state("exited", "always", 0).policy_will_restart());
        assert!(state("exited", "unless-stopped", 137).policy_will_restart());
        assert!(state("exited", "on-failure", 1).policy_will_restart());
        assert!(!state("exited", "on-failure", 0).policy_will_restart());
        assert!(!state("exited", "no", 137).policy_will_restart());
        assert!(!state("exited", "", 137).policy_will_restart());
        assert!(state("restarting", "always", 1).policy_will_restart());
        // A hung (running or paused) container is never restarted by a policy.
        assert!(!state("running", "always", 0).policy_will_restart());
        assert!(!state("paused", "always", 0).policy_will_restart());
    }
}

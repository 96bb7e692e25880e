//! `docker:`: the Docker Engine connection shared by every container target.

use super::error::Problems;
use serde::Deserialize;

/// `docker:`: the Docker Engine connection shared by every container target.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDocker {
    /// Engine address: unix:///var/run/docker.sock or tcp://host:2375 (default: DOCKER_HOST,
    /// else the local socket).
    pub host: Option<String>,
    /// Follow the Engine's events so a dying container is noticed at once (default true).
    pub events: Option<bool>,
}

/// The Docker Engine connection.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// None: DOCKER_HOST, else the local socket.
    pub host: Option<String>,
    /// Follow the Engine's events (the fast path for dying containers).
    pub events: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: None,
            events: true,
        }
    }
}

/// Validates `docker:` over the defaults; a bad host keeps the default.
pub(crate) fn build_docker(d: RawDocker, problems: &mut Problems) -> DockerConfig {
    let mut docker = DockerConfig::default();
    if let Some(h) = d.host {
        if docker_host(&h, "docker.host", problems) {
            docker.host = Some(h);
        }
    }
    if let Some(e) = d.events {
        docker.events = e;
    }
    docker
}

/// `docker.host`: a unix socket or a TCP address.
fn docker_host(h: &str, at: &str, problems: &mut Problems) -> bool {
    let ok = ["unix://", "tcp://", "http://", "https://"]
        .iter()
        .any(|p| h.starts_with(p) && h.len() > p.len());
    if !ok {
        problems.push(
            at,
            format!("'{h}' is not a Docker Engine address"),
            "use unix:///var/run/docker.sock or tcp://host:2375, or remove it to use DOCKER_HOST",
        );
    }
    ok
}

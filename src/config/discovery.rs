//! `discovery:`: targets found at run time (containers on the Docker Engine) instead of listed.

use super::error::Problems;
use super::heal::container_name;
use serde::Deserialize;

/// `discovery:`: targets found at run time instead of listed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    /// Containers on the Docker Engine, found by their labels.
    pub docker: Option<RawDockerDiscovery>,
}

/// `discovery.docker:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDockerDiscovery {
    /// Label prefix (default `sentinel-remedy`): `{namespace}.enable=true` opts a container in.
    pub namespace: Option<String>,
    /// `label` (default): only opted-in containers; `all`: every container running a
    /// PostgreSQL image, except those labelled `{namespace}.enable=false`.
    pub mode: Option<String>,
    /// Docker network to reach the containers over (default: one shared with the daemon's own
    /// container, else the container's first network).
    pub network: Option<String>,
}

/// Which containers `discovery.docker` turns into targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryMode {
    /// Only containers labelled `{namespace}.enable=true` (opt-in).
    Label,
    /// Every container running a PostgreSQL image, unless labelled `{namespace}.enable=false`.
    All,
}

/// `discovery.docker`: targets found from container labels on the Docker Engine.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerDiscovery {
    /// Label prefix, e.g. `sentinel-remedy` for `sentinel-remedy.enable=true`.
    pub namespace: String,
    pub mode: DiscoveryMode,
    /// The Docker network to reach containers over; None: one the daemon shares with the
    /// container (in a container), else the container's first network.
    pub network: Option<String>,
}

/// `discovery.docker`: the label namespace, the mode and the network.
pub(crate) fn build_discovery(d: RawDiscovery, problems: &mut Problems) -> Option<DockerDiscovery> {
    let Some(d) = d.docker else {
        problems.push(
            "discovery",
            "no discovery source is given",
            "add `docker: {}` to discover containers by label, or remove `discovery:`",
        );
        return None;
    };
    let namespace = d.namespace.unwrap_or_else(|| "sentinel-remedy".into());
    let ns_ok = !namespace.is_empty()
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !namespace.ends_with('.');
    if !ns_ok {
        problems.push(
            "discovery.docker.namespace",
            format!("'{namespace}' is not a label prefix"),
            "use letters, digits, '-', '_' or '.', e.g. sentinel-remedy (labels are then sentinel-remedy.enable=true, ...)",
        );
    }
    let mode = match d.mode.as_deref().map(str::trim) {
        None | Some("label") => Some(DiscoveryMode::Label),
        Some("all") => Some(DiscoveryMode::All),
        Some(other) => {
            problems.push(
                "discovery.docker.mode",
                format!("'{other}' is not a discovery mode"),
                "use `label` (only containers labelled <namespace>.enable=true) or `all` (every PostgreSQL container not labelled <namespace>.enable=false)",
            );
            None
        }
    };
    let network = d.network.filter(|n| !n.trim().is_empty());
    if let Some(n) = &network {
        container_name(n, "discovery.docker.network", problems);
    }
    (ns_ok && mode.is_some()).then(|| DockerDiscovery {
        namespace,
        mode: mode.unwrap_or(DiscoveryMode::Label),
        network,
    })
}

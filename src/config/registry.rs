//! The whole validated registry, and where it came from.

use super::archive::{build_archive, ArchiveConfig, RawArchive};
use super::cluster::ClusterConfig;
use super::defaults::{build_defaults, RawDefaults, TargetDefaults};
use super::discovery::DockerDiscovery;
use super::docker::DockerConfig;
use super::error::Problems;
use super::fleet_guard::FleetGuardConfig;
use super::heartbeat::HeartbeatConfig;
use super::lease::LeaseConfig;
use super::notify::{build_notify, NotifyConfig, RawNotify};
use super::server::ServerConfig;
use super::targets::{build_target, RawTarget, TargetConfig};
use std::fmt;
use std::path::PathBuf;

/// Where the registry came from, for messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File(PathBuf),
    Environment,
    Generated(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Environment => f.write_str("environment"),
            Source::Generated(what) => f.write_str(what),
        }
    }
}

/// The whole validated registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub source: Source,
    pub server: Option<ServerConfig>,
    pub fleet_guard: FleetGuardConfig,
    pub lease: LeaseConfig,
    /// Several daemons sharing the fleet through etcd; None: this daemon alone.
    pub cluster: Option<ClusterConfig>,
    pub heartbeat: Option<HeartbeatConfig>,
    pub docker: DockerConfig,
    pub archive: ArchiveConfig,
    pub notify: NotifyConfig,
    pub targets: Vec<TargetConfig>,
    /// The defaults discovered targets are built with.
    pub defaults: TargetDefaults,
    /// Container discovery; None: only the targets listed.
    pub discovery: Option<DockerDiscovery>,
}

/// Builds the registry from the sections both the file and the sidecar variables give,
/// pushing every value problem found; the other sections keep their defaults.
pub(crate) fn build(
    source: Source,
    defaults: RawDefaults,
    archive: RawArchive,
    notify: RawNotify,
    targets_raw: Vec<(usize, RawTarget)>,
    problems: &mut Problems,
) -> Registry {
    let defaults = build_defaults(&defaults, problems);
    let targets = targets_raw
        .iter()
        .filter_map(|(i, t)| build_target(t, &format!("targets[{i}]"), &defaults, problems))
        .collect();
    let archive = build_archive(archive, problems);
    let notify = build_notify(notify, problems);
    Registry {
        source,
        server: None,
        fleet_guard: FleetGuardConfig::default(),
        lease: LeaseConfig::default(),
        cluster: None,
        heartbeat: None,
        docker: DockerConfig::default(),
        archive,
        notify,
        targets,
        defaults,
        discovery: None,
    }
}

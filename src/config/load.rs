//! Registry file → validated [`Registry`]: parse YAML, expand `${VAR}`, deserialize each section
//! on its own (so one typo does not hide the next), then check values.

use super::archive::RawArchive;
use super::cluster::{build_cluster, RawCluster};
use super::defaults::RawDefaults;
use super::discovery::{build_discovery, RawDiscovery};
use super::docker::{build_docker, RawDocker};
use super::document::{self, section};
use super::error::{ConfigError, Problems};
use super::expand::VarSource;
use super::fleet_guard::{build_fleet_guard, RawFleetGuard};
use super::heartbeat::{build_heartbeat, RawHeartbeat};
use super::lease::{build_lease, RawLease};
use super::notify::RawNotify;
use super::registry::{build, Registry, Source};
use super::server::{build_server, RawServer};
use super::targets::read_targets;
use serde_yaml::Mapping;
use std::path::Path;

/// Reads and validates a registry file.
pub fn load_file(path: &Path, vars: &VarSource) -> Result<Registry, ConfigError> {
    let text = super::trust::read_trusted(path)?.ok_or_else(|| ConfigError::Unreadable {
        file: path.display().to_string(),
        source: std::io::Error::from_raw_os_error(libc::ENOENT),
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&text, Source::File(path.to_path_buf()), &base, vars)
}

/// Validates registry text. Relative paths (the archive dir) resolve against the process's
/// working directory, like every other path a user types.
pub fn load_str(
    text: &str,
    source: Source,
    _base: &Path,
    vars: &VarSource,
) -> Result<Registry, ConfigError> {
    let file = source.to_string();
    let mut problems = Problems::default();
    let registry = document::parse(text, vars, &mut problems)
        .map(|map| from_sections(&map, source, vars, &mut problems));
    match registry {
        Some(r) if problems.0.is_empty() => Ok(r),
        _ => Err(ConfigError::Invalid {
            file,
            problems: problems.0,
        }),
    }
}

/// Builds the registry section by section; the order is the order problems are listed in.
fn from_sections(
    map: &Mapping,
    source: Source,
    vars: &VarSource,
    problems: &mut Problems,
) -> Registry {
    let defaults: RawDefaults = section(map, "defaults", problems).unwrap_or_default();
    let archive: RawArchive = section(map, "archive", problems).unwrap_or_default();
    let notify: RawNotify = section(map, "notify", problems).unwrap_or_default();
    let discovery = section::<RawDiscovery>(map, "discovery", problems)
        .and_then(|d| build_discovery(d, vars, problems));
    let targets = read_targets(map, discovery.is_some(), problems);
    let server: Option<RawServer> = section(map, "server", problems);
    let mut registry = build(source, defaults, archive, notify, targets, problems);
    registry.server = server.and_then(|s| build_server(s, problems));
    registry.discovery = discovery;
    registry.heartbeat = section::<RawHeartbeat>(map, "heartbeat", problems)
        .and_then(|h| build_heartbeat(h, problems));
    if let Some(d) = section::<RawDocker>(map, "docker", problems) {
        registry.docker = build_docker(d, problems);
    }
    if let Some(l) = section::<RawLease>(map, "lease", problems) {
        registry.lease = build_lease(l, problems);
    }
    registry.cluster = section::<RawCluster>(map, "cluster", problems)
        .and_then(|c| build_cluster(c, vars, problems));
    if let Some(g) = section::<RawFleetGuard>(map, "fleet_guard", problems) {
        registry.fleet_guard = build_fleet_guard(g, problems);
    }
    registry
}

//! The target registry: YAML file or sidecar environment → validated [`Registry`].
//!
//! One file per section of the registry, each with its raw (as written) type, its validated
//! type and the checks between them: `targets` (with `probe`, `budget`, `heal`, `forensics`),
//! `defaults`, `archive`, `notify`, `heartbeat`, `server`, `lease`, `cluster`, `fleet_guard`,
//! `docker`, `discovery` (with `credentials` and `limits`). `document` turns text into sections, `load` puts them together, `env_mode`
//! reads the sidecar variables instead.

mod archive;
mod budget;
pub mod cluster;
pub mod credentials;
mod defaults;
mod discovery;
mod docker;
mod document;
pub mod duration;
mod env_mode;
pub mod error;
mod etcd_access;
pub mod expand;
mod fleet_guard;
mod forensics;
mod heal;
mod heartbeat;
mod keypath;
mod lease;
pub mod limits;
mod load;
mod notify;
mod probe;
pub mod raw;
mod recorder;
mod registry;
mod secret;
mod server;
pub mod size;
mod targets;
pub mod tls;
pub mod trust;
mod yaml_guard;

pub use archive::{ArchiveConfig, S3Config};
pub use budget::BudgetConfig;
pub use cluster::ClusterConfig;
pub use defaults::TargetDefaults;
pub use discovery::{DiscoveryMode, DockerDiscovery};
pub use docker::DockerConfig;
pub use error::{ConfigError, Problem};
pub use expand::VarSource;
pub use fleet_guard::FleetGuardConfig;
pub use forensics::DockerForensics;
pub use heal::{ContainerRef, HealAction};
pub use heartbeat::HeartbeatConfig;
pub use lease::LeaseConfig;
pub use notify::{ChatWebhook, GenericWebhook, NotifyConfig, PagerDutyConfig};
pub use probe::ProbeConfig;
pub use recorder::{RecorderConfig, WarnThresholds};
pub use registry::{Registry, Source};
pub use secret::{Dsn, Secret};
pub use server::ServerConfig;
pub(crate) use targets::build_target;
pub use targets::TargetConfig;

use std::path::{Path, PathBuf};

/// Loads the registry the way `run` does: the file if one is given, else the sidecar
/// environment, else an error saying how to provide one.
pub fn load(path: Option<&Path>, vars: &VarSource) -> Result<Registry, ConfigError> {
    match path {
        Some(p) => load::load_file(p, vars),
        None if env_mode::present(vars) => env_mode::load_env(vars),
        None => Err(ConfigError::NoRegistry),
    }
}

/// Validates registry text (tests and generated registries).
pub fn load_str(text: &str, source: Source, vars: &VarSource) -> Result<Registry, ConfigError> {
    load::load_str(text, source, &PathBuf::from("."), vars)
}

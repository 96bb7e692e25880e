//! The target registry: YAML file or sidecar environment → validated [`Registry`].

pub mod duration;
mod env_mode;
pub mod error;
pub mod expand;
mod load;
pub mod model;
pub(crate) mod raw;
pub mod size;
pub mod trust;
mod yaml_guard;

pub use error::{ConfigError, Problem};
pub use expand::VarSource;
pub(crate) use load::build_target;
pub use model::*;

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

//! Heal actions: how a target is restarted. One file per backend, each a [`HealBackend`];
//! [`backend`] is the one place that turns a target's heal configuration into one.

mod backend;
pub mod command;
pub mod docker;
pub mod process;
pub mod stop;
pub mod verify;

/// Where the heal report's types live (one line to change when they move).
pub use crate::heal_report::HealFailure;
pub use backend::{HealBackend, HealCx, Outcome, Started};

use crate::config::HealAction;
use crate::docker::DockerClient;
use std::sync::Arc;

/// The clients backends share across heals (one Docker Engine connection for every target).
#[derive(Clone)]
pub struct Clients {
    pub docker: Arc<DockerClient>,
}

/// The backend for a target's heal action: the one match on the kind of action.
pub fn backend(action: &HealAction, clients: &Clients) -> Arc<dyn HealBackend> {
    match action {
        HealAction::Command {
            argv,
            timeout,
            stop_timeout,
            stop_command,
            env,
        } => Arc::new(command::CommandHeal {
            argv: argv.clone(),
            timeout: *timeout,
            stop_timeout: *stop_timeout,
            stop_command: stop_command.clone(),
            env: env.clone(),
        }),
        HealAction::Docker {
            container,
            stop_timeout,
        } => Arc::new(docker::DockerHeal {
            client: clients.docker.clone(),
            container: container.clone(),
            stop_timeout: *stop_timeout,
        }),
    }
}

/// Appends one line to the incident's heal log (best effort: the log is evidence, not
/// control).
pub(crate) fn append_log(path: &std::path::Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = crate::fsutil::append_private(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

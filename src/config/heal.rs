//! `targets[].heal:`: how a target is restarted (a command, a container or a compose service).

use super::duration::{checked as duration, format_duration, RawDuration};
use super::error::Problems;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// `heal:`: exactly one of `command`, `docker`, `compose`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeal {
    /// Program and arguments run without a shell (for example `pg_ctl ... start`).
    pub command: Option<Vec<String>>,
    /// Limit for one run of the command (default 60s); on expiry its whole process group is
    /// killed.
    pub timeout: Option<RawDuration>,
    /// With `command` and `process.pid_file`: a postmaster still alive at heal time (hung) is
    /// stopped first, SIGQUIT then SIGKILL to it and its children after this long (default 10s).
    pub stop_timeout: Option<RawDuration>,
    /// With `command`: stops a hung server instead of SIGQUIT (argv, no shell), bounded by
    /// `stop_timeout`; a postmaster still alive after it is killed.
    pub stop_command: Option<Vec<String>>,
    /// With `command`: variables added to the heal commands' otherwise cleared environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Restart a container through the Docker Engine API.
    pub docker: Option<RawDockerHeal>,
    /// Restart a compose service's container, found by compose's labels.
    pub compose: Option<RawComposeHeal>,
}

/// `heal.docker:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDockerHeal {
    /// Container name or id.
    pub container: String,
    /// How long a stop waits before killing a hung container (default 10s).
    pub stop_timeout: Option<RawDuration>,
}

/// `heal.compose:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComposeHeal {
    /// The compose project (`name:` or the directory name).
    pub project: String,
    /// The service running PostgreSQL.
    pub service: String,
    /// How long a stop waits before killing a hung container (default 10s).
    pub stop_timeout: Option<RawDuration>,
}

/// How a target is restarted.
#[derive(Debug, Clone, PartialEq)]
pub enum HealAction {
    /// Run a program (argv, no shell): pg_ctl, systemctl, a script.
    Command {
        argv: Vec<String>,
        timeout: Duration,
        /// A hung postmaster (alive at heal time) gets this long to stop before SIGKILL.
        stop_timeout: Duration,
        /// Run instead of SIGQUIT to stop a hung postmaster.
        stop_command: Option<Vec<String>>,
        /// Added to the cleared environment of the heal and stop commands.
        env: BTreeMap<String, String>,
    },
    /// Restart (or start) a container through the Docker Engine API.
    Docker {
        container: ContainerRef,
        /// A stop waits this long before the container is killed.
        stop_timeout: Duration,
    },
}

/// A container, by name or id, or by the compose service that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContainerRef {
    Name(String),
    Compose { project: String, service: String },
}

impl fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ContainerRef::Name(n) => f.write_str(n),
            ContainerRef::Compose { project, service } => {
                write!(f, "compose service {project}/{service}")
            }
        }
    }
}

/// `heal:`: exactly one of `command`, `docker`, `compose`.
pub(crate) fn heal_action(h: &RawHeal, at: &str, problems: &mut Problems) -> Option<HealAction> {
    let given = [h.command.is_some(), h.docker.is_some(), h.compose.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        problems.push(
            at,
            "give exactly one of `command`, `docker` or `compose`",
            "e.g. `docker: { container: pg1 }`, `compose: { project: app, service: db }` or `command: [pg_ctl, -D, /data, start]`; remove `heal:` to alert only",
        );
        return None;
    }
    if h.command.is_none() {
        command_keys_unused(h, at, problems);
    }
    if let Some(d) = &h.docker {
        let stop_timeout = stop_timeout(&d.stop_timeout, at, problems);
        return container_name(&d.container, &format!("{at}.docker.container"), problems).then(
            || HealAction::Docker {
                container: ContainerRef::Name(d.container.clone()),
                stop_timeout,
            },
        );
    }
    if let Some(c) = &h.compose {
        let stop_timeout = stop_timeout(&c.stop_timeout, at, problems);
        let ok = container_name(&c.project, &format!("{at}.compose.project"), problems)
            & container_name(&c.service, &format!("{at}.compose.service"), problems);
        return ok.then(|| HealAction::Docker {
            container: ContainerRef::Compose {
                project: c.project.clone(),
                service: c.service.clone(),
            },
            stop_timeout,
        });
    }
    command_heal(h, at, problems)
}

/// The stop timeout of any heal kind (default 10s); problems name `{at}.stop_timeout`.
fn stop_timeout(d: &Option<RawDuration>, at: &str, problems: &mut Problems) -> Duration {
    d.as_ref()
        .and_then(|d| duration(d, &format!("{at}.stop_timeout"), problems))
        .unwrap_or(Duration::from_secs(10))
}

/// A container heal runs no command of ours, so the command's own keys are mistakes there.
fn command_keys_unused(h: &RawHeal, at: &str, problems: &mut Problems) {
    let kind = if h.docker.is_some() {
        "docker"
    } else {
        "compose"
    };
    for (key, set) in [
        ("stop_timeout", h.stop_timeout.is_some()),
        ("stop_command", h.stop_command.is_some()),
        ("env", !h.env.is_empty()),
    ] {
        if set {
            problems.push(
                format!("{at}.{key}"),
                format!("`{key}` applies to a heal `command` only"),
                if key == "stop_timeout" {
                    format!("move it into `{kind}:` (`{kind}: {{ ..., stop_timeout: 10s }}`)")
                } else {
                    format!("remove it: the {kind} heal runs no command of ours")
                },
            );
        }
    }
}

/// `heal.command` with its timeout, stop settings and environment.
fn command_heal(h: &RawHeal, at: &str, problems: &mut Problems) -> Option<HealAction> {
    let command = h.command.as_deref().unwrap_or_default();
    let timeout = h
        .timeout
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.timeout"), problems))
        .unwrap_or(Duration::from_secs(60));
    let stop = stop_timeout(&h.stop_timeout, at, problems);
    if stop < Duration::from_millis(100) || stop > Duration::from_secs(600) {
        problems.push(
            format!("{at}.stop_timeout"),
            format!("{} is out of range", format_duration(stop)),
            "give 100ms to 10m: how long a hung server may take to stop before it is killed",
        );
    }
    let stop_command = h.stop_command.clone();
    if stop_command
        .as_ref()
        .is_some_and(|c| c.is_empty() || c[0].trim().is_empty())
    {
        problems.push(
            format!("{at}.stop_command"),
            "the stop command is empty",
            "give the program and its arguments, e.g. [\"pg_ctl\", \"-D\", \"/path/to/data\", \"stop\", \"-m\", \"immediate\"], or remove it to stop with SIGQUIT",
        );
    }
    for name in h.env.keys() {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.push(
                format!("{at}.env.{name}"),
                format!("'{name}' is not an environment variable name"),
                "use letters, digits and '_' (not first a digit), e.g. PGDATA",
            );
        }
    }
    if command.is_empty() || command[0].trim().is_empty() {
        problems.push(format!("{at}.command"), "the heal command is empty", "give the program and its arguments, e.g. [\"pg_ctl\", \"-D\", \"/path/to/data\", \"start\"], or remove `heal:` to alert only");
        return None;
    }
    Some(HealAction::Command {
        argv: command.to_vec(),
        timeout,
        stop_timeout: stop,
        stop_command,
        env: h.env.clone(),
    })
}

/// A container, project or service name as Docker accepts it.
pub(crate) fn container_name(name: &str, at: &str, problems: &mut Problems) -> bool {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        problems.push(
            at,
            format!("'{name}' is not a container, project or service name"),
            "use the name `docker ps` shows (letters, digits, '-', '_', '.')",
        );
    }
    ok
}

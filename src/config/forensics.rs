//! `targets[].forensics:`: the evidence archived before any restart.

use super::error::Problems;
use super::heal::{container_name, ContainerRef, HealAction};
use serde::Deserialize;

/// `forensics:`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForensics {
    /// Paths or glob patterns; each match is copied whole into the bundle.
    #[serde(default)]
    pub files: Vec<String>,
    /// Files copied out of a container through the Engine API, plus its log tail.
    pub docker: Option<RawDockerForensics>,
}

/// `forensics.docker:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDockerForensics {
    /// Container name or id; default: the one `heal.docker` or `heal.compose` restarts.
    pub container: Option<String>,
    /// Compose project, with `service`, instead of `container`.
    pub project: Option<String>,
    /// Compose service, with `project`, instead of `container`.
    pub service: Option<String>,
    /// Absolute paths inside the container (files or directories).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Lines of the container's own stdout/stderr log kept (default 1000; 0: none).
    pub log_tail: Option<u32>,
}

/// Evidence copied out of a container.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerForensics {
    pub container: ContainerRef,
    /// Absolute paths inside the container.
    pub paths: Vec<String>,
    /// Lines of the container's stdout/stderr kept; 0: none.
    pub log_tail: u32,
}

/// `forensics.files`: every pattern must be a valid glob.
pub(crate) fn check_globs(files: &[String], at: &str, problems: &mut Problems) {
    for (j, pattern) in files.iter().enumerate() {
        if let Err(e) = glob::Pattern::new(pattern) {
            problems.push(
                format!("{at}.forensics.files[{j}]"),
                format!("'{pattern}' is not a valid glob: {e}"),
                "escape '[' and ']' or fix the pattern",
            );
        }
    }
}

/// `forensics.docker`: the container defaults to the one the heal restarts.
pub(crate) fn docker_forensics(
    d: &RawDockerForensics,
    heal: Option<&HealAction>,
    at: &str,
    problems: &mut Problems,
) -> Option<DockerForensics> {
    let container = forensics_container(d, heal, at, problems)?;
    let mut ok = true;
    for (j, p) in d.paths.iter().enumerate() {
        if !p.starts_with('/') {
            ok = false;
            problems.push(
                format!("{at}.paths[{j}]"),
                format!("'{p}' is not an absolute path"),
                "give the path inside the container, e.g. /var/lib/postgresql/data/log",
            );
        }
    }
    ok.then(|| DockerForensics {
        container,
        paths: d.paths.clone(),
        log_tail: d.log_tail.unwrap_or(1000),
    })
}

/// The container evidence is read from: named, a compose service, or the heal's.
fn forensics_container(
    d: &RawDockerForensics,
    heal: Option<&HealAction>,
    at: &str,
    problems: &mut Problems,
) -> Option<ContainerRef> {
    match (&d.container, &d.project, &d.service) {
        (Some(c), None, None) => container_name(c, &format!("{at}.container"), problems)
            .then(|| ContainerRef::Name(c.clone())),
        (None, Some(p), Some(s)) => {
            let ok = container_name(p, &format!("{at}.project"), problems)
                & container_name(s, &format!("{at}.service"), problems);
            ok.then(|| ContainerRef::Compose {
                project: p.clone(),
                service: s.clone(),
            })
        }
        (None, None, None) => match heal {
            Some(HealAction::Docker { container, .. }) => Some(container.clone()),
            _ => {
                problems.push(
                    at,
                    "no container to read from",
                    "set `container:` (or `project:` and `service:`), or use `heal.docker` / `heal.compose`, whose container is the default",
                );
                None
            }
        },
        _ => {
            problems.push(
                at,
                "give either `container` or both `project` and `service`",
                "e.g. `container: pg1`, or `project: app` with `service: db`",
            );
            None
        }
    }
}

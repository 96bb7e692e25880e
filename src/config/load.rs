//! Registry file → validated [`Registry`]: parse YAML, expand `${VAR}`, deserialize each section
//! on its own (so one typo does not hide the next), then check values.

use super::duration::{parse_duration, RawDuration, DURATION_HINT};
use super::error::{ConfigError, Problems};
use super::expand::{expand, VarSource};
use super::model::*;
use super::raw::*;
use serde::de::DeserializeOwned;
use serde_yaml::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOP_LEVEL_KEYS: &[&str] = &[
    "defaults",
    "server",
    "fleet_guard",
    "lease",
    "heartbeat",
    "docker",
    "archive",
    "notify",
    "targets",
    "discovery",
];

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
    let invalid = |problems: Problems| ConfigError::Invalid {
        file: file.clone(),
        problems: problems.0,
    };
    let mut problems = Problems::default();

    // Bounded before anything is built: a reload must never take the running daemon down.
    if text.len() as u64 > super::trust::MAX_CONFIG_BYTES {
        problems.push(
            "(document)",
            format!(
                "the registry is {} bytes, more than {}",
                text.len(),
                super::trust::MAX_CONFIG_BYTES
            ),
            "split the fleet over several daemons",
        );
        return Err(invalid(problems));
    }
    if let Err(e) = super::yaml_guard::check_nodes(text, super::yaml_guard::MAX_NODES) {
        problems.push(
            "(document)",
            e,
            "write the values out instead of nesting aliases (`*name`) inside anchors",
        );
        return Err(invalid(problems));
    }
    let mut doc: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(
                "(document)",
                format!("not valid YAML: {e}"),
                "fix the YAML syntax at the position shown",
            );
            return Err(invalid(problems));
        }
    };
    expand_tree(&mut doc, "", vars, &mut problems);

    let Value::Mapping(map) = doc else {
        problems.push(
            "(document)",
            "the registry must be a mapping with a `targets:` list",
            "start from targets.yaml.example",
        );
        return Err(invalid(problems));
    };
    for key in map.keys() {
        let k = key.as_str().unwrap_or("?");
        if !TOP_LEVEL_KEYS.contains(&k) {
            problems.push(
                k,
                format!("unknown key `{k}`"),
                format!("remove it or use one of: {}", TOP_LEVEL_KEYS.join(", ")),
            );
        }
    }
    let defaults: RawDefaults = section(&map, "defaults", &mut problems).unwrap_or_default();
    let archive: RawArchive = section(&map, "archive", &mut problems).unwrap_or_default();
    let notify: RawNotify = section(&map, "notify", &mut problems).unwrap_or_default();

    let discovery: Option<RawDiscovery> = section(&map, "discovery", &mut problems);
    let discovery = discovery.and_then(|d| build_discovery(d, &mut problems));
    let mut targets_raw = Vec::new();
    match map.get("targets") {
        None | Some(Value::Null) if discovery.is_some() => {}
        None | Some(Value::Null) => {
            problems.push(
                "targets",
                "no targets are listed",
                "add at least one entry under `targets:` with a name and a dsn",
            );
        }
        Some(Value::Sequence(seq)) => {
            // Duplicates are found on the raw names, so a target with another error still counts.
            let mut names = HashSet::new();
            for (i, item) in seq.iter().enumerate() {
                if let Some(name) = item.get("name").and_then(Value::as_str) {
                    if !names.insert(name) {
                        problems.push(
                            format!("targets[{i}].name"),
                            format!("duplicate target name '{name}'"),
                            "give every target a unique name",
                        );
                    }
                }
            }
            for (i, item) in seq.iter().enumerate() {
                if let Some(t) =
                    typed::<RawTarget>(item.clone(), &format!("targets[{i}]"), &mut problems)
                {
                    targets_raw.push((i, t));
                }
            }
        }
        Some(_) => problems.push(
            "targets",
            "`targets` must be a list",
            "write each target as a `- name: ...` entry",
        ),
    }

    let server: Option<RawServer> = section(&map, "server", &mut problems);
    let mut registry = build(
        source.clone(),
        defaults,
        archive,
        notify,
        targets_raw,
        &mut problems,
    );
    registry.server = server.and_then(|s| build_server(s, &mut problems));
    registry.discovery = discovery;
    if let Some(h) = section::<RawHeartbeat>(&map, "heartbeat", &mut problems) {
        let interval = h
            .interval
            .as_ref()
            .and_then(|d| duration(d, "heartbeat.interval", &mut problems))
            .unwrap_or(Duration::from_secs(60));
        if interval < Duration::from_millis(100) {
            problems.push(
                "heartbeat.interval",
                format!(
                    "{} would ping in a busy loop",
                    crate::config::duration::format_duration(interval)
                ),
                "use at least 100ms (default 60s; most dead-man switches expect minutes)",
            );
        }
        if webhook_url(&h.url, "heartbeat.url", &mut problems) {
            registry.heartbeat = Some(HeartbeatConfig {
                url: Secret::new(h.url),
                interval,
            });
        }
    }
    if let Some(d) = section::<RawDocker>(&map, "docker", &mut problems) {
        if let Some(h) = d.host {
            if docker_host(&h, "docker.host", &mut problems) {
                registry.docker.host = Some(h);
            }
        }
        if let Some(e) = d.events {
            registry.docker.events = e;
        }
    }
    if let Some(l) = section::<RawLease>(&map, "lease", &mut problems) {
        if let Some(d) = l.dir {
            if d.trim().is_empty() {
                problems.push(
                    "lease.dir",
                    "the directory is empty",
                    "give a directory every daemon watching these servers can lock, or remove it",
                );
            } else {
                registry.lease.dir = Some(PathBuf::from(d));
            }
        }
        if let Some(t) = l
            .ttl
            .as_ref()
            .and_then(|d| duration(d, "lease.ttl", &mut problems))
        {
            registry.lease.ttl = t;
        }
    }
    if let Some(g) = section::<RawFleetGuard>(&map, "fleet_guard", &mut problems) {
        if let Some(s) = g.max_failing_share {
            if !(0.0..1.0).contains(&s) {
                problems.push(
                    "fleet_guard.max_failing_share",
                    format!("{s} is not a share"),
                    "use a fraction from 0 to 1, e.g. 0.5",
                );
            } else {
                registry.fleet_guard.max_failing_share = s;
            }
        }
        if let Some(n) = g.min_failing {
            if n < 1 {
                problems.push(
                    "fleet_guard.min_failing",
                    format!("{n} is too small"),
                    "use 1 or more (default 3)",
                );
            } else {
                registry.fleet_guard.min_failing = n as usize;
            }
        }
    }
    if problems.0.is_empty() {
        Ok(registry)
    } else {
        Err(invalid(problems))
    }
}

/// Builds the registry from raw sections, pushing every value problem found.
pub(crate) fn build(
    source: Source,
    defaults: RawDefaults,
    archive: RawArchive,
    notify: RawNotify,
    targets_raw: Vec<(usize, RawTarget)>,
    problems: &mut Problems,
) -> Registry {
    let base_probe = merge_probe(
        &ProbeConfig::default(),
        defaults.probe.as_ref(),
        "defaults.probe",
        problems,
    );
    let base_budget = merge_budget(
        &BudgetConfig::default(),
        defaults.restart_budget.as_ref(),
        "defaults.restart_budget",
        problems,
    );
    let base_recovery = defaults
        .recovery_timeout
        .as_ref()
        .and_then(|d| duration(d, "defaults.recovery_timeout", problems))
        .unwrap_or(Duration::from_secs(120));
    let base_policy = policy(defaults.policy.as_ref(), "defaults.policy", problems);

    let defaults = TargetDefaults {
        probe: base_probe,
        budget: base_budget,
        recovery_timeout: base_recovery,
        policy: base_policy,
    };
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
        heartbeat: None,
        docker: DockerConfig::default(),
        archive,
        notify,
        targets,
        defaults,
        discovery: None,
    }
}

/// Longest target name: bundle directories are `{timestamp}-{name}` (255 bytes at most on
/// most filesystems) and S3 keys `{prefix}/{timestamp}-{name}/{file}` (1024 bytes at most).
const MAX_NAME: usize = 63;

/// A target name that every archive path and key can hold.
fn target_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("it has {} characters", name.len()));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("it must start with a letter or digit".into());
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        Some(c) => Err(format!("'{}' is not allowed", c.escape_default())),
        None => Ok(()),
    }
}

/// An S3 key prefix that stays where it says (empty: the bucket's root): relative, no `.`,
/// `..` or empty segments, only S3's safe characters (every S3-compatible store takes them).
fn s3_prefix(prefix: &str) -> Result<(), String> {
    if prefix.starts_with('/') {
        return Err("it starts with '/'".into());
    }
    if prefix.len() > 512 {
        return Err(format!(
            "it has {} characters (keys are 1024 at most)",
            prefix.len()
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!-_.*'()/".contains(*c)))
    {
        return Err(format!("'{}' is not allowed", c.escape_default()));
    }
    let trimmed = prefix.trim_end_matches('/');
    if !trimmed.is_empty()
        && trimmed
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("it has an empty, '.' or '..' segment".into());
    }
    Ok(())
}

/// Validates one target against the defaults; `at` prefixes every problem's key path
/// (`targets[2]`, or a container label namespace for discovered targets).
pub(crate) fn build_target(
    t: &RawTarget,
    at: &str,
    base: &TargetDefaults,
    problems: &mut Problems,
) -> Option<TargetConfig> {
    if let Err(why) = target_name(&t.name) {
        problems.push(
            format!("{at}.name"),
            format!("'{}' is not a usable target name: {why}", t.name),
            format!("use 1 to {MAX_NAME} letters, digits, '-', '_' or '.', starting with a letter or digit (it becomes part of file names and S3 keys)"),
        );
    }
    let dsn = match Dsn::parse(&t.dsn) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(
                format!("{at}.dsn"),
                format!("malformed DSN '{}': {e}", crate::redact::redact_dsn(&t.dsn)),
                "use postgres://user:password@host:5432/dbname or 'host=... port=... dbname=...'",
            );
            None
        }
    };
    let probe = merge_probe(
        &base.probe,
        t.probe.as_ref(),
        &format!("{at}.probe"),
        problems,
    );
    let target_policy = base.policy.merged(&policy(
        t.policy.as_ref(),
        &format!("{at}.policy"),
        problems,
    ));
    let budget = merge_budget(
        &base.budget,
        t.restart_budget.as_ref(),
        &format!("{at}.restart_budget"),
        problems,
    );
    let recovery_timeout = t
        .recovery_timeout
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.recovery_timeout"), problems))
        .unwrap_or(base.recovery_timeout);
    let heal = t
        .heal
        .as_ref()
        .and_then(|h| heal_action(h, &format!("{at}.heal"), problems));
    let forensic_files = t
        .forensics
        .as_ref()
        .map(|f| f.files.clone())
        .unwrap_or_default();
    let forensic_docker = t
        .forensics
        .as_ref()
        .and_then(|f| f.docker.as_ref())
        .and_then(|d| {
            docker_forensics(
                d,
                heal.as_ref(),
                &format!("{at}.forensics.docker"),
                problems,
            )
        });
    for (j, pattern) in forensic_files.iter().enumerate() {
        if let Err(e) = glob::Pattern::new(pattern) {
            problems.push(
                format!("{at}.forensics.files[{j}]"),
                format!("'{pattern}' is not a valid glob: {e}"),
                "escape '[' and ']' or fix the pattern",
            );
        }
    }
    let pid_file = t.process.as_ref().map(|p| PathBuf::from(&p.pid_file));
    if let Some(p) = &pid_file {
        if p.as_os_str().is_empty() {
            problems.push(
                format!("{at}.process.pid_file"),
                "the pid file path is empty",
                "give the cluster's postmaster.pid path or remove `process:`",
            );
        }
    }
    dsn.map(|dsn| TargetConfig {
        name: t.name.clone(),
        dsn,
        probe,
        budget,
        recovery_timeout,
        forensic_files,
        forensic_docker,
        heal,
        pid_file,
        policy: target_policy,
    })
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

/// `heal:`: exactly one of `command`, `docker`, `compose`.
fn heal_action(h: &RawHeal, at: &str, problems: &mut Problems) -> Option<HealAction> {
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
    let stop_timeout = |d: &Option<RawDuration>, problems: &mut Problems| {
        d.as_ref()
            .and_then(|d| duration(d, &format!("{at}.stop_timeout"), problems))
            .unwrap_or(Duration::from_secs(10))
    };
    if let Some(d) = &h.docker {
        let stop_timeout = stop_timeout(&d.stop_timeout, problems);
        return container_name(&d.container, &format!("{at}.docker.container"), problems).then(
            || HealAction::Docker {
                container: ContainerRef::Name(d.container.clone()),
                stop_timeout,
            },
        );
    }
    if let Some(c) = &h.compose {
        let stop_timeout = stop_timeout(&c.stop_timeout, problems);
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
    let command = h.command.as_deref().unwrap_or_default();
    let timeout = h
        .timeout
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.timeout"), problems))
        .unwrap_or(Duration::from_secs(60));
    let stop = stop_timeout(&h.stop_timeout, problems);
    if stop < Duration::from_millis(100) || stop > Duration::from_secs(600) {
        problems.push(
            format!("{at}.stop_timeout"),
            format!("{} is out of range", super::duration::format_duration(stop)),
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
fn container_name(name: &str, at: &str, problems: &mut Problems) -> bool {
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

/// `forensics.docker`: the container defaults to the one the heal restarts.
fn docker_forensics(
    d: &RawDockerForensics,
    heal: Option<&HealAction>,
    at: &str,
    problems: &mut Problems,
) -> Option<DockerForensics> {
    let container = match (&d.container, &d.project, &d.service) {
        (Some(c), None, None) => container_name(c, &format!("{at}.container"), problems)
            .then(|| ContainerRef::Name(c.clone()))?,
        (None, Some(p), Some(s)) => {
            let ok = container_name(p, &format!("{at}.project"), problems)
                & container_name(s, &format!("{at}.service"), problems);
            ok.then(|| ContainerRef::Compose {
                project: p.clone(),
                service: s.clone(),
            })?
        }
        (None, None, None) => match heal {
            Some(HealAction::Docker { container, .. }) => container.clone(),
            _ => {
                problems.push(
                    at,
                    "no container to read from",
                    "set `container:` (or `project:` and `service:`), or use `heal.docker` / `heal.compose`, whose container is the default",
                );
                return None;
            }
        },
        _ => {
            problems.push(
                at,
                "give either `container` or both `project` and `service`",
                "e.g. `container: pg1`, or `project: app` with `service: db`",
            );
            return None;
        }
    };
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

fn size(raw: &RawSize, at: &str, problems: &mut Problems) -> Option<u64> {
    let parsed = match raw {
        RawSize::Bytes(n) => Ok(*n),
        RawSize::Text(t) => crate::config::size::parse_size(t),
    };
    parsed
        .map_err(|e| problems.push(at, e, "use 512KiB, 8MiB, 1GiB or a number of bytes"))
        .ok()
}

pub(crate) fn build_server(raw: RawServer, problems: &mut Problems) -> Option<ServerConfig> {
    let listen = match raw.listen.parse::<std::net::SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            problems.push(
                "server.listen",
                format!("'{}' is not an address and port", raw.listen),
                "use e.g. 127.0.0.1:9187 (or 0.0.0.0:9187 inside a container)",
            );
            return None;
        }
    };
    let token = match raw.token {
        Some(t) if t.is_empty() => {
            problems.push("server.token", "the token is empty", "set it (e.g. \"${SENTINEL_API_TOKEN}\") or remove `token` to turn the mutating endpoints off");
            None
        }
        Some(t) if t.len() < 16 => {
            problems.push(
                "server.token",
                format!("the token has {} characters", t.len()),
                "use at least 16 random characters, e.g. openssl rand -hex 24",
            );
            None
        }
        t => t.map(Secret::new),
    };
    Some(ServerConfig { listen, token })
}

fn build_archive(raw: RawArchive, problems: &mut Problems) -> ArchiveConfig {
    let mut a = ArchiveConfig::default();
    if raw.s3.is_some() && raw.local.is_none() {
        a.local_dir = None;
    }
    if let Some(l) = raw.local {
        if l.dir.trim().is_empty() {
            problems.push(
                "archive.local.dir",
                "the directory is empty",
                "give a directory such as ./incidents",
            );
        }
        a.local_dir = Some(PathBuf::from(l.dir));
    }
    if let Some(t) = raw
        .timeout
        .as_ref()
        .and_then(|d| duration(d, "archive.timeout", problems))
    {
        if t.is_zero() {
            problems.push(
                "archive.timeout",
                "a timeout of 0 would never wait for S3",
                "use a duration such as 30s",
            );
        }
        a.timeout = t;
    }
    if let Some(n) = raw
        .max_file_size
        .as_ref()
        .and_then(|s| size(s, "archive.max_file_size", problems))
    {
        if n < 4096 {
            problems.push(
                "archive.max_file_size",
                format!("{n} bytes would keep almost nothing of a log"),
                "use at least 4KiB (default 64MiB)",
            );
        }
        a.max_file_size = n;
    }
    if let Some(s3) = raw.s3 {
        let at = "archive.s3";
        if !valid_bucket(&s3.bucket) {
            problems.push(format!("{at}.bucket"), format!("'{}' is not a valid bucket name", s3.bucket),
                "use 3 to 63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit");
        }
        if let Some(e) = &s3.endpoint {
            match url::Url::parse(e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                _ => problems.push(
                    format!("{at}.endpoint"),
                    format!("'{e}' is not an http(s) URL"),
                    "use the store's URL, e.g. https://minio.internal:9000, or remove it for AWS",
                ),
            }
        }
        if let Some(sse) = &s3.sse {
            if sse != "AES256" && sse != "aws:kms" {
                problems.push(
                    format!("{at}.sse"),
                    format!("'{sse}' is not a server-side encryption mode"),
                    "use AES256 or aws:kms",
                );
            }
        }
        if s3.sse_kms_key_id.is_some() && s3.sse.as_deref() != Some("aws:kms") {
            problems.push(
                format!("{at}.sse_kms_key_id"),
                "a KMS key is set but sse is not aws:kms",
                "set sse: aws:kms or remove sse_kms_key_id",
            );
        }
        if let Some(c) = &s3.storage_class {
            const CLASSES: &[&str] = &[
                "STANDARD",
                "REDUCED_REDUNDANCY",
                "STANDARD_IA",
                "ONEZONE_IA",
                "INTELLIGENT_TIERING",
                "GLACIER",
                "DEEP_ARCHIVE",
                "GLACIER_IR",
                "EXPRESS_ONEZONE",
            ];
            if !CLASSES.contains(&c.as_str()) {
                problems.push(
                    format!("{at}.storage_class"),
                    format!("'{c}' is not an S3 storage class"),
                    format!("use one of {}", CLASSES.join(", ")),
                );
            }
        }
        let part_size = s3
            .part_size
            .as_ref()
            .and_then(|s| size(s, &format!("{at}.part_size"), problems))
            .unwrap_or(8 << 20);
        if !(5 << 20..=5 << 30).contains(&part_size) {
            problems.push(
                format!("{at}.part_size"),
                format!("{part_size} bytes is outside S3's part limits"),
                "use 5MiB to 5GiB (default 8MiB)",
            );
        }
        let prefix = s3.prefix.unwrap_or_else(|| "incidents".into());
        if let Err(why) = s3_prefix(&prefix) {
            problems.push(
                format!("{at}.prefix"),
                format!("'{prefix}' is not a usable key prefix: {why}"),
                "use segments of letters, digits and ! - _ . * ' ( ) (S3's safe characters) joined by '/', e.g. incidents/prod",
            );
        }
        a.s3 = Some(S3Config {
            bucket: s3.bucket,
            prefix: prefix.trim_end_matches('/').to_string(),
            region: s3.region.filter(|r| !r.is_empty()),
            endpoint: s3.endpoint.filter(|e| !e.is_empty()),
            force_path_style: s3.force_path_style.unwrap_or(false),
            sse: s3.sse,
            sse_kms_key_id: s3.sse_kms_key_id,
            storage_class: s3.storage_class,
            part_size,
        });
    }
    a
}

/// S3's bucket naming rules (the common subset).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn build_notify(raw: RawNotify, problems: &mut Problems) -> NotifyConfig {
    let mut n = NotifyConfig {
        console: raw.console.unwrap_or(false),
        ..NotifyConfig::default()
    };
    if let Some(s) = raw.slack {
        if webhook_url(&s.webhook_url, "notify.slack.webhook_url", problems) {
            n.slack = Some(ChatWebhook {
                url: Secret::new(s.webhook_url),
            });
        }
    }
    if let Some(d) = raw.discord {
        if webhook_url(&d.webhook_url, "notify.discord.webhook_url", problems) {
            n.discord = Some(ChatWebhook {
                url: Secret::new(d.webhook_url),
            });
        }
    }
    for (i, w) in raw.webhooks.unwrap_or_default().into_iter().enumerate() {
        if webhook_url(&w.url, &format!("notify.webhooks[{i}].url"), problems) {
            let headers: BTreeMap<_, _> = w
                .headers
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect();
            n.webhooks.push(GenericWebhook {
                url: Secret::new(w.url),
                headers,
            });
        }
    }
    if let Some(p) = raw.pagerduty {
        let url = p
            .url
            .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".into());
        if p.routing_key.trim().is_empty() {
            problems.push(
                "notify.pagerduty.routing_key",
                "the routing key is empty",
                "copy the Events API v2 integration key of the PagerDuty service",
            );
        } else if webhook_url(&url, "notify.pagerduty.url", problems) {
            n.pagerduty = Some(PagerDutyConfig {
                routing_key: Secret::new(p.routing_key),
                url: Secret::new(url),
            });
        }
    }
    if let Some(a) = raw.max_attempts {
        if !(1..=100).contains(&a) {
            problems.push(
                "notify.max_attempts",
                format!("{a} is out of range"),
                "use a number from 1 to 100",
            );
        } else {
            n.max_attempts = a as u32;
        }
    }
    if let Some(d) = raw
        .max_backoff
        .as_ref()
        .and_then(|d| duration(d, "notify.max_backoff", problems))
    {
        n.max_backoff = d;
    }
    n
}

/// Checks a webhook URL; the message shows only scheme and host, since the path is the secret.
fn webhook_url(text: &str, path: &str, problems: &mut Problems) -> bool {
    let fix = if path.contains("slack") {
        "use the full https URL Slack gave for the incoming webhook (https://hooks.slack.com/services/...)"
    } else if path.contains("discord") {
        "use the full https URL Discord gave for the webhook (https://discord.com/api/webhooks/...)"
    } else {
        "use a full http(s) URL such as https://ops.example.com/hook"
    };
    if text.trim().is_empty() {
        problems.push(path, "the URL is empty", format!("{fix}, or remove the channel (an unset ${{VAR}} expands to nothing only if you set it to empty)"));
        return false;
    }
    match url::Url::parse(text) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => true,
        Ok(u) => {
            problems.push(
                path,
                format!("'{}://…' is not an http(s) URL with a host", u.scheme()),
                fix,
            );
            false
        }
        Err(e) => {
            problems.push(path, format!("not a URL ({e})"), fix);
            false
        }
    }
}

fn merge_probe(
    base: &ProbeConfig,
    over: Option<&RawProbe>,
    at: &str,
    problems: &mut Problems,
) -> ProbeConfig {
    let mut p = base.clone();
    let Some(o) = over else { return p };
    if let Some(q) = &o.query {
        if q.trim().is_empty() {
            problems.push(
                format!("{at}.query"),
                "the probe query is empty",
                "use a cheap query such as SELECT 1",
            );
        } else {
            p.query = q.clone();
        }
    }
    if let Some(d) = o
        .interval
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.interval"), problems))
    {
        if d.is_zero() {
            problems.push(
                format!("{at}.interval"),
                "an interval of 0 would probe in a busy loop",
                "use at least 100ms",
            );
        } else {
            p.interval = d;
        }
    }
    if let Some(d) = o
        .timeout
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.timeout"), problems))
    {
        if d.is_zero() {
            problems.push(
                format!("{at}.timeout"),
                "a timeout of 0 fails every probe",
                "use at least 100ms",
            );
        } else {
            p.timeout = d;
        }
    }
    if let Some(n) = o.failure_threshold {
        if n < 1 || n > 1000 {
            problems.push(
                format!("{at}.failure_threshold"),
                format!("{n} is not a usable threshold"),
                "use 1 or more (1 acts on the first failure)",
            );
        } else {
            p.failure_threshold = n as u32;
        }
    }
    if o.expect.is_some() {
        p.expect = o.expect.clone();
    }
    match o.role.as_deref() {
        None => {}
        Some("primary") => p.primary = true,
        Some("any") => p.primary = false,
        Some(other) => problems.push(
            format!("{at}.role"),
            format!("'{other}' is not a role"),
            "use primary (a standby answer is a failure) or any",
        ),
    }
    p
}

fn policy(
    raw: Option<&BTreeMap<String, String>>,
    at: &str,
    problems: &mut Problems,
) -> crate::policy::Policy {
    let mut p = crate::policy::Policy::default();
    for (class, action) in raw.into_iter().flatten() {
        let key = format!("{at}.{class}");
        let Some(c) = crate::probe::FailureClass::from_label(class) else {
            let all: Vec<&str> = crate::probe::FailureClass::ALL
                .iter()
                .map(|c| c.label())
                .collect();
            problems.push(
                key,
                format!("unknown failure class `{class}`"),
                format!("use one of {}", all.join(", ")),
            );
            continue;
        };
        match crate::policy::Action::from_label(action) {
            Some(crate::policy::Action::Restart) if c == crate::probe::FailureClass::Recovering => {
                problems.push(
                    key,
                    "a server answering 57P03 is recovering and is never restarted",
                    "remove this key",
                );
            }
            Some(a) => {
                p.overrides.insert(class.clone(), a);
            }
            None => problems.push(
                key,
                format!("'{action}' is not an action"),
                "use restart or alert",
            ),
        }
    }
    p
}

fn merge_budget(
    base: &BudgetConfig,
    over: Option<&RawBudget>,
    at: &str,
    problems: &mut Problems,
) -> BudgetConfig {
    let mut b = base.clone();
    let Some(o) = over else { return b };
    if let Some(n) = o.max_restarts {
        if !(0..=1000).contains(&n) {
            problems.push(
                format!("{at}.max_restarts"),
                format!("{n} is out of range"),
                "use 0 (never restart) up to 1000",
            );
        } else {
            b.max_restarts = n as u32;
        }
    }
    if let Some(d) = o
        .window
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.window"), problems))
    {
        if d.is_zero() {
            problems.push(
                format!("{at}.window"),
                "a window of 0 would allow unlimited restarts",
                "use a window such as 1h",
            );
        } else {
            b.window = d;
        }
    }
    if let Some(d) = o
        .backoff
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.backoff"), problems))
    {
        b.backoff = d;
    }
    if let Some(d) = o
        .backoff_max
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.backoff_max"), problems))
    {
        b.backoff_max = d;
    }
    if let Some(d) = o
        .backoff_reset
        .as_ref()
        .and_then(|d| duration(d, &format!("{at}.backoff_reset"), problems))
    {
        b.backoff_reset = d;
    }
    if b.backoff > b.backoff_max {
        problems.push(
            format!("{at}.backoff"),
            "backoff is longer than backoff_max",
            "make backoff_max at least as long as backoff",
        );
    }
    b
}

/// Longest duration the registry takes: timers and wall-clock arithmetic stay far from
/// overflowing (an `Instant` plus 10^15 s panics).
const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

fn duration(raw: &RawDuration, at: &str, problems: &mut Problems) -> Option<Duration> {
    match parse_duration(&raw.0) {
        Ok(d) if d > MAX_DURATION => {
            problems.push(
                at,
                format!("'{}' is longer than a year", raw.0),
                "use a duration of at most 366d",
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(at, e, DURATION_HINT);
            None
        }
    }
}

/// Deserializes one top-level section, recording a problem (with its key path) on failure.
fn section<T: DeserializeOwned>(
    map: &serde_yaml::Mapping,
    key: &str,
    problems: &mut Problems,
) -> Option<T> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => typed(v.clone(), key, problems),
    }
}

fn typed<T: DeserializeOwned>(v: Value, at: &str, problems: &mut Problems) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                at.to_string()
            } else {
                format!("{at}.{inner}")
            };
            let msg = e.inner().to_string();
            let fix = if msg.starts_with("unknown field") {
                "remove the key or correct its spelling (see targets.yaml.example)".to_string()
            } else if msg.starts_with("missing field") {
                "add the key (see targets.yaml.example)".to_string()
            } else {
                "give a value of the type shown (see targets.yaml.example)".to_string()
            };
            problems.push(path, msg, fix);
            None
        }
    }
}

/// Expands `${VAR}` in every string of the document, recording each missing variable.
fn expand_tree(v: &mut Value, at: &str, vars: &VarSource, problems: &mut Problems) {
    match v {
        Value::String(s) => match expand(s, vars) {
            Ok(e) => *s = e,
            Err(missing) => {
                for name in missing {
                    problems.push(
                        if at.is_empty() { "(document)" } else { at },
                        format!("environment variable {name} is not set"),
                        format!("export {name}=... or add it to .env in the working directory"),
                    );
                }
            }
        },
        Value::Sequence(seq) => {
            for (i, item) in seq.iter_mut().enumerate() {
                expand_tree(item, &format!("{at}[{i}]"), vars, problems);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let path = if at.is_empty() {
                    key.to_string()
                } else {
                    format!("{at}.{key}")
                };
                expand_tree(item, &path, vars, problems);
            }
        }
        Value::Tagged(t) => expand_tree(&mut t.value, at, vars, problems),
        _ => {}
    }
}

//! `targets:`: the watched databases, each built over the resolved defaults.

use super::budget::{merge_budget, BudgetConfig, RawBudget};
use super::defaults::{policy, TargetDefaults};
use super::document::typed;
use super::duration::{checked as duration, RawDuration};
use super::error::Problems;
use super::forensics::{check_globs, docker_forensics, DockerForensics, RawForensics};
use super::heal::{heal_action, ContainerRef, HealAction, RawHeal};
use super::probe::{merge_probe, ProbeConfig, RawProbe};
use super::recorder::{merge_recorder, RawRecorder, RecorderConfig};
use super::secret::Dsn;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

/// One entry of `targets:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Unique name; used in bundle paths, logs, metrics and alerts.
    pub name: String,
    /// libpq-style connection string or URL. The password is never logged.
    pub dsn: String,
    /// Overrides of `defaults.probe`, key by key.
    pub probe: Option<RawProbe>,
    /// Overrides of `defaults.restart_budget`, key by key.
    pub restart_budget: Option<RawBudget>,
    /// Override of `defaults.recovery_timeout`.
    pub recovery_timeout: Option<RawDuration>,
    /// Files archived before any restart.
    pub forensics: Option<RawForensics>,
    /// How to restart the database.
    pub heal: Option<RawHeal>,
    /// The postmaster on this host, watched for instant death detection.
    pub process: Option<RawProcess>,
    /// Action per failure class, over the defaults' policy.
    pub policy: Option<BTreeMap<String, String>>,
    /// Overrides of `defaults.recorder`, key by key.
    pub recorder: Option<RawRecorder>,
}

/// `process:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    /// The cluster's `postmaster.pid`; its first line is the postmaster's pid.
    pub pid_file: String,
}

/// One watched database.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    pub name: String,
    pub dsn: Dsn,
    pub probe: ProbeConfig,
    pub budget: BudgetConfig,
    pub recovery_timeout: Duration,
    /// Glob patterns of files copied into each bundle.
    pub forensic_files: Vec<String>,
    /// Files and the log tail copied out of the target's container.
    pub forensic_docker: Option<DockerForensics>,
    /// None: alert only, never restart.
    pub heal: Option<HealAction>,
    /// The postmaster's pid file, when the database runs on this host.
    pub pid_file: Option<PathBuf>,
    /// What each failure class calls for.
    pub policy: crate::policy::Policy,
    /// The flight recorder and its early warnings.
    pub recorder: RecorderConfig,
}

impl TargetConfig {
    /// A target built from container labels: its probe answers SCRAM only
    /// (`require_auth=scram-sha-256`, whatever a label's DSN says), because whoever controls
    /// the container controls its labels and its port.
    pub fn discovered(mut self) -> Self {
        self.dsn = self.dsn.discovered();
        self
    }

    /// The container this target runs in, if any: the one its heal restarts, else the one its
    /// forensics read.
    pub fn container(&self) -> Option<&ContainerRef> {
        match &self.heal {
            Some(HealAction::Docker { container, .. }) => Some(container),
            _ => self.forensic_docker.as_ref().map(|d| &d.container),
        }
    }
}

/// The `targets:` list, each entry deserialized on its own (with its index). Missing targets
/// are a problem only when no discovery is configured.
pub(crate) fn read_targets(
    map: &serde_yaml::Mapping,
    discovery: bool,
    problems: &mut Problems,
) -> Vec<(usize, RawTarget)> {
    let mut targets = Vec::new();
    match map.get("targets") {
        None | Some(Value::Null) if discovery => {}
        None | Some(Value::Null) => {
            problems.push(
                "targets",
                "no targets are listed",
                "add at least one entry under `targets:` with a name and a dsn",
            );
        }
        Some(Value::Sequence(seq)) => {
            duplicate_names(seq, problems);
            for (i, item) in seq.iter().enumerate() {
                if let Some(t) =
                    typed::<RawTarget>(item.clone(), &format!("targets[{i}]"), problems)
                {
                    targets.push((i, t));
                }
            }
        }
        Some(_) => problems.push(
            "targets",
            "`targets` must be a list",
            "write each target as a `- name: ...` entry",
        ),
    }
    targets
}

/// Duplicates are found on the raw names, so a target with another error still counts.
fn duplicate_names(seq: &[Value], problems: &mut Problems) {
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
}

/// A target name that every archive path and key can hold (the grammar is `ids::TargetName`'s).
fn target_name(name: &str) -> Result<(), String> {
    crate::ids::TargetName::parse(name)
        .map(|_| ())
        .map_err(|e| match e {
            crate::ids::IdError::Target(_, why) => why,
            other => other.to_string(),
        })
}

/// Validates one target against the defaults; `at` prefixes every problem's key path
/// (`targets[2]`, or a container label namespace for discovered targets).
pub(crate) fn build_target(
    t: &RawTarget,
    at: &str,
    base: &TargetDefaults,
    problems: &mut Problems,
) -> Option<TargetConfig> {
    let dsn = name_and_dsn(t, at, problems);
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
    check_globs(&forensic_files, at, problems);
    let pid_file = pid_file(t, at, problems);
    let recorder = merge_recorder(
        &base.recorder,
        t.recorder.as_ref(),
        &format!("{at}.recorder"),
        problems,
    );
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
        recorder,
    })
}

/// Checks the name and parses the DSN (None when it does not parse).
fn name_and_dsn(t: &RawTarget, at: &str, problems: &mut Problems) -> Option<Dsn> {
    if let Err(why) = target_name(&t.name) {
        problems.push(
            format!("{at}.name"),
            format!("'{}' is not a usable target name: {why}", t.name),
            format!("use 1 to {} letters, digits, '-', '_' or '.', starting with a letter or digit, without '..' (it becomes part of file names and S3 keys)", crate::ids::MAX_TARGET),
        );
    }
    match Dsn::parse(&t.dsn) {
        Ok(d) => Some(d),
        Err(super::secret::DsnError::RequireAuth(e)) => {
            problems.push(
                format!("{at}.dsn"),
                format!("require_auth in '{}': {e}", crate::redact::redact_dsn(&t.dsn)),
                "list methods of password, md5, scram-sha-256, none (require_auth=scram-sha-256,none), or negate them all (require_auth=!password,!md5); GSSAPI and SSPI are not supported",
            );
            None
        }
        Err(super::secret::DsnError::Tls(e)) => {
            problems.push(
                format!("{at}.dsn"),
                format!(
                    "TLS setting {} in '{}' cannot be used",
                    e.key,
                    crate::redact::redact_dsn(&t.dsn)
                ),
                e.reason,
            );
            None
        }
        Err(e) => {
            problems.push(
                format!("{at}.dsn"),
                format!("malformed DSN '{}': {e}", crate::redact::redact_dsn(&t.dsn)),
                "use postgres://user:password@host:5432/dbname or 'host=... port=... dbname=...'",
            );
            None
        }
    }
}

/// `process.pid_file`, which must not be empty.
fn pid_file(t: &RawTarget, at: &str, problems: &mut Problems) -> Option<PathBuf> {
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
    pid_file
}

//! `defaults:`: what every target inherits unless it overrides it, and the per-class policy
//! both levels write.

use super::budget::{merge_budget, BudgetConfig, RawBudget};
use super::duration::{checked as duration, RawDuration};
use super::error::Problems;
use super::probe::{merge_probe, ProbeConfig, RawProbe};
use super::recorder::{merge_recorder, RawRecorder, RecorderConfig};
use crate::failure::FailureClass;
use crate::policy::{Action, Policy};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `defaults:`: values every target inherits unless it overrides them key by key.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    /// Probe settings shared by every target.
    pub probe: Option<RawProbe>,
    /// Restart budget shared by every target.
    pub restart_budget: Option<RawBudget>,
    /// How long after a heal starts a target may take to answer probes before escalation.
    pub recovery_timeout: Option<RawDuration>,
    /// Action per failure class (`restart` or `alert`), e.g. `{ timeout: alert }`.
    pub policy: Option<BTreeMap<String, String>>,
    /// The flight recorder and its early warnings, shared by every target.
    pub recorder: Option<RawRecorder>,
}

/// What a target inherits unless it overrides it: the resolved `defaults:` section, kept so
/// that targets discovered later are built exactly like the ones written in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetDefaults {
    pub probe: ProbeConfig,
    pub budget: BudgetConfig,
    pub recovery_timeout: Duration,
    pub policy: Policy,
    pub recorder: RecorderConfig,
}

/// Resolves `defaults:` over the built-in defaults.
pub(crate) fn build_defaults(raw: &RawDefaults, problems: &mut Problems) -> TargetDefaults {
    let probe = merge_probe(
        &ProbeConfig::default(),
        raw.probe.as_ref(),
        "defaults.probe",
        problems,
    );
    let budget = merge_budget(
        &BudgetConfig::default(),
        raw.restart_budget.as_ref(),
        "defaults.restart_budget",
        problems,
    );
    let recovery_timeout = raw
        .recovery_timeout
        .as_ref()
        .and_then(|d| duration(d, "defaults.recovery_timeout", problems))
        .unwrap_or(Duration::from_secs(120));
    let policy = policy(raw.policy.as_ref(), "defaults.policy", problems);
    let recorder = merge_recorder(
        &RecorderConfig::default(),
        raw.recorder.as_ref(),
        "defaults.recorder",
        problems,
    );
    TargetDefaults {
        probe,
        budget,
        recovery_timeout,
        policy,
        recorder,
    }
}

/// `policy:`: failure class → `restart` or `alert`; a recovering server is never restarted.
pub(crate) fn policy(
    raw: Option<&BTreeMap<String, String>>,
    at: &str,
    problems: &mut Problems,
) -> Policy {
    let mut p = Policy::default();
    for (class, action) in raw.into_iter().flatten() {
        let key = format!("{at}.{class}");
        let Some(c) = FailureClass::from_label(class) else {
            let all: Vec<&str> = FailureClass::ALL.iter().map(|c| c.label()).collect();
            problems.push(
                key,
                format!("unknown failure class `{class}`"),
                format!("use one of {}", all.join(", ")),
            );
            continue;
        };
        match Action::from_label(action) {
            Some(Action::Restart) if c == FailureClass::Recovering => {
                problems.push(
                    key,
                    "a server answering 57P03 is recovering and is never restarted",
                    "remove this key",
                );
            }
            Some(Action::Restart) if c == FailureClass::InsecureAuth => {
                problems.push(
                    key,
                    "a server asking for a password the probe refuses to send is never restarted (a restart cannot change what pg_hba.conf asks, or who holds the port)",
                    "remove this key",
                );
            }
            Some(Action::Restart) if c == FailureClass::WrongServer => {
                problems.push(
                    key,
                    "another server answering on the target's address is not fixed by restarting the target",
                    "remove this key",
                );
            }
            Some(Action::Restart) if c == FailureClass::UnannouncedRestart => {
                problems.push(
                    key,
                    "a server restarted by someone else is already up again: there is nothing to restart",
                    "remove this key",
                );
            }
            Some(Action::Restart) if c.is_refusal() => {
                problems.push(
                    key,
                    "a TLS failure (refused, untrusted, expired or mismatched certificate, failed handshake) is never restarted: a restart serves the same certificate and settings",
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

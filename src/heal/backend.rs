//! The seam between the Healer and the ways a target is restarted. The Healer's retry loop
//! (restart budget, backoff, the pid-file bookkeeping, the connection check after each
//! attempt) is the same for every backend; a backend says how one attempt is made and what
//! its outcome proves.

use super::HealFailure;
use crate::config::TargetConfig;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use slog::Logger;
use std::path::Path;
use std::time::Duration;

/// What every step of one heal knows.
pub struct HealCx<'a> {
    pub log: &'a Logger,
    pub target: &'a TargetConfig,
    /// The earliest the failure can have begun: what happened to the server after it (a
    /// container restarted by its own policy) was done for this incident already.
    pub failed_at: DateTime<Utc>,
    /// The incident's heal log: each backend appends what it did, and the log is copied
    /// into the bundle.
    pub log_path: &'a Path,
}

/// How an attempt shows whether it started (or restarted) a server, which counts against
/// the restart budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The backend knows: a container restart that went through did, one refused did not.
    Known(bool),
    /// A program ran (`ran`), or could not be started. One that failed may still have
    /// started a postmaster (`pg_ctl start -w` outwaited by a long crash recovery): the
    /// Healer asks the target's pid file, if it has one, else trusts `ran`.
    Program { ran: bool },
}

/// What one attempt did, before the connection check.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The action completed (exit 0, or the Engine restarted the container).
    pub done: bool,
    /// Exit code, when a program ran to completion.
    pub exit_code: Option<i32>,
    /// What happened, for the heal report: "exit 1", "container db restarted (...)".
    pub verdict: String,
    /// Retrying cannot help (a missing container, a forbidden Engine): the heal stops here.
    pub terminal: Option<HealFailure>,
    /// Why a start failed, from its own output, also when a retry may help (a lock file a
    /// dying server still holds): an escalation after the last retry names it first.
    pub start_cause: Option<crate::cause::Cause>,
    pub started: Started,
}

/// A way to restart a target: one implementation per file in `heal/`, chosen by
/// [`super::backend`] from the target's heal configuration.
///
/// The Healer holds it as `Arc<dyn HealBackend>`, so it must be object safe; its async steps
/// return `futures`' `BoxFuture` (a crate the daemon already uses) rather than going through
/// the `async-trait` macro, which would add a dependency to write the same boxing.
pub trait HealBackend: Send + Sync {
    /// Runs once before the first attempt (a command heal stops a hung postmaster here).
    /// Returns what it did; the first attempt's verdict then starts with it.
    fn prepare<'a>(&'a self, _cx: &'a HealCx<'a>) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { None })
    }

    /// One attempt; `budget_left` is what recovery_timeout leaves of the heal.
    fn attempt<'a>(&'a self, cx: &'a HealCx<'a>, budget_left: Duration) -> BoxFuture<'a, Outcome>;

    /// Why an attempt that started a server did not give one that answers, when retrying
    /// cannot help (a container whose server stops on a configuration error): the heal then
    /// stops at this first failure.
    fn failed_start<'a>(&'a self, _cx: &'a HealCx<'a>) -> BoxFuture<'a, Option<HealFailure>> {
        Box::pin(async { None })
    }

    /// The verdict of a done attempt once the server was found answering (`state`).
    fn confirmed(&self, verdict: String, state: &str) -> String {
        format!("{verdict}; {state}")
    }
}

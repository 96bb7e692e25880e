//! The command heal: a hung postmaster is stopped first ([`super::stop`]), then each attempt
//! runs the start command ([`super::process`]); whether it started a server the pid file
//! tells, and the connection check confirms.

use super::process::{environment, run, CommandResult};
use super::{HealBackend, HealCx, Outcome, Started};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::time::Duration;

/// A command heal (`heal.command`): the start command, and how a hung server is stopped
/// before it (see [`super::stop`]).
pub struct CommandHeal {
    pub argv: Vec<String>,
    pub timeout: Duration,
    /// A hung postmaster (alive at heal time) gets this long to stop before SIGKILL.
    pub stop_timeout: Duration,
    /// Run instead of SIGQUIT to stop a hung postmaster.
    pub stop_command: Option<Vec<String>>,
    /// Added to the cleared environment of the heal and stop commands.
    pub env: BTreeMap<String, String>,
}

impl HealBackend for CommandHeal {
    fn prepare<'a>(&'a self, cx: &'a HealCx<'a>) -> BoxFuture<'a, Option<String>> {
        Box::pin(super::stop::stop_hung(
            cx,
            super::stop::StopPlan {
                timeout: self.stop_timeout,
                command: self.stop_command.as_deref(),
                env: &self.env,
                log: cx.log_path,
            },
        ))
    }

    fn attempt<'a>(&'a self, cx: &'a HealCx<'a>, budget_left: Duration) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let env = environment(std::env::vars(), &self.env);
            let timeout = self.timeout.min(budget_left);
            let before = std::fs::metadata(cx.log_path).map_or(0, |m| m.len());
            let result = run(&self.argv, &env, timeout, cx.log_path).await;
            let (exit_code, verdict) = match &result {
                CommandResult::Exited(c) => (Some(*c), format!("exit {c}")),
                CommandResult::Signalled => (None, "killed by a signal".to_string()),
                CommandResult::TimedOut => (None, "timed out".to_string()),
                CommandResult::SpawnFailed(e) => (None, format!("could not start: {e}")),
            };
            let start_cause = match result {
                CommandResult::Exited(c) if c != 0 => start_failed(cx, before).await,
                _ => None,
            };
            let terminal = start_cause.as_ref().and_then(futile);
            Outcome {
                done: result == CommandResult::Exited(0),
                started: Started::Program {
                    ran: !matches!(result, CommandResult::SpawnFailed(_)),
                },
                exit_code,
                verdict,
                terminal,
                start_cause,
            }
        })
    }

    /// A command's "exit 0" says nothing the connection check does not.
    fn confirmed(&self, _verdict: String, state: &str) -> String {
        state.to_string()
    }
}

/// Why a start command failed, from its output since `from` and the server log.
async fn start_failed(cx: &HealCx<'_>, from: u64) -> Option<crate::cause::Cause> {
    let (out, patterns) = (cx.log_path.to_path_buf(), cx.target.forensic_files.clone());
    let port = cx.target.dsn.config().get_ports().first().copied();
    let work = tokio::task::spawn_blocking(move || {
        crate::cause::gather::start_failure(&out, from, &patterns, port)
    });
    let cause = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .ok()?
        .ok()?;
    slog::warn!(cx.log, "the start failed"; "event" => "start_failed", "cause" => cause.class.label(),
        "sentence" => &cause.sentence);
    Some(cause)
}

/// A start that cannot work (a configuration error, the port taken, the data directory's
/// permissions, a PANIC or FATAL of the start itself) ends the heal at this first failure,
/// with the file and line or the port's holder.
fn futile(cause: &crate::cause::Cause) -> Option<crate::heal::HealFailure> {
    cause
        .class
        .start_is_futile()
        .then(|| crate::heal::HealFailure {
            kind: "start_failed",
            detail: cause.sentence.clone(),
            class: None,
            cause: Some(cause.clone()),
        })
}

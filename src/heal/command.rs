//! The command heal: run argv (no shell) with a timeout, output appended to the incident's log.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// How one run of the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    Exited(i32),
    /// Ended by a signal.
    Signalled,
    TimedOut,
    /// Could not be started (missing program, permissions).
    SpawnFailed(String),
}

/// Runs `argv` once. stdout and stderr go straight to `log` (a file, not a pipe), so a daemon
/// the command leaves behind cannot hold our read end open and hang the heal.
pub async fn run(argv: &[String], timeout: Duration, log: &Path) -> CommandResult {
    let open = || crate::fsutil::append_private(log);
    let (out, err) = match (open(), open()) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return CommandResult::SpawnFailed(format!("cannot open {}: {e}", log.display()))
        }
    };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Own process group: a Ctrl-C aimed at the daemon must not reach the database it started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return CommandResult::SpawnFailed(format!("{}: {e}", argv[0])),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => match status.code() {
            Some(c) => CommandResult::Exited(c),
            None => CommandResult::Signalled,
        },
        Ok(Err(e)) => CommandResult::SpawnFailed(e.to_string()),
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            CommandResult::TimedOut
        }
    }
}

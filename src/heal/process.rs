//! Running a heal program (the start command of a command heal, or its stop command): argv
//! (no shell) with a timeout, output appended to the incident's log.
//!
//! The command, and the postmaster it starts, get a cleared environment: only [`ALLOWED`]
//! (and `LC_*`) from the daemon's own, plus the target's `heal.env`. A database superuser can
//! read a server's environment (`pg_read_binary_file('/proc/<pid>/environ')`), so the daemon's
//! secrets (AWS keys, API tokens, webhook URLs) must never reach it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Variables passed on from the daemon's environment (besides every `LC_*`). `PGPASSWORD` is
/// not among them: a password the command needs goes in a `.pgpass` file (`PGPASSFILE`).
pub const ALLOWED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
    "LANG",
    "LANGUAGE",
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "PGTZ",
    "PGCLIENTENCODING",
    "PGCONNECT_TIMEOUT",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGLOCALEDIR",
];

/// The environment a heal command gets: the allowed part of `from`, then `extra` over it.
pub fn environment(
    from: impl Iterator<Item = (String, String)>,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = from
        .filter(|(k, _)| ALLOWED.contains(&k.as_str()) || k.starts_with("LC_"))
        .collect();
    env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// How one run of the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    Exited(i32),
    /// Ended by a signal.
    Signalled,
    /// Killed at the timeout, with every process left in its group.
    TimedOut,
    /// Could not be started (missing program, permissions).
    SpawnFailed(String),
}

/// Runs `argv` once with the environment `env` (see [`environment`]). stdout and stderr go
/// straight to `log` (a file, not a pipe), so a daemon the command leaves behind cannot hold
/// our read end open and hang the heal.
pub async fn run(
    argv: &[String],
    env: &BTreeMap<String, String>,
    timeout: Duration,
    log: &Path,
) -> CommandResult {
    let open = || crate::fsutil::append_private(log);
    let (out, err) = match (open(), open()) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            return CommandResult::SpawnFailed(format!("cannot open {}: {e}", log.display()))
        }
    };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Own process group: a Ctrl-C aimed at the daemon must not reach the database it
        // started, and a timeout kills the whole group.
        .process_group(0)
        .kill_on_drop(true);
    // Registered: the reaper's sweep must leave this child's exit status to us.
    let mut child = match crate::reaper::spawn_owned(&mut cmd) {
        Ok(c) => c,
        Err(e) => return CommandResult::SpawnFailed(format!("{}: {e}", argv[0])),
    };
    let pid = child.id();
    let result = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => match status.code() {
            Some(c) => CommandResult::Exited(c),
            None => CommandResult::Signalled,
        },
        Ok(Err(e)) => CommandResult::SpawnFailed(e.to_string()),
        Err(_) => {
            // The group first (children it forked, `sleep`s a script waits on), then the
            // command itself. A postmaster `pg_ctl` started is in a session of its own and
            // is left alone.
            if let Some(pgid) = pid {
                // SAFETY: killpg on the group the command leads (process_group(0) above).
                unsafe { libc::killpg(pgid as i32, libc::SIGKILL) };
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
            CommandResult::TimedOut
        }
    };
    crate::reaper::release(pid);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_variables_pass_and_heal_env_wins() {
        let from = [
            ("PATH", "/usr/bin"),
            ("LC_ALL", "C.UTF-8"),
            ("PGDATA", "/data"),
            ("PGPASSWORD", "pw"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("SENTINEL_API_TOKEN", "tok"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let extra = BTreeMap::from([("PGDATA".to_string(), "/other".to_string())]);
        let env = environment(from.into_iter(), &extra);
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(keys, ["LC_ALL", "PATH", "PGDATA"]);
        assert_eq!(env["PGDATA"], "/other");
    }
}

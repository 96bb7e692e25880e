//! What the I/O code gathered for the classifier: plain data, so a table test can build any
//! case from a few log lines.

/// Lines of each log the classifier sees.
pub const TAIL_LINES: usize = 400;

/// The last lines of one log, with their line numbers in the file a person opens (the
/// bundle's copy of a server log, the container's log, the start's own output).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    /// The file's name in the bundle, or what the text is (`heal.log`).
    pub source: String,
    /// `(line number, text)`, oldest first; at most the newest few hundred lines.
    pub lines: Vec<(usize, String)>,
}

impl LogTail {
    /// A tail from the whole text of a file (tests, and small outputs).
    pub fn of_text(source: &str, text: &str) -> Self {
        let all: Vec<(usize, String)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.to_string()))
            .collect();
        let skip = all.len().saturating_sub(TAIL_LINES);
        Self {
            source: source.to_string(),
            lines: all.into_iter().skip(skip).collect(),
        }
    }
}

/// How the postmaster (or the container's main process) ended, where it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Ended by this signal (from waitpid on a postmaster the daemon adopted).
    Signal(i32),
    /// Exited with this code (a container's 137 is SIGKILL).
    Code(i64),
}

/// The free space of one filesystem the server writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// `data directory` or `pg_wal`.
    pub what: &'static str,
    pub path: String,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

impl Space {
    /// Whether this filesystem has room again: at least 10 % free or 1 GiB.
    pub fn has_room(&self) -> bool {
        self.free_bytes >= (1 << 30) || self.free_bytes.saturating_mul(10) >= self.total_bytes
    }
}

/// Everything the classifier may look at; all best effort (empty when unreadable).
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// The server's log tails (and the container's log), as archived.
    pub logs: Vec<LogTail>,
    /// The start's own output (a heal command's, a container's log after a start).
    pub start_output: Option<LogTail>,
    pub exit: Option<Exit>,
    /// Where `exit` was read (`waitpid`, `Docker Engine State.ExitCode`).
    pub exit_source: String,
    /// The Engine reported an `oom` event for the container while its postmaster lived.
    pub engine_oom_event: bool,
    /// The Engine's `State.OOMKilled` for the target's container.
    pub engine_oom_killed: Option<bool>,
    /// `oom_kill` from the container's cgroup `memory.events` (or `memory.oom_control`).
    pub cgroup_oom_kills: Option<u64>,
    /// Kernel log lines about OOM kills (from `/dev/kmsg`, bounded), newest last.
    pub kernel: Vec<String>,
    /// The data directory's and pg_wal's filesystems.
    pub space: Vec<Space>,
    /// The pid the postmaster had, when known (to match a kernel OOM line).
    pub postmaster_pid: Option<i32>,
    /// The postmaster was alive when the evidence was gathered (a backend crash).
    pub postmaster_alive: bool,
    /// The postmaster is known dead (the pid watch, a container's death, a refused connection).
    pub postmaster_dead: bool,
    /// The container's main process on this host, whose cgroup counts OOM kills.
    pub container_pid: Option<u32>,
    /// Who holds the target's port (`pid 1234 (nc)`), when a start failed on it.
    pub port_holder: Option<String>,
    /// The target's port.
    pub port: Option<u16>,
}

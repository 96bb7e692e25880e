//! The likely cause of an incident, named and quoted: a class, one sentence, the evidence
//! lines with their source (log file and line, kernel log, Engine state, exit status), and the
//! fix where one is known.
//!
//! Layout:
//! - `mod.rs`: [`Cause`] and [`CauseClass`], and what each class calls for ([`Judgment`]).
//! - `evidence.rs`: what the I/O code hands the classifier ([`Evidence`]), plain data.
//! - `classify.rs`: the pure classification of a death ([`classify`]) or of a failed start
//!   ([`classify_start`]), tested by tables of log lines.
//! - `gather.rs`: the I/O: the archived log tail, free space (statvfs), the kernel log, the
//!   postmaster's exit status, who holds a port.
//!
//! Text quoted from logs is the database's (or the kernel's): it is data, cut short and
//! redacted here, and escaped by each channel like any other text from a server.

mod classify;
pub mod evidence;
pub mod gather;

pub use classify::{classify, classify_start};
pub use evidence::{Evidence, Exit, LogTail, Space};

use serde::{Deserialize, Serialize};

/// What the evidence says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseClass {
    /// The kernel's OOM killer killed the postmaster (kernel log, cgroup, Engine `OOMKilled`).
    OomKilled,
    /// Killed by a signal (SIGKILL by a person or a script), or vanished without a word.
    Killed,
    /// A smart, fast or immediate shutdown was requested (`pg_ctl stop`, a service manager).
    ShutdownRequest,
    /// `No space left on device`: the data directory's or pg_wal's filesystem is full.
    DiskFull,
    /// A PANIC in the last lines before death (a corrupted WAL record, a missing file).
    Panic,
    /// A FATAL in the last lines before death.
    Fatal,
    /// A server process crashed and the postmaster, still alive, ran crash recovery: every
    /// connection was dropped, and the server came back by itself.
    BackendCrash,
    /// The start failed on a configuration error (file and line).
    ConfigError,
    /// The start failed: another process holds the port.
    PortInUse,
    /// The start failed on a lock file left behind (`postmaster.pid` naming a live pid).
    StaleLockFile,
    /// The start failed: the data directory's ownership or permissions.
    DataDirPermissions,
    /// The start failed: shared memory could not be created or is still in use.
    SharedMemory,
    /// Nothing in the evidence says why.
    Unknown,
}

impl CauseClass {
    pub fn label(self) -> &'static str {
        match self {
            CauseClass::OomKilled => "oom_killed",
            CauseClass::Killed => "killed",
            CauseClass::ShutdownRequest => "shutdown_request",
            CauseClass::DiskFull => "disk_full",
            CauseClass::Panic => "panic",
            CauseClass::Fatal => "fatal",
            CauseClass::BackendCrash => "backend_crash",
            CauseClass::ConfigError => "config_error",
            CauseClass::PortInUse => "port_in_use",
            CauseClass::StaleLockFile => "stale_lock_file",
            CauseClass::DataDirPermissions => "data_dir_permissions",
            CauseClass::SharedMemory => "shared_memory",
            CauseClass::Unknown => "unknown",
        }
    }

    /// What this cause calls for. Only a dead or hung server is restarted: one that
    /// recovered by itself is not, a full disk waits for space, and a start that cannot work
    /// is escalated at its first failure.
    pub fn judgment(self) -> Judgment {
        match self {
            CauseClass::BackendCrash => Judgment::SelfRecovered,
            CauseClass::DiskFull => Judgment::WaitForSpace,
            // A lock file or shared memory still held by a dying server clears by itself:
            // the heal's own retries (and their limit) apply.
            CauseClass::ConfigError | CauseClass::PortInUse | CauseClass::DataDirPermissions => {
                Judgment::Escalate
            }
            _ => Judgment::Restart,
        }
    }
}

impl CauseClass {
    /// Whether a start that failed of this cause would fail the same way again: the judgment
    /// says so, or the start itself PANICked or died on a FATAL (a missing control file, a
    /// WAL record that cannot be read), which a later start meets again. A lock file or
    /// shared memory a dying server still holds is retried (the heal's own limit applies).
    pub fn start_is_futile(self) -> bool {
        self.judgment() == Judgment::Escalate
            || matches!(self, CauseClass::Panic | CauseClass::Fatal)
    }
}

/// What a cause calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgment {
    /// Restart within the budget (a crash, a kill, an OOM kill of the postmaster).
    Restart,
    /// The postmaster lives and recovered by itself: alert, never restart.
    SelfRecovered,
    /// Hold restarts until the filesystem has room again, then restart once.
    WaitForSpace,
    /// Another start fails the same way: stop at the first failure and page a person.
    Escalate,
}

/// One line of evidence, quoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// Where it comes from: a bundle file name (`postgresql.log`), `kernel log`, `Docker
    /// Engine`, `exit status`, `statvfs`, `/proc/net/tcp`.
    pub source: String,
    /// The line number in that file (1-based), when it is a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub text: String,
}

impl Quote {
    /// `postgresql.log:57: "text"` or `kernel log: "text"`.
    pub fn cite(&self) -> String {
        match self.line {
            Some(n) => format!("{}:{n}: \"{}\"", self.source, self.text),
            None => format!("{}: \"{}\"", self.source, self.text),
        }
    }
}

/// The likely cause of one incident (`cause.json` in the bundle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub class: CauseClass,
    /// One sentence, the alert's first line.
    pub sentence: String,
    pub evidence: Vec<Quote>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Cause {
    /// Nothing known: says so, with what was looked at.
    pub fn unknown(looked_at: &str) -> Self {
        Self {
            class: CauseClass::Unknown,
            sentence: format!("Cause unknown: nothing in {looked_at} says why."),
            evidence: vec![],
            fix: None,
        }
    }

    /// The evidence, one quote a line, for an alert's details.
    pub fn evidence_text(&self) -> String {
        self.evidence
            .iter()
            .map(Quote::cite)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

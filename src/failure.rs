//! What a failed probe means. The class decides what the daemon does; the SQLSTATE is kept
//! because some answers (57P03, starting up) mean "recovering", not "failed".
//!
//! A leaf: config (the policy section), policy and probe all name these types, so they live
//! apart from probe, which reads config, and import nothing of the crate.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a probe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Nothing listens on the address (server down).
    ConnectionRefused,
    /// Connecting or the query took longer than the probe timeout (hang, overload).
    Timeout,
    /// The server rejected the credentials (28P01, 28000).
    Authentication,
    /// The server is starting up or in crash recovery (57P03): recovering, never restarted for.
    Recovering,
    /// The query failed with an SQL error.
    QueryError,
    /// The query answered something other than `expect`.
    UnexpectedResult,
    /// An established connection dropped mid-probe.
    ConnectionLost,
    /// The postmaster process is gone (seen by the pid watch).
    ProcessExited,
    /// 53300: every connection slot is taken.
    TooManyConnections,
    /// 53100: the disk is full.
    DiskFull,
    /// 53200: the server ran out of memory.
    OutOfMemory,
    /// 3D000: the database in the DSN does not exist.
    DatabaseMissing,
    /// A target that must be a primary answers as a standby (pg_is_in_recovery), or refuses
    /// writes (25006).
    ReadOnly,
    /// The target's container does not exist (removed, or never created).
    ContainerMissing,
    /// The server asked for an authentication the target's `require_auth` does not permit
    /// (by default a cleartext or md5 password without TLS): the probe refused and sent no
    /// password. Alert only, declared at once, never restarted for.
    InsecureAuth,
    /// Another server answered on the target's address: its `system_identifier` is not the
    /// one learned for the target (see `probe::identity`). Never restarted, never a recovery.
    WrongServer,
    /// TLS is required (sslmode=require or stricter) and the server answered the SSLRequest
    /// with 'N': it has `ssl = off`, or something else holds the port. Alert only.
    TlsRefused,
    /// The server's certificate does not verify against `sslrootcert` (unknown CA, bad
    /// signature, revoked). Alert only: a configuration or an impostor, never a restart.
    TlsUntrusted,
    /// The server's certificate has expired (or is not valid yet). Alert only.
    TlsExpired,
    /// The certificate is not valid for the host name in the DSN (verify-full). Alert only.
    TlsNameMismatch,
    /// The TLS handshake failed otherwise (the server refused the client certificate, no
    /// common protocol version or cipher, channel binding impossible). Alert only.
    TlsHandshake,
    /// Not a failed probe: two passing probes saw different postmaster start times, so the
    /// server was restarted between them by something else (a crash and another manager's
    /// restart within one interval). Alert only: the server is up again.
    UnannouncedRestart,
    /// A server process crashed and the postmaster, still alive, dropped every connection and
    /// ran crash recovery (its checkpointer was replaced, or the Engine reported an OOM kill
    /// in a container whose postmaster lives). Alert only: it came back by itself.
    BackendCrash,
}

impl FailureClass {
    /// Stable short label for logs, metrics and payloads.
    pub fn label(self) -> &'static str {
        match self {
            FailureClass::ConnectionRefused => "connection_refused",
            FailureClass::Timeout => "timeout",
            FailureClass::Authentication => "authentication",
            FailureClass::Recovering => "recovering",
            FailureClass::QueryError => "query_error",
            FailureClass::UnexpectedResult => "unexpected_result",
            FailureClass::ConnectionLost => "connection_lost",
            FailureClass::ProcessExited => "process_exited",
            FailureClass::TooManyConnections => "too_many_connections",
            FailureClass::DiskFull => "disk_full",
            FailureClass::OutOfMemory => "out_of_memory",
            FailureClass::DatabaseMissing => "database_missing",
            FailureClass::ReadOnly => "read_only",
            FailureClass::ContainerMissing => "container_missing",
            FailureClass::InsecureAuth => "insecure_auth",
            FailureClass::WrongServer => "wrong_server",
            FailureClass::TlsRefused => "tls_refused",
            FailureClass::TlsUntrusted => "tls_untrusted",
            FailureClass::TlsExpired => "tls_expired",
            FailureClass::TlsNameMismatch => "tls_name_mismatch",
            FailureClass::TlsHandshake => "tls_handshake",
            FailureClass::UnannouncedRestart => "unannounced_restart",
            FailureClass::BackendCrash => "backend_crash",
        }
    }

    /// Every class, for validation messages.
    pub const ALL: [FailureClass; 23] = [
        FailureClass::ConnectionRefused,
        FailureClass::Timeout,
        FailureClass::Authentication,
        FailureClass::Recovering,
        FailureClass::QueryError,
        FailureClass::UnexpectedResult,
        FailureClass::ConnectionLost,
        FailureClass::ProcessExited,
        FailureClass::TooManyConnections,
        FailureClass::DiskFull,
        FailureClass::OutOfMemory,
        FailureClass::DatabaseMissing,
        FailureClass::ReadOnly,
        FailureClass::ContainerMissing,
        FailureClass::InsecureAuth,
        FailureClass::WrongServer,
        FailureClass::TlsRefused,
        FailureClass::TlsUntrusted,
        FailureClass::TlsExpired,
        FailureClass::TlsNameMismatch,
        FailureClass::TlsHandshake,
        FailureClass::UnannouncedRestart,
        FailureClass::BackendCrash,
    ];

    /// A refusal by the probe or of the secure channel: certain at the first probe (probing
    /// again only meets the same server or certificate), declared at once, and never
    /// restarted for whatever the policy says (a restart serves the same certificate).
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            FailureClass::InsecureAuth
                | FailureClass::TlsRefused
                | FailureClass::TlsUntrusted
                | FailureClass::TlsExpired
                | FailureClass::TlsNameMismatch
                | FailureClass::TlsHandshake
        )
    }

    pub fn from_label(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.label() == s)
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One failed probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeFailure {
    pub class: FailureClass,
    /// SQLSTATE when the server answered with an error.
    pub sqlstate: Option<String>,
    /// Human detail (never contains the password).
    pub detail: String,
}

impl ProbeFailure {
    pub fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        Self {
            class,
            sqlstate: None,
            detail: detail.into(),
        }
    }

    /// Classifies an error the server answered with, by its SQLSTATE: the one table for the
    /// kept-connection client (tokio-postgres) and the probe's own login and query.
    pub fn from_sqlstate(code: &str, message: impl Into<String>) -> Self {
        let class = match code {
            "57P03" => FailureClass::Recovering,
            "28P01" | "28000" => FailureClass::Authentication,
            "57014" => FailureClass::Timeout, // statement_timeout cancelled the query
            "57P01" | "57P02" => FailureClass::ConnectionLost, // admin or crash shutdown
            "53300" => FailureClass::TooManyConnections,
            "53100" => FailureClass::DiskFull,
            "53200" => FailureClass::OutOfMemory,
            "3D000" => FailureClass::DatabaseMissing,
            "25006" => FailureClass::ReadOnly,
            _ => FailureClass::QueryError,
        };
        Self {
            class,
            sqlstate: Some(code.to_string()),
            detail: message.into(),
        }
    }

    /// Classifies a socket error: nothing listening is `connection_refused`, a timeout is the
    /// hang class, anything else a lost connection.
    pub fn from_io(io: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        let class = match io.kind() {
            ConnectionRefused | NotFound | AddrNotAvailable => FailureClass::ConnectionRefused,
            TimedOut => FailureClass::Timeout,
            _ => FailureClass::ConnectionLost,
        };
        Self::new(class, io.to_string())
    }

    /// Classifies a tokio-postgres error from connect or query.
    pub fn from_pg(err: &tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            return Self::from_sqlstate(db.code().code(), db.message());
        }
        if err.is_closed() {
            return Self::new(FailureClass::ConnectionLost, "connection closed");
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return Self::from_io(io);
            }
            source = s.source();
        }
        let text = err.to_string();
        let class = if text.contains("timeout") {
            FailureClass::Timeout
        } else {
            FailureClass::ConnectionLost
        };
        Self::new(class, text)
    }
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.sqlstate {
            Some(code) => write!(f, "{} (SQLSTATE {code}): {}", self.class, self.detail),
            None => write!(f, "{}: {}", self.class, self.detail),
        }
    }
}

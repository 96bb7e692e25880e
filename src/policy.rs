//! Remediation by failure class: restart only when a restart can help. Defaults are what a
//! DBA would choose; a registry may override them per class (`policy:` in defaults or on a
//! target). A 57P03 answer (starting up, crash recovery) is never a reason to restart.

use crate::failure::FailureClass;
use std::collections::BTreeMap;

/// What to do once a failure of a class is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Archive, restart, alert (the core loop).
    Restart,
    /// Archive and alert with the diagnosis; never restart.
    Alert,
}

impl Action {
    pub fn label(self) -> &'static str {
        match self {
            Action::Restart => "restart",
            Action::Alert => "alert",
        }
    }

    pub fn from_label(s: &str) -> Option<Self> {
        match s {
            "restart" => Some(Action::Restart),
            "alert" => Some(Action::Alert),
            _ => None,
        }
    }
}

/// The default action for a class.
pub fn default_action(class: FailureClass) -> Action {
    use FailureClass::*;
    match class {
        ConnectionRefused | Timeout | ConnectionLost | ProcessExited => Action::Restart,
        Authentication | TooManyConnections | DiskFull | OutOfMemory | DatabaseMissing
        | ReadOnly | QueryError | UnexpectedResult | Recovering | ContainerMissing
        | InsecureAuth | WrongServer | TlsRefused | TlsUntrusted | TlsExpired | TlsNameMismatch
        | TlsHandshake | UnannouncedRestart | BackendCrash => Action::Alert,
    }
}

/// What the failure means and what a person should do, for the alert and the manifest.
pub fn diagnosis(class: FailureClass) -> &'static str {
    use FailureClass::*;
    match class {
        ConnectionRefused => "Nothing accepts connections on the address: the server is down.",
        Timeout => "The server did not answer within the probe timeout: it hangs or is overloaded.",
        ConnectionLost => "The connection dropped mid-probe: the server crashed or was shut down.",
        ProcessExited => "The postmaster process (or its container) is gone.",
        ContainerMissing => "The target's container does not exist: it was removed, or never created. A restart cannot bring back what is not there: recreate it (e.g. `docker compose up -d`) or fix the container name in the registry.",
        Authentication => "The server rejects the probe's credentials (28P01/28000). A restart cannot fix this: check the password, pg_hba.conf and the role, which the bundle holds.",
        TooManyConnections => "Every connection slot is taken (53300). A restart would cut off every client and the slots would fill again: find the leak or the pile-up in the bundle's sql-snapshot.json (pg_stat_activity) and raise max_connections or fix the pooler.",
        DiskFull => "The disk is full (53100). A restart cannot free space: free it (old WAL, logs, bloated tables) or grow the volume.",
        OutOfMemory => "The server is out of memory (53200). A restart only hides it: check work_mem, connection count and the host's memory.",
        DatabaseMissing => "The database named in the DSN does not exist (3D000): it was dropped or the DSN is wrong. A restart cannot bring it back.",
        ReadOnly => "The target should be a primary but answers as a standby or refuses writes: a failover or a promotion happened, or the cluster is in recovery. Check which node is primary.",
        QueryError => "The probe query fails with an SQL error: check the query and the objects it uses. A restart would not change the answer.",
        UnexpectedResult => "The probe query answers something other than `expect`: the data or the server's role changed. A restart would not change the answer.",
        Recovering => "The server is starting up or in crash recovery (57P03): waiting, never restarting for it.",
        InsecureAuth => "What answers on the target's port asked for the password in a form the probe will not send (cleartext or md5 without TLS, or a method require_auth does not list), so the probe sent nothing. Either pg_hba.conf asks for it (use scram-sha-256 there, or opt in with require_auth in the DSN) or something else holds the port (a local user squatting it while the server was down): check who listens. A restart cannot fix either.",
        WrongServer => "Another server answers on the target's address: its system_identifier is not the one learned for this target. The target's own server is not there (stopped, moved, or its address taken by another container or cluster). A restart of the target cannot fix this and none is made. If the move is intended, open a maintenance window (POST /targets/NAME/maintenance) until a probe passes, or change the target's DSN: the new identity is then learned.",
        TlsRefused => "The target's sslmode requires TLS and the server answered the SSLRequest with 'N' (no TLS): set ssl = on (with ssl_cert_file and ssl_key_file) in postgresql.conf, or check who holds the port; or lower sslmode in targets[].dsn if TLS is not wanted. A restart serves the same settings.",
        TlsUntrusted => "The server's certificate does not verify against the target's sslrootcert (signed by another CA, self-signed, or revoked by sslcrl): give sslrootcert the CA that signed the server's certificate, or install a certificate that CA signed; if neither changed, something else answers on the port. A restart serves the same certificate.",
        TlsExpired => "The server's certificate has expired (or is not valid yet): renew ssl_cert_file on the server and reload it (SELECT pg_reload_conf()). A restart serves the same certificate.",
        TlsNameMismatch => "The server's certificate does not name the host in the DSN (sslmode=verify-full): put that name or address in the certificate's subjectAltName, or connect by a name it holds (for a discovered container: discovery.docker.tls.server_name). A restart serves the same certificate.",
        UnannouncedRestart => "The server was restarted by something other than sentinel-remedy (a crash followed by a restart from another manager, a container restart policy, or a person) between two passing probes: pg_postmaster_start_time() moved. It is up again, so nothing is restarted; the bundle holds the server log around the restart.",
        BackendCrash => "A server process crashed and the postmaster ran crash recovery: every connection was dropped, and the server came back by itself. A restart would only drop every connection a second time, so none is made: find what crashed (the query in the alert, an extension, the memory limit).",
        TlsHandshake => "The TLS handshake failed: the server refused the client certificate (check sslcert/sslkey and the server's ssl_ca_file), or no common TLS version or cipher, or channel_binding=require cannot be met. The detail says which. A restart cannot fix it.",
    }
}

/// The action per class for one target: defaults, then the registry's overrides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    pub overrides: BTreeMap<String, Action>,
}

impl Policy {
    pub fn action(&self, class: FailureClass) -> Action {
        if matches!(
            class,
            FailureClass::Recovering
                | FailureClass::WrongServer
                | FailureClass::UnannouncedRestart
                | FailureClass::BackendCrash
        ) || class.is_refusal()
        {
            // Never a restart, whatever the registry says: 57P03 is a server recovering; a
            // restart cannot change what pg_hba.conf asks, who holds the port or the
            // certificate served; and restarting our own server cannot fix another one
            // answering on its address.
            return Action::Alert;
        }
        self.overrides
            .get(class.label())
            .copied()
            .unwrap_or_else(|| default_action(class))
    }

    /// The overrides of `over` on top of these.
    pub fn merged(&self, over: &Policy) -> Policy {
        let mut p = self.clone();
        p.overrides
            .extend(over.overrides.iter().map(|(k, v)| (k.clone(), *v)));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_only_where_they_help_and_overrides_apply() {
        let p = Policy::default();
        assert_eq!(p.action(FailureClass::ConnectionRefused), Action::Restart);
        assert_eq!(p.action(FailureClass::TooManyConnections), Action::Alert);
        assert_eq!(p.action(FailureClass::Authentication), Action::Alert);
        let mut o = Policy::default();
        o.overrides.insert("timeout".into(), Action::Alert);
        o.overrides.insert("recovering".into(), Action::Restart);
        let m = p.merged(&o);
        assert_eq!(m.action(FailureClass::Timeout), Action::Alert);
        assert_eq!(
            m.action(FailureClass::Recovering),
            Action::Alert,
            "57P03 is never restarted"
        );
        o.overrides.insert("insecure_auth".into(), Action::Restart);
        assert_eq!(
            p.merged(&o).action(FailureClass::InsecureAuth),
            Action::Alert,
            "a refused authentication is never restarted"
        );
    }
}

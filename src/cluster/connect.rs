//! Reaching etcd as `cluster:` says: the endpoints, TLS (`cluster.tls`: the CA, a client
//! certificate) and the login (`cluster.auth`), then one probe that exercises all three and
//! the role's rights under the prefix. A failure is explained by the key to fix: a wrong CA,
//! a refused client certificate or a wrong password would otherwise read as a gRPC status
//! three causes deep. Such a failure is a configuration problem: said once at ERROR, and
//! retried every few seconds only (each login costs etcd a bcrypt), until etcd accepts.
//!
//! The password goes to etcd only: no message here ever includes it.

use super::Cluster;
use crate::config::cluster::EtcdTls;
use crate::config::ClusterConfig;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp,
};
use slog::error;
use std::time::{Duration, Instant};

/// Longest a connection attempt (TCP, TLS) may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(1);
/// A refused login or handshake is tried again after this, not every tick.
const RETRY_REFUSED: Duration = Duration::from_secs(5);

/// Why etcd could not be used, explained for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    /// The `cluster.*` key to look at.
    pub key: &'static str,
    /// What happened.
    pub what: String,
    /// What to do.
    pub fix: &'static str,
    /// etcd was reached and refused us (TLS or login): the configuration must change.
    pub refused: bool,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.what, self.fix)
    }
}

/// The last refusal and when it was, so the next attempt waits.
#[derive(Default)]
pub(super) struct Refusals {
    last: Option<(Instant, ConnectError)>,
}

impl Cluster {
    /// A client that has passed the probe, or why there is none. A refusal less than
    /// [`RETRY_REFUSED`] old is answered again without asking etcd.
    pub(super) async fn connect(&self) -> Result<Client, String> {
        if let Some((at, e)) = &self.refusals.lock().unwrap_or_else(|e| e.into_inner()).last {
            if at.elapsed() < RETRY_REFUSED {
                return Err(e.to_string());
            }
        }
        let result = connect(&self.cfg).await;
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(client) => {
                r.last = None;
                Ok(client)
            }
            Err(e) => {
                if e.refused {
                    let new = r.last.as_ref().is_none_or(|(_, last)| *last != e);
                    if new {
                        error!(self.log, "etcd refused this daemon: no target is run and no restart made until it is let in";
                            "event" => "cluster_access_refused", "key" => e.key, "error" => &e.what, "fix" => e.fix,
                            "etcd" => self.cfg.etcd.join(","));
                    }
                    r.last = Some((Instant::now(), e.clone()));
                }
                Err(e.to_string())
            }
        }
    }
}

/// Connects and probes: a transaction that may read and write our member key but never
/// does (its condition cannot hold), so etcd checks the TLS session, the login and both
/// rights under the prefix, and changes nothing.
pub(super) async fn connect(cfg: &ClusterConfig) -> Result<Client, ConnectError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(CONNECT_LIMIT)
        .with_timeout(Duration::from_secs(2));
    if let Some(tls) = &cfg.tls {
        opts = opts.with_tls(tls_options(tls));
    }
    if let Some(a) = &cfg.auth {
        // A token etcd ended (its TTL, an etcd restart) is replaced by a new login at once.
        opts = opts
            .with_user(a.user.clone(), a.password.expose())
            .with_auto_token_refresh(true);
    }
    let explain = |e: etcd_client::Error| explain(cfg, &chain(&e));
    let mut client = Client::connect(&cfg.etcd, Some(opts))
        .await
        .map_err(explain)?;
    let key = super::keys::Keys::new(&cfg.prefix).member(&cfg.member);
    let probe = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Less, 0)])
        .and_then([TxnOp::put(key.clone(), "", None)])
        .or_else([TxnOp::get(key, Some(GetOptions::new().with_count_only()))]);
    client.txn(probe).await.map_err(explain)?;
    Ok(client)
}

fn tls_options(tls: &EtcdTls) -> TlsOptions {
    let mut o = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
    if let Some(c) = &tls.client {
        o = o.identity(Identity::from_pem(&c.cert_pem, c.key_pem.expose()));
    }
    if let Some(name) = &tls.server_name {
        o = o.domain_name(name.clone());
    }
    o
}

/// The error and every cause beneath it, as one line (etcd-client's own error does not
/// chain its causes: the gRPC status and the transport error are walked here).
fn chain(e: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let (mut text, mut next): (String, Option<&(dyn std::error::Error + 'static)>) = match e {
        etcd_client::Error::GRpcStatus(s) => (s.message().to_string(), s.source()),
        etcd_client::Error::TransportError(t) => (t.to_string(), t.source()),
        other => (other.to_string(), None),
    };
    while let Some(cause) = next {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        next = cause.source();
    }
    text
}

/// The key, the cause and the fix for an error whose whole text is `text`.
fn explain(cfg: &ClusterConfig, text: &str) -> ConnectError {
    let t = text.to_ascii_lowercase();
    let has = |s: &str| t.contains(s);
    let user = cfg.auth.as_ref().map(|a| a.user.as_str()).unwrap_or("");
    let refused = |key, what: String, fix| ConnectError {
        key,
        what,
        fix,
        refused: true,
    };
    if has("unknownissuer") || has("unknown issuer") || has("badsignature") {
        let ca = cfg.tls.as_ref().map(|t| t.ca_file.display().to_string());
        return refused("cluster.tls.ca_file", format!("etcd's certificate is not signed by the CA in {} ({text})", ca.unwrap_or_default()),
            "give the CA certificate that signed etcd's server certificate (the file etcd's --cert-file chains to)");
    }
    if has("not valid for name") || has("notvalidforname") {
        return refused("cluster.tls.server_name", format!("etcd's certificate does not name the host this daemon connects to ({text})"),
            "connect by a name the certificate lists (its subjectAltName), or set cluster.tls.server_name to one of them");
    }
    let no_cert = cfg.tls.as_ref().is_some_and(|t| t.client.is_none());
    let cert_refused = [
        "badcertificate",
        "bad certificate",
        "unknownca",
        "unknown ca",
        "decrypterror",
    ];
    if has("certificaterequired")
        || has("certificate required")
        || no_cert && cert_refused.iter().any(|s| has(s))
    {
        return refused("cluster.tls.cert_file", format!("etcd requires a client certificate and none was given ({text})"),
            "set cluster.tls.cert_file and key_file to a certificate signed by etcd's --trusted-ca-file CA");
    }
    if cert_refused.iter().any(|s| has(s)) {
        return refused("cluster.tls.cert_file", format!("etcd refused this daemon's client certificate ({text})"),
            "give a client certificate (and its key) signed by the CA etcd trusts (--trusted-ca-file), valid now and for client authentication");
    }
    if has("invalidcontenttype") || has("corrupt message") {
        return refused("cluster.etcd", format!("etcd does not answer TLS on this endpoint ({text})"),
            "use http:// endpoints and remove cluster.tls, or start etcd with --cert-file/--key-file");
    }
    if has("authentication failed") || has("invalid user id or password") {
        let from = cfg
            .auth
            .as_ref()
            .map(|a| a.password_from)
            .unwrap_or("cluster.auth");
        return refused(from, format!("etcd refused the login of user '{user}': wrong password or no such user"),
            "give the user's current password (etcdctl user passwd), or create the user (etcdctl user add)");
    }
    if has("authentication is not enabled") {
        return refused(
            "cluster.auth",
            "etcd's authentication is off, but cluster.auth gives a login".into(),
            "remove cluster.auth, or enable authentication in etcd (etcdctl auth enable)",
        );
    }
    if has("user name is empty") || has("invalid auth token") && cfg.auth.is_none() {
        return refused(
            "cluster.auth",
            "etcd requires a login and cluster.auth gives none".into(),
            "add cluster.auth with user and password_env or password_file",
        );
    }
    if has("permission denied") {
        return refused("cluster.auth.user", format!("user '{user}' may not read and write /{}/ in etcd", cfg.prefix),
            "grant its role readwrite on the prefix: etcdctl role grant-permission ROLE --prefix=true readwrite /PREFIX/");
    }
    ConnectError {
        key: "cluster.etcd",
        what: format!("cannot reach etcd: {text}"),
        fix: "check that etcd runs and listens on these endpoints, and this host's network to it",
        refused: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ClusterConfig {
        ClusterConfig {
            etcd: vec!["https://127.0.0.1:2379".into()],
            prefix: "p".into(),
            member: "m".into(),
            ttl: Duration::from_secs(5),
            handoffs_per_second: 2,
            stagger: Duration::from_millis(250),
            tls: None,
            auth: Some(crate::config::cluster::EtcdAuth {
                user: "u".into(),
                password: crate::config::Secret::new("s3cret"),
                password_from: "cluster.auth.password_env",
            }),
        }
    }

    #[test]
    fn each_refusal_names_the_key_to_fix_and_never_the_password() {
        for (text, key) in [
            (
                "invalid peer certificate: UnknownIssuer",
                "cluster.tls.ca_file",
            ),
            (
                "received fatal alert: CertificateRequired",
                "cluster.tls.cert_file",
            ),
            (
                "received fatal alert: BadCertificate",
                "cluster.tls.cert_file",
            ),
            (
                "etcdserver: authentication failed, invalid user ID or password",
                "cluster.auth.password_env",
            ),
            ("etcdserver: permission denied", "cluster.auth.user"),
            (
                "tcp connect error: Connection refused (os error 111)",
                "cluster.etcd",
            ),
        ] {
            let e = explain(&cfg(), text);
            assert_eq!(e.key, key, "{text}");
            assert_eq!(e.refused, key != "cluster.etcd", "{text}");
            assert!(!e.to_string().contains("s3cret"));
        }
    }
}

//! `cluster.tls` and `cluster.auth`: how the daemon proves itself to etcd and checks that it
//! talks to the real one. Every file is read and parsed at load (so `check-config` and a
//! reload report a missing, unreadable or mismatched one, exit 64), the client key only when
//! others cannot read it, and the password only from the daemon's environment or a file: it
//! is never written in the registry, never logged (a [`Secret`]).

use super::error::Problems;
use super::expand::VarSource;
use super::secret::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A certificate bundle bigger than this is not one.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// `cluster.tls` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcdTls {
    /// PEM file of the CA(s) that signed etcd's server certificates (etcd's
    /// `--trusted-ca-file` side of the chain); required for https endpoints.
    pub ca_file: Option<String>,
    /// PEM client certificate this daemon presents (etcd started with `--client-cert-auth`).
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file` (mode 0600, or 0640 owned by root).
    pub key_file: Option<String>,
    /// The name etcd's certificate is checked against, when it is not the endpoint's host.
    pub server_name: Option<String>,
}

/// `cluster.auth` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcdAuth {
    /// The etcd user (`etcdctl user add`); its role needs readwrite on `/{prefix}/`.
    pub user: Option<String>,
    /// The daemon's environment variable holding the password.
    pub password_env: Option<String>,
    /// An absolute path to a file holding the password (its last line break dropped).
    pub password_file: Option<String>,
}

/// Validated `cluster.tls`: the PEM text of each file, read once at load.
#[derive(Clone, PartialEq)]
pub struct EtcdTls {
    pub ca_file: PathBuf,
    pub ca_pem: String,
    pub client: Option<ClientIdentity>,
    pub server_name: Option<String>,
}

/// The client certificate and its key.
#[derive(Clone, PartialEq)]
pub struct ClientIdentity {
    pub cert_file: PathBuf,
    pub cert_pem: String,
    pub key_file: PathBuf,
    pub key_pem: Secret,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.client.as_ref().map(|c| &c.cert_file))
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Validated `cluster.auth`.
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdAuth {
    pub user: String,
    pub password: Secret,
    /// Where the password came from (`cluster.auth.password_env` or `..._file`), for messages.
    pub password_from: &'static str,
}

/// Reads and checks `cluster.tls`; None (with the problems pushed) when it cannot be used.
pub(crate) fn build_tls(raw: RawEtcdTls, problems: &mut Problems) -> Option<EtcdTls> {
    let before = problems.0.len();
    let ca_file = raw.ca_file.as_deref().map(str::trim).unwrap_or_default();
    let roots = if ca_file.is_empty() {
        problems.push(
            "cluster.tls.ca_file",
            "no CA file is given",
            "give the PEM file of the CA that signed etcd's server certificate (etcd's --trusted-ca-file is usually the same CA)",
        );
        None
    } else {
        read_certs("cluster.tls.ca_file", ca_file, "CA certificate", problems)
    };
    let client = identity(&raw, problems);
    if let Some(name) = &raw.server_name {
        if ServerName::try_from(name.as_str()).is_err() {
            problems.push(
                "cluster.tls.server_name",
                format!("'{name}' is not a host name or IP address"),
                "give the name in etcd's server certificate (or remove server_name to check the endpoint's host)",
            );
        }
    }
    let ((ca_pem, roots), client) = (roots?, client?);
    check_pair(&roots, client.as_ref(), problems);
    (problems.0.len() == before).then(|| EtcdTls {
        ca_file: PathBuf::from(ca_file),
        ca_pem,
        client: client.map(|(c, _)| c),
        server_name: raw.server_name,
    })
}

type Identity = (
    ClientIdentity,
    (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
);

/// The client certificate and key, both or neither; Some(None) when neither is given.
fn identity(raw: &RawEtcdTls, problems: &mut Problems) -> Option<Option<Identity>> {
    let (cert_file, key_file) = match (raw.cert_file.as_deref(), raw.key_file.as_deref()) {
        (None, None) => return Some(None),
        (Some(c), Some(k)) => (c.trim(), k.trim()),
        (Some(_), None) | (None, Some(_)) => {
            problems.push(
                "cluster.tls",
                "a client certificate needs its key, and a key its certificate",
                "give both cert_file and key_file (or neither, if etcd does not ask for client certificates)",
            );
            return None;
        }
    };
    let certs = read_certs(
        "cluster.tls.cert_file",
        cert_file,
        "client certificate",
        problems,
    );
    let key = read_key(key_file, problems);
    let ((cert_pem, certs), (key_pem, key)) = (certs?, key?);
    Some(Some((
        ClientIdentity {
            cert_file: PathBuf::from(cert_file),
            cert_pem,
            key_file: PathBuf::from(key_file),
            key_pem: Secret::new(key_pem),
        },
        (certs, key),
    )))
}

/// The PEM text and the certificates in it (at least one).
fn read_certs(
    at: &str,
    file: &str,
    what: &str,
    problems: &mut Problems,
) -> Option<(String, Vec<CertificateDer<'static>>)> {
    let pem = read_pem(at, file, problems)?;
    match CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => Some((pem, certs)),
        Ok(_) => {
            problems.push(
                at,
                format!("{file} holds no PEM certificate"),
                format!("give the {what} in PEM form (-----BEGIN CERTIFICATE-----)"),
            );
            None
        }
        Err(e) => {
            problems.push(
                at,
                format!("{file} is not PEM: {e}"),
                format!("give the {what} in PEM form (-----BEGIN CERTIFICATE-----)"),
            );
            None
        }
    }
}

fn read_key(file: &str, problems: &mut Problems) -> Option<(String, PrivateKeyDer<'static>)> {
    let at = "cluster.tls.key_file";
    if let Err(e) = super::tls::key_file_private(Path::new(file), at) {
        problems.push(
            at,
            e.reason,
            "chmod 600 the key file (the daemon's user must own it)",
        );
        return None;
    }
    let pem = read_pem(at, file, problems)?;
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(key) => Some((pem, key)),
        Err(e) => {
            problems.push(
                at,
                format!("{file} holds no usable PEM private key: {e}"),
                "give the client certificate's private key in PEM form (PKCS#8, PKCS#1 or SEC1)",
            );
            None
        }
    }
}

fn read_pem(at: &str, file: &str, problems: &mut Problems) -> Option<String> {
    let read = || -> std::io::Result<String> {
        let f = std::fs::File::open(file)?;
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        let mut s = String::new();
        f.take(MAX_PEM_FILE).read_to_string(&mut s)?;
        Ok(s)
    };
    match read() {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(
                at,
                format!("cannot read {file}: {e}"),
                "give the path of a readable PEM file (absolute, or relative to the daemon's working directory)",
            );
            None
        }
    }
}

/// The roots and the client key must make a rustls client, and the key must be the
/// certificate's: a mismatch would only show as etcd refusing every handshake.
fn check_pair(
    roots: &[CertificateDer<'static>],
    client: Option<&Identity>,
    problems: &mut Problems,
) {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        if let Err(e) = store.add(c.clone()) {
            problems.push(
                "cluster.tls.ca_file",
                format!("a certificate there is not a usable CA: {e}"),
                "give the CA certificate (not etcd's own server certificate)",
            );
            return;
        }
    }
    let Some((_, (certs, key))) = client else {
        return;
    };
    let built = rustls::ClientConfig::builder_with_provider(super::tls::provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(store))
        .and_then(|b| b.with_client_auth_cert(certs.clone(), key.clone_key()));
    if let Err(e) = built {
        problems.push(
            "cluster.tls.key_file",
            format!("the key cannot be used with cluster.tls.cert_file: {e}"),
            "give the private key that belongs to cert_file",
        );
    }
}

/// Reads `cluster.auth`'s password; None (with the problems pushed) when it cannot be used.
pub(crate) fn build_auth(
    raw: RawEtcdAuth,
    vars: &VarSource,
    problems: &mut Problems,
) -> Option<EtcdAuth> {
    let user = raw.user.as_deref().map(str::trim).unwrap_or_default();
    if user.is_empty() {
        problems.push(
            "cluster.auth.user",
            "no user is given",
            "give the etcd user the daemons log in as (etcdctl user add), e.g. user: sentinel",
        );
    }
    let (password, from) = match (&raw.password_env, &raw.password_file) {
        (Some(var), None) => (
            env_password(var, vars, problems),
            "cluster.auth.password_env",
        ),
        (None, Some(file)) => (file_password(file, problems), "cluster.auth.password_file"),
        _ => {
            problems.push(
                "cluster.auth",
                "etcd authentication needs exactly one of password_env and password_file",
                "give password_env: VAR (the daemon's environment) or password_file: /path (a file only the daemon reads); never the password itself",
            );
            (None, "cluster.auth")
        }
    };
    (!user.is_empty()).then_some(())?;
    Some(EtcdAuth {
        user: user.to_string(),
        password: Secret::new(password?),
        password_from: from,
    })
}

fn env_password(var: &str, vars: &VarSource, problems: &mut Problems) -> Option<String> {
    let pw = vars.get(var).filter(|v| !v.is_empty());
    if pw.is_none() {
        problems.push(
            "cluster.auth.password_env",
            format!("environment variable {var} is not set in the daemon's environment"),
            format!("set {var} for the daemon (its environment or .env), or name another variable"),
        );
    }
    pw
}

fn file_password(file: &str, problems: &mut Problems) -> Option<String> {
    let at = "cluster.auth.password_file";
    if !Path::new(file).is_absolute() {
        problems.push(
            at,
            format!("'{file}' is not an absolute path"),
            "give the absolute path of the password file, e.g. /run/secrets/etcd-password",
        );
        return None;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let read = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(file)
        .and_then(super::credentials::read_password);
    match read {
        Ok(pw) if !pw.is_empty() => Some(pw),
        Ok(_) => {
            problems.push(
                at,
                format!("{file} is empty"),
                "write the etcd password into the file",
            );
            None
        }
        Err(e) => {
            problems.push(
                at,
                format!("cannot read {file}: {e}"),
                "give a regular file of at most 4 KiB that the daemon can read",
            );
            None
        }
    }
}

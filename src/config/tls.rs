//! A target's TLS settings, with libpq's meaning: `sslmode`, `sslrootcert`, `sslcert`/`sslkey`,
//! `sslcrl`, `channel_binding` and friends, read from the DSN or else from libpq's environment
//! variables (`PGSSLMODE`, ...). They are taken out of the DSN before tokio-postgres parses the
//! rest (it knows only some of them, with fewer values). A setting this build cannot honour is
//! refused with the key and the reason, never ignored: a silently dropped `sslmode=verify-full`
//! would leave the password to whoever answers on the port.
//!
//! The rustls `ClientConfig` is built here once per target (certificate files read and parsed
//! at load, so `check-config` reports a missing or unreadable one), and shared by every
//! connection to the target: its session cache would resume TLS sessions where the server
//! allows it (PostgreSQL does not: see README, "TLS to PostgreSQL").
//!
//! A leaf below config: probe reads the result, this module reads nothing of the crate.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Without TLS first; with TLS when the server refuses that (pg_hba `hostssl` only).
    Allow,
    /// TLS when the server offers it (libpq's default), else without; not verified.
    Prefer,
    /// TLS or nothing; the certificate not verified (unless `sslrootcert` names a file: then
    /// as `verify-ca`, libpq's rule).
    Require,
    /// TLS, the certificate chain verified against `sslrootcert`; any host name.
    VerifyCa,
    /// TLS, the chain verified and the host name checked against the certificate.
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Option<Self> {
        Some(match v {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// libpq's `channel_binding`: SCRAM-SHA-256-PLUS over TLS (tls-server-end-point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding {
    Disable,
    /// Bind when the connection is TLS and the server offers SCRAM-SHA-256-PLUS (default).
    Prefer,
    /// Log in only through SCRAM-SHA-256-PLUS: anything else (trust, cert, password, SCRAM
    /// without binding, no TLS) is refused.
    Require,
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the webpki (Mozilla) roots compiled in.
    System,
}

/// A TLS setting that cannot be used: the key (and the variable it came from), why, the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct TlsError {
    pub key: String,
    pub reason: String,
}

/// The DSN keys this module takes out of the DSN (the ones tokio-postgres would reject or
/// read with another meaning), and the libpq variable each falls back to.
pub const KEYS: &[(&str, Option<&str>)] = &[
    ("sslmode", Some("PGSSLMODE")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslcrl", Some("PGSSLCRL")),
    ("sslcrldir", Some("PGSSLCRLDIR")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("sslnegotiation", Some("PGSSLNEGOTIATION")),
    ("sslcompression", Some("PGSSLCOMPRESSION")),
    ("sslsni", Some("PGSSLSNI")),
    ("sslcertmode", Some("PGSSLCERTMODE")),
    ("sslpassword", None),
    ("sslkeylogfile", None),
    ("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    ("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION")),
    ("gssencmode", Some("PGGSSENCMODE")),
    ("requiressl", None),
];

/// A target's TLS, parsed and built.
#[derive(Clone)]
pub struct Tls {
    pub mode: SslMode,
    pub channel_binding: ChannelBinding,
    /// Whether the server's certificate is verified (verify-ca, verify-full, or a root file
    /// with prefer/require): only then does a cleartext password count as protected.
    pub verified: bool,
    /// Built once per target; None with `sslmode=disable`.
    pub config: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mode", &self.mode)
            .field("channel_binding", &self.channel_binding)
            .field("verified", &self.verified)
            .finish()
    }
}

/// One setting as found: its value and where it came from (for messages).
struct Found {
    value: String,
    from: String,
}

impl Tls {
    /// The settings from the DSN's TLS keys (`dsn_keys`, as split out of the DSN; the last of
    /// a key wins, as in libpq), each else from its environment variable (`env`).
    pub fn parse(
        dsn_keys: &[(String, String)],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, TlsError> {
        let get = |key: &str| -> Option<Found> {
            if let Some((_, v)) = dsn_keys.iter().rev().find(|(k, _)| k == key) {
                return Some(Found {
                    value: v.clone(),
                    from: key.to_string(),
                });
            }
            let var = KEYS.iter().find(|(k, _)| *k == key).and_then(|(_, v)| *v)?;
            env(var).filter(|v| !v.is_empty()).map(|value| Found {
                value,
                from: format!("{key} (from {var})"),
            })
        };
        refuse_unsupported(&get)?;
        let root = get("sslrootcert").map(|f| {
            if f.value == "system" {
                RootCert::System
            } else {
                RootCert::File(PathBuf::from(f.value))
            }
        });
        let mode = match get("sslmode") {
            None if root == Some(RootCert::System) => SslMode::VerifyFull,
            None => SslMode::Prefer,
            Some(f) => SslMode::parse(&f.value).ok_or_else(|| TlsError {
                key: f.from.clone(),
                reason: format!("'{}' is not an sslmode; use disable, allow, prefer, require, verify-ca or verify-full", f.value),
            })?,
        };
        if root == Some(RootCert::System) && mode != SslMode::VerifyFull {
            return Err(TlsError {
                key: "sslmode".into(),
                reason: format!("sslmode={} with sslrootcert=system: the system roots vouch for any name they signed, so only verify-full means anything (libpq 16 refuses it too); use sslmode=verify-full", mode.name()),
            });
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root.is_none() {
            return Err(TlsError {
                key: "sslrootcert".into(),
                reason: format!("sslmode={} verifies the server's certificate, so it needs the roots to verify it with: set sslrootcert to the CA's certificate file, or to system for the public roots (the daemon reads no ~/.postgresql/root.crt)", mode.name()),
            });
        }
        let channel_binding = channel_binding(&get)?;
        if channel_binding == ChannelBinding::Require && mode <= SslMode::Allow {
            return Err(TlsError {
                key: "channel_binding".into(),
                reason: format!("channel_binding=require binds the login to the TLS channel, and sslmode={} may connect without TLS; use sslmode=require or stricter", mode.name()),
            });
        }
        // A root file makes prefer and require verify the chain, as libpq does.
        let verified = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull)
            || (matches!(mode, SslMode::Prefer | SslMode::Require)
                && matches!(root, Some(RootCert::File(_))));
        let config = if mode == SslMode::Disable {
            None
        } else {
            Some(Arc::new(build(mode, root.as_ref(), &get)?))
        };
        Ok(Self {
            mode,
            channel_binding,
            verified,
            config,
        })
    }

    /// No TLS at all (`sslmode=disable`).
    pub fn disabled() -> Self {
        Self {
            mode: SslMode::Disable,
            channel_binding: ChannelBinding::Prefer,
            verified: false,
            config: None,
        }
    }
}

/// `channel_binding`, default `prefer`.
fn channel_binding(get: &dyn Fn(&str) -> Option<Found>) -> Result<ChannelBinding, TlsError> {
    let Some(f) = get("channel_binding") else {
        return Ok(ChannelBinding::Prefer);
    };
    match f.value.as_str() {
        "disable" => Ok(ChannelBinding::Disable),
        "prefer" => Ok(ChannelBinding::Prefer),
        "require" => Ok(ChannelBinding::Require),
        v => Err(TlsError {
            reason: format!("'{v}' is not a channel_binding value; use disable, prefer or require"),
            key: f.from,
        }),
    }
}

/// Settings with a value this build cannot honour, each refused with its reason.
fn refuse_unsupported(get: &dyn Fn(&str) -> Option<Found>) -> Result<(), TlsError> {
    let refuse = |f: Found, reason: &str| -> Result<(), TlsError> {
        Err(TlsError {
            key: f.from,
            reason: format!("'{}': {reason}", f.value),
        })
    };
    let checks: &[(&str, &[&str], &str)] = &[
        ("sslnegotiation", &["postgres"], "direct TLS negotiation (PostgreSQL 17) is not supported; the probe sends SSLRequest first (sslnegotiation=postgres, the default)"),
        ("sslcompression", &["0"], "TLS compression is not supported (rustls has none, and servers refuse it since PostgreSQL 14); remove it or set 0"),
        ("sslsni", &["0", "1"], "use 1 (send the host name in SNI, the default) or 0"),
        ("sslcertmode", &["allow", "disable"], "only allow (send the client certificate when asked, the default) and disable are supported; sslcertmode=require is not"),
        ("sslpassword", &[""], "encrypted client keys are not supported: decrypt the key file (openssl pkey -in key -out key.plain) and keep it mode 0600"),
        ("sslkeylogfile", &[""], "writing TLS secrets to a file is not supported in a daemon"),
        ("ssl_min_protocol_version", &["TLSv1.2", "TLSv1.3"], "rustls speaks TLSv1.2 and TLSv1.3 only; use TLSv1.2 (the default) or TLSv1.3"),
        ("ssl_max_protocol_version", &["TLSv1.2", "TLSv1.3"], "use TLSv1.2 or TLSv1.3 (or remove it)"),
        ("gssencmode", &["disable", "prefer"], "GSSAPI encryption is not supported (the probe speaks no Kerberos); use disable or prefer (which then means no GSSAPI), and TLS for encryption"),
        ("requiressl", &[], "the deprecated requiressl is not supported; use sslmode=require"),
        ("sslcrldir", &[], "a CRL directory is not supported; name one CRL file (PEM, may hold several CRLs) with sslcrl"),
    ];
    for (key, ok, reason) in checks {
        if let Some(f) = get(key) {
            if !ok.contains(&f.value.as_str()) {
                return refuse(f, reason);
            }
        }
    }
    if let (Some(min), Some(max)) = (
        get("ssl_min_protocol_version"),
        get("ssl_max_protocol_version"),
    ) {
        if min.value == "TLSv1.3" && max.value == "TLSv1.2" {
            return refuse(max, "below ssl_min_protocol_version=TLSv1.3");
        }
    }
    Ok(())
}

/// The one provider: aws-lc-rs, already compiled for the AWS SDK (ring is too, for other
/// crates; naming one here keeps the choice explicit whatever the process default is).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The rustls client configuration for `mode`, roots, client certificate, CRL and versions.
fn build(
    mode: SslMode,
    root: Option<&RootCert>,
    get: &dyn Fn(&str) -> Option<Found>,
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match (
        get("ssl_min_protocol_version").map(|f| f.value),
        get("ssl_max_protocol_version").map(|f| f.value),
    ) {
        (Some(min), _) if min == "TLSv1.3" => &[&rustls::version::TLS13],
        (_, Some(max)) if max == "TLSv1.2" => &[&rustls::version::TLS12],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let roots = match root {
        None => None,
        Some(RootCert::System) => Some(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }),
        Some(RootCert::File(p)) => Some(read_roots(p)?),
    };
    let crls = match get("sslcrl") {
        Some(f) => read_crls(Path::new(&f.value), &f.from)?,
        None => Vec::new(),
    };
    let verifier = PgVerifier::new(roots, crls, mode == SslMode::VerifyFull, provider.clone())?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| TlsError {
            key: "ssl_min_protocol_version".into(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match (get("sslcert"), get("sslkey")) {
        (None, None) => builder.with_no_client_auth(),
        (Some(c), Some(k)) => {
            let certs = read_certs(Path::new(&c.value), &c.from)?;
            let key = read_key(Path::new(&k.value), &k.from)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError {
                    key: k.from,
                    reason: format!("the key does not fit the certificate {}: {e}", c.value),
                })?
        }
        (Some(c), None) => {
            return Err(TlsError {
                key: c.from,
                reason: "a client certificate needs its key: set sslkey too (the daemon reads no ~/.postgresql/postgresql.key)".into(),
            })
        }
        (None, Some(k)) => {
            return Err(TlsError {
                key: k.from,
                reason: "a client key needs its certificate: set sslcert too".into(),
            })
        }
    };
    config.enable_sni = get("sslsni").is_none_or(|f| f.value == "1");
    Ok(config)
}

fn unreadable(key: &str, path: &Path, what: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError {
        key: key.into(),
        reason: format!("cannot read {what} from {}: {e}", path.display()),
    }
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in read_certs(path, "sslrootcert")? {
        store.add(c).map_err(|e| TlsError {
            key: "sslrootcert".into(),
            reason: format!(
                "{}: a certificate there is not a usable root: {e}",
                path.display()
            ),
        })?;
    }
    Ok(store)
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unreadable(key, path, "PEM certificates", e))?;
    if certs.is_empty() {
        return Err(unreadable(key, path, "PEM certificates", "none found"));
    }
    Ok(certs)
}

fn read_crls(
    path: &Path,
    key: &str,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| unreadable(key, path, "PEM CRLs", e))?;
    if crls.is_empty() {
        return Err(unreadable(key, path, "PEM CRLs", "none found"));
    }
    Ok(crls)
}

/// The client key, refused when others may read it (libpq's rule: 0600 or less, or 0640 and
/// owned by root).
fn read_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    key_file_private(path, key)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| unreadable(key, path, "a PEM private key", e))
}

/// Refuses a private key file others may read (libpq's rule, kept for every client key the
/// daemon reads: 0600 or less, or 0640 and owned by root).
pub(crate) fn key_file_private(path: &Path, key: &str) -> Result<(), TlsError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| unreadable(key, path, "the client key", e))?;
    let mode = meta.mode() & 0o777;
    let root_owned_group = meta.uid() == 0 && mode & 0o037 == 0;
    if mode & 0o077 != 0 && !root_owned_group {
        return Err(TlsError {
            key: key.into(),
            reason: format!("{} has group or world access (mode {mode:o}); chmod 600 it (or 640 owned by root), as libpq requires", path.display()),
        });
    }
    Ok(())
}

/// libpq's verification per mode: none (prefer/require without roots: any certificate, but
/// the handshake signature still checked against it), the chain only (verify-ca), or the
/// chain and the host name (verify-full). CRLs apply wherever the chain is checked.
#[derive(Debug)]
struct PgVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl PgVerifier {
    fn new(
        roots: Option<RootCertStore>,
        crls: Vec<CertificateRevocationListDer<'static>>,
        check_name: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let chain = match roots {
            None if !crls.is_empty() => {
                return Err(TlsError {
                    key: "sslcrl".into(),
                    reason: "a CRL is checked only when the certificate is verified: set sslrootcert (and sslmode=verify-ca or verify-full)".into(),
                })
            }
            None => None,
            Some(roots) => Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .with_crls(crls)
                    .build()
                    .map_err(|e| TlsError {
                        key: "sslrootcert".into(),
                        reason: format!("the roots or CRLs cannot be used: {e}"),
                    })?,
            ),
        };
        Ok(Self {
            chain,
            check_name,
            provider,
        })
    }
}

impl ServerCertVerifier for PgVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            // webpki checks the name last: the chain (and revocation) passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(keys: &[(&str, &str)], env: &[(&str, &str)]) -> Result<Tls, TlsError> {
        let keys: Vec<(String, String)> = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Tls::parse(&keys, &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn libpq_defaults_and_the_dsn_over_the_environment() {
        let t = parse(&[], &[]).unwrap();
        assert_eq!(t.mode, SslMode::Prefer, "libpq's default");
        assert!(!t.verified && t.config.is_some());
        let t = parse(&[], &[("PGSSLMODE", "disable")]).unwrap();
        assert_eq!(t.mode, SslMode::Disable);
        let t = parse(&[("sslmode", "require")], &[("PGSSLMODE", "disable")]).unwrap();
        assert_eq!(t.mode, SslMode::Require);
        let t = parse(&[("sslrootcert", "system")], &[]).unwrap();
        assert_eq!(t.mode, SslMode::VerifyFull, "system implies verify-full");
        assert!(t.verified);
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_with_the_key_and_the_reason() {
        for (keys, env, key, says) in [
            (
                vec![("sslmode", "verify-full")],
                vec![],
                "sslrootcert",
                "needs the roots",
            ),
            (
                vec![("sslmode", "required")],
                vec![],
                "sslmode",
                "not an sslmode",
            ),
            (
                vec![],
                vec![("PGSSLMODE", "bogus")],
                "sslmode (from PGSSLMODE)",
                "not an sslmode",
            ),
            (
                vec![("sslmode", "require"), ("sslrootcert", "system")],
                vec![],
                "sslmode",
                "verify-full",
            ),
            (
                vec![("sslcompression", "1")],
                vec![],
                "sslcompression",
                "not supported",
            ),
            (
                vec![("gssencmode", "require")],
                vec![],
                "gssencmode",
                "GSSAPI",
            ),
            (
                vec![("sslnegotiation", "direct")],
                vec![],
                "sslnegotiation",
                "direct",
            ),
            (
                vec![("sslcertmode", "require")],
                vec![],
                "sslcertmode",
                "require is not",
            ),
            (
                vec![("channel_binding", "require"), ("sslmode", "disable")],
                vec![],
                "channel_binding",
                "without TLS",
            ),
            (
                vec![
                    ("sslrootcert", "/nonexistent/ca.crt"),
                    ("sslmode", "verify-ca"),
                ],
                vec![],
                "sslrootcert",
                "/nonexistent/ca.crt",
            ),
            (
                vec![("sslcert", "/nonexistent/c.crt")],
                vec![],
                "sslcert",
                "needs its key",
            ),
        ] {
            let e = parse(&keys, &env)
                .err()
                .unwrap_or_else(|| panic!("{keys:?} {env:?} accepted"));
            assert_eq!(e.key, key, "{e}");
            assert!(e.reason.contains(says), "{e}");
        }
    }
}

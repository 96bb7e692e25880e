//! Values that hold secrets and print redacted: webhook URLs, tokens and connection strings.

use super::tls::{Tls, TlsError};
use crate::require_auth::{RequireAuth, RequireAuthError};
use std::fmt;
use std::str::FromStr;

/// A secret string: compares and clones like a string, prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("***")
    }
}

/// A parsed PostgreSQL connection string. Debug and Display show it with the password redacted.
#[derive(Clone)]
pub struct Dsn {
    raw: Secret,
    parsed: tokio_postgres::Config,
    /// `require_auth` (which tokio-postgres does not know): what the probe may answer.
    require: RequireAuth,
    /// `sslmode`, `sslrootcert`, ... (libpq's meaning), built once for every connection.
    tls: Tls,
}

/// Why a DSN cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DsnError {
    #[error("{0}")]
    Malformed(#[from] tokio_postgres::Error),
    #[error("{0}")]
    RequireAuth(#[from] RequireAuthError),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

impl Dsn {
    /// Parses a DSN; `require_auth` and the TLS keys fall back to libpq's environment
    /// variables (`PGREQUIREAUTH`, `PGSSLMODE`, ...) of the daemon's process.
    pub fn parse(raw: &str) -> Result<Self, DsnError> {
        Self::parse_with_env(raw, &|k| std::env::var(k).ok())
    }

    /// As [`Dsn::parse`], with the variables from `env`.
    pub fn parse_with_env(
        raw: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, DsnError> {
        let (rest, require) = crate::require_auth::split_dsn(raw);
        let (rest, tls_keys) = crate::require_auth::split_dsn_keys(&rest, &|k| {
            super::tls::KEYS.iter().any(|(key, _)| *key == k)
        });
        let parsed = tokio_postgres::Config::from_str(&rest)?;
        let require = match require.or_else(|| env("PGREQUIREAUTH").filter(|v| !v.is_empty())) {
            Some(r) => RequireAuth::parse(&r)?,
            None => RequireAuth::scram_or_trust(),
        };
        let tls = Tls::parse(&tls_keys, env)?;
        Ok(Self {
            raw: Secret::new(raw),
            parsed,
            require,
            tls,
        })
    }
    /// The target's TLS settings and client configuration.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }
    /// The authentication requests a probe of this DSN answers.
    pub fn require_auth(&self) -> &RequireAuth {
        &self.require
    }
    /// The DSN of a discovered target: SCRAM only, whatever its `require_auth` said.
    pub fn discovered(mut self) -> Self {
        self.require = RequireAuth::discovered();
        self
    }
    /// The connection settings for tokio-postgres.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.parsed
    }
    /// `host:port/dbname` for logs and alerts.
    pub fn endpoint(&self) -> String {
        crate::redact::endpoint(&self.parsed)
    }
}

impl PartialEq for Dsn {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&crate::redact::redact_dsn(self.raw.expose()))
    }
}

impl fmt::Display for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&crate::redact::redact_dsn(self.raw.expose()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require_auth::AuthRequest;

    #[test]
    fn require_auth_is_read_from_the_dsn_and_a_discovered_target_cannot_loosen_it() {
        let d = Dsn::parse("postgres://u:p@127.0.0.1:5/db?require_auth=password").unwrap();
        assert!(d
            .require_auth()
            .check(AuthRequest::Cleartext, false)
            .is_ok());
        assert_eq!(d.config().get_dbname(), Some("db"), "the rest still parses");
        let d = d.discovered();
        assert!(d
            .require_auth()
            .check(AuthRequest::Cleartext, false)
            .is_err());
        assert!(d.require_auth().check(AuthRequest::Sasl, false).is_ok());
        let d = Dsn::parse("host=127.0.0.1 dbname=db").unwrap();
        assert!(
            d.require_auth().check(AuthRequest::Md5, false).is_err(),
            "the default"
        );
    }

    #[test]
    fn an_unusable_require_auth_is_a_problem_naming_the_dsn_key_and_the_method() {
        let text = "notify: { console: true }\ntargets:\n  - name: db\n    dsn: \"postgres://u:s3cret@127.0.0.1:5/db?require_auth=gss\"\n";
        let loaded = crate::config::load_str(
            text,
            crate::config::Source::Generated("test".into()),
            &crate::config::VarSource::fixed(Default::default()),
        );
        let Err(e) = loaded else {
            panic!("require_auth=gss was accepted")
        };
        let e = e.to_string();
        assert!(e.contains("targets[0].dsn"), "{e}");
        assert!(e.contains("'gss'") && e.contains("not supported"), "{e}");
        assert!(!e.contains("s3cret"), "the password is redacted: {e}");
    }
}

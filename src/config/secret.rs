//! Values that hold secrets and print redacted: webhook URLs, tokens and connection strings.

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
}

impl Dsn {
    pub fn parse(raw: &str) -> Result<Self, tokio_postgres::Error> {
        let parsed = tokio_postgres::Config::from_str(raw)?;
        Ok(Self {
            raw: Secret::new(raw),
            parsed,
        })
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

//! Configuration errors: every problem names its key path and the fix, and all are reported
//! together. A message may quote the registry, so it is shown with passwords masked (a DSN
//! written where a mapping was expected is quoted whole by the YAML parser).

use std::fmt;

/// One thing wrong with the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `targets[2].probe.interval`, or an environment variable name.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl Problem {
    pub fn new(
        path: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// Why a registry could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the registry: {source} (check the path given by --config or SENTINEL_CONFIG; to write one, copy targets.yaml.example, which shows every key, and keep what you need; to try the daemon first: sentinel-remedy demo)")]
    Unreadable {
        file: String,
        source: std::io::Error,
    },
    /// The file could be written by someone less trusted than the daemon (or is not a file).
    #[error("{file}: refused: {why} (fix: {fix})")]
    Unsafe {
        file: String,
        why: String,
        fix: String,
    },
    /// Neither a registry file nor the sidecar variables were given.
    #[error("no registry: pass --config FILE (or set SENTINEL_CONFIG), or set DB_HOST and the other sidecar variables (see .env.template)")]
    NoRegistry,
    /// The content is wrong; every problem found is listed.
    #[error("{}", render(.file, .problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

fn render(file: &str, problems: &[Problem]) -> String {
    let mut s = format!(
        "{file}: {} problem{} in the registry:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str(&format!(
            "\n  {file}: {}: {} (fix: {})",
            p.path,
            crate::redact::redact_text(&p.message),
            p.fix
        ));
    }
    s
}

impl ConfigError {
    /// The problems, if the content was at fault.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// Collects problems while validating.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(Problem::new(path, message, fix));
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let message = crate::redact::redact_text(&self.message);
        write!(f, "{}: {message} (fix: {})", self.path, self.fix)
    }
}

//! `${VAR}` expansion in registry strings, from the process environment and a `.env` file.
//!
//! Expansion runs on parsed YAML string values (never on the raw text), so a password holding
//! `:` or `#` cannot change the document's structure.

use std::collections::HashMap;
use std::path::Path;

/// Where `${VAR}` values come from: the process environment first, then `.env`.
#[derive(Debug, Clone, Default)]
pub struct VarSource {
    dotenv: HashMap<String, String>,
    overrides: Option<HashMap<String, String>>,
}

impl VarSource {
    /// The process environment plus `.env` in `dir`, if present (lines that do not parse are
    /// skipped). A `.env` that someone other than the daemon's user or root could write is
    /// refused: it would choose the heal command the daemon runs.
    pub fn from_env_and_dotenv(dir: &Path) -> Result<Self, super::ConfigError> {
        let mut dotenv = HashMap::new();
        let path = dir.join(".env");
        let text = super::trust::read_trusted(&path).map_err(|e| match e {
            super::ConfigError::Unreadable { file, source } => super::ConfigError::Unsafe {
                file,
                why: format!("it cannot be read: {source}"),
                fix: "make it readable by the daemon's user, or remove it".into(),
            },
            e => e,
        })?;
        if let Some(text) = text {
            for (k, v) in dotenvy::from_read_iter(text.as_bytes()).flatten() {
                dotenv.insert(k, v);
            }
        }
        Ok(Self {
            dotenv,
            overrides: None,
        })
    }

    /// A fixed set of variables (tests, and the demo's generated registry).
    pub fn fixed(vars: HashMap<String, String>) -> Self {
        Self {
            dotenv: HashMap::new(),
            overrides: Some(vars),
        }
    }

    /// Looks a variable up: environment first, `.env` second.
    pub fn get(&self, name: &str) -> Option<String> {
        if let Some(o) = &self.overrides {
            return o.get(name).cloned();
        }
        std::env::var(name)
            .ok()
            .or_else(|| self.dotenv.get(name).cloned())
    }

    /// Every variable visible, `.env` underneath the environment (for env-only mode).
    pub fn all(&self) -> HashMap<String, String> {
        if let Some(o) = &self.overrides {
            return o.clone();
        }
        let mut all = self.dotenv.clone();
        all.extend(std::env::vars());
        all
    }
}

/// Expands `${NAME}` in `text`; `$$` is a literal `$`. Returns the names that were not set.
pub fn expand(text: &str, vars: &VarSource) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            match body.find('}') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(&v),
                        None => missing.push(name.to_string()),
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> VarSource {
        VarSource::fixed([("PW".to_string(), "s3:cr#t".to_string())].into())
    }

    #[test]
    fn expands_and_escapes() {
        assert_eq!(expand("a ${PW} b", &vars()).unwrap(), "a s3:cr#t b");
        assert_eq!(
            expand("cost $$5 and $x", &vars()).unwrap(),
            "cost $5 and $x"
        );
    }

    #[test]
    fn names_every_missing_variable() {
        assert_eq!(
            expand("${A}${PW}${B}", &vars()).unwrap_err(),
            vec!["A", "B"]
        );
    }
}

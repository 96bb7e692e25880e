//! `discovery.docker.credentials` and `secrets_dir`: the logins discovered targets use.
//!
//! Who wrote it decides what it may do: a container's labels are written by an image author
//! or by whoever starts the container, so a label may only *pick* one of the credentials the
//! operator defined here (`{ns}.credentials=<name>`), never name a variable, a file or a user
//! of its own. Passwords are read once, at load, from the daemon's environment or from a file
//! beneath `secrets_dir` opened without following any link.

use super::error::Problems;
use super::expand::VarSource;
use super::secret::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The credential used when no `{ns}.credentials` label picks one.
pub const DEFAULT_CREDENTIAL: &str = "default";

/// A password file bigger than this is not a password file.
const MAX_PASSWORD_FILE: u64 = 4096;

/// `discovery.docker.credentials.<name>`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// The PostgreSQL user the daemon logs in as.
    pub user: Option<String>,
    /// The daemon's environment variable holding the password.
    pub password_env: Option<String>,
    /// A file beneath `discovery.docker.secrets_dir` holding the password (its last line
    /// break dropped).
    pub password_file: Option<String>,
    /// Container names (or globs such as `orders-*`) that may pick this credential; absent:
    /// every discovered container.
    pub containers: Option<Vec<String>>,
}

/// One login the operator lends to discovered containers.
#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    pub user: String,
    pub password: Secret,
    /// None: any container may pick it; else only containers whose name matches one.
    pub containers: Option<Vec<glob::Pattern>>,
}

impl Credential {
    /// Whether the container of this name may use the credential.
    pub fn allows(&self, container: &str) -> bool {
        self.containers
            .as_ref()
            .is_none_or(|c| c.iter().any(|p| p.matches(container)))
    }
}

/// The credentials by name; every problem is pushed, and a bad credential is left out.
pub(crate) fn build_credentials(
    raw: BTreeMap<String, RawCredential>,
    secrets_dir: Option<&Path>,
    vars: &VarSource,
    problems: &mut Problems,
) -> BTreeMap<String, Credential> {
    let mut out = BTreeMap::new();
    for (name, c) in raw {
        let at = format!("discovery.docker.credentials.{name}");
        if !is_name(&name) {
            problems.push(
                &at,
                format!("'{name}' is not a credential name"),
                "use letters, digits, '-' or '_' (labels pick it by this name)",
            );
            continue;
        }
        if let Some(cred) = credential(&c, &at, secrets_dir, vars, problems) {
            out.insert(name, cred);
        }
    }
    out
}

/// A credential name: what a label may write to pick it.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
}

fn credential(
    c: &RawCredential,
    at: &str,
    secrets_dir: Option<&Path>,
    vars: &VarSource,
    problems: &mut Problems,
) -> Option<Credential> {
    let user = c.user.as_deref().map(str::trim).unwrap_or_default();
    if user.is_empty() {
        problems.push(
            format!("{at}.user"),
            "no user is given",
            "give the PostgreSQL user the daemon logs in as, e.g. user: monitor",
        );
    }
    let password = match (&c.password_env, &c.password_file) {
        (Some(var), None) => match vars.get(var).filter(|v| !v.is_empty()) {
            Some(pw) => Some(pw),
            None => {
                problems.push(
                    format!("{at}.password_env"),
                    format!("environment variable {var} is not set in the daemon's environment"),
                    format!("set {var} for the daemon (its environment or .env), or name another variable"),
                );
                None
            }
        },
        (None, Some(file)) => file_password(file, at, secrets_dir, problems),
        _ => {
            problems.push(
                at,
                "a credential needs exactly one of password_env and password_file",
                "give password_env: VAR (the daemon's environment) or password_file: NAME (beneath discovery.docker.secrets_dir)",
            );
            None
        }
    };
    let containers = c.containers.as_ref().map(|list| {
        list.iter()
            .filter_map(|g| match glob::Pattern::new(g) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.push(
                        format!("{at}.containers"),
                        format!("'{g}' is not a name or glob: {e}"),
                        "give container names or globs such as orders-*",
                    );
                    None
                }
            })
            .collect()
    });
    (!user.is_empty()).then_some(())?;
    Some(Credential {
        user: user.to_string(),
        password: Secret::new(password?),
        containers,
    })
}

/// The password in `file` beneath the secrets directory.
fn file_password(
    file: &str,
    at: &str,
    secrets_dir: Option<&Path>,
    problems: &mut Problems,
) -> Option<String> {
    let Some(dir) = secrets_dir else {
        problems.push(
            format!("{at}.password_file"),
            "password_file needs discovery.docker.secrets_dir",
            "set discovery.docker.secrets_dir to the directory holding the password files, e.g. /run/secrets",
        );
        return None;
    };
    match read_beneath(dir, Path::new(file)) {
        Ok(pw) if !pw.is_empty() => Some(pw),
        Ok(_) => {
            problems.push(
                format!("{at}.password_file"),
                format!("{file} beneath {} is empty", dir.display()),
                "write the password into the file",
            );
            None
        }
        Err(e) => {
            problems.push(
                format!("{at}.password_file"),
                format!("cannot read {file} beneath {}: {e}", dir.display()),
                "give a regular file (no symlink, no '..') inside secrets_dir that the daemon can read, at most 4 KiB",
            );
            None
        }
    }
}

/// Reads a small regular file beneath `dir`, no link followed on the way (openat2).
fn read_beneath(dir: &Path, rel: &Path) -> std::io::Result<String> {
    if rel.is_absolute() {
        return Err(std::io::Error::other(
            "an absolute path (give a name relative to secrets_dir)",
        ));
    }
    let root = std::fs::File::open(dir)?;
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW;
    let file =
        crate::fsutil::open_beneath(&root, rel, flags).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other("a symlink on the way"),
            Some(libc::EXDEV) => std::io::Error::other("it leads out of secrets_dir"),
            _ => e,
        })?;
    read_password(file)
}

/// A password file's content: a regular file of at most 4 KiB, its last line break dropped.
pub(crate) fn read_password(file: std::fs::File) -> std::io::Result<String> {
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_PASSWORD_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_PASSWORD_FILE} bytes"
        )));
    }
    let mut s = String::new();
    file.take(MAX_PASSWORD_FILE).read_to_string(&mut s)?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// `secrets_dir`, which must be an absolute directory.
pub(crate) fn secrets_dir(raw: Option<&str>, problems: &mut Problems) -> Option<PathBuf> {
    let d = raw.map(str::trim).filter(|d| !d.is_empty())?;
    let p = PathBuf::from(d);
    if !p.is_absolute() || !p.is_dir() {
        problems.push(
            "discovery.docker.secrets_dir",
            format!("'{d}' is not an absolute path to a directory"),
            "give the directory holding the password files, e.g. /run/secrets",
        );
        return None;
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn raw(file: &str) -> BTreeMap<String, RawCredential> {
        BTreeMap::from([(
            "app".to_string(),
            RawCredential {
                user: Some("app".into()),
                password_file: Some(file.into()),
                ..Default::default()
            },
        )])
    }

    #[test]
    fn password_files_are_read_beneath_the_secrets_dir_only() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app"), "s3cret\n").unwrap();
        std::fs::write(outside.path().join("root-only"), "host secret").unwrap();
        std::os::unix::fs::symlink(outside.path().join("root-only"), dir.path().join("link"))
            .unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; 5000]).unwrap();
        let vars = VarSource::fixed(HashMap::new());
        let mut p = Problems::default();
        let c = build_credentials(raw("app"), Some(dir.path()), &vars, &mut p);
        assert_eq!(c["app"].password.expose(), "s3cret");
        assert!(p.0.is_empty(), "{:?}", p.0);
        let escape = format!(
            "../{}/root-only",
            outside.path().file_name().unwrap().to_string_lossy()
        );
        let abs = outside.path().join("root-only").display().to_string();
        for bad in ["link", escape.as_str(), abs.as_str(), "big", "missing"] {
            let mut p = Problems::default();
            let c = build_credentials(raw(bad), Some(dir.path()), &vars, &mut p);
            assert!(c.is_empty(), "{bad}");
            assert_eq!(p.0.len(), 1, "{bad}: {:?}", p.0);
            assert_eq!(
                p.0[0].path,
                "discovery.docker.credentials.app.password_file"
            );
            assert!(!p.0[0].message.contains("host secret"));
        }
    }

    #[test]
    fn a_credential_may_be_kept_to_some_containers() {
        let vars = VarSource::fixed(HashMap::from([("PW".to_string(), "x".to_string())]));
        let r = BTreeMap::from([(
            "orders".to_string(),
            RawCredential {
                user: Some("orders".into()),
                password_env: Some("PW".into()),
                containers: Some(vec!["orders-*".into(), "billing".into()]),
                ..Default::default()
            },
        )]);
        let mut p = Problems::default();
        let c = build_credentials(r, None, &vars, &mut p);
        let c = &c["orders"];
        assert!(c.allows("orders-db") && c.allows("billing"));
        assert!(!c.allows("evil") && !c.allows("billing-2"));
    }
}

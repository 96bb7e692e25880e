//! Names that become paths: target names, incident stamps, incident ids and cluster member
//! ids. Each is a type whose only constructor checks its grammar, and the code that builds a
//! bundle directory, a heal log or a spool record accepts only these types, so a string read
//! from etcd, the store or the spool cannot reach `Path::join` unchecked. A leaf module.
//!
//! Who writes them: the operator (target names, member ids, in the registry), the daemon
//! itself (stamps and incident ids), and anyone who can write to etcd or to the state
//! directory (the same ids, read back). The grammars admit every name the daemon generates
//! and nothing that is not one path component: no `/`, no `..`, no NUL or other control
//! character, bounded length.

use chrono::{DateTime, NaiveDateTime, Utc};
use std::fmt;

/// Longest target name: bundle directories are `{stamp}-{name}` (255 bytes at most on most
/// filesystems) and S3 keys `{prefix}/{stamp}-{name}/{file}` (1024 bytes at most).
pub const MAX_TARGET: usize = 63;
/// Longest member id: a host name (253 bytes).
pub const MAX_MEMBER: usize = 253;
/// The stamp's format: `20261125T033401.123Z`.
const STAMP_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";
const STAMP_LEN: usize = "20261125T033401.123Z".len();

/// Why a name was refused; the message says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("target name {0:?} is not 1-{MAX_TARGET} letters, digits, '-', '_' or '.' starting with a letter or digit (and without '..'): {1}")]
    Target(String, String),
    #[error("stamp {0:?} is not a UTC stamp like 20261125T033401.123Z")]
    Stamp(String),
    #[error("incident id {0:?} is not {{stamp}}-{{name}} (like 20261125T033401.123Z-orders): {1}")]
    Incident(String, String),
    #[error("member id {0:?} is not 1-{MAX_MEMBER} characters without '/', spaces or control characters")]
    Member(String),
}

/// Shows a refused value without letting it run on: long values are cut.
fn shown(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Checks the target-name grammar; the reason when it does not hold.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > MAX_TARGET {
        return Some(format!("it has {} characters", name.len()));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some("it must start with a letter or digit".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Some(format!("'{}' is not allowed", c.escape_default()));
    }
    name.contains("..").then(|| "'..' is not allowed".into())
}

/// A target's name, as the registry and discovery accept it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetName(String);

impl TargetName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        match name_problem(s) {
            None => Ok(Self(s.to_string())),
            Some(why) => Err(IdError::Target(shown(s), why)),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A sortable UTC stamp used in incident ids and bundle paths: `20261125T033401.123Z`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stamp(String);

impl Stamp {
    pub fn of(t: DateTime<Utc>) -> Self {
        Self(t.format(STAMP_FORMAT).to_string())
    }
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = s.len() == STAMP_LEN
            && s.is_ascii()
            && NaiveDateTime::parse_from_str(s, STAMP_FORMAT).is_ok();
        ok.then(|| Self(s.to_string()))
            .ok_or_else(|| IdError::Stamp(shown(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An incident's id, `{stamp}-{name}`: also its bundle directory, heal log and spool record
/// name, so always exactly one path component. `name` is the target's name for a target's
/// incident, or `fleet`, `cluster-{member}`, `notify-test` for the daemon's own notices.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncidentId(String);

impl IncidentId {
    /// The id of a target's incident declared at `stamp`. Total: a character that no target
    /// name may hold (the registry refuses such names) becomes `_`, so the result always
    /// parses, and equals `{stamp}-{target}` for every name the registry accepts.
    pub fn new(stamp: &Stamp, target: &str) -> Self {
        let mut name: String = target
            .chars()
            .take(MAX_TARGET + 1 + MAX_MEMBER)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        while name.contains("..") {
            name = name.replace("..", "._");
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            name.insert(0, 'x');
        }
        Self(format!("{}-{name}", stamp.as_str()))
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bad = |why: &str| IdError::Incident(shown(s), why.to_string());
        if s.len() > STAMP_LEN + 1 + MAX_TARGET + 1 + MAX_MEMBER {
            return Err(bad("it is too long"));
        }
        let (stamp, rest) = match (s.get(..STAMP_LEN), s.get(STAMP_LEN..)) {
            (Some(stamp), Some(rest)) => (stamp, rest),
            _ => return Err(bad("it does not start with a stamp")),
        };
        Stamp::parse(stamp).map_err(|_| bad("it does not start with a stamp"))?;
        let Some(name) = rest.strip_prefix('-').filter(|n| !n.is_empty()) else {
            return Err(bad("no '-{name}' follows the stamp"));
        };
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(bad(
                "the name after the stamp must start with a letter or digit",
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
        {
            return Err(bad(&format!("'{}' is not allowed", c.escape_default())));
        }
        if name.contains("..") {
            return Err(bad("'..' is not allowed"));
        }
        Ok(Self(s.to_string()))
    }

    /// The stamp it starts with.
    pub fn stamp(&self) -> Stamp {
        Stamp(self.0[..STAMP_LEN].to_string())
    }

    /// The name after the stamp (the target's, for a target's incident).
    pub fn name(&self) -> &str {
        &self.0[STAMP_LEN + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its heal command's output, `{dir}/{id}.log` (the Healer writes it; a restarted daemon
    /// reads whether it exists to know the heal already ran).
    pub fn heal_log_in(&self, dir: &std::path::Path) -> std::path::PathBuf {
        dir.join(format!("{}.log", self.0))
    }
}

/// A cluster member's id, as `cluster.member` accepts it (default: the host name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(String);

impl MemberId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= MAX_MEMBER
            && !s
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control());
        ok.then(|| Self(s.to_string()))
            .ok_or_else(|| IdError::Member(shown(s)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A time read back from etcd or the store is one the daemon could have written: after
/// 2000 and not more than a day ahead of this host's clock (clocks of several hosts differ).
pub fn check_time(what: &str, t: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), String> {
    let earliest = DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or_default();
    if t < earliest || t > now + chrono::Duration::days(1) {
        return Err(format!(
            "{what} {} is out of range (before 2000 or more than a day ahead)",
            t.to_rfc3339()
        ));
    }
    Ok(())
}

macro_rules! string_like {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        /// Read-only: a parsed name is used wherever a `&str` is.
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<String> for $t {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl TryFrom<String> for $t {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl slog::Value for $t {
            fn serialize(
                &self,
                _: &slog::Record,
                key: slog::Key,
                s: &mut dyn slog::Serializer,
            ) -> slog::Result {
                s.emit_str(key, &self.0)
            }
        }
    )*};
}
string_like!(TargetName, Stamp, IncidentId, MemberId);

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: [&str; 9] = [
        "",
        "..",
        "../../escape",
        "a/b",
        "a\0b",
        "a..b",
        ".hidden",
        "a b",
        "a\nb",
    ];

    #[test]
    fn target_names_follow_the_registry_grammar() {
        for ok in ["a", "orders-db", "pg_1.eu", &"x".repeat(MAX_TARGET)] {
            assert_eq!(TargetName::parse(ok).unwrap().as_str(), ok);
        }
        for bad in HOSTILE.iter().copied().chain(["-a", "é", &"x".repeat(64)]) {
            assert!(TargetName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stamps_are_exactly_the_daemons_format() {
        let t: DateTime<Utc> = "2026-01-02T03:04:05.006Z".parse().unwrap();
        let s = Stamp::of(t);
        assert_eq!(s.as_str(), "20260102T030405.006Z");
        assert_eq!(Stamp::parse(s.as_str()).unwrap(), s);
        for bad in HOSTILE.iter().copied().chain([
            "20260102T030405Z",
            "20261302T030405.006Z",
            "20260102T030405.006Z/",
            "2026010２T030405.006Z",
        ]) {
            assert!(Stamp::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn incident_ids_accept_every_id_the_daemon_makes_and_no_path() {
        let s = Stamp::of(Utc::now());
        for name in ["a", "orders-db", "pg_1.eu", &"x".repeat(MAX_TARGET)] {
            let id = IncidentId::new(&s, name);
            assert_eq!(id.as_str(), format!("{s}-{name}"));
            assert_eq!(IncidentId::parse(id.as_str()).unwrap(), id);
            assert_eq!((id.stamp(), id.name()), (s.clone(), name));
        }
        // The daemon's own notices: the fleet guard, the cluster, notify-test.
        for name in ["fleet", "cluster-node-a.example.com", "notify-test"] {
            assert!(IncidentId::parse(&format!("{s}-{name}")).is_ok(), "{name}");
        }
        for bad in HOSTILE {
            assert!(IncidentId::parse(bad).is_err(), "{bad:?}");
            assert!(IncidentId::parse(&format!("{s}-{bad}")).is_err(), "{bad:?}");
            // Whatever it is given, `new` makes an id that parses and is one component.
            let made = IncidentId::new(&s, bad);
            assert_eq!(IncidentId::parse(made.as_str()).unwrap(), made);
            assert!(!made.as_str().contains(['/', '\0']) && !made.as_str().contains(".."));
        }
        assert!(IncidentId::parse(&format!("{s}-{}", "x".repeat(400))).is_err());
        assert!(serde_json::from_str::<IncidentId>("\"../../escape\"").is_err());
    }

    #[test]
    fn member_ids_are_one_key_segment() {
        for ok in ["n1", "node-a.example.com", "host_1:2"] {
            assert!(MemberId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a b", "a\0b", "a\tb", &"x".repeat(254)] {
            assert!(MemberId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_in_range_only() {
        let now = Utc::now();
        assert!(check_time("t", now, now).is_ok());
        assert!(check_time("t", now + chrono::Duration::hours(2), now).is_ok());
        assert!(check_time("t", now + chrono::Duration::days(2), now).is_err());
        assert!(check_time("t", DateTime::<Utc>::UNIX_EPOCH, now).is_err());
    }
}

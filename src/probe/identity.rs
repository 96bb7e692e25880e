//! Which server answered a probe. A passing probe counts only if the server that answered is
//! the target's own: a stopped container whose address Docker gave to another container, a
//! port taken over by another cluster, or a DSN pointing at a different server must never
//! look healthy (nor close an incident with a recovery notice).
//!
//! The identity is `system_identifier` from `pg_control_system()`: initdb picks it, and
//! every physical copy of the cluster (a base backup, a streaming standby, a restore) keeps
//! it, while a new initdb gets a new one. The function is executable by PUBLIC (checked on
//! PostgreSQL 15 with a plain login role), so the probe role needs no grant. It is read on
//! the probe's own session with one more simple Query queued behind the login with the
//! others: no extra round trip, and a few microseconds of the daemon's CPU per probe.
//!
//! The first passing probe's identity is learned (kept in the target's record and the store,
//! with the endpoint it was learned at); later probes must match it. A new endpoint (the DSN
//! changed) learns again, and so does a passing probe during a maintenance window: the way to
//! move a target to a new cluster on purpose. What a server says about itself is the server's
//! word: it can only make a probe fail (`wrong_server`), never restart anything.
//!
//! The same query reads when the postmaster started (`pg_postmaster_start_time()`, in
//! microseconds since the epoch, so no DateStyle or TimeZone of the session can change its
//! text): a start time that moves between two passing probes is a restart nobody announced
//! (a crash and a restart by another manager inside one interval), which the incident machine
//! turns into an incident of its own. Read on every probe, not at a cadence: it is one more
//! column of a row already sent for, in the same round trip (its cost on the server is
//! measured in `scripts/bench.sh`, section `recorder`), and a cadence would let a restart slip
//! through whenever two restarts fell in one period. A crash of one backend with crash recovery does not move it (the postmaster
//! lives on); that outage is the log reader's to see.

use super::query::{self, FirstRow};
use super::wire::Wire;
use super::{FailureClass, ProbeFailure};
use bytes::BytesMut;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Sent with every probe: who the server is, and when its postmaster started.
pub const QUERY: &str = "SELECT system_identifier, (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint FROM pg_control_system()";

/// A cluster's `system_identifier`, shown as `pg_controldata` prints it (unsigned; SQL shows
/// the same 64 bits as a signed bigint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SystemIdentifier(u64);

impl SystemIdentifier {
    /// Reads the identifier as SQL (signed) or `pg_controldata` (unsigned) writes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        t.parse::<u64>()
            .or_else(|_| t.parse::<i64>().map(|n| n as u64))
            .map(Self)
            .map_err(|_| format!("'{}' is not a system_identifier", t.escape_debug()))
    }
}

impl fmt::Display for SystemIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<String> for SystemIdentifier {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<SystemIdentifier> for String {
    fn from(s: SystemIdentifier) -> String {
        s.to_string()
    }
}

/// What one probe read of the server that answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIdentity {
    pub system_identifier: SystemIdentifier,
    /// When the postmaster started; None when the server's answer is not a number.
    pub started_at: Option<DateTime<Utc>>,
}

/// What a probe got: the identity, or why none could be read (the server refused the query,
/// e.g. EXECUTE revoked, or PostgreSQL before 9.6).
pub type IdentityRead = Result<ServerIdentity, String>;

/// The identity learned for a target: which server is its own, at which endpoint, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedIdentity {
    /// `host:port/db` it was learned at: a target whose DSN now names another endpoint
    /// learns again.
    pub endpoint: String,
    pub system_identifier: SystemIdentifier,
    pub learned_at: DateTime<Utc>,
}

/// Queues the identity query (sent with the login, like the probe query).
pub fn push(out: &mut BytesMut) -> Result<(), ProbeFailure> {
    query::push(QUERY, out)
}

/// Reads the answer to [`QUERY`]. An error the server answered with means "no identity to be
/// had here" (the probe itself passed); a broken connection fails the probe as any read does.
pub async fn read(w: &mut Wire) -> Result<IdentityRead, ProbeFailure> {
    match query::first_row(w).await {
        Ok(row) => Ok(parse(row)),
        Err(f) if f.sqlstate.is_some() => Ok(Err(format!(
            "pg_control_system() failed: {f} (grant EXECUTE ON FUNCTION pg_control_system() to the probe's role)"
        ))),
        Err(f) => Err(f),
    }
}

fn parse(row: FirstRow) -> IdentityRead {
    let mut cols = row.unwrap_or_default().into_iter();
    let text = cols
        .next()
        .flatten()
        .ok_or_else(|| "pg_control_system() returned no system_identifier".to_string())?;
    // The server's word, parsed as a number or ignored.
    let started_at = cols
        .next()
        .flatten()
        .and_then(|m| m.trim().parse::<i64>().ok())
        .and_then(DateTime::from_timestamp_micros);
    Ok(ServerIdentity {
        system_identifier: SystemIdentifier::parse(&text)?,
        started_at,
    })
}

/// What a passing probe's identity means for its target.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The target's own server.
    Same,
    /// No identity is known for this endpoint yet: learn this one.
    Learn(LearnedIdentity),
    /// Another server answered, or one that cannot say who it is where an identity is known.
    Other(ProbeFailure),
    /// Nothing to check against: no identity is known and none could be read (why).
    Unchecked(String),
}

/// Judges the identity a passing probe read at `endpoint` against the one learned (pure: the
/// incident machine applies the verdict to the target's record).
pub fn judge(
    known: Option<&LearnedIdentity>,
    endpoint: &str,
    read: &IdentityRead,
    now: DateTime<Utc>,
) -> Verdict {
    let known = known.filter(|k| k.endpoint == endpoint);
    match (known, read) {
        (None, Ok(found)) => Verdict::Learn(LearnedIdentity {
            endpoint: endpoint.to_string(),
            system_identifier: found.system_identifier,
            learned_at: now,
        }),
        (None, Err(why)) => Verdict::Unchecked(why.clone()),
        (Some(k), Ok(found)) if k.system_identifier == found.system_identifier => Verdict::Same,
        (Some(k), Ok(found)) => Verdict::Other(ProbeFailure::new(
            FailureClass::WrongServer,
            format!(
                "another server answers at {endpoint}: expected system_identifier {} (learned {}), found {}. If this is intended (the target moved to a new cluster), open a maintenance window until a probe passes, or change the target's DSN",
                k.system_identifier,
                k.learned_at.format("%Y-%m-%dT%H:%M:%SZ"),
                found.system_identifier
            ),
        )),
        (Some(k), Err(why)) => Verdict::Other(ProbeFailure::new(
            FailureClass::WrongServer,
            format!(
                "the server at {endpoint} cannot be confirmed as the target's own: expected system_identifier {}, but {why}",
                k.system_identifier
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: &str) -> IdentityRead {
        Ok(ServerIdentity {
            system_identifier: SystemIdentifier::parse(n).unwrap(),
            started_at: None,
        })
    }

    #[test]
    fn the_start_time_is_read_as_microseconds_or_ignored() {
        let row = |v: Option<&str>| Some(vec![Some("7".to_string()), v.map(str::to_string)]);
        let got = parse(row(Some("1796622813224019"))).unwrap();
        assert_eq!(
            got.started_at.unwrap().to_rfc3339(),
            "2026-12-07T05:53:33.224019+00:00"
        );
        assert_eq!(parse(row(Some("x"))).unwrap().started_at, None);
        assert_eq!(parse(row(None)).unwrap().started_at, None);
        assert_eq!(
            parse(Some(vec![Some("7".into())])).unwrap().started_at,
            None
        );
    }

    #[test]
    fn identifiers_read_as_sql_or_pg_controldata_print_them() {
        let sql = SystemIdentifier::parse("-1").unwrap();
        assert_eq!(sql.to_string(), u64::MAX.to_string());
        assert_eq!(
            SystemIdentifier::parse("7716395630755388239").unwrap(),
            SystemIdentifier(7716395630755388239)
        );
        assert!(SystemIdentifier::parse("x1").is_err());
        let json = serde_json::to_string(&SystemIdentifier(42)).unwrap();
        assert_eq!(json, "\"42\"");
        assert_eq!(
            serde_json::from_str::<SystemIdentifier>(&json).unwrap(),
            SystemIdentifier(42)
        );
    }

    #[test]
    fn learned_once_then_matched_and_a_new_endpoint_learns_again() {
        let now = Utc::now();
        let Verdict::Learn(k) = judge(None, "h:5432/db", &id("7"), now) else {
            panic!("first identity is learned")
        };
        assert_eq!(judge(Some(&k), "h:5432/db", &id("7"), now), Verdict::Same);
        match judge(Some(&k), "h:5432/db", &id("8"), now) {
            Verdict::Other(f) => {
                assert_eq!(f.class, FailureClass::WrongServer);
                assert!(
                    f.detail.contains("expected system_identifier 7"),
                    "{}",
                    f.detail
                );
                assert!(f.detail.contains("found 8"), "{}", f.detail);
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            judge(Some(&k), "h:6543/db", &id("8"), now),
            Verdict::Learn(LearnedIdentity { endpoint, .. }) if endpoint == "h:6543/db"
        ));
    }

    #[test]
    fn an_unreadable_identity_is_unchecked_until_one_is_known() {
        let now = Utc::now();
        let none: IdentityRead = Err("permission denied".into());
        assert!(matches!(
            judge(None, "e", &none, now),
            Verdict::Unchecked(_)
        ));
        let Verdict::Learn(k) = judge(None, "e", &id("7"), now) else {
            panic!()
        };
        assert!(matches!(
            judge(Some(&k), "e", &none, now),
            Verdict::Other(f) if f.class == FailureClass::WrongServer
        ));
    }
}

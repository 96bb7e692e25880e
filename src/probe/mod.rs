//! SQL probes. Each probe is what a new client sees: a fresh connection, a full login and the
//! query, within the timeout; then Terminate. A kept connection would go on answering from a
//! backend that exists while the postmaster is stopped, cannot fork or has no free slot, and
//! so would hide exactly the outages clients suffer. The SCRAM keys are cached per target so
//! a login costs a few HMACs, not PBKDF2 (see `scram`), and what a probe reads is capped
//! (see `wire`). No session answers an authentication request the target's `require_auth`
//! does not permit. Every connection the daemon makes to a database (probe, SQL snapshot,
//! the healer's "accepting connections" check) logs in here, so TLS (`tls`, with libpq's
//! `sslmode` and `channel_binding`) and `require_auth` are applied in one place.

pub mod identity;
mod login;
pub mod progress;
mod query;
pub mod scram;
pub mod snapshot;
mod tls;
pub mod vitals;
mod wire;

pub use crate::failure::{FailureClass, ProbeFailure};
pub use wire::READ_BUDGET;

use crate::config::{ProbeConfig, TargetConfig};
use login::Endpoint;
use std::time::{Duration, Instant};

/// The result of one probe.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub latency: Duration,
    pub result: Result<(), ProbeFailure>,
    /// When this probe also looked for another manager of the server (every minute while
    /// healthy): `Some(None)` none, `Some(Some(name))` found one.
    pub manager: Option<Option<String>>,
    /// Which server answered (`identity`), read by every probe that passed; None otherwise.
    pub identity: Option<identity::IdentityRead>,
    /// The flight recorder's numbers, when this probe took a sample (`vitals`).
    pub vitals: Option<vitals::SqlVitals>,
}

/// How often a healthy target is checked for another manager (Patroni).
const MANAGER_CHECK_EVERY: Duration = Duration::from_secs(60);

/// Another manager that would race a restart, found through SQL: Patroni keeps sessions
/// named "Patroni..." open on the servers it manages.
const MANAGER_QUERY: &str = "SELECT coalesce(max(application_name), '') FROM pg_stat_activity WHERE application_name ILIKE 'patroni%'";

/// Whether the server is a standby (for targets that must be a primary).
const IN_RECOVERY: &str = "SELECT pg_is_in_recovery()";

/// Probes one target: a new login per probe.
pub struct Prober {
    endpoint: Endpoint,
    /// This target's SCRAM keys (no other target's server can evict them).
    keys: scram::KeyCache,
    probe: ProbeConfig,
    manager_checked: Option<Instant>,
    /// When the last probe ended, to measure how late the next one starts.
    last_end: Option<Instant>,
    /// The flight recorder's cadence (None: off), and when it last got a sample.
    vitals_every: Option<Duration>,
    vitals_at: Option<Instant>,
}

impl Prober {
    pub fn new(target: &TargetConfig) -> Self {
        Self {
            endpoint: Endpoint::new(&target.dsn, target.probe.timeout),
            keys: scram::KeyCache::default(),
            probe: target.probe.clone(),
            manager_checked: None,
            last_end: None,
            vitals_every: target.recorder.enabled.then_some(target.recorder.every),
            vitals_at: None,
        }
    }

    /// Runs one probe: connect, log in, run the query, all within the timeout.
    pub async fn probe(&mut self) -> ProbeOutcome {
        let start = Instant::now();
        if let Some(gap) = self.last_end.map(|end| start - end) {
            // Only probes at the healthy cadence: fast probes during an incident and
            // immediate ones come sooner than the interval on purpose.
            if let Some(late) = gap.checked_sub(self.probe.interval) {
                crate::metrics::global().observe(
                    "sentinel_probe_lateness_seconds",
                    &[],
                    late.as_secs_f64(),
                );
            }
        }
        let timeout = self.probe.timeout;
        let check_manager = self
            .manager_checked
            .is_none_or(|t| t.elapsed() >= MANAGER_CHECK_EVERY);
        let sample = self
            .vitals_every
            .is_some_and(|every| self.vitals_at.is_none_or(|t| t.elapsed() >= every));
        let mut conn = None;
        let run = self.run(&mut conn, sample, check_manager);
        let result = match tokio::time::timeout(timeout, run).await {
            Ok(r) => r.map(Some),
            Err(_) => Err(ProbeFailure::new(
                FailureClass::Timeout,
                format!(
                    "no answer within {}",
                    crate::config::duration::format_duration(timeout)
                ),
            )),
        };
        let latency = start.elapsed();
        let (result, identity) = match result {
            Ok(id) => (Ok(()), id),
            Err(f) => (Err(f), None),
        };
        let mut vitals = None;
        if let (Ok(()), Some(w), true) = (&result, conn.as_mut(), sample) {
            // Queued after the identity query; read before the manager check's answer.
            match tokio::time::timeout(timeout, vitals::read(w)).await {
                Ok(Ok(v)) => {
                    self.vitals_at = Some(Instant::now());
                    vitals = v;
                }
                _ => conn = None, // the manager's answer cannot be reached past a broken read
            }
        }
        let mut manager = None;
        if let (Ok(()), Some(w), true) = (&result, conn.as_mut(), check_manager) {
            // Sent with the login after the probe's own queries; its answer comes next.
            if let Ok(Ok(v)) = tokio::time::timeout(timeout, query::first_value(w)).await {
                self.manager_checked = Some(Instant::now());
                manager = Some(v.flatten().filter(|n| !n.is_empty()));
            }
        }
        // Terminate went with the queries: dropping the socket ends the session cleanly.
        drop(conn);
        self.last_end = Some(Instant::now());
        ProbeOutcome {
            latency,
            result,
            manager,
            identity,
            vitals,
        }
    }

    /// Nothing is kept between probes any more; kept for callers that reset after a restart.
    pub fn reset(&mut self) {}

    /// Logs in with every query of this probe and Terminate queued behind the login, then
    /// reads the answers in order (the vitals' and the manager check's are left for the
    /// caller). Passing, it
    /// returns which server answered: the operator's query runs as configured, and the
    /// identity check comes on top of it.
    async fn run(
        &mut self,
        conn: &mut Option<wire::Wire>,
        sample: bool,
        check_manager: bool,
    ) -> Result<identity::IdentityRead, ProbeFailure> {
        let mut then = bytes::BytesMut::new();
        query::push(&self.probe.query, &mut then)?;
        if self.probe.primary {
            query::push(IN_RECOVERY, &mut then)?;
        }
        identity::push(&mut then)?;
        if sample {
            vitals::push(&mut then)?;
        }
        if check_manager {
            query::push(MANAGER_QUERY, &mut then)?;
        }
        postgres_protocol::message::frontend::terminate(&mut then);
        let w = conn.insert(login::login(&self.endpoint, &mut self.keys, &then).await?);
        let first = query::first_value(w).await?;
        if let Some(expect) = &self.probe.expect {
            match first {
                Some(Some(v)) if &v == expect => {}
                other => {
                    let got = match other {
                        Some(Some(v)) => format!("'{v}'"),
                        Some(None) => "NULL".into(),
                        None => "no rows".into(),
                    };
                    return Err(ProbeFailure::new(
                        FailureClass::UnexpectedResult,
                        format!("expected '{expect}', got {got}"),
                    ));
                }
            }
        }
        if self.probe.primary {
            let standby = query::first_value(w).await?;
            if standby == Some(Some("t".into())) {
                return Err(ProbeFailure::new(FailureClass::ReadOnly, "expected a primary, but pg_is_in_recovery() is true (a standby, or a primary demoted by a failover)"));
            }
        }
        identity::read(w).await
    }
}

/// One login with no query, used by the healer to tell "accepting connections" (or starting
/// up) from "still refused": the probe's own login (TLS, channel binding, `require_auth`),
/// then Terminate.
pub async fn accepts_connections(
    dsn: &crate::config::Dsn,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    let ep = Endpoint::new(dsn, Duration::ZERO);
    let mut keys = scram::KeyCache::default();
    let mut bye = bytes::BytesMut::new();
    postgres_protocol::message::frontend::terminate(&mut bye);
    match tokio::time::timeout(timeout, login::login(&ep, &mut keys, &bye)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(f)) => Err(f),
        Err(_) => Err(ProbeFailure::new(
            FailureClass::Timeout,
            "connect timed out",
        )),
    }
}

//! SQL probes: one reused connection per target, a query under statement_timeout, and a
//! classified failure when anything goes wrong.

mod failure;
pub mod progress;
pub mod snapshot;

pub use failure::{FailureClass, ProbeFailure};

use crate::config::{ProbeConfig, TargetConfig};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The result of one probe.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub latency: Duration,
    pub result: Result<(), ProbeFailure>,
    /// When this probe also looked for another manager of the server (every minute while
    /// healthy): `Some(None)` none, `Some(Some(name))` found one.
    pub manager: Option<Option<String>>,
}

/// How often a healthy target is checked for another manager (Patroni).
const MANAGER_CHECK_EVERY: Duration = Duration::from_secs(60);

/// Another manager that would race a restart, found through SQL: Patroni keeps sessions
/// named "Patroni..." open on the servers it manages.
const MANAGER_QUERY: &str = "SELECT coalesce(max(application_name), '') FROM pg_stat_activity WHERE application_name ILIKE 'patroni%'";

/// Probes one target, keeping its connection between probes.
pub struct Prober {
    pg: tokio_postgres::Config,
    probe: ProbeConfig,
    client: Option<Client>,
    manager_checked: Option<Instant>,
}

impl Prober {
    pub fn new(target: &TargetConfig) -> Self {
        let mut pg = target.dsn.config().clone();
        if pg.get_application_name().is_none() {
            pg.application_name("sentinel-remedy");
        }
        pg.connect_timeout(target.probe.timeout);
        Self {
            pg,
            probe: target.probe.clone(),
            client: None,
            manager_checked: None,
        }
    }

    /// Runs one probe: (re)connects if needed, then runs the query, all within the timeout.
    pub async fn probe(&mut self) -> ProbeOutcome {
        let start = Instant::now();
        let timeout = self.probe.timeout;
        let result = match tokio::time::timeout(timeout, self.run()).await {
            Ok(r) => r,
            Err(_) => Err(ProbeFailure::new(
                FailureClass::Timeout,
                format!(
                    "no answer within {}",
                    crate::config::duration::format_duration(timeout)
                ),
            )),
        };
        if result.is_err() {
            // A failed connection may be half-dead; the next probe starts clean.
            self.client = None;
        }
        let latency = start.elapsed();
        let mut manager = None;
        if result.is_ok()
            && self
                .manager_checked
                .is_none_or(|t| t.elapsed() >= MANAGER_CHECK_EVERY)
        {
            if let Some(client) = &self.client {
                if let Ok(Ok(rows)) =
                    tokio::time::timeout(timeout, client.simple_query(MANAGER_QUERY)).await
                {
                    self.manager_checked = Some(Instant::now());
                    let name = rows.iter().find_map(|m| match m {
                        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                        _ => None,
                    });
                    manager = Some(name.filter(|n| !n.is_empty()));
                }
            }
        }
        ProbeOutcome {
            latency,
            result,
            manager,
        }
    }

    /// Drops the connection so the next probe reconnects (after a restart, for example).
    pub fn reset(&mut self) {
        self.client = None;
    }

    async fn run(&mut self) -> Result<(), ProbeFailure> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(connect(&self.pg, self.probe.timeout).await?);
        }
        let client = self.client.as_ref().expect("connected above");
        let rows = client
            .simple_query(&self.probe.query)
            .await
            .map_err(|e| ProbeFailure::from_pg(&e))?;
        if let Some(expect) = &self.probe.expect {
            let first = rows.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
                _ => None,
            });
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
            let rows = client
                .simple_query("SELECT pg_is_in_recovery()")
                .await
                .map_err(|e| ProbeFailure::from_pg(&e))?;
            let standby = rows
                .iter()
                .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("t")));
            if standby {
                return Err(ProbeFailure::new(FailureClass::ReadOnly, "expected a primary, but pg_is_in_recovery() is true (a standby, or a primary demoted by a failover)"));
            }
        }
        Ok(())
    }
}

/// Connects and sets the statement timeout; the connection task runs on the current runtime.
pub async fn connect(
    pg: &tokio_postgres::Config,
    timeout: Duration,
) -> Result<Client, ProbeFailure> {
    let (client, conn) = pg
        .connect(NoTls)
        .await
        .map_err(|e| ProbeFailure::from_pg(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
        .simple_query(&format!(
            "SET statement_timeout = {}",
            timeout.as_millis().max(1)
        ))
        .await
        .map_err(|e| ProbeFailure::from_pg(&e))?;
    Ok(client)
}

/// One connection attempt with no query, used by the healer to tell "accepting connections"
/// (or starting up) from "still refused".
pub async fn accepts_connections(
    pg: &tokio_postgres::Config,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    match tokio::time::timeout(timeout, pg.connect(NoTls)).await {
        Ok(Ok((client, conn))) => {
            drop(client);
            drop(conn);
            Ok(())
        }
        Ok(Err(e)) => Err(ProbeFailure::from_pg(&e)),
        Err(_) => Err(ProbeFailure::new(
            FailureClass::Timeout,
            "connect timed out",
        )),
    }
}

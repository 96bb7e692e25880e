//! Whether the server answers: the check after each heal attempt, whatever the backend, and
//! before a hung server is stopped (never stop one that answers).

use crate::config::TargetConfig;
use crate::probe::{accepts_connections, FailureClass};
use std::time::{Duration, Instant};

/// Polls the server for up to `wait` (at least once): what it answers when it is up
/// ("accepting connections", "starting up (57P03)", or an authentication error, which also
/// proves it runs), else the class of the last failure.
pub async fn answering(
    target: &TargetConfig,
    wait: Duration,
) -> Result<&'static str, FailureClass> {
    let until = Instant::now() + wait;
    loop {
        let connect = target.probe.timeout.min(Duration::from_secs(2));
        match accepts_connections(&target.dsn, connect).await {
            Ok(()) => return Ok("accepting connections"),
            Err(f) if f.class == FailureClass::Recovering => return Ok("starting up (57P03)"),
            Err(f) if f.class == FailureClass::Authentication => {
                return Ok("answering (authentication error)")
            }
            Err(f) if Instant::now() >= until => return Err(f.class),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

//! The HTTP side of the daemon, on the same actix system: `/healthz`, `/status`, `/metrics`,
//! `/incidents`, maintenance windows, and a self-refreshing status page at `/`. Read-only
//! endpoints are open to whoever can reach the listen address (keep it private); the
//! mutating ones need the bearer token, and are off without one.

mod page;
mod routes;

use crate::actors::supervisor::Supervisor;
use crate::archive::uploader::Uploader;
use crate::config::{Secret, ServerConfig};
use crate::store::Store;
use actix::Addr;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub supervisor: Addr<Supervisor>,
    pub store: Option<Store>,
    pub uploader: Option<Arc<Uploader>>,
    pub token: Option<Secret>,
    pub registry_source: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// The Engine client; /healthz reports it once a container target has used it.
    pub docker: Option<Arc<crate::docker::DockerClient>>,
    /// The state, lease and spool directories /healthz writes a probe file to.
    pub disks: Option<crate::health::Disks>,
    /// The local archive directory; /healthz checks it can be written.
    pub archive_dir: Option<std::path::PathBuf>,
    /// Cluster mode: /healthz reports lost coordination, status the owners and members; a
    /// reload of `cluster:` replaces it.
    pub cluster: crate::cluster::Current,
}

/// Binds the listen address and serves until the system stops. A bind error is returned so
/// `run` can refuse to start with a clear message instead of running without its API.
pub fn serve(cfg: &ServerConfig, state: ApiState) -> std::io::Result<actix_web::dev::ServerHandle> {
    let data = actix_web::web::Data::new(state);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .configure(routes::configure)
    })
    .workers(1)
    .disable_signals() // our signals module owns SIGTERM/SIGINT/SIGHUP
    .shutdown_timeout(2)
    .bind(cfg.listen)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(handle)
}

/// Compares a presented token with the configured one in time independent of where they
/// differ (the length is not secret).
pub fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    if presented.len() != expected.len() {
        return false;
    }
    let diff = presented
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole() {
        assert!(super::token_matches(
            b"abcdef0123456789",
            b"abcdef0123456789"
        ));
        assert!(!super::token_matches(
            b"abcdef0123456788",
            b"abcdef0123456789"
        ));
        assert!(!super::token_matches(b"abc", b"abcdef0123456789"));
    }
}

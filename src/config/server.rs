//! `server:`: the HTTP status API and metrics.

use super::error::Problems;
use super::secret::Secret;
use serde::Deserialize;

/// `server:`: the HTTP status API and metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on, e.g. 127.0.0.1:9187 (keep it private: /status names your targets).
    pub listen: String,
    /// Bearer token for the mutating endpoints (maintenance); without it they are off.
    pub token: Option<String>,
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    /// None: the mutating endpoints are off.
    pub token: Option<Secret>,
}

/// Validates `server:`; None when the address does not parse. A bad token turns the mutating
/// endpoints off (and is reported).
pub(crate) fn build_server(raw: RawServer, problems: &mut Problems) -> Option<ServerConfig> {
    let listen = match raw.listen.parse::<std::net::SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            problems.push(
                "server.listen",
                format!("'{}' is not an address and port", raw.listen),
                "use e.g. 127.0.0.1:9187 (or 0.0.0.0:9187 inside a container)",
            );
            return None;
        }
    };
    let token = match raw.token {
        Some(t) if t.is_empty() => {
            problems.push("server.token", "the token is empty", "set it (e.g. \"${SENTINEL_API_TOKEN}\") or remove `token` to turn the mutating endpoints off");
            None
        }
        Some(t) if t.len() < 16 => {
            problems.push(
                "server.token",
                format!("the token has {} characters", t.len()),
                "use at least 16 random characters, e.g. openssl rand -hex 24",
            );
            None
        }
        t => t.map(Secret::new),
    };
    Some(ServerConfig { listen, token })
}

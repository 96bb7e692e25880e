//! The Docker Engine, through bollard: one client shared by the Healer (restarts), the
//! Archiver (files and log tails copied out of containers) and the event follower (the fast
//! path for dying containers). The Engine may be down or forbidden when the daemon starts; the
//! client connects lazily, says why it cannot, and never takes the other targets down with it.

pub mod container;
pub mod copy;
pub mod events;
pub mod hostpath;
mod mountroot;
pub mod unpack;

use crate::config::DockerConfig;
use bollard::Docker;
use serde::Serialize;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Why a Docker call failed; callers retry `Unreachable` and `Api`, and stop on the others.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker Engine at {endpoint}: {detail} (is dockerd running? set docker.host or DOCKER_HOST; in a container, mount /var/run/docker.sock)")]
    Unreachable { endpoint: String, detail: String },
    #[error("permission denied by the Docker Engine at {endpoint}: {detail} (run the daemon as a user in the socket's group; in compose add `group_add: [\"<gid of /var/run/docker.sock>\"]`)")]
    Forbidden { endpoint: String, detail: String },
    #[error("container {container} does not exist (create it, e.g. `docker compose up -d`, or fix the registry)")]
    NotFound { container: String },
    #[error("{container} matches {count} containers; name one with heal.docker.container")]
    Ambiguous { container: String, count: usize },
    #[error("the Docker Engine refused: {0}")]
    Api(String),
}

impl DockerError {
    /// Stable label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DockerError::Unreachable { .. } => "unreachable",
            DockerError::Forbidden { .. } => "forbidden",
            DockerError::NotFound { .. } => "not_found",
            DockerError::Ambiguous { .. } => "ambiguous",
            DockerError::Api(_) => "api",
        }
    }

    /// Worth another try later (the Engine may come back); the others need a person.
    pub fn retryable(&self) -> bool {
        matches!(self, DockerError::Unreachable { .. } | DockerError::Api(_))
    }

    /// Classifies a bollard error; `container` names what a 404 was about.
    pub fn from_bollard(e: bollard::errors::Error, endpoint: &str, container: &str) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code: 404, ..
            } => DockerError::NotFound {
                container: container.to_string(),
            },
            B::DockerResponseServerError {
                status_code: 401 | 403,
                message,
            } => DockerError::Forbidden {
                endpoint: endpoint.into(),
                detail: message,
            },
            B::DockerResponseServerError {
                status_code: 409,
                message,
            } if message.contains("marked for removal") => DockerError::NotFound {
                container: format!("{container} (being removed)"),
            },
            B::DockerResponseServerError {
                status_code,
                message,
            } => DockerError::Api(format!("{status_code}: {message}")),
            B::SocketNotFoundError(p) => DockerError::Unreachable {
                endpoint: endpoint.into(),
                detail: format!("no socket at {p}"),
            },
            B::IOError { err } if err.kind() == std::io::ErrorKind::PermissionDenied => {
                DockerError::Forbidden {
                    endpoint: endpoint.into(),
                    detail: err.to_string(),
                }
            }
            other => {
                let detail = chain(&other);
                if io_kind(&other) == Some(std::io::ErrorKind::PermissionDenied) {
                    DockerError::Forbidden {
                        endpoint: endpoint.into(),
                        detail,
                    }
                } else if matches!(
                    other,
                    B::IOError { .. } | B::HyperLegacyError { .. } | B::RequestTimeoutError
                ) {
                    DockerError::Unreachable {
                        endpoint: endpoint.into(),
                        detail,
                    }
                } else {
                    DockerError::Api(detail)
                }
            }
        }
    }
}

/// The error and its causes, joined: hyper hides the useful part ("Permission denied") deep.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = c.source();
    }
    None
}

/// What /healthz says about the Engine.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DockerHealth {
    /// `ok`, `unknown` (not used yet), or an error kind (`unreachable`, `forbidden`, ...).
    pub state: &'static str,
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The shared, lazily connected Engine client.
pub struct DockerClient {
    endpoint: String,
    api: tokio::sync::Mutex<Option<Docker>>,
    health: Mutex<DockerHealth>,
}

/// Requests that stream (events) must outlive bollard's request timeout.
const STREAM_TIMEOUT_SECS: u64 = 60 * 60 * 24 * 365;
const REQUEST_TIMEOUT_SECS: u64 = 120;

impl DockerClient {
    pub fn new(cfg: &DockerConfig) -> Self {
        let endpoint = cfg
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        Self {
            health: Mutex::new(DockerHealth {
                state: "unknown",
                endpoint: endpoint.clone(),
                api_version: None,
                error: None,
            }),
            endpoint,
            api: tokio::sync::Mutex::new(None),
        }
    }

    fn health_lock(&self) -> MutexGuard<'_, DockerHealth> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn health(&self) -> DockerHealth {
        self.health_lock().clone()
    }

    fn connect(&self, timeout: u64) -> Result<Docker, DockerError> {
        let e = &self.endpoint;
        let r = if let Some(path) = e.strip_prefix("unix://") {
            if !std::path::Path::new(path).exists() {
                return Err(DockerError::Unreachable {
                    endpoint: e.clone(),
                    detail: format!("no socket at {path}"),
                });
            }
            Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(e, timeout, bollard::API_DEFAULT_VERSION)
        };
        r.map_err(|err| DockerError::from_bollard(err, e, ""))
    }

    /// A client speaking the Engine's API version (an older Engine rejects newer versions).
    async fn negotiated(&self, timeout: u64) -> Result<Docker, DockerError> {
        let api = self.connect(timeout)?;
        match tokio::time::timeout(Duration::from_secs(10), api.negotiate_version()).await {
            Ok(Ok(api)) => Ok(api),
            Ok(Err(e)) => Err(DockerError::from_bollard(e, &self.endpoint, "")),
            Err(_) => Err(DockerError::Unreachable {
                endpoint: self.endpoint.clone(),
                detail: "no answer within 10 s".into(),
            }),
        }
    }

    /// The client for ordinary requests, connecting on first use.
    pub async fn api(&self) -> Result<Docker, DockerError> {
        let mut slot = self.api.lock().await;
        if let Some(api) = slot.as_ref() {
            return Ok(api.clone());
        }
        let r = self.negotiated(REQUEST_TIMEOUT_SECS).await;
        if let Ok(api) = &r {
            *slot = Some(api.clone());
        }
        self.record(r.as_ref().map(|_| ()));
        r
    }

    /// A separate client for the events stream, whose request never times out.
    pub async fn streaming(&self) -> Result<Docker, DockerError> {
        self.negotiated(STREAM_TIMEOUT_SECS).await
    }

    /// Checks the Engine answers (`/version`), for start-up and /healthz.
    pub async fn check(&self) -> Result<String, DockerError> {
        let v = self
            .call(|api, ep| async move {
                api.version()
                    .await
                    .map(|v| v.api_version.unwrap_or_default())
                    .map_err(|e| DockerError::from_bollard(e, &ep, ""))
            })
            .await?;
        self.health_lock().api_version = Some(v.clone());
        Ok(v)
    }

    /// Updates the health /healthz reports from the outcome of a call. Missing containers say
    /// nothing about the Engine.
    pub fn record(&self, r: Result<(), &DockerError>) {
        let mut h = self.health_lock();
        match r {
            Ok(()) => {
                h.state = "ok";
                h.error = None;
            }
            Err(DockerError::NotFound { .. } | DockerError::Ambiguous { .. }) => {}
            Err(e) => {
                h.state = e.kind();
                h.error = Some(e.to_string());
            }
        }
    }

    /// Runs `f` with the client, recording the outcome; a broken connection is dropped so the
    /// next call reconnects.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, DockerError>
    where
        F: FnOnce(Docker, String) -> Fut,
        Fut: std::future::Future<Output = Result<T, DockerError>>,
    {
        let api = self.api().await?;
        let r = f(api, self.endpoint.clone()).await;
        self.record(r.as_ref().map(|_| ()));
        if matches!(r, Err(DockerError::Unreachable { .. })) {
            *self.api.lock().await = None;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_what_a_caller_can_do() {
        use bollard::errors::Error as B;
        let denied = B::IOError {
            err: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let e = DockerError::from_bollard(denied, "unix:///var/run/docker.sock", "pg");
        assert_eq!(e.kind(), "forbidden");
        assert!(!e.retryable());
        assert!(e.to_string().contains("group_add"), "{e}");
        let refused = B::IOError {
            err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let e = DockerError::from_bollard(refused, "unix:///x.sock", "pg");
        assert_eq!(e.kind(), "unreachable");
        assert!(e.retryable());
        let gone = B::DockerResponseServerError {
            status_code: 404,
            message: "No such container: pg".into(),
        };
        let e = DockerError::from_bollard(gone, "unix:///x.sock", "pg");
        assert_eq!(e.kind(), "not_found");
        assert!(!e.retryable());
        assert!(e.to_string().contains("container pg does not exist"), "{e}");
        let removing = B::DockerResponseServerError {
            status_code: 409,
            message: "container is marked for removal and cannot be started".into(),
        };
        assert_eq!(
            DockerError::from_bollard(removing, "x", "pg").kind(),
            "not_found"
        );
        let forbidden = B::DockerResponseServerError {
            status_code: 403,
            message: "authorization denied by plugin".into(),
        };
        assert_eq!(
            DockerError::from_bollard(forbidden, "x", "pg").kind(),
            "forbidden"
        );
    }
}

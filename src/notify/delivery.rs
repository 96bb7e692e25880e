//! Delivery with retries: 5xx, 429 and network errors back off (honouring Retry-After and
//! Discord's `retry_after`, made safe by [`super::http`]), other 4xx fail at once, and a
//! redirect to another origin is not followed; either way the caller learns the outcome.

use crate::backoff::Backoff;
use crate::config::Secret;
use std::collections::BTreeMap;
use std::time::Duration;

/// A destination for JSON payloads.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Channel label for logs: "slack", "discord", `webhook[0]`.
    pub channel: String,
    pub url: Secret,
    pub headers: BTreeMap<String, Secret>,
}

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub request_timeout: Duration,
}

/// Why a delivery was given up.
#[derive(Debug, thiserror::Error, Clone)]
pub enum DeliveryError {
    /// The receiver refused the payload (4xx other than 429): retrying cannot help.
    #[error("rejected with HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    /// The webhook is gone (404/410): it is not called again until the registry is reloaded.
    #[error("the webhook answers HTTP {status}: it no longer exists (check the URL); not calling it again until a reload")]
    Gone { status: u16 },
    /// The receiver redirects to another origin: the notice and its headers stay here.
    #[error("the webhook answers HTTP {status}, a redirect to {to}, another origin: not followed, so neither the notice nor its headers go there (put the final URL in the registry)")]
    Redirected { status: u16, to: String },
    /// Every attempt failed with a retryable error.
    #[error("gave up after {attempts} attempts, last: {last}")]
    Exhausted { attempts: u32, last: String },
}

impl DeliveryError {
    /// Stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DeliveryError::Rejected { .. } => "rejected",
            DeliveryError::Exhausted { .. } => "exhausted",
            DeliveryError::Gone { .. } => "gone",
            DeliveryError::Redirected { .. } => "redirected",
        }
    }
}

/// Posts `body` until it is accepted or the policy says stop. Returns the attempts used.
pub async fn deliver(
    client: &reqwest::Client,
    ep: &Endpoint,
    body: &serde_json::Value,
    policy: Policy,
) -> Result<u32, DeliveryError> {
    send(
        client,
        reqwest::Method::POST,
        ep.url.expose(),
        ep,
        body,
        policy,
    )
    .await
    .map(|(attempts, _)| attempts)
}

/// Sends `body` with `method` to `url` (the endpoint's, or one derived from it) with the same
/// retry rules; returns the attempts used and the accepted response's body.
pub async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    ep: &Endpoint,
    body: &serde_json::Value,
    policy: Policy,
) -> Result<(u32, String), DeliveryError> {
    let mut last = String::new();
    for attempt in 1..=policy.max_attempts {
        let mut req = client
            .request(method.clone(), url)
            .timeout(policy.request_timeout)
            .json(body);
        for (k, v) in &ep.headers {
            req = req.header(k, v.expose());
        }
        let wait = match req.send().await {
            Ok(resp) if resp.status().is_success() => {
                return Ok((attempt, super::http::read_capped(resp).await))
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                let header_wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(super::http::retry_after);
                if resp.status().is_redirection() {
                    let to = resp
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|l| resp.url().join(l).ok())
                        .map_or_else(
                            || "(no location)".into(),
                            |u| crate::redact::url_host(u.as_str()),
                        );
                    return Err(DeliveryError::Redirected { status, to });
                }
                let text = super::http::read_capped(resp).await;
                let body_wait = super::http::body_retry_after(&text);
                if status == 404 || status == 410 {
                    return Err(DeliveryError::Gone { status });
                }
                if status != 429 && !(500..600).contains(&status) {
                    return Err(DeliveryError::Rejected {
                        status,
                        body: crate::notify::clip(&text, 200),
                    });
                }
                last = format!("HTTP {status}");
                header_wait.or(body_wait)
            }
            Err(e) => {
                // reqwest errors name the URL; keep only the kind, since the URL is a secret.
                last = if e.is_timeout() {
                    "timed out".into()
                } else if e.is_connect() {
                    "connection failed".into()
                } else {
                    "request failed".into()
                };
                None
            }
        };
        if attempt < policy.max_attempts {
            let delay = wait.unwrap_or_else(|| policy.backoff.delay(attempt - 1));
            tokio::time::sleep(delay).await;
        }
    }
    Err(DeliveryError::Exhausted {
        attempts: policy.max_attempts,
        last,
    })
}

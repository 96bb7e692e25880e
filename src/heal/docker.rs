//! Restarting a container through the Docker Engine API: a running or paused (hung) container
//! is restarted (killed after `stop_timeout`), an exited one is started, and one the Engine's
//! own restart policy is about to restart is waited for instead of raced.

use super::{HealBackend, HealCx, HealFailure, Outcome, Started};
use crate::config::ContainerRef;
use crate::docker::container::{self, ContainerState};
use crate::docker::{DockerClient, DockerError};
use crate::probe::FailureClass;
use bollard::container::{RestartContainerOptions, StartContainerOptions};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A container heal (`heal.docker`) through the shared Engine client.
pub struct DockerHeal {
    pub client: Arc<DockerClient>,
    pub container: ContainerRef,
    /// A stop waits this long before the container is killed.
    pub stop_timeout: Duration,
}

impl HealBackend for DockerHeal {
    fn failed_start<'a>(&'a self, cx: &'a HealCx<'a>) -> BoxFuture<'a, Option<HealFailure>> {
        Box::pin(self.why_not_up(cx))
    }

    /// One [`restart`]; the Engine's own restart policy is waited for at most `budget_left`.
    fn attempt<'a>(&'a self, cx: &'a HealCx<'a>, budget_left: Duration) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let r = restart(
                &self.client,
                &self.container,
                self.stop_timeout,
                cx.failed_at,
                budget_left,
            )
            .await;
            let line = match &r {
                Ok(v) => format!("{} docker: {v}\n", Utc::now().to_rfc3339()),
                Err(e) => format!(
                    "{} docker: FAILED ({}): {e}\n",
                    Utc::now().to_rfc3339(),
                    e.kind()
                ),
            };
            super::append_log(cx.log_path, &line);
            match r {
                Ok(verdict) => Outcome {
                    done: true,
                    exit_code: None,
                    verdict,
                    terminal: None,
                    start_cause: None,
                    started: Started::Known(true),
                },
                Err(e) => Outcome {
                    done: false,
                    exit_code: None,
                    verdict: e.to_string(),
                    terminal: (!e.retryable()).then(|| HealFailure {
                        kind: e.kind(),
                        detail: e.to_string(),
                        class: e.failure_class(),
                        cause: None,
                    }),
                    start_cause: None,
                    started: Started::Known(false),
                },
            }
        })
    }
}

impl DockerHeal {
    /// Why the restarted container's server did not come up: its own output, classified. A
    /// start that cannot work (a configuration error, permissions, a PANIC of its own) ends
    /// the heal here.
    async fn why_not_up(&self, cx: &HealCx<'_>) -> Option<HealFailure> {
        let c = &self.container;
        let text = self
            .client
            .call(|api, ep| async move { container::log_tail(&api, &ep, c, 100).await })
            .await
            .ok()?;
        let ev = crate::cause::Evidence {
            start_output: Some(crate::cause::LogTail::of_text("container log", &text)),
            ..Default::default()
        };
        let cause = crate::cause::classify_start(&ev);
        slog::warn!(cx.log, "the restarted container's server is not up"; "event" => "start_failed",
            "cause" => cause.class.label(), "sentence" => &cause.sentence);
        cause.class.start_is_futile().then(|| HealFailure {
            kind: "start_failed",
            detail: cause.sentence.clone(),
            class: None,
            cause: Some(cause),
        })
    }
}

/// Why a container heal failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DockerHealError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("the container's restart policy ({policy}) did not bring it back within {waited_s:.0} s; sentinel-remedy does not race the Engine's policy: start it by hand, or set `restart: \"no\"` so sentinel-remedy heals it")]
    PolicyStalled { policy: String, waited_s: f64 },
}

impl DockerHealError {
    pub fn retryable(&self) -> bool {
        matches!(self, DockerHealError::Docker(e) if e.retryable())
    }
    pub fn kind(&self) -> &'static str {
        match self {
            DockerHealError::Docker(DockerError::NotFound { .. }) => "container_missing",
            DockerHealError::Docker(e) => e.kind(),
            DockerHealError::PolicyStalled { .. } => "restart_policy_stalled",
        }
    }
    /// The incident class this failure reveals: a container that is not there.
    pub fn failure_class(&self) -> Option<FailureClass> {
        matches!(self, DockerHealError::Docker(DockerError::NotFound { .. }))
            .then_some(FailureClass::ContainerMissing)
    }
}

/// One heal attempt for an incident whose first failure was at `failed_at`; `policy_wait`
/// bounds the wait for the Engine's own restart policy.
pub async fn restart(
    client: &DockerClient,
    c: &ContainerRef,
    stop_timeout: Duration,
    failed_at: DateTime<Utc>,
    policy_wait: Duration,
) -> Result<String, DockerHealError> {
    let state = client
        .call(|api, ep| async move { container::inspect(&api, &ep, c).await })
        .await?;
    if state.status == "running" && state.started_at.is_some_and(|t| t > failed_at) {
        // Its restart policy (or a person) already restarted it for this incident.
        return Ok(format!(
            "container {} was already restarted at {} (restart policy: {}); not restarting it again",
            state.name,
            state.started_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            if state.restart_policy.is_empty() { "none" } else { &state.restart_policy }
        ));
    }
    if state.status == "removing" {
        // Being removed: it will not exist in a moment, and starting it would fail meanwhile.
        return Err(DockerError::NotFound {
            container: format!("{c} (being removed)"),
        }
        .into());
    }
    if state.policy_will_restart() {
        return wait_for_policy(client, c, &state, policy_wait).await;
    }
    let id = state.id.clone();
    match state.status.as_str() {
        "running" | "paused" => {
            let t = stop_timeout.as_secs().max(1) as isize;
            client
                .call(|api, ep| async move {
                    api.restart_container(&id, Some(RestartContainerOptions { t }))
                        .await
                        .map_err(|e| DockerError::from_bollard(e, &ep, &c.to_string()))
                })
                .await?;
            Ok(format!(
                "container {} restarted (was {}; stop waited up to {} s before killing)",
                state.name, state.status, t
            ))
        }
        _ => {
            client
                .call(|api, ep| async move {
                    api.start_container(&id, None::<StartContainerOptions<String>>)
                        .await
                        .map_err(|e| DockerError::from_bollard(e, &ep, &c.to_string()))
                })
                .await?;
            Ok(format!(
                "container {} started (was {}, exit code {}{})",
                state.name,
                state.status,
                state.exit_code,
                if state.oom_killed {
                    ", killed for lack of memory"
                } else {
                    ""
                }
            ))
        }
    }
}

async fn wait_for_policy(
    client: &DockerClient,
    c: &ContainerRef,
    first: &ContainerState,
    wait: Duration,
) -> Result<String, DockerHealError> {
    let t0 = Instant::now();
    loop {
        let s = client
            .call(|api, ep| async move { container::inspect(&api, &ep, c).await })
            .await?;
        if s.status == "running" {
            return Ok(format!(
                "container {} restarted by its own restart policy ({}); sentinel-remedy waited instead of restarting it",
                s.name, first.restart_policy
            ));
        }
        if t0.elapsed() >= wait {
            return Err(DockerHealError::PolicyStalled {
                policy: first.restart_policy.clone(),
                waited_s: t0.elapsed().as_secs_f64(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

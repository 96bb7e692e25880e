//! The daemon's own pulse: a GET to a dead-man switch URL every interval, so that when the
//! daemon dies (or its host does) the switch alerts. The URL is a secret: only its host is
//! logged. A failing ping is said once, and again when pings work again.

use crate::config::HeartbeatConfig;
use slog::{info, warn, Logger};
use std::time::Duration;

pub fn spawn(cfg: HeartbeatConfig, log: Logger) {
    let log = log
        .new(slog::o!("actor" => "heartbeat", "host" => crate::redact::url_host(cfg.url.expose())));
    actix_rt::spawn(async move {
        let client = crate::notify::http::client(Some(Duration::from_secs(10)));
        let mut failing = false;
        // Validation refuses less than 100 ms; a zero period would panic the timer.
        let mut tick = tokio::time::interval(cfg.interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let ok = matches!(client.get(cfg.url.expose()).send().await, Ok(r) if r.status().is_success());
            crate::metrics::global().inc(
                "sentinel_heartbeats_total",
                &[("result", if ok { "sent" } else { "failed" })],
            );
            if !ok && !failing {
                warn!(log, "heartbeat ping failed; the dead-man switch may alert"; "event" => "heartbeat_failed");
            } else if ok && failing {
                info!(log, "heartbeat pings work again"; "event" => "heartbeat_restored");
            }
            failing = !ok;
        }
    });
}

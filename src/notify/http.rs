//! The one HTTP client for endpoints other parties run (webhooks, PagerDuty, the dead-man
//! switch), and the two rules for what comes back from them: a redirect is followed only
//! within the URL's own origin, so a receiver cannot forward an alert, its custom headers (an
//! `X-Api-Key`) or its body to a third party; and an answer's body is read up to a cap, so a
//! hostile receiver cannot fill the daemon's memory.

use std::time::Duration;

/// Most bytes of an answer's body ever read; the rest is left unread.
pub const MAX_BODY: usize = 64 * 1024;

/// Most redirects followed within one origin.
const MAX_REDIRECTS: usize = 5;

/// Longest wait a receiver can ask for between attempts (`Retry-After`, `retry_after`).
pub const MAX_SERVER_WAIT: Duration = Duration::from_secs(300);

/// A client with the daemon's user agent, same-origin redirects only and, if given, a timeout
/// for each whole request (connect, send, read).
pub fn client(timeout: Option<Duration>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("sentinel-remedy/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            if !same_origin {
                attempt.stop()
            } else if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        }));
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    // Building fails only if the TLS backend cannot start, which no retry would fix.
    b.build()
        .expect("HTTP client with the built-in TLS settings builds")
}

/// The answer's body as text, at most [`MAX_BODY`] bytes of it; a read error ends it early.
pub async fn read_capped(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_BODY - buf.len();
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A wait a receiver asked for, in seconds, made safe: a negative, NaN or infinite one is
/// ignored (the daemon's own backoff applies) and a long one is cut to [`MAX_SERVER_WAIT`].
pub fn server_wait(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_SERVER_WAIT.as_secs_f64())))
}

/// `Retry-After` as seconds or as an HTTP date, made safe by [`server_wait`].
pub fn retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return server_wait(secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds() as f64;
    server_wait((secs / 1000.0).max(0.0))
}

/// Discord's `{"retry_after": seconds}` body, made safe by [`server_wait`].
pub fn body_retry_after(body: &str) -> Option<Duration> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("retry_after")?
        .as_f64()
        .and_then(server_wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_waits_never_panic_and_stay_bounded() {
        for v in ["-1", "NaN", "nan", "inf", "-inf", "1e400", "", "soon", "-0"] {
            let w = retry_after(v);
            assert!(w.is_none_or(|w| w <= MAX_SERVER_WAIT), "{v}: {w:?}");
        }
        assert_eq!(retry_after("-1"), None);
        assert_eq!(retry_after("1e30"), Some(MAX_SERVER_WAIT));
        assert_eq!(retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(body_retry_after(r#"{"retry_after": -5}"#), None);
        assert_eq!(
            body_retry_after(r#"{"retry_after": 0.5}"#),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            body_retry_after(r#"{"retry_after": 1e308}"#),
            Some(MAX_SERVER_WAIT)
        );
    }
}

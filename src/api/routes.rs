//! Request handlers. Each answers from the Supervisor (live state), the store (history) or the
//! metrics registry; none blocks the actors.

use super::{page, token_matches, ApiState};
use crate::actors::messages::{GetStatus, SetMaintenance};
use crate::config::duration::parse_duration;
use crate::health::{Fault, CHECK_TIMEOUT};
use crate::status::TargetStatus;
use actix_web::{http::header, web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/healthz", web::get().to(healthz))
        .route("/status", web::get().to(status))
        .route("/metrics", web::get().to(metrics))
        .route("/incidents", web::get().to(incidents))
        .route("/incidents/{id}", web::get().to(incident))
        .route("/targets/{name}/maintenance", web::post().to(maintenance))
        .route("/targets/{name}/resume", web::post().to(resume));
}

async fn statuses(st: &ApiState) -> Result<Vec<TargetStatus>, HttpResponse> {
    match tokio::time::timeout(Duration::from_secs(2), st.supervisor.send(GetStatus)).await {
        Ok(Ok(s)) => Ok(s),
        _ => Err(HttpResponse::ServiceUnavailable()
            .json(json!({"error": "the supervisor did not answer within 2 s"}))),
    }
}

async fn index(st: web::Data<ApiState>) -> HttpResponse {
    let targets = match statuses(&st).await {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let recent = st
        .store
        .as_ref()
        .and_then(|s| s.list(None, None, 20).ok())
        .unwrap_or_default();
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(page::render(
            &targets,
            &recent,
            st.cluster.get().map(|c| c.view()).as_ref(),
        ))
}

async fn healthz(st: web::Data<ApiState>) -> HttpResponse {
    let mut problems: Vec<String> = Vec::new();
    let mut checks = serde_json::Map::new();
    match statuses(&st).await {
        Ok(targets) => {
            let dead: Vec<&str> = targets
                .iter()
                .filter(|t| !t.monitor_alive)
                .map(|t| t.name.as_str())
                .collect();
            checks.insert(
                "actors".into(),
                json!({"targets": targets.len(), "monitors_dead": dead}),
            );
            if !dead.is_empty() {
                problems.push(format!("monitors not running: {}", dead.join(", ")));
            }
        }
        Err(_) => problems.push("the supervisor does not answer".into()),
    }
    checks.insert("registry".into(), json!(st.registry_source));
    if let Some(c) = st.cluster.get() {
        let view = c.view();
        if let Some(why) = &view.fenced {
            problems.push(format!("cluster: no restarts from this daemon: {why}"));
        }
        checks.insert("cluster".into(), json!(view.summary()));
    }
    for (part, fault) in disk_faults(&st).await {
        match fault {
            None => {
                checks.insert(part.into(), json!("ok"));
            }
            Some(problem) => {
                problems.push(format!("{part}: {problem}"));
                checks.insert(part.into(), json!({ "error": problem }));
            }
        }
    }
    services_check(&st, &mut problems, &mut checks).await;
    if let Some(dir) = st.archive_dir.clone() {
        // Asked afresh (bounded, off the server's thread): a directory fixed or broken since
        // start-up shows at once.
        let check =
            tokio::task::spawn_blocking(move || crate::preflight::archive_dir_problem(&dir));
        let problem = match tokio::time::timeout(Duration::from_secs(2), check).await {
            Ok(Ok(p)) => p,
            _ => Some("archive directory: the write check did not finish within 2 s".into()),
        };
        checks.insert(
            "archive".into(),
            json!(problem.as_deref().map_or("ok", |_| "not writable")),
        );
        problems.extend(problem);
    }
    let body = json!({"status": if problems.is_empty() { "ok" } else { "unhealthy" }, "problems": problems, "checks": checks,
        "started_at": st.started_at, "version": env!("CARGO_PKG_VERSION")});
    if problems.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The Docker Engine (once a container target used it) and the S3 uploads.
async fn services_check(
    st: &ApiState,
    problems: &mut Vec<String>,
    checks: &mut serde_json::Map<String, serde_json::Value>,
) {
    // Only once a container target has used the Engine (at start-up or after a reload).
    if let Some(docker) = st.docker.as_ref().filter(|d| d.health().state != "unknown") {
        // Asked afresh (bounded), so a socket that came back or went away shows at once.
        let _ = tokio::time::timeout(Duration::from_secs(3), docker.check()).await;
        let h = docker.health();
        if h.state != "ok" {
            problems.push(format!(
                "Docker Engine {}: {}",
                h.state,
                h.error.clone().unwrap_or_default()
            ));
        }
        checks.insert("docker".into(), json!(h));
    }
    if let Some(up) = &st.uploader {
        let failing = up.failing();
        checks.insert("s3".into(), json!({"failing_uploads": failing.len(), "kinds": failing.iter().map(|f| f.1.label()).collect::<Vec<_>>()}));
        if let Some((_, kind)) = failing.first() {
            problems.push(format!(
                "S3 uploads failing ({}): {}",
                kind.label(),
                kind.fix()
            ));
        }
    }
}

/// `store`, `lease` and `spool` (with an S3 sink), each `None` when it takes writes, checked
/// off the server's thread and within [`CHECK_TIMEOUT`]: a hung disk is a fault too.
async fn disk_faults(st: &ApiState) -> Vec<(&'static str, Option<String>)> {
    let mut parts = vec![];
    if st.store.is_some() {
        parts.push("store");
    }
    if let Some(d) = &st.disks {
        if d.lease_dir.is_some() {
            parts.push("lease");
        }
        if d.spool_dir.is_some() {
            parts.push("spool");
        }
    }
    let (store, disks) = (st.store.clone(), st.disks.clone());
    let work = web::block(move || {
        let mut faults = disks.map(|d| d.check()).unwrap_or_default();
        if let Some(Err(e)) = store.map(|s| s.check()) {
            faults.push(Fault {
                part: "store",
                problem: format!("cannot record incidents: {e}"),
            });
        }
        faults
    });
    let faults = match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(Ok(f)) => f,
        _ => {
            let why = format!(
                "did not answer within {} s (a hung disk?)",
                CHECK_TIMEOUT.as_secs()
            );
            return parts.into_iter().map(|p| (p, Some(why.clone()))).collect();
        }
    };
    parts
        .into_iter()
        .map(|p| {
            let mine: Vec<&str> = faults
                .iter()
                .filter(|f| f.part == p)
                .map(|f| f.problem.as_str())
                .collect();
            (p, (!mine.is_empty()).then(|| mine.join("; ")))
        })
        .collect()
}

async fn status(st: web::Data<ApiState>) -> HttpResponse {
    match statuses(&st).await {
        Ok(t) => match st.cluster.get() {
            Some(c) => HttpResponse::Ok().json(json!({"targets": t, "cluster": c.view()})),
            None => HttpResponse::Ok().json(json!({"targets": t})),
        },
        Err(resp) => resp,
    }
}

async fn metrics(st: web::Data<ApiState>) -> HttpResponse {
    if let Some(up) = &st.uploader {
        crate::metrics::global().set(
            "sentinel_archive_spool_pending",
            &[],
            up.in_progress() as f64,
        );
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::global().render())
}

#[derive(Deserialize)]
struct IncidentQuery {
    target: Option<String>,
    /// A duration back from now, e.g. 7d, 24h.
    since: Option<String>,
    limit: Option<u32>,
}

async fn incidents(st: web::Data<ApiState>, q: web::Query<IncidentQuery>) -> HttpResponse {
    let Some(store) = &st.store else {
        return HttpResponse::ServiceUnavailable().json(json!({"error": "no incident store"}));
    };
    let since = match q.since.as_deref().map(|s| offset(s, "since", false)) {
        Some(Err(refused)) => return refused.response(),
        Some(Ok(at)) => Some(at),
        None => None,
    };
    match store.list(q.target.as_deref(), since, q.limit.unwrap_or(100).min(1000)) {
        Ok(rows) => HttpResponse::Ok().json(json!({"incidents": rows})),
        Err(e) => HttpResponse::InternalServerError().json(json!({"error": e.to_string()})),
    }
}

async fn incident(st: web::Data<ApiState>, id: web::Path<String>) -> HttpResponse {
    let Some(store) = &st.store else {
        return HttpResponse::ServiceUnavailable().json(json!({"error": "no incident store"}));
    };
    match store.get(&id) {
        Ok(Some(d)) => HttpResponse::Ok().json(d),
        Ok(None) => HttpResponse::NotFound().json(json!({"error": format!("no incident '{id}'")})),
        Err(e) => HttpResponse::InternalServerError().json(json!({"error": e.to_string()})),
    }
}

/// Why a request is refused before it is handled.
#[derive(Debug)]
enum Refused {
    /// No token is configured: the mutating endpoints are off (403).
    TokenOff,
    /// The bearer token is missing or wrong (401).
    BadToken,
    /// A value in the query or body cannot be used (400); the text says which and why.
    BadRequest(String),
}

impl Refused {
    fn response(self) -> HttpResponse {
        match self {
            Refused::TokenOff => HttpResponse::Forbidden().json(json!({"error": "mutating endpoints are off: set server.token (SENTINEL_API_TOKEN) to enable them"})),
            Refused::BadToken => HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .json(json!({"error": "a valid bearer token is required"})),
            Refused::BadRequest(error) => HttpResponse::BadRequest().json(json!({"error": error})),
        }
    }
}

/// The bearer token check: 403 when no token is configured, 401 when it is wrong.
fn authorize(req: &HttpRequest, st: &ApiState) -> Result<(), Refused> {
    let Some(expected) = &st.token else {
        return Err(Refused::TokenOff);
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token_matches(presented.as_bytes(), expected.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Refused::BadToken)
    }
}

/// How far an open-ended maintenance window reaches, and the longest one may be asked for.
const FOREVER_DAYS: i64 = 100 * 365;

/// `now ± text` (a duration) as a time, or a 400 naming `param` when the text is not a
/// duration or reaches past what a window or a history query can mean (no overflow panics).
fn offset(text: &str, param: &str, ahead: bool) -> Result<chrono::DateTime<Utc>, Refused> {
    let d = parse_duration(text).map_err(|e| Refused::BadRequest(format!("{param}: {e}")))?;
    let too_long = || {
        Refused::BadRequest(format!(
            "{param}: '{text}' is longer than {FOREVER_DAYS} days (use e.g. 7d, 24h or 30m)"
        ))
    };
    let d = chrono::Duration::from_std(d)
        .ok()
        .filter(|d| *d <= chrono::Duration::days(FOREVER_DAYS))
        .ok_or_else(too_long)?;
    let now = Utc::now();
    if ahead {
        now.checked_add_signed(d)
    } else {
        now.checked_sub_signed(d)
    }
    .ok_or_else(too_long)
}

#[derive(Deserialize, Default)]
struct MaintenanceBody {
    duration: Option<String>,
}

async fn maintenance(
    req: HttpRequest,
    st: web::Data<ApiState>,
    name: web::Path<String>,
    q: web::Query<MaintenanceBody>,
    body: web::Bytes,
) -> HttpResponse {
    if let Err(refused) = authorize(&req, &st) {
        return refused.response();
    }
    let from_body: MaintenanceBody = if body.is_empty() {
        MaintenanceBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return HttpResponse::BadRequest().json(
                json!({"error": format!("body must be JSON like {{\"duration\": \"30m\"}}: {e}")}),
            ),
        }
    };
    let until = match q.duration.clone().or(from_body.duration) {
        Some(d) => match offset(&d, "duration", true) {
            Ok(at) => at,
            Err(refused) => return refused.response(),
        },
        // Without a duration the window stays open until resumed.
        None => Utc::now() + chrono::Duration::days(FOREVER_DAYS),
    };
    set(&st, name.into_inner(), Some(until)).await
}

async fn resume(
    req: HttpRequest,
    st: web::Data<ApiState>,
    name: web::Path<String>,
) -> HttpResponse {
    if let Err(refused) = authorize(&req, &st) {
        return refused.response();
    }
    set(&st, name.into_inner(), None).await
}

async fn set(st: &ApiState, target: String, until: Option<chrono::DateTime<Utc>>) -> HttpResponse {
    match st
        .supervisor
        .send(SetMaintenance {
            target: target.clone(),
            until,
        })
        .await
    {
        Ok(Ok(())) => {
            HttpResponse::Ok().json(json!({"target": target, "maintenance_until": until}))
        }
        Ok(Err(e)) => HttpResponse::NotFound().json(json!({"error": e})),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({"error": e.to_string()})),
    }
}

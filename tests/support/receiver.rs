//! A real HTTP server standing in for Slack, Discord and a generic webhook endpoint. It
//! enforces the limits those services document and answers 400 to a payload they would reject,
//! so a test sees exactly what the real service would accept.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;
use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One request received.
#[derive(Debug, Clone)]
pub struct Hit {
    /// `/slack`, `/discord`, `/hook`, ...
    pub path: String,
    /// POST, PATCH, GET.
    pub method: String,
    pub raw: String,
    pub body: Value,
    /// What we answered.
    pub status: u16,
    /// Why the real service would reject the payload (empty when it is well-formed).
    pub problems: Vec<String>,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    hits: Vec<Hit>,
    /// Statuses to answer before answering success, in order (e.g. 500 then 200).
    script: VecDeque<(u16, Option<u64>)>,
}

/// The receiver; stops with the test process.
#[derive(Clone)]
pub struct Receiver {
    base: String,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// Listens on `ip` (e.g. a Docker network's gateway, which its containers reach).
    pub fn start_on(ip: &str) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("bind receiver");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = shared.clone();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let data = web::Data::new(s);
                HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .default_service(web::to(handle))
                })
                .workers(1)
                .listen(listener)
                .expect("listen")
                .run()
                .await
                .expect("receiver ran");
            })
        });
        Self { base, shared }
    }

    /// `http://IP:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Answer these statuses (with an optional Retry-After in seconds) before succeeding again.
    pub fn script(&self, answers: &[(u16, Option<u64>)]) {
        self.shared
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().copied());
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.shared.lock().unwrap().hits.clone()
    }

    /// Requests to `path` that we accepted (2xx).
    pub fn accepted(&self, path: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.path == path && h.status < 300)
            .collect()
    }

    /// Accepted generic-webhook events of this kind (`failure`, `recovery`, `escalation`).
    pub fn hook_events(&self, event: &str) -> Vec<Hit> {
        self.accepted("/hook")
            .into_iter()
            .filter(|h| h.body["event"] == event)
            .collect()
    }

    /// How many accepted generic-webhook events of this kind are about `target`.
    pub fn hook_count(&self, event: &str, target: &str) -> usize {
        self.hook_events(event)
            .iter()
            .filter(|h| h.body["target"] == target)
            .count()
    }

    /// Panics if any payload was one the real service would reject.
    pub fn assert_all_well_formed(&self) {
        for h in self.hits() {
            assert!(
                h.problems.is_empty(),
                "{} payload rejected: {:?}\n{}",
                h.path,
                h.problems,
                h.raw
            );
        }
    }
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    data: web::Data<Arc<Mutex<Shared>>>,
) -> HttpResponse {
    let path = req.path().to_string();
    let raw = String::from_utf8_lossy(&body).to_string();
    let get = req.method() == actix_web::http::Method::GET;
    let (body, mut problems) = if get {
        (Value::Null, vec![])
    } else {
        match serde_json::from_str::<Value>(&raw) {
            Ok(v) => (v, vec![]),
            Err(e) => (Value::Null, vec![format!("not JSON: {e}")]),
        }
    };
    if !get
        && req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_none_or(|ct| !ct.starts_with("application/json"))
    {
        problems.push("content-type is not application/json".into());
    }
    if problems.is_empty() {
        problems = match path.as_str() {
            "/slack" => slack_problems(&body),
            p if p.starts_with("/discord") => discord_problems(&body),
            "/pagerduty" => pagerduty_problems(&body),
            _ => vec![],
        };
    }
    let mut shared = data.lock().unwrap();
    let scripted = if problems.is_empty() {
        shared.script.pop_front()
    } else {
        None
    };
    let (status, retry_after) = match scripted {
        Some(s) => s,
        None if !problems.is_empty() => (400, None),
        None if path == "/discord" && !req.query_string().contains("wait=true") => (204, None),
        None if path == "/pagerduty" => (202, None),
        None => (200, None),
    };
    let message_id = shared.hits.len();
    shared.hits.push(Hit {
        path: path.clone(),
        method: req.method().to_string(),
        raw,
        body,
        status,
        problems,
        at: Instant::now(),
    });
    let mut resp =
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"));
    if let Some(s) = retry_after {
        resp.insert_header(("Retry-After", s.to_string()));
    }
    match status {
        204 => resp.finish(),
        200 if path == "/discord" => resp
            .content_type("application/json")
            .body(format!(r#"{{"id":"{message_id}"}}"#)),
        200 if path.starts_with("/discord/messages/") => {
            resp.content_type("application/json").body(format!(
                r#"{{"id":"{}"}}"#,
                path.rsplit('/').next().unwrap_or("")
            ))
        }
        202 if path == "/pagerduty" => resp
            .content_type("application/json")
            .body(r#"{"status":"success","message":"Event processed"}"#),
        200 if path == "/slack" => resp.body("ok"),
        _ => resp.body(""),
    }
}

/// What PagerDuty's Events API v2 rejects: a missing routing key, an unknown event_action,
/// a dedup_key over 255, and for `trigger` a payload without summary (max 1024), source or a
/// valid severity, or with a timestamp that is not ISO 8601.
pub fn pagerduty_problems(b: &Value) -> Vec<String> {
    let mut p = vec![];
    if text_len(&b["routing_key"]) == 0 {
        p.push("routing_key is required".into());
    }
    let action = b["event_action"].as_str().unwrap_or("");
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        p.push(format!(
            "event_action '{action}' is not trigger, acknowledge or resolve"
        ));
    }
    if text_len(&b["dedup_key"]) > 255 || (action != "trigger" && text_len(&b["dedup_key"]) == 0) {
        p.push("dedup_key must be 1..=255 characters (required unless triggering)".into());
    }
    if action == "trigger" {
        let pl = &b["payload"];
        let summary = text_len(&pl["summary"]);
        if summary == 0 || summary > 1024 {
            p.push("payload.summary must be 1..=1024 characters".into());
        }
        if text_len(&pl["source"]) == 0 {
            p.push("payload.source is required".into());
        }
        if !["critical", "error", "warning", "info"]
            .contains(&pl["severity"].as_str().unwrap_or(""))
        {
            p.push("payload.severity must be critical, error, warning or info".into());
        }
        if let Some(ts) = pl.get("timestamp") {
            if ts
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .is_none()
            {
                p.push("payload.timestamp is not ISO 8601".into());
            }
        }
    }
    p
}

fn text_len(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

/// What Slack's incoming webhooks reject: no `text`, too many blocks, unknown block types,
/// header text over 150 characters or not plain_text, section text over 3000.
pub fn slack_problems(b: &Value) -> Vec<String> {
    let mut p = vec![];
    if !b["text"].is_string() || text_len(&b["text"]) == 0 {
        p.push("missing `text` (required as the notification fallback)".into());
    }
    if let Some(blocks) = b.get("blocks") {
        let Some(blocks) = blocks.as_array() else {
            return vec!["blocks is not an array".into()];
        };
        if blocks.len() > 50 {
            p.push("more than 50 blocks".into());
        }
        for (i, bl) in blocks.iter().enumerate() {
            match bl["type"].as_str() {
                Some("header") => {
                    if bl["text"]["type"] != "plain_text" {
                        p.push(format!("blocks[{i}] header text must be plain_text"));
                    }
                    if text_len(&bl["text"]["text"]) > 150 {
                        p.push(format!("blocks[{i}] header over 150 chars"));
                    }
                }
                Some("section") => {
                    let t = &bl["text"];
                    if !matches!(t["type"].as_str(), Some("mrkdwn" | "plain_text"))
                        && bl.get("fields").is_none()
                    {
                        p.push(format!("blocks[{i}] section needs text or fields"));
                    }
                    if text_len(&t["text"]) > 3000 {
                        p.push(format!("blocks[{i}] section text over 3000 chars"));
                    }
                    if let Some(f) = bl.get("fields").and_then(Value::as_array) {
                        if f.len() > 10 || f.iter().any(|x| text_len(&x["text"]) > 2000) {
                            p.push(format!("blocks[{i}] section fields over limits"));
                        }
                    }
                }
                Some("context") => {
                    let els = bl["elements"].as_array().map_or(0, Vec::len);
                    if els == 0 || els > 10 {
                        p.push(format!("blocks[{i}] context needs 1..=10 elements"));
                    }
                }
                Some("divider" | "actions" | "image" | "rich_text") => {}
                other => p.push(format!("blocks[{i}] unknown type {other:?}")),
            }
        }
    }
    p
}

/// What Discord's webhook endpoint rejects: neither content nor embeds, content over 2000,
/// more than 10 embeds, embed limits (title 256, description 4096, 25 fields of 256/1024,
/// footer 2048, 6000 in all), a colour outside 0..=0xFFFFFF.
pub fn discord_problems(b: &Value) -> Vec<String> {
    let mut p = vec![];
    let content = text_len(&b["content"]);
    let embeds = b["embeds"].as_array().cloned().unwrap_or_default();
    if content == 0 && embeds.is_empty() {
        p.push("neither content nor embeds".into());
    }
    if content > 2000 {
        p.push("content over 2000 chars".into());
    }
    if embeds.len() > 10 {
        p.push("more than 10 embeds".into());
    }
    for (i, e) in embeds.iter().enumerate() {
        let mut total =
            text_len(&e["title"]) + text_len(&e["description"]) + text_len(&e["footer"]["text"]);
        if text_len(&e["title"]) > 256 {
            p.push(format!("embeds[{i}].title over 256"));
        }
        if text_len(&e["description"]) > 4096 {
            p.push(format!("embeds[{i}].description over 4096"));
        }
        if let Some(c) = e.get("color") {
            if c.as_u64().is_none_or(|c| c > 0xFF_FFFF) {
                p.push(format!("embeds[{i}].color not an integer in 0..=0xFFFFFF"));
            }
        }
        if let Some(ts) = e.get("timestamp") {
            if ts
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .is_none()
            {
                p.push(format!("embeds[{i}].timestamp is not ISO 8601"));
            }
        }
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        if fields.len() > 25 {
            p.push(format!("embeds[{i}] more than 25 fields"));
        }
        for (j, f) in fields.iter().enumerate() {
            let (n, v) = (text_len(&f["name"]), text_len(&f["value"]));
            if n == 0 || n > 256 || v == 0 || v > 1024 {
                p.push(format!(
                    "embeds[{i}].fields[{j}] name 1..=256 and value 1..=1024 required"
                ));
            }
            total += n + v;
        }
        if total > 6000 {
            p.push(format!("embeds[{i}] over 6000 chars in all"));
        }
    }
    p
}

//! `sentinel-remedy status` and `sentinel-remedy incidents`: the HTTP API of a running daemon
//! printed as tables for a terminal, or as JSON with `--json`.

use serde_json::Value;
use std::time::Duration;

/// Why a client command failed; the CLI prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the daemon at {url}: {detail} (is it running with `server.listen`? set --url or SENTINEL_URL)")]
    Unreachable { url: String, detail: String },
    #[error("the daemon answered {status} for {url}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

/// GETs `path` from the daemon and parses the JSON.
pub fn get(base: &str, path: &str) -> Result<Value, ClientError> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = crate::notify::http::client(Some(Duration::from_secs(10)));
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(ClientError::Status {
                url: url.clone(),
                status,
                body,
            });
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Status {
            url: url.clone(),
            status,
            body: format!("not JSON: {e}"),
        })
    })
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Lays out rows under headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

/// Text a container's owner wrote (labels), with control characters shown as `?`: it never
/// drives the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The `status` table.
pub fn status_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                s(&t["name"]),
                s(&t["state"]),
                s(&t["endpoint"]),
                t["last_probe_latency_ms"]
                    .as_f64()
                    .map(|m| format!("{m:.1} ms"))
                    .unwrap_or_else(|| "-".into()),
                s(&t["consecutive_failures"]),
                format!("{}/{}", s(&t["restarts_in_window"]), s(&t["max_restarts"])),
                s(&t["open_incident"]),
                if t["maintenance_until"].is_null() {
                    "-".into()
                } else {
                    format!("until {}", s(&t["maintenance_until"]))
                },
                match t["discovered"]["container"].as_str() {
                    Some(c) => format!("container {c}"),
                    None => "registry".into(),
                },
            ]
        })
        .collect();
    let mut out = table(
        &[
            "TARGET",
            "STATE",
            "ENDPOINT",
            "LATENCY",
            "FAILURES",
            "RESTARTS",
            "INCIDENT",
            "MAINTENANCE",
            "SOURCE",
        ],
        &rows,
    );
    // Discovered targets: the labels they were built from.
    for t in v["targets"].as_array().into_iter().flatten() {
        if let Some(labels) = t["discovered"]["labels"].as_object() {
            let list: Vec<String> = labels
                .iter()
                .map(|(k, v)| printable(&format!("{k}={}", s(v))))
                .collect();
            out.push_str(&format!("{}: {}\n", s(&t["name"]), list.join(" ")));
        }
        if let Some(line) = unreachable_line(t) {
            out.push_str(&line);
            out.push('\n');
        }
        for other in t["discovered"]["contested_by"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push_str(&printable(&format!(
                "{}: also claimed by container {}: NOT WATCHED, the name stays with container {}",
                s(&t["name"]),
                s(other),
                s(&t["discovered"]["container"])
            )));
            out.push('\n');
        }
    }
    if v["cluster"].is_object() {
        out.push_str(&cluster_lines(&v["cluster"]));
    }
    out
}

/// For a discovered container the daemon cannot connect to: a line saying so, with its
/// networks and the fix.
fn unreachable_line(t: &Value) -> Option<String> {
    if t["state"] != "unreachable" {
        return None;
    }
    let networks: Vec<String> = t["discovered"]["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    Some(printable(&format!(
        "{}: UNREACHABLE, NOT WATCHED: the daemon cannot connect to container {} (networks: {}); put the daemon on one of them, or set discovery.docker.network",
        s(&t["name"]),
        s(&t["discovered"]["container"]),
        networks.join(", ")
    )))
}

/// Cluster mode: this daemon, the members, whether it is fenced, and who owns the rest.
fn cluster_lines(c: &Value) -> String {
    let me = s(&c["member"]);
    let members: Vec<String> = c["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| printable(&s(m)))
        .collect();
    let fenced = match c["fenced"].as_str() {
        Some(why) => format!("FENCED, restarts nothing: {}", printable(why)),
        None => format!(
            "lease renewed {:.1} s ago",
            c["lease_age_seconds"].as_f64().unwrap_or(f64::NAN)
        ),
    };
    let mut elsewhere: std::collections::BTreeMap<String, usize> = Default::default();
    for owner in c["owners"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, m)| s(m))
    {
        if owner != me {
            *elsewhere.entry(owner).or_insert(0) += 1;
        }
    }
    let others: Vec<String> = elsewhere
        .iter()
        .map(|(m, n)| format!("{n} by {}", printable(m)))
        .collect();
    format!(
        "cluster: this daemon is {}; members: {}; {fenced}\nowned elsewhere: {}\n",
        printable(&me),
        members.join(", "),
        if others.is_empty() {
            "none".into()
        } else {
            others.join(", ")
        }
    )
}

/// The `incidents` table.
pub fn incidents_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let ttr = i["time_to_recovery_seconds"]
                .as_f64()
                .map(|t| format!("{t:.1} s"))
                .unwrap_or_else(|| {
                    if i["closed"] == true {
                        "unrecovered".into()
                    } else {
                        "open".into()
                    }
                });
            vec![
                s(&i["id"]),
                s(&i["target"]),
                s(&i["class"]),
                s(&i["phase"]),
                ttr,
                s(&i["archive"]),
                // Quoted from a server log: it never drives the terminal.
                printable(&crate::notify::clip(&s(&i["cause"]["sentence"]), 120)),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "INCIDENT",
            "TARGET",
            "FAILURE",
            "STATE",
            "TTR",
            "ARCHIVE",
            "LIKELY CAUSE",
        ],
        &rows,
    );
    let ttrs: Vec<f64> = v["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["time_to_recovery_seconds"].as_f64())
        .collect();
    if !ttrs.is_empty() {
        let mut sorted = ttrs.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        out.push_str(&format!(
            "\n{} incident(s), {} recovered; MTTR {:.1} s (median {:.1} s)\n",
            rows.len(),
            ttrs.len(),
            ttrs.iter().sum::<f64>() / ttrs.len() as f64,
            sorted[sorted.len() / 2]
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_says_which_containers_are_unreachable_and_the_fix() {
        let v = serde_json::json!({ "targets": [{
            "name": "db", "state": "unreachable", "endpoint": "pg:5432/postgres",
            "consecutive_failures": 0, "restarts_in_window": 0, "max_restarts": 3,
            "discovered": { "container": "pg", "container_id": "0123", "networks": ["backend"], "labels": {} }
        }]});
        let out = status_table(&v);
        assert!(out.contains("unreachable"), "{out}");
        assert!(
            out.contains("db: UNREACHABLE, NOT WATCHED: the daemon cannot connect to container pg (networks: backend); put the daemon on one of them, or set discovery.docker.network\n"),
            "{out}"
        );
    }

    #[test]
    fn the_incidents_table_shows_the_likely_cause_with_control_characters_escaped() {
        let v = serde_json::json!({ "incidents": [{
            "id": "20261207T000000.000Z-db", "target": "db", "class": "backend_crash",
            "phase": "healthy", "closed": true, "time_to_recovery_seconds": 1.5, "archive": "/x",
            "cause": { "class": "backend_crash", "sentence": "Backend crash: server process 9 was terminated by signal 11 (SIGSEGV)\u{1b}[2J." }
        }]});
        let out = incidents_table(&v);
        assert!(out.contains("LIKELY CAUSE"), "{out}");
        assert!(
            out.contains("Backend crash: server process 9 was terminated by signal 11"),
            "{out}"
        );
        assert!(!out.contains('\u{1b}'), "{out}");
    }
}

//! The status page at `/`: server-rendered HTML, no scripts or external assets, refreshed by
//! the browser every 5 seconds. Everything shown is escaped.

use crate::status::TargetStatus;
use crate::store::IncidentRow;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn state_class(state: &str) -> &'static str {
    match state {
        "healthy" => "ok",
        "suspect" | "maintenance" | "recovering" => "warn",
        _ => "bad",
    }
}

/// Renders the page.
pub fn render(
    targets: &[TargetStatus],
    incidents: &[IncidentRow],
    cluster: Option<&crate::cluster::ClusterView>,
) -> String {
    let mut h = String::with_capacity(8192);
    let down = targets.iter().filter(|t| t.state != "healthy").count();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#1d2330;background:#f6f7f9}}
h1{{font-size:1.4rem;margin:0 0 .2rem}} h2{{font-size:1.1rem;margin:2rem 0 .5rem}}
.sub{{color:#5b6473;margin-bottom:1rem}}
table{{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}}
th,td{{text-align:left;padding:.45rem .7rem;border-bottom:1px solid #e3e6ea;vertical-align:top}}
th{{background:#eef0f3;font-weight:600}}
.state{{font-weight:700;padding:.1rem .5rem;border-radius:.6rem;display:inline-block}}
.ok{{background:#d9f5e3;color:#146c34}} .warn{{background:#fff1cc;color:#7a5a00}} .bad{{background:#fde0e0;color:#9b1c1c}}
code{{font-size:12px}}
</style></head><body>
<h1>SentinelRemedy</h1>
<div class="sub">{n} target(s), {down} not healthy &middot; refreshed every 5 s &middot; <a href="/status">status JSON</a> &middot; <a href="/metrics">metrics</a> &middot; <a href="/incidents">incidents JSON</a></div>
<h2>Targets</h2>
<table id="targets"><thead><tr><th>Target</th><th>State</th><th>Endpoint</th><th>Last probe</th><th>Failures</th><th>Restarts in window</th><th>Open incident</th><th>Vitals</th></tr></thead><tbody>
"#,
        title = if down > 0 {
            format!("{down} down - SentinelRemedy")
        } else {
            "All healthy - SentinelRemedy".into()
        },
        n = targets.len(),
    );
    for t in targets {
        target_row(&mut h, t);
    }
    if let Some(c) = cluster {
        cluster_section(&mut h, c);
    }
    h.push_str("</tbody></table>\n<h2>Recent incidents</h2>\n<table id=\"incidents\"><thead><tr><th>Incident</th><th>Target</th><th>Failure</th><th>State</th><th>Time to recovery</th><th>Likely cause</th><th>Archive</th></tr></thead><tbody>\n");
    if incidents.is_empty() {
        h.push_str("<tr><td colspan=\"7\">No incidents recorded.</td></tr>\n");
    }
    for i in incidents {
        incident_row(&mut h, i);
    }
    h.push_str("</tbody></table>\n</body></html>\n");
    h
}

/// One row of the targets table.
fn target_row(h: &mut String, t: &TargetStatus) {
    let last = match (t.last_probe_at, t.last_probe_latency_ms) {
        (Some(at), Some(ms)) => format!("{} ({ms:.1} ms)", at.format("%H:%M:%S")),
        _ => "not yet".into(),
    };
    let maint = t
        .maintenance_until
        .map(|u| format!(" until {}", u.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_default();
    let _ = writeln!(
        h,
        r#"<tr data-target="{name}" data-state="{state}"><td>{name}</td><td><span class="state {cls}">{state}</span>{maint}</td><td><code>{ep}</code></td><td>{last}</td><td>{f}</td><td>{r} / {max}</td><td>{inc}</td><td>{vitals}</td></tr>"#,
        name = esc(&t.name),
        state = esc(&t.state),
        cls = state_class(&t.state),
        maint = esc(&maint),
        ep = esc(&t.endpoint),
        last = esc(&last),
        f = t.consecutive_failures,
        r = t.restarts_in_window,
        max = t.max_restarts,
        inc = t
            .open_incident
            .as_deref()
            .map(|i| format!("<a href=\"/incidents/{0}\">{0}</a>", esc(i)))
            .unwrap_or_else(|| "&ndash;".into()),
        vitals = vitals_cell(t),
    );
}

/// The flight recorder's newest numbers and any early warning, short.
fn vitals_cell(t: &TargetStatus) -> String {
    use crate::flight::movers::bytes;
    let Some(v) = &t.vitals else {
        return "&ndash;".into();
    };
    let get = |k: &str| v.values.get(k).copied();
    let mut parts = Vec::new();
    if let (Some(n), Some(m)) = (get("connections"), get("max_connections")) {
        parts.push(format!("connections {n:.0}/{m:.0}"));
    }
    if let Some(x) = get("idle_in_transaction").filter(|x| *x > 0.0) {
        parts.push(format!("idle in transaction {x:.0}"));
    }
    if let Some(x) = get("oldest_transaction_seconds") {
        parts.push(format!("oldest transaction {x:.0} s"));
    }
    if let Some(x) = get("waiting_locks").filter(|x| *x > 0.0) {
        parts.push(format!("waiting locks {x:.0}"));
    }
    if let Some(x) = get("xid_age") {
        parts.push(format!("xid age {x:.0}"));
    }
    if let Some(x) = get("replay_lag_seconds") {
        parts.push(format!("replay lag {x:.0} s"));
    }
    if let Some(x) = get("data_disk_free_bytes") {
        parts.push(format!("data disk free {}", bytes(x)));
    }
    if let Some(x) = get("postmaster_rss_bytes") {
        parts.push(format!("postmaster {}", bytes(x)));
    }
    if let Some(x) = get("container_memory_bytes") {
        parts.push(format!("container memory {}", bytes(x)));
    }
    let mut cell = esc(&parts.join(" · "));
    for w in &t.warnings {
        cell.push_str(&format!(" <span class=\"state warn\">{}</span>", esc(w)));
    }
    cell
}

/// One row of the recent incidents table.
fn incident_row(h: &mut String, i: &IncidentRow) {
    let ttr = match i.time_to_recovery_seconds {
        Some(s) => format!("{s:.1} s"),
        None if i.closed => "closed unrecovered".into(),
        None => "open".into(),
    };
    let _ = writeln!(
        h,
        r#"<tr><td><a href="/incidents/{id}">{id}</a></td><td>{target}</td><td>{class}</td><td>{phase}</td><td>{ttr}</td><td class="cause">{cause}</td><td><code>{archive}</code></td></tr>"#,
        cause = esc(i
            .cause
            .as_ref()
            .map_or("not classified", |c| c.sentence.as_str())),
        id = esc(&i.id),
        target = esc(&i.target),
        class = esc(&i.class),
        phase = esc(if i.closed && i.recovered_at.is_some() {
            "recovered"
        } else {
            &i.phase
        }),
        ttr = esc(&ttr),
        archive = esc(i.archive.as_deref().unwrap_or("")),
    );
}

/// Cluster mode: this daemon, the members and how many targets each owns.
fn cluster_section(h: &mut String, c: &crate::cluster::ClusterView) {
    let state = match &c.fenced {
        Some(why) => format!("<span class=\"state bad\">fenced</span> {}", esc(why)),
        None => "<span class=\"state ok\">member</span>".into(),
    };
    let _ = write!(
        h,
        "</tbody></table>\n<h2>Cluster</h2>\n<div class=\"sub\">This daemon: <b>{}</b> {state}</div>\n<table id=\"cluster\"><thead><tr><th>Member</th><th>Targets owned</th></tr></thead><tbody>\n",
        esc(&c.member)
    );
    for m in &c.members {
        let owned = c.owners.values().filter(|o| *o == m).count();
        let _ = writeln!(h, "<tr><td>{}</td><td>{owned}</td></tr>", esc(m));
    }
    let free = c.ghost_owners.len();
    if free > 0 {
        let _ = writeln!(h, "<tr><td>(no live member: free)</td><td>{free}</td></tr>");
    }
    if !c.disputed.is_empty() {
        let _ = writeln!(
            h,
            "<tr><td>(listed by only some members)</td><td>{}</td></tr>",
            c.disputed.len()
        );
    }
}

//! Operating the daemon over HTTP: metrics that parse and move with incidents, status and
//! incident history, maintenance windows behind a bearer token, exactly-once completion of an
//! incident across a SIGKILL of the daemon, the CLI tables, and the status page in Chromium.

mod support;

use std::time::Duration;
use support::http::{self, metric, parse_metrics};
use support::*;

const LONG: Duration = Duration::from_secs(90);
const TOKEN: &str = "test-token-0123456789abcdef";

fn hook_only(rx: &Receiver) -> String {
    format!("  webhooks: [ {{ url: \"{}/hook\" }} ]\n", rx.base())
}

#[test]
fn metrics_status_and_history_follow_an_incident() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(&hook_only(&rx), &[TargetSpec::new("orders", &pg)]);
    let addr = with_server(&ws, Some(TOKEN));
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    d.wait_event("probe_ok", Some("orders"), LONG);

    let before = parse_metrics(&http::get(&addr, "/metrics").body);
    assert_eq!(
        metric(&before, "sentinel_target_up", &[("target", "orders")]),
        Some(1.0)
    );
    assert!(
        metric(
            &before,
            "sentinel_probe_duration_seconds_count",
            &[("target", "orders")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric(&before, "sentinel_restarts_total", &[("target", "orders")]),
        None
    );
    let health = http::get(&addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);

    pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    wait_for(LONG, "alerts delivered", || {
        (d.count("notification_sent", Some("orders")) == 2).then_some(())
    });
    d.wait_event("heal_log_archived", None, LONG);
    let resp = http::get(&addr, "/metrics");
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let after = parse_metrics(&resp.body);
    assert_eq!(
        metric(&after, "sentinel_restarts_total", &[("target", "orders")]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &after,
            "sentinel_incidents_total",
            &[("target", "orders"), ("class", "process_exited")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &after,
            "sentinel_archives_total",
            &[("target", "orders"), ("result", "written")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &after,
            "sentinel_notifications_total",
            &[
                ("target", "orders"),
                ("channel", "webhook"),
                ("result", "sent")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &after,
            "sentinel_incident_recovery_seconds_count",
            &[("target", "orders")]
        ),
        Some(1.0)
    );
    assert!(
        metric(
            &after,
            "sentinel_probe_failures_total",
            &[("target", "orders")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric(&after, "sentinel_target_up", &[("target", "orders")]),
        Some(1.0)
    );

    let status = http::get(&addr, "/status").json();
    let t = &status["targets"][0];
    assert_eq!(t["name"], "orders");
    assert_eq!(t["state"], "healthy");
    assert_eq!(t["restarts_in_window"], 1);
    assert!(t["last_probe_latency_ms"].as_f64().is_some());

    let list = http::get(&addr, "/incidents").json();
    let inc = &list["incidents"][0];
    assert_eq!(list["incidents"].as_array().unwrap().len(), 1);
    assert!(inc["time_to_recovery_seconds"].as_f64().unwrap() > 0.0);
    let id = inc["id"].as_str().unwrap();
    let detail = http::get(&addr, &format!("/incidents/{id}")).json();
    let mut kinds: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[..3], ["declared", "archived", "heal_issued"]);
    // The healer's verdict and the first passing probe race; both orders are right.
    kinds[3..].sort();
    assert_eq!(kinds[3..], ["heal_succeeded", "recovered"], "{kinds:?}");
    let notes: Vec<(&str, &str)> = detail["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["kind"].as_str().unwrap(), n["result"].as_str().unwrap()))
        .collect();
    assert_eq!(notes, vec![("failure", "sent"), ("recovery", "sent")]);
    assert!(detail["archive"].as_str().unwrap().contains(id));
    assert_eq!(http::get(&addr, "/incidents/nope").status, 404);

    // The CLI prints the same as tables (and JSON).
    let url = format!("http://{addr}");
    let (code, out, err) = run_cli(&["status", "--url", &url], ws.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("TARGET")
            && out.contains("orders")
            && out.contains("healthy")
            && out.contains("1/3"),
        "{out}"
    );
    let (code, out, _) = run_cli(
        &[
            "incidents",
            "--url",
            &url,
            "--target",
            "orders",
            "--since",
            "1h",
        ],
        ws.path(),
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains(id) && out.contains("process_exited") && out.contains("MTTR"),
        "{out}"
    );
    let (_, out, _) = run_cli(&["incidents", "--url", &url, "--json"], ws.path(), &[]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["incidents"][0]["id"],
        id
    );
    let (code, _, err) = run_cli(&["status", "--url", "http://127.0.0.1:9"], ws.path(), &[]);
    assert_eq!(code, 69);
    assert!(err.contains("cannot reach the daemon"), "{err}");
}

#[test]
fn maintenance_suppresses_the_heal_and_resume_re_enables_it() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &hook_only(&rx),
        &[TargetSpec {
            pid_watch: false,
            threshold: 2,
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let addr = with_server(&ws, Some(TOKEN));
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);

    // Tokens are required and checked.
    let path = "/targets/orders/maintenance";
    assert_eq!(http::request(&addr, "POST", path, None, None).status, 401);
    let wrong = http::request(
        &addr,
        "POST",
        path,
        Some("test-token-0123456789abcdeX"),
        None,
    );
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        http::request(
            &addr,
            "POST",
            "/targets/nope/maintenance",
            Some(TOKEN),
            None
        )
        .status,
        404
    );
    let ok = http::request(
        &addr,
        "POST",
        path,
        Some(TOKEN),
        Some(r#"{"duration": "1h"}"#),
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        http::get(&addr, "/status").json()["targets"][0]["state"],
        "maintenance"
    );

    pg.kill9();
    d.wait_event("maintenance_suppressed", Some("orders"), LONG);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.count("incident_declared", None), 0);
    assert_eq!(d.count("heal_issued", None), 0);
    assert!(rx.hits().is_empty(), "no alert during maintenance");
    assert!(ws.bundles().is_empty(), "no archive during maintenance");
    let st = http::get(&addr, "/status").json();
    assert_eq!(
        st["targets"][0]["up"], false,
        "still probed and reported: {st}"
    );
    let m = parse_metrics(&http::get(&addr, "/metrics").body);
    assert_eq!(
        metric(&m, "sentinel_target_maintenance", &[("target", "orders")]),
        Some(1.0)
    );

    assert_eq!(
        http::request(&addr, "POST", "/targets/orders/resume", Some(TOKEN), None).status,
        200
    );
    d.wait_event("target_recovered", Some("orders"), LONG);
    assert_eq!(d.count("heal_issued", Some("orders")), 1);
    assert!(pg.answers());
}

#[test]
fn without_a_token_the_mutating_endpoints_are_off() {
    let pg = Pg::start();
    let ws = Workspace::new();
    ws.write_registry("  console: false\n", &[TargetSpec::new("orders", &pg)]);
    let addr = with_server(&ws, None);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    let r = http::request(
        &addr,
        "POST",
        "/targets/orders/maintenance",
        Some(TOKEN),
        None,
    );
    assert_eq!(r.status, 403);
    assert!(r.body.contains("server.token"), "{}", r.body);
    assert_eq!(
        http::get(&addr, "/status").status,
        200,
        "read-only endpoints stay on"
    );
}

fn killed_between(point: &str) {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(&hook_only(&rx), &[TargetSpec::new("orders", &pg)]);
    let mut first = Daemon::run(&ws, &[("SENTINEL_FAULT_KILL", &format!("orders:{point}"))]);
    first.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    let st = first.wait_exit(LONG);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL),
        "the daemon was killed at {point}"
    );

    let second = Daemon::run(&ws, &[]);
    let restored = second.wait_event("incident_restored", Some("orders"), LONG);
    second.wait_event("target_recovered", Some("orders"), LONG);
    assert!(pg.answers());
    // One restart: a single heal run (one heal log), which succeeded once, in the second daemon.
    let heal_logs = files_under(&ws.state().join("heal-logs"));
    assert_eq!(
        heal_logs.len(),
        1,
        "{point}: one heal action: {heal_logs:?}"
    );
    let succeeded = |d: &Daemon| {
        d.events("heal_attempt", None)
            .iter()
            .filter(|e| e["verdict"] == "accepting connections")
            .count()
    };
    wait_for(LONG, "the healer's verdict", || {
        (succeeded(&second) >= 1).then_some(())
    });
    assert_eq!(
        (succeeded(&first), succeeded(&second)),
        (0, 1),
        "{point}: restarted exactly once"
    );
    if point == "heal_issued" {
        assert_eq!(
            second.count("heal_issued", None),
            0,
            "the restart decided before the crash is carried out, not decided again"
        );
    }
    assert_eq!(
        first.count("incident_declared", None) + second.count("incident_declared", None),
        1,
        "one incident"
    );
    wait_for(LONG, "recovery notice", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rx.hook_events("failure").len(), 1, "{point}: one alert");
    assert_eq!(
        rx.hook_events("recovery").len(),
        1,
        "{point}: one recovery notice"
    );
    assert_eq!(ws.bundles().len(), 1, "{point}: one bundle");
    assert_eq!(
        restored["incident"],
        rx.hook_events("failure")[0].body["incident_id"]
    );
}

#[test]
fn a_daemon_killed_between_archive_and_heal_finishes_the_incident_once_after_restart() {
    killed_between("archived");
}

#[test]
fn a_daemon_killed_right_after_deciding_the_heal_finishes_the_incident_once_after_restart() {
    killed_between("heal_issued");
}

#[test]
fn the_status_page_renders_in_chromium_with_the_failed_target_shown() {
    let ok = Pg::start();
    let down = Pg::start();
    let ws = Workspace::new();
    ws.write_registry(
        "  console: false\n",
        &[
            TargetSpec::new("billing", &ok),
            TargetSpec {
                max_restarts: 0,
                ..TargetSpec::new("orders", &down)
            }, // budget 0: it stays down
        ],
    );
    let addr = with_server(&ws, None);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    down.kill9();
    d.wait_event("budget_exhausted", Some("orders"), LONG);

    let shot = ws.path().join("status-page.png");
    let chromium = |extra: &[&str]| {
        std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1200,800",
            ])
            .args(extra)
            .arg(format!("http://{addr}/"))
            .env("HOME", ws.path())
            .output()
            .expect("chromium (scripts/test.sh installs it)")
    };
    let dom = chromium(&["--dump-dom", "--virtual-time-budget=2000"]);
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(
        dom.contains(r#"data-target="orders" data-state="held""#),
        "the killed target is shown as held:\n{dom}"
    );
    assert!(
        dom.contains(r#"data-target="billing" data-state="healthy""#),
        "{dom}"
    );
    assert!(dom.contains("1 down - SentinelRemedy"), "the title says it");
    assert!(dom.contains("process_exited"), "the incident is listed");

    let out = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1200, 800));
    assert!(
        png.len() > 20_000,
        "a rendered page, not a blank one ({} bytes)",
        png.len()
    );
    // Kept for people to look at.
    let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::copy(&shot, &keep).unwrap();
}

/// Durations past what a window or a history query can mean are a 400 that says so, never a
/// handler that panics (and leaves the caller without an answer).
#[test]
fn durations_that_overflow_the_clock_answer_400() {
    let pg = Pg::start();
    let ws = Workspace::new();
    ws.write_registry("  console: false\n", &[TargetSpec::new("orders", &pg)]);
    let addr = with_server(&ws, Some(TOKEN));
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    for since in [
        "99999999999d",
        "99999999999999999d",
        "9999999999999999999999d",
    ] {
        let r = http::get(&addr, &format!("/incidents?since={since}"));
        assert_eq!(r.status, 400, "since={since}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains("since"),
            "{}",
            r.body
        );
    }
    for duration in ["99999999999d", "99999999999999999d"] {
        let path = format!("/targets/orders/maintenance?duration={duration}");
        let r = http::request(&addr, "POST", &path, Some(TOKEN), None);
        assert_eq!(r.status, 400, "duration={duration}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains("duration"),
            "{}",
            r.body
        );
        let body = format!("{{\"duration\": \"{duration}\"}}");
        let r = http::request(
            &addr,
            "POST",
            "/targets/orders/maintenance",
            Some(TOKEN),
            Some(&body),
        );
        assert_eq!(r.status, 400, "body duration={duration}: {}", r.body);
    }
    let status = http::get(&addr, "/status").json();
    assert!(
        status["targets"][0]["maintenance_until"].is_null(),
        "no window was opened: {status}"
    );
    assert_eq!(http::get(&addr, "/incidents?since=7d").status, 200);
}

/// Item 7: with the lease directory removed under a running daemon, a killed database is not
/// restarted (fail closed), but the user is told: /healthz answers 503 naming the lease, and
/// one escalation reaches the receiver at recovery_timeout. The other target keeps being
/// probed on its cadence meanwhile.
#[test]
fn a_restart_refused_by_a_removed_lease_dir_escalates_once_and_healthz_says_so() {
    let (pg, other) = (Pg::start(), Pg::start());
    let rx = Receiver::start();
    let ws = Workspace::new();
    let mut spec = TargetSpec::new("orders", &pg);
    spec.recovery_timeout = "4s";
    spec.pid_watch = false;
    spec.threshold = 1;
    let mut quiet = TargetSpec::new("other", &other);
    quiet.interval = "250ms";
    ws.write_registry(&hook_only(&rx), &[spec, quiet]);
    let addr = with_server(&ws, None);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    d.wait_event("probe_ok", Some("orders"), LONG);
    let health = http::get(&addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["checks"]["lease"], "ok", "{}", health.body);

    std::fs::remove_dir_all(ws.state().join("leases")).expect("remove the lease dir");
    let health = http::get(&addr, "/healthz");
    assert_eq!(health.status, 503, "{}", health.body);
    let problems = health.json()["problems"].to_string();
    assert!(
        problems.contains("lease:") && problems.contains("leases"),
        "{problems}"
    );

    let probes_before = probes(&addr, "other");
    let killed = pg.kill9();
    let t0 = std::time::Instant::now();
    let escalation = wait_for(Duration::from_secs(60), "one escalation notice", || {
        rx.hook_events("escalation").into_iter().next()
    });
    let after = t0.elapsed();
    eprintln!(
        "escalation received {:.1} s after the kill (recovery_timeout 4 s)",
        after.as_secs_f64()
    );
    assert!(
        after >= Duration::from_secs(4),
        "escalated before recovery_timeout: {after:?}"
    );
    let text = escalation.body.to_string();
    assert!(text.contains("lease"), "the escalation says why: {text}");
    assert!(!pg.answers(), "the database was restarted without a lease");
    assert!(
        rx.hook_events("failure").len() <= 1,
        "one failure notice at most"
    );
    // Probes of the other target went on at their cadence (250 ms) through the incident.
    let probes_after = probes(&addr, "other");
    assert!(
        probes_after - probes_before >= 8.0,
        "the other target was probed {} times in the incident",
        probes_after - probes_before
    );
    // Still one escalation a few retry rounds later, and still no restart.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(rx.hook_events("escalation").len(), 1, "escalated once");
    assert!(!pg.answers());
    assert_eq!(
        pg.cluster.postmaster_pid(),
        Some(killed),
        "no new postmaster was started"
    );
    assert_secret_absent(pg.password(), &d, Some(&rx), &ws);
}

/// Probes made so far of `target`, as the metrics show them.
fn probes(addr: &str, target: &str) -> f64 {
    let samples = parse_metrics(&http::get(addr, "/metrics").body);
    metric(
        &samples,
        "sentinel_probe_duration_seconds_count",
        &[("target", target)],
    )
    .unwrap_or(0.0)
}

/// Item 7: with the state directory on a full filesystem, /healthz answers 503 naming the
/// store, where it used to say `store: ok`.
#[test]
fn a_full_state_disk_makes_healthz_fail_naming_the_store() {
    let pg = Pg::start();
    let ws = Workspace::new();
    // With an S3 sink, the upload spool lives on the same disk.
    let s3 = "  s3: { bucket: incidents-1, endpoint: \"http://127.0.0.1:9\" }\n";
    let archive = format!("{}{s3}", ws.local_archive());
    ws.write_registry_with(
        &archive,
        "  console: false\n",
        &[TargetSpec::new("orders", &pg)],
    );
    let addr = with_server(&ws, None);
    let Some(_fs) = Tmpfs::mount(&ws.state(), "4m") else {
        // Mounting needs CAP_SYS_ADMIN; the lease test above covers the unwritable case.
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    };
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    d.wait_event("probe_ok", Some("orders"), LONG);
    let health = http::get(&addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    for part in ["store", "lease", "spool"] {
        assert_eq!(health.json()["checks"][part], "ok", "{}", health.body);
    }

    // Fill the filesystem the way a runaway log would.
    let mut filler = std::fs::File::create(ws.state().join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
    let health = http::get(&addr, "/healthz");
    assert_eq!(health.status, 503, "{}", health.body);
    let body = health.json();
    let problems = body["problems"].to_string();
    assert!(
        problems.contains("store:") && problems.contains("No space left"),
        "{problems}"
    );
    assert!(body["checks"]["store"]["error"].is_string(), "{body}");
    assert!(problems.contains("spool:"), "{problems}");
    assert!(
        problems.contains("lease:"),
        "the default lease dir is on it too: {problems}"
    );

    // Space back: healthy again.
    drop(filler);
    std::fs::remove_file(ws.state().join("filler")).unwrap();
    let health = http::get(&addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    drop(d);
}

#[test]
fn an_archive_directory_that_cannot_be_written_is_an_error_at_start_up_and_a_503() {
    let pg = Pg::start();
    let ws = Workspace::new();
    // A regular file where a parent directory should be: nobody, root included, can create
    // the directory (a permission problem as another user is covered by the compose test).
    let blocker = ws.path().join("blocker");
    std::fs::write(&blocker, "not a directory").unwrap();
    let dir = blocker.join("incidents");
    ws.write_registry_with(
        &format!("  local: {{ dir: \"{}\" }}\n", dir.display()),
        "  console: false\n",
        &[TargetSpec::new("orders", &pg)],
    );
    let addr = with_server(&ws, None);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    let e = d.wait_event("archive_unwritable", None, LONG);
    assert_eq!(e["level"], "ERRO", "{e}");
    let problem = e["problem"].as_str().unwrap();
    assert!(
        problem.contains(&dir.display().to_string())
            && problem.contains("ARCHIVE_DIR")
            && problem.contains("writable"),
        "names the directory and the fix: {problem}"
    );
    let health = http::get(&addr, "/healthz");
    assert_eq!(health.status, 503, "{}", health.body);
    let body = health.json();
    assert_eq!(body["checks"]["archive"], "not writable", "{body}");
    assert!(
        body["problems"]
            .to_string()
            .contains(&dir.display().to_string()),
        "the reason: {body}"
    );
    // Fixed while running: healthy again, without a restart.
    std::fs::remove_file(&blocker).unwrap();
    let health = http::get(&addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
}

//! The healing loop end to end: real clusters crashed for real, the real daemon, real receivers.

mod support;

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use support::*;

const LONG: Duration = Duration::from_secs(60);

fn sha256_hex(path: &std::path::Path) -> String {
    hex::encode(Sha256::digest(
        std::fs::read(path).expect("read bundle file"),
    ))
}

/// Checks one bundle: named `{timestamp}-{target}`, manifest hashes and sizes match the files.
fn check_bundle(bundle: &std::path::Path, target: &str) -> Value {
    let name = bundle.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.ends_with(&format!("-{target}")),
        "bundle {name} not named for {target}"
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(bundle.join("manifest.json")).expect("manifest.json"),
    )
    .expect("manifest JSON");
    let files = manifest["files"].as_array().expect("manifest.files");
    assert!(!files.is_empty(), "manifest lists no files: {manifest}");
    for f in files {
        let rel = f["name"].as_str().expect("file name");
        let path = bundle.join(rel);
        assert_eq!(
            f["sha256"].as_str().unwrap(),
            sha256_hex(&path),
            "hash of {rel}"
        );
        assert_eq!(
            f["size"].as_u64().unwrap(),
            std::fs::metadata(&path).unwrap().len(),
            "size of {rel}"
        );
    }
    manifest
}

#[test]
fn sigkill_is_archived_healed_alerted_and_recovered_once() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            interval: "1s",
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);

    let marker = pg.log_marker();
    let old_pid = pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    assert!(pg.answers(), "server answers after the heal");
    assert_ne!(pg.pid(), old_pid, "a new postmaster runs");

    // Detected by the pid watch, not after three failed probes.
    assert_eq!(d.count("process_exited", Some("orders")), 1);
    let declared = d.wait_event("incident_declared", Some("orders"), LONG);
    let incident = declared["incident"].as_str().unwrap().to_string();

    // Exactly one bundle, holding the log line written before the crash.
    let bundles = ws.bundles();
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    assert!(
        bundles[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&incident[..16]),
        "bundle named by the incident's timestamp"
    );
    let manifest = check_bundle(&bundles[0], "orders");
    assert_eq!(manifest["incident_id"], incident.as_str());
    assert_eq!(manifest["failure"]["class"], "process_exited", "{manifest}");
    let logs: String = files_under(&bundles[0])
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        logs.contains(&marker),
        "the bundle holds the log lines written before the crash"
    );
    for f in ["pg_hba.conf", "postgresql.conf"] {
        assert!(
            files_under(&bundles[0]).iter().any(|p| p.ends_with(f)),
            "{f} archived"
        );
    }

    // One archive, one restart, one alert and one recovery notice per channel.
    assert_eq!(d.count("archive_written", Some("orders")), 1);
    assert_eq!(d.count("heal_issued", Some("orders")), 1);
    let discord_edits = || {
        rx.hits()
            .into_iter()
            .filter(|h| h.path.starts_with("/discord/messages/") && h.status == 200)
            .collect::<Vec<_>>()
    };
    wait_for(LONG, "recovery notices on all channels", || {
        (rx.hook_events("recovery").len() == 1
            && rx.accepted("/slack").len() == 2
            && discord_edits().len() == 1)
            .then_some(())
    });
    assert_eq!(rx.hook_events("failure").len(), 1);
    let failure = &rx.hook_events("failure")[0].body;
    assert_eq!(failure["target"], "orders");
    assert_eq!(failure["incident_id"], incident.as_str());
    assert!(
        failure["archive"].as_str().unwrap().contains(
            &bundles[0]
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string()
        ),
        "alert says where the bundle is: {failure}"
    );
    let recovery = &rx.hook_events("recovery")[0].body;
    assert!(recovery["downtime_seconds"].as_f64().unwrap() > 0.0);
    rx.assert_all_well_formed();
    let slack = &rx.accepted("/slack")[0].body;
    assert!(slack["text"].as_str().unwrap().contains("orders"));
    // Discord: one message per incident, posted red with ?wait=true, then edited green with the
    // whole timeline once recovered.
    let posted = rx.accepted("/discord");
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0].body["embeds"][0]["color"].as_u64(),
        Some(0xE7_4C_3C)
    );
    let edit = &discord_edits()[0];
    assert_eq!(edit.method, "PATCH");
    assert_eq!(
        edit.path,
        "/discord/messages/0".replace(
            '0',
            &rx.hits()
                .iter()
                .position(|h| h.path == "/discord")
                .unwrap()
                .to_string()
        )
    );
    assert_eq!(edit.body["embeds"][0]["color"].as_u64(), Some(0x2E_CC_71));
    let timeline = edit.body["embeds"][0]["description"].as_str().unwrap();
    assert!(
        timeline.contains("**failure**") && timeline.contains("**recovery**"),
        "{timeline}"
    );

    // A little later, still nothing more: no second restart, no second alert.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.count("heal_issued", Some("orders")), 1);
    assert_eq!(rx.hook_events("failure").len(), 1);
    assert_secret_absent(pg.password(), &d, Some(&rx), &ws);
}

#[test]
fn immediate_stop_without_pid_watch_is_healed_after_the_threshold() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            pid_watch: false,
            interval: "200ms",
            threshold: 3,
            ..TargetSpec::new("billing", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("billing"), LONG);

    let marker = pg.log_marker();
    pg.cluster
        .stop("immediate")
        .expect("pg_ctl stop -m immediate");
    d.wait_event("target_recovered", Some("billing"), LONG);
    assert!(pg.answers());

    // The threshold was honoured: three failed probes before the incident.
    let failed = d.events("probe_failed", Some("billing"));
    assert!(
        failed.len() >= 3,
        "{} failures before declaring",
        failed.len()
    );
    assert_eq!(failed[0]["class"], "connection_refused");
    assert_eq!(d.count("incident_declared", Some("billing")), 1);
    assert_eq!(d.count("heal_issued", Some("billing")), 1);
    let bundles = ws.bundles();
    assert_eq!(bundles.len(), 1);
    let manifest = check_bundle(&bundles[0], "billing");
    assert_eq!(manifest["failure"]["class"], "connection_refused");
    let logs: String = files_under(&bundles[0])
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(logs.contains(&marker));
    wait_for(LONG, "recovery notice", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    assert_eq!(rx.hook_events("failure").len(), 1);
    rx.assert_all_well_formed();
}

#[test]
fn a_blip_shorter_than_the_threshold_costs_no_restart() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE blip(x int)");
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            query: "SELECT count(*) FROM blip",
            interval: "300ms",
            timeout: "250ms",
            threshold: 5,
            pid_watch: true,
            ..TargetSpec::new("blippy", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("blippy"), LONG);
    let pid = pg.pid();

    // Hold an exclusive lock long enough for a probe or two to time out, then let go.
    pg.psql("BEGIN; LOCK TABLE blip IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(0.7); COMMIT;");
    d.wait_event("transient_cleared", Some("blippy"), LONG);
    let failed = d.events("probe_failed", Some("blippy"));
    assert!(
        !failed.is_empty() && failed.len() < 5,
        "{} failures",
        failed.len()
    );
    assert_eq!(failed[0]["class"], "timeout");

    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.count("incident_declared", None), 0);
    assert_eq!(d.count("heal_issued", None), 0);
    assert_eq!(pg.pid(), pid, "the server was not restarted");
    assert!(rx.hits().is_empty(), "no alert for a blip");
    assert!(ws.bundles().is_empty(), "no archive for a blip");
}

#[test]
fn one_target_failing_does_not_disturb_another() {
    let a = Pg::start();
    let b = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[
            TargetSpec {
                interval: "250ms",
                ..TargetSpec::new("alpha", &a)
            },
            TargetSpec {
                interval: "250ms",
                ..TargetSpec::new("beta", &b)
            },
        ],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("alpha"), LONG);
    d.wait_event("probe_ok", Some("beta"), LONG);

    let b_pid = b.pid();
    a.kill9();
    let declared = d.wait_event("incident_declared", Some("alpha"), LONG);
    d.wait_event("target_recovered", Some("alpha"), LONG);
    let recovered = d.wait_event("target_recovered", Some("alpha"), LONG);
    std::thread::sleep(Duration::from_secs(1));

    // beta kept probing all along, at its own cadence.
    let (from, to) = (ts(&declared), ts(&recovered));
    let beta: Vec<_> = d
        .events("probe_ok", Some("beta"))
        .iter()
        .map(ts)
        .filter(|t| {
            *t >= from - chrono::Duration::seconds(1) && *t <= to + chrono::Duration::seconds(1)
        })
        .collect();
    assert!(
        beta.len() >= 2,
        "beta probed during alpha's incident: {beta:?}"
    );
    let worst = beta
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .max()
        .unwrap_or(0);
    assert!(
        worst < 1500,
        "beta's probes paused for {worst} ms while alpha was healed (interval 250 ms)"
    );

    // beta saw nothing: no failures, no incident, no restart, no messages about it.
    for e in [
        "probe_failed",
        "incident_declared",
        "heal_issued",
        "archive_written",
    ] {
        assert_eq!(d.count(e, Some("beta")), 0, "{e} for beta");
    }
    assert_eq!(b.pid(), b_pid);
    assert!(
        rx.hits().iter().all(|h| !h.raw.contains("beta")),
        "no message mentions beta"
    );
    assert_eq!(rx.hook_events("failure").len(), 1);
}

#[test]
fn budget_exhaustion_escalates_once_and_stops_restarting() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            max_restarts: 1,
            ..TargetSpec::new("flaky", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("flaky"), LONG);

    pg.kill9();
    d.wait_event("target_recovered", Some("flaky"), LONG);
    pg.kill9();
    d.wait_event("budget_exhausted", Some("flaky"), LONG);
    wait_for(LONG, "escalation on the webhook", || {
        (rx.hook_events("escalation").len() == 1).then_some(())
    });

    // Left down: no further restart, no second escalation.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        d.count("heal_issued", Some("flaky")),
        1,
        "only the first incident restarted"
    );
    assert_eq!(rx.hook_events("escalation").len(), 1);
    assert_eq!(d.count("budget_exhausted", Some("flaky")), 1);
    assert!(!pg.answers(), "the server was left down for a human");
    let esc = &rx.hook_events("escalation")[0].body;
    assert!(
        esc["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("budget")
            || esc["summary"]
                .as_str()
                .unwrap_or_default()
                .contains("manual"),
        "{esc}"
    );
    // The second incident is still archived: evidence for the human.
    assert_eq!(ws.bundles().len(), 2);
    let slack_texts: Vec<String> = rx
        .accepted("/slack")
        .iter()
        .map(|h| h.body["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        slack_texts
            .iter()
            .any(|t| t.to_lowercase().contains("manual intervention")),
        "{slack_texts:?}"
    );
    rx.assert_all_well_formed();
}

#[test]
fn a_webhook_answering_500_then_200_gets_the_alert_once() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &format!(
            "  webhooks: [ {{ url: \"{}/hook\" }} ]\n  max_backoff: 1s\n",
            rx.base()
        ),
        &[TargetSpec::new("orders", &pg)],
    );
    rx.script(&[(500, None), (500, None)]);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    wait_for(LONG, "recovery delivered", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    let failures: Vec<_> = rx
        .hits()
        .into_iter()
        .filter(|h| h.body["event"] == "failure")
        .collect();
    assert_eq!(
        failures.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![500, 500, 200],
        "retried until accepted, then stopped"
    );
    assert_eq!(rx.hook_events("failure").len(), 1);
    // The heal did not wait for the webhook.
    assert_eq!(d.count("heal_issued", Some("orders")), 1);
    let sent = d.events("notification_sent", Some("orders"));
    assert!(
        sent.iter()
            .any(|r| r["kind"] == "failure" && r["attempts"].as_u64() == Some(3)),
        "{sent:?}"
    );
}

#[test]
fn a_monitor_panicking_after_the_archive_is_replaced_and_the_incident_completes_once() {
    monitor_panics_at("archived");
}

#[test]
fn a_monitor_panicking_after_issuing_the_heal_is_replaced_and_the_incident_completes_once() {
    monitor_panics_at("heal_issued");
}

fn monitor_panics_at(point: &str) {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(&notify_all(&rx), &[TargetSpec::new("orders", &pg)]);
    let d = Daemon::run(&ws, &[("SENTINEL_FAULT_PANIC", &format!("orders:{point}"))]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    assert!(
        d.count("monitor_replaced", Some("orders")) >= 1,
        "the monitor panicked and was replaced"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.count("incident_declared", Some("orders")), 1);
    assert_eq!(d.count("archive_written", Some("orders")), 1);
    assert_eq!(d.count("heal_issued", Some("orders")), 1);
    assert_eq!(ws.bundles().len(), 1);
    wait_for(LONG, "recovery", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    assert_eq!(rx.hook_events("failure").len(), 1);
    assert!(pg.answers());
}

#[test]
fn sigterm_stops_cleanly_with_status_0() {
    let pg = Pg::start();
    let ws = Workspace::new();
    ws.write_registry("  console: true\n", &[TargetSpec::new("orders", &pg)]);
    let mut d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(0), "{}", d.log_text());
    assert_eq!(d.count("shutdown_complete", None), 1);
    assert!(
        pg.answers(),
        "stopping the daemon leaves the database alone"
    );
}

#[test]
fn a_server_answering_57p03_is_recovering_and_never_restarted() {
    let pg = Pg::start();
    // A standby with hot_standby off and no primary: a real server that answers every
    // connection with 57P03 ("the database system is starting up") for as long as it runs.
    pg.restart_as_standby(false);
    let pid = pg.pid();

    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            threshold: 1,
            interval: "200ms",
            ..TargetSpec::new("standby", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    let rec = d.wait_event("probe_recovering", Some("standby"), LONG);
    assert_eq!(rec["sqlstate"], "57P03", "{rec}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.count("incident_declared", None),
        0,
        "57P03 is not a failure"
    );
    assert_eq!(d.count("heal_issued", None), 0);
    assert_eq!(pg.pid(), pid, "the recovering server was left alone");
    assert!(rx.hits().is_empty());
}

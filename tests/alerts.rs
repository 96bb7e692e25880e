//! Alerts that arrive: 429 with Retry-After, a webhook that is gone (404), PagerDuty Events
//! v2, `notify-test`, and the heartbeat to a dead-man switch.

mod support;

use std::time::Duration;
use support::*;

const LONG: Duration = Duration::from_secs(90);

#[test]
fn a_receiver_answering_429_gets_the_alert_after_the_wait_it_asked_for() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &format!("  webhooks: [ {{ url: \"{}/hook\" }} ]\n", rx.base()),
        &[TargetSpec::new("orders", &pg)],
    );
    rx.script(&[(429, Some(1)), (429, Some(1))]);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    wait_for(LONG, "recovery delivered", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    let tries: Vec<_> = rx
        .hits()
        .into_iter()
        .filter(|h| h.body["event"] == "failure")
        .collect();
    assert_eq!(
        tries.iter().map(|h| h.status).collect::<Vec<_>>(),
        vec![429, 429, 200]
    );
    let waited = tries[2].at - tries[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 1 honoured twice, waited {waited:?}"
    );
    assert_eq!(rx.hook_events("failure").len(), 1, "delivered once");
}

#[test]
fn a_webhook_that_answers_404_is_not_called_again_and_the_log_says_so() {
    let pg = Pg::start();
    let gone = Receiver::start();
    let ok = Receiver::start();
    gone.script(&[(404, None)]);
    let ws = Workspace::new();
    ws.write_registry(
        &format!(
            "  webhooks: [ {{ url: \"{}/hook\" }}, {{ url: \"{}/hook\" }} ]\n",
            gone.base(),
            ok.base()
        ),
        &[TargetSpec {
            budget_extra: ", backoff: 1s",
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    d.wait_events("target_recovered", Some("orders"), 1, LONG);
    pg.kill9();
    d.wait_events("target_recovered", Some("orders"), 2, LONG);
    wait_for(LONG, "the working webhook got all four notices", || {
        (ok.hits().len() == 4).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(gone.hits().len(), 1, "called once, then never again");
    assert_eq!(d.count("channel_disabled", None), 1);
    assert!(
        d.count("notification_skipped_gone", None) >= 3,
        "each later notice says it was skipped"
    );
}

#[test]
fn pagerduty_gets_a_trigger_and_a_resolve_under_one_dedup_key() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    let key = "R0UTINGKEY0123456789abcdefABCDEF";
    ws.write_registry(
        &format!(
            "  pagerduty: {{ routing_key: \"{key}\", url: \"{}/pagerduty\" }}\n",
            rx.base()
        ),
        &[TargetSpec::new("orders", &pg)],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    wait_for(LONG, "trigger and resolve", || {
        (rx.accepted("/pagerduty").len() == 2).then_some(())
    });
    rx.assert_all_well_formed();
    let events: Vec<_> = rx
        .accepted("/pagerduty")
        .into_iter()
        .map(|h| h.body)
        .collect();
    assert_eq!(events[0]["event_action"], "trigger");
    assert_eq!(events[0]["payload"]["severity"], "error");
    assert_eq!(events[0]["payload"]["component"], "orders");
    assert_eq!(events[0]["payload"]["class"], "process_exited");
    assert_eq!(events[1]["event_action"], "resolve");
    assert_eq!(events[0]["dedup_key"], events[1]["dedup_key"]);
    assert!(
        events[0]["dedup_key"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{}/", pg.cluster.port)),
        "the server and the outage"
    );
    assert!(
        !d.log_text().contains(key),
        "the routing key is never logged"
    );
}

#[test]
fn notify_test_reports_each_channel() {
    let rx = Receiver::start();
    let ws = Workspace::new();
    let dead = format!(
        "http://127.0.0.1:{}/hook",
        sentinel_remedy::pgcluster::free_port().unwrap()
    );
    let reg = format!(
        "notify:\n  slack: {{ webhook_url: \"{b}/slack\" }}\n  discord: {{ webhook_url: \"{b}/discord\" }}\n  pagerduty: {{ routing_key: \"k0123456789\", url: \"{b}/pagerduty\" }}\n  webhooks: [ {{ url: \"{b}/hook\" }}, {{ url: \"{dead}\" }} ]\n  max_backoff: 1s\ntargets:\n  - name: a\n    dsn: \"postgres://u:p@127.0.0.1:1/db\"\n",
        b = rx.base()
    );
    std::fs::write(ws.config(), reg).unwrap();
    let (code, out, err) = run_cli(
        &["notify-test", "--config", ws.config().to_str().unwrap()],
        ws.path(),
        &[],
    );
    assert_eq!(code, 1, "one channel is dead: {out}{err}");
    for ch in [
        "slack: ok",
        "discord: ok",
        "pagerduty: ok",
        "webhook[0]: ok",
        "webhook[1]: FAILED",
    ] {
        assert!(out.contains(ch), "{ch} missing from:\n{out}");
    }
    rx.assert_all_well_formed();
    assert_eq!(rx.hits().len(), 4);
    assert!(rx.accepted("/slack")[0].body["text"]
        .as_str()
        .unwrap()
        .contains("test message"));
}

#[test]
fn the_heartbeat_pings_the_dead_man_switch() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry("  console: false\n", &[TargetSpec::new("orders", &pg)]);
    let text = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(
        ws.config(),
        format!(
            "heartbeat: {{ url: \"{}/beat\", interval: 500ms }}\n{text}",
            rx.base()
        ),
    )
    .unwrap();
    let _d = Daemon::run(&ws, &[]);
    wait_for(LONG, "three pings", || {
        (rx.hits().iter().filter(|h| h.path == "/beat").count() >= 3).then_some(())
    });
}

/// Daemons watching one server with one shared lease directory, every channel on `rx`.
fn daemons_sharing_a_lease(
    rx: &Receiver,
    leases: &std::path::Path,
    specs: Vec<(TargetSpec, Vec<(&str, String)>)>,
) -> Vec<(Workspace, Daemon)> {
    let notify = format!(
        "{}  pagerduty: {{ routing_key: \"R0UTINGKEY0123456789abcdefABCDEF\", url: \"{}/pagerduty\" }}\n",
        notify_all(rx),
        rx.base()
    );
    specs
        .into_iter()
        .map(|(spec, env)| {
            let ws = Workspace::new();
            ws.write_registry(&notify, &[spec]);
            let text = std::fs::read_to_string(ws.config()).unwrap();
            std::fs::write(
                ws.config(),
                format!(
                    "lease: {{ dir: \"{}\", ttl: 5s }}\n{text}",
                    leases.display()
                ),
            )
            .unwrap();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let d = Daemon::run(&ws, &env);
            d.wait_event("probe_ok", None, LONG);
            (ws, d)
        })
        .collect()
}

/// Requests each channel accepted: (slack, discord posts, discord edits, hook failures, hook
/// recoveries, pagerduty triggers, pagerduty resolves).
fn per_channel(rx: &Receiver) -> [usize; 7] {
    let pd = rx.accepted("/pagerduty");
    [
        rx.accepted("/slack").len(),
        rx.accepted("/discord").len(),
        rx.hits()
            .iter()
            .filter(|h| h.path.starts_with("/discord/messages/") && h.status < 300)
            .count(),
        rx.hook_events("failure").len(),
        rx.hook_events("recovery").len(),
        pd.iter()
            .filter(|h| h.body["event_action"] == "trigger")
            .count(),
        pd.iter()
            .filter(|h| h.body["event_action"] == "resolve")
            .count(),
    ]
}

#[test]
fn two_daemons_sharing_a_lease_send_one_failure_and_one_recovery_per_outage() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let leases = tempfile::tempdir().unwrap();
    // Two registries naming the same server differently.
    let daemons = daemons_sharing_a_lease(
        &rx,
        leases.path(),
        vec![
            (TargetSpec::new("orders", &pg), vec![]),
            (TargetSpec::new("orders-replica-view", &pg), vec![]),
        ],
    );
    let before = pg.pid();
    pg.kill9();
    for (_, d) in &daemons {
        d.wait_event("target_recovered", None, LONG);
    }
    wait_for(LONG, "the recovery on every channel", || {
        let c = per_channel(&rx);
        (c[0] >= 2 && c[2] >= 1 && c[4] >= 1 && c[6] >= 1).then_some(())
    });
    let after = pg.pid();
    assert_ne!(after, before, "restarted");
    // Longer than a silent daemon waits before it alerts on its own (fail open).
    std::thread::sleep(Duration::from_secs(14));
    assert_eq!(pg.pid(), after, "restarted once");
    rx.assert_all_well_formed();
    assert_eq!(
        per_channel(&rx),
        [2, 1, 1, 1, 1, 1, 1],
        "one failure and one recovery per channel (slack, discord post+edit, webhook, PagerDuty)"
    );
    let keys: std::collections::BTreeSet<String> = rx
        .accepted("/pagerduty")
        .iter()
        .map(|h| h.body["dedup_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), 1, "one PagerDuty incident: {keys:?}");
    let key = keys.into_iter().next().unwrap();
    assert!(
        key.contains(&format!("127.0.0.1:{}", pg.cluster.port)) && !key.contains("orders"),
        "derived from the server and the outage, not a daemon's incident: {key}"
    );
}

#[test]
fn when_the_daemon_that_acted_dies_before_alerting_the_other_one_alerts() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let leases = tempfile::tempdir().unwrap();
    // "first" sees the death at once (pid watch) and takes the lease; it is killed right
    // after, before its alert. "second" probes slowly and is refused by the lease.
    let mut slow = TargetSpec::new("second", &pg);
    slow.pid_watch = false;
    slow.interval = "1s";
    let _daemons = daemons_sharing_a_lease(
        &rx,
        leases.path(),
        vec![
            (
                TargetSpec::new("first", &pg),
                vec![("SENTINEL_FAULT_KILL", "first:heal_issued".to_string())],
            ),
            (slow, vec![]),
        ],
    );
    pg.kill9();
    wait_for(LONG, "the failure alert from the survivor", || {
        let c = per_channel(&rx);
        (c[0] >= 1 && c[1] >= 1 && c[3] >= 1 && c[5] >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let c = per_channel(&rx);
    let slack_failures = rx
        .accepted("/slack")
        .iter()
        .filter(|h| h.body["text"].as_str().unwrap_or("").starts_with("🔴"))
        .count();
    assert_eq!(
        (slack_failures, c[1], c[3], c[5]),
        (1, 1, 1, 1),
        "exactly one failure per channel"
    );
    rx.assert_all_well_formed();
    let trigger = &rx.accepted("/pagerduty")[0].body;
    assert!(
        trigger["dedup_key"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{}/", pg.cluster.port)),
        "the outage's key: {trigger}"
    );
}

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
    assert!(events[0]["dedup_key"].as_str().unwrap().contains("orders"));
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

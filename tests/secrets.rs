//! Hardening against the parties the daemon sits next to (issue 13): secrets typed by database
//! users, DSN passwords with URI delimiters, webhooks that redirect, answer hostile headers or
//! endless bodies, and database text aimed at the terminal or at Slack and Discord.

mod support;

use std::time::Duration;
use support::hostile::{Answer, Hostile};
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// A superuser changes a role's password with `PASSWORD E'...'` and another session holds a
/// conninfo and a URI with passwords, all visible in `pg_stat_activity` while the target is
/// suspect: the bundle's SQL snapshot shows the sessions, but none of the secrets.
#[test]
fn passwords_typed_by_database_users_never_reach_the_sql_snapshot() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE orders(id int); CREATE ROLE app LOGIN");
    let ws = Workspace::new();
    ws.write_registry(
        "  console: false\n",
        &[TargetSpec {
            query: "SELECT count(*) FROM orders",
            interval: "300ms",
            timeout: "1s",
            threshold: 3,
            pid_watch: false,
            heal: false,
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);

    let secrets = [
        "sekrit-E-literal",
        "sekrit-conninfo",
        "sekrit/uri?pw",
        "sekrit-dollar",
    ];
    // One session: the role's new password in an E'' literal, held in an open transaction that
    // also locks the probed table, so the probes time out and the snapshot is taken.
    let c = pg.cluster.clone();
    let alter = std::thread::spawn(move || {
        c.psql("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; ALTER ROLE app PASSWORD E'sekrit-E-literal\\'s'; SELECT 'alter-session', pg_sleep(8); COMMIT;")
    });
    // Another: a dblink-style conninfo, a connection URI and a dollar-quoted password.
    let c = pg.cluster.clone();
    let conninfo = std::thread::spawn(move || {
        c.psql("SELECT 'conninfo-session', 'host=10.0.0.9 dbname=x password=sekrit-conninfo', 'postgres://u:sekrit/uri?pw@10.0.0.9/db', $x$CREATE ROLE y PASSWORD $$sekrit-dollar$$$x$, pg_sleep(8)")
    });
    d.wait_event("incident_declared", Some("orders"), LONG);
    d.wait_event("archive_written", Some("orders"), LONG);
    let bundle = ws.bundles().pop().expect("bundle");
    let text = std::fs::read_to_string(bundle.join("sql-snapshot.json")).expect("snapshot");
    let snap: serde_json::Value = serde_json::from_str(&text).unwrap();
    let queries: Vec<String> = snap["sections"]["activity"]
        .as_array()
        .expect("activity rows")
        .iter()
        .filter_map(|a| a["query"].as_str().map(str::to_string))
        .collect();
    for session in ["alter-session", "conninfo-session"] {
        assert!(
            queries.iter().any(|q| q.contains(session)),
            "{session} is in the snapshot: {queries:#?}"
        );
    }
    for s in secrets {
        assert!(
            !text.contains(s),
            "{s} leaked into sql-snapshot.json:\n{text}"
        );
    }
    for s in secrets.iter().chain([&pg.password()]) {
        assert_secret_absent(s, &d, None, &ws);
    }
    alter.join().unwrap().expect("alter session ran");
    conninfo.join().unwrap().expect("conninfo session ran");
}

/// A registry whose DSN password holds `/` and `?` (or is written `PASSWORD=`) and has
/// another fault: `check-config` names the problem without the password, and so does the
/// `reload_rejected` log of a running daemon given that registry on SIGHUP.
#[test]
fn a_broken_registry_never_prints_its_dsn_password() {
    let secret = "s3cr/t?x#y";
    let kv_secret = "kv-secret-value";
    let bare = "bare-target-sekrit";
    let broken = format!(
        "targets:\n  - name: a\n    dsn: \"postgres://app:{secret}@db.example:99999/orders\"\n  - name: b\n    dsn: \"host=db.example PASSWORD={kv_secret} port=5432\"\n  - \"postgres://app:{bare}@db.example/orders\"\n"
    );
    let ws = Workspace::new();
    let file = ws.path().join("broken.yaml");
    std::fs::write(&file, &broken).unwrap();
    let (code, out, err) = run_cli(
        &["check-config", "--config", file.to_str().unwrap()],
        ws.path(),
        &[],
    );
    let all = format!("{out}{err}");
    assert_eq!(code, 64, "{all}");
    assert!(all.contains("targets[0].dsn"), "names the key: {all}");
    assert!(all.contains("targets[1].dsn"), "names the key: {all}");
    assert!(all.contains("targets[2]"), "names the key: {all}");
    for s in [secret, "s3cr", kv_secret, bare] {
        assert!(
            !all.contains(s),
            "check-config printed the password:\n{all}"
        );
    }

    // The same registry given to a running daemon on SIGHUP.
    let pg = Pg::start();
    ws.write_registry("  console: false\n", &[TargetSpec::new("orders", &pg)]);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    std::fs::write(ws.config(), &broken).unwrap();
    d.signal(libc::SIGHUP);
    let rejected = d.wait_event("reload_rejected", None, LONG);
    assert!(
        rejected["error"]
            .as_str()
            .unwrap_or("")
            .contains("targets[0].dsn"),
        "{rejected}"
    );
    for s in [secret, "s3cr", kv_secret, bare] {
        assert!(
            !d.log_text().contains(s),
            "the reload_rejected log printed the password:\n{}",
            d.log_text()
        );
    }
    // The running registry goes on probing.
    let before = d.count("probe_ok", Some("orders"));
    wait_for(LONG, "probes go on after the rejected reload", || {
        (d.count("probe_ok", Some("orders")) > before + 2).then_some(())
    });
}

/// A webhook answering 307 to another origin: the second receiver gets nothing (neither the
/// alert nor its `X-Api-Key`), the log says why each notice was not delivered, and the other
/// webhook gets every notice.
#[test]
fn a_webhook_redirecting_to_another_origin_sends_it_nothing() {
    let pg = Pg::start();
    let thief = Receiver::start();
    let location = format!("{}/stolen", thief.base());
    let hook = Hostile::start(move |_, _| Answer::new(307).header("Location", &location));
    let honest = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &format!(
            "  webhooks: [ {{ url: \"{}/hook\", headers: {{ X-Api-Key: \"api-key-sekrit\" }} }}, {{ url: \"{}/hook\" }} ]\n  max_backoff: 1s\n",
            hook.base(),
            honest.base()
        ),
        &[TargetSpec::new("orders", &pg)],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    wait_for(LONG, "recovery at the honest webhook", || {
        (honest.hook_events("recovery").len() == 1).then_some(())
    });
    let failed = d.wait_events("notification_failed", Some("orders"), 2, LONG);
    for f in &failed {
        assert_eq!(f["error_kind"], "redirected", "{f}");
        assert!(
            f["error"].as_str().unwrap_or("").contains("another origin"),
            "{f}"
        );
    }
    let asked = hook.requests();
    assert!(asked.len() >= 2, "both notices went to the hook: {asked:?}");
    assert_eq!(asked[0].header("x-api-key"), Some("api-key-sekrit"));
    assert!(
        thief.hits().is_empty(),
        "the redirect target received {:?}",
        thief.hits()
    );
    assert_secret_absent("api-key-sekrit", &d, None, &ws);
}

/// A webhook answering `Retry-After: -1`, then `NaN`, then 200 with a 500 MB body, and a
/// Discord answering 429 with `retry_after: -5`: every notice still arrives on both channels,
/// the daemon's peak memory stays small, and another target is probed on cadence throughout.
#[test]
fn hostile_answers_neither_silence_a_channel_nor_fill_the_daemons_memory() {
    let pg = Pg::start();
    let other = Pg::start();
    let hook = Hostile::start(|_, n| match n {
        0 => Answer::new(503).header("Retry-After", "-1"),
        1 => Answer::new(429).header("Retry-After", "NaN"),
        _ => Answer::new(200).zeros(500 << 20),
    });
    let discord = Hostile::start(|_, n| match n {
        0 => Answer::new(429)
            .header("Content-Type", "application/json")
            .text(
                r#"{"message": "You are being rate limited.", "retry_after": -5, "global": false}"#,
            ),
        _ => Answer::new(200)
            .header("Content-Type", "application/json")
            .text(r#"{"id": "42"}"#),
    });
    let ws = Workspace::new();
    ws.write_registry(
        &format!(
            "  webhooks: [ {{ url: \"{}/hook\" }} ]\n  discord: {{ webhook_url: \"{}/discord\" }}\n  max_backoff: 1s\n",
            hook.base(),
            discord.base()
        ),
        &[
            TargetSpec::new("orders", &pg),
            TargetSpec {
                heal: false,
                ..TargetSpec::new("billing", &other)
            },
        ],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    d.wait_event("probe_ok", Some("billing"), LONG);
    pg.kill9();
    let events = |h: &Hostile| -> Vec<String> {
        h.requests()
            .iter()
            .filter_map(|r| r.json()["event"].as_str().map(str::to_string))
            .collect()
    };
    wait_for(LONG, "failure and recovery at the hostile webhook", || {
        let e = events(&hook);
        (e.iter().filter(|e| *e == "failure").count() == 3 && e.iter().any(|e| e == "recovery"))
            .then_some(())
    });
    // Discord: posted after the 429, then edited with the recovery.
    wait_for(LONG, "the recovery edit at Discord", || {
        discord
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.ends_with("/messages/42"))
            .then_some(())
    });
    let sent = d.wait_events("notification_sent", Some("orders"), 4, LONG);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(d.count("notification_failed", None), 0);

    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    eprintln!("daemon peak RSS: {} MiB", peak_kib / 1024);
    assert!(
        peak_kib < 200 * 1024,
        "the daemon's peak RSS reached {peak_kib} KiB"
    );

    // The other target was probed on cadence (200 ms) all along.
    let stamps: Vec<_> = d
        .events("probe_ok", Some("billing"))
        .iter()
        .map(ts)
        .collect();
    let gap = stamps.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        gap < chrono::Duration::seconds(5),
        "billing went {gap} without a probe"
    );
}

/// A notification worker that dies (a panic injected at the start of a delivery) is started
/// again on the same queue and says so; the notice it died on is reported as not delivered,
/// and the next notice arrives.
#[test]
fn a_notification_worker_that_dies_is_started_again_and_says_so() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &format!("  webhooks: [ {{ url: \"{}/hook\" }} ]\n", rx.base()),
        &[TargetSpec::new("orders", &pg)],
    );
    let d = Daemon::run(&ws, &[("SENTINEL_FAULT_PANIC", "orders:notify_worker")]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    let restarted = d.wait_event("notification_worker_restarted", None, LONG);
    assert_eq!(restarted["cause"], "panic", "{restarted}");
    assert_eq!(restarted["channel"], "webhook[0]", "{restarted}");
    let failed = d.wait_event("notification_failed", Some("orders"), LONG);
    assert_eq!(failed["error_kind"], "worker_died", "{failed}");
    wait_for(LONG, "the recovery notice after the restart", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    assert!(rx.hook_events("failure").is_empty(), "not retried");
}

/// A database whose error message carries an ANSI escape, a forged log line, a Slack channel
/// mention and disguised links: the terminal log shows it escaped on one line, Slack and
/// Discord show it as text that pings nobody and links nowhere.
#[test]
fn database_text_is_inert_in_the_terminal_log_slack_and_discord() {
    let pg = Pg::start();
    pg.psql("CREATE FUNCTION health() RETURNS int LANGUAGE sql AS 'SELECT 1'");
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            query: "SELECT health()",
            threshold: 2,
            pid_watch: false,
            heal: false,
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let mut cmd = std::process::Command::new(bin());
    cmd.args([
        "--log-format",
        "term",
        "--log-level",
        "debug",
        "run",
        "--config",
    ])
    .arg(ws.config())
    .arg("--state-dir")
    .arg(ws.state())
    .current_dir(ws.path());
    let d = Daemon::spawn(cmd, &[("SENTINEL_LOG_FORMAT", "term")]);
    wait_for(LONG, "the daemon logs", || {
        d.log_text().contains("orders").then_some(())
    });
    pg.psql(r"CREATE OR REPLACE FUNCTION health() RETURNS int LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION E'\x1b[31mred\n2026-11-25 06:00:00.000 INFO forged line\r <!channel> <https://evil.example|click> @everyone [click](https://evil.example)'; END$$");

    let slack = wait_for(LONG, "the failure at Slack", || {
        rx.accepted("/slack").into_iter().next()
    });
    assert!(slack.raw.contains("forged line"), "{}", slack.raw);
    assert!(slack.raw.contains("&lt;!channel&gt;"), "{}", slack.raw);
    for raw in ["<!channel>", "<https://evil.example|click>", "\\u001b"] {
        assert!(
            !slack.raw.contains(raw),
            "{raw} reached Slack: {}",
            slack.raw
        );
    }
    let discord = wait_for(LONG, "the failure at Discord", || {
        rx.accepted("/discord").into_iter().next()
    });
    assert_eq!(
        discord.body["allowed_mentions"]["parse"],
        serde_json::json!([]),
        "{}",
        discord.raw
    );
    assert!(discord.raw.contains("forged line"), "{}", discord.raw);
    for raw in ["[click](https://evil.example)", " @everyone"] {
        assert!(
            !discord.raw.contains(raw),
            "{raw} reached Discord: {}",
            discord.raw
        );
    }
    rx.assert_all_well_formed();

    wait_for(LONG, "the probe failure in the terminal log", || {
        d.log_text().contains("forged line").then_some(())
    });
    let log = d.log_text();
    assert!(
        !log.contains('\u{1b}'),
        "an ANSI escape reached the terminal:\n{log}"
    );
    assert!(
        !log.contains('\r'),
        "a carriage return reached the terminal:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026-11-25 06:00:00.000 INFO forged")),
        "a forged line:\n{log}"
    );
}

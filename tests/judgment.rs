//! Restart only when a restart helps: failures a restart cannot fix are archived and alerted
//! with a diagnosis, never restarted.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// A psql session as `user` over the cluster's socket that sleeps, holding its connection.
fn hold_connection(pg: &Pg, user: &str) -> Child {
    let psql = sentinel_remedy::pgcluster::find_bin_dir().unwrap().join("psql");
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(&psql);
        c
    } else {
        Command::new(&psql)
    };
    cmd.args(["-X", "-q", "-h"]).arg(pg.cluster.root.join("sock")).args(["-p", &pg.cluster.port.to_string(), "-U", user, "-d", "postgres", "-c", "SELECT pg_sleep(120)"]);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("psql")
}

/// Runs the daemon on one target with this DSN until the incident is declared and alerted;
/// checks that nothing was restarted. Returns the daemon, receiver and workspace for more checks.
fn alerted_not_restarted(pg: &Pg, dsn: &str, class: &str, sqlstate: &str, probe_extra: &str) -> (Daemon, Receiver, Workspace) {
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(&notify_all(&rx), &[TargetSpec { threshold: 2, pid_watch: false, ..TargetSpec::new("orders", pg) }]);
    // Point the target at the DSN under test (a role, password or database of its own).
    let text = std::fs::read_to_string(ws.config()).unwrap().replace(&pg.cluster.dsn(), dsn);
    let text = text.replace("failure_threshold: 2 }", &format!("failure_threshold: 2{probe_extra} }}"));
    std::fs::write(ws.config(), text).unwrap();
    let pid = pg.pid();
    let d = Daemon::run(&ws, &[]);
    let declared = d.wait_event("incident_declared", Some("orders"), LONG);
    assert_eq!(declared["class"], class, "{declared}");
    d.wait_event("alert_only", Some("orders"), LONG);
    wait_for(LONG, "the alert", || (rx.hook_events("failure").len() == 1).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.count("heal_issued", None), 0, "{class}: no restart");
    assert_eq!(pg.pid(), pid, "{class}: the server was not restarted");
    assert_eq!(rx.hook_events("failure").len(), 1, "{class}: one alert");
    let alert = &rx.hook_events("failure")[0].body;
    assert_eq!(alert["failure"]["class"], class);
    assert_eq!(alert["failure"]["sqlstate"].as_str().unwrap_or(""), sqlstate);
    assert!(alert["summary"].as_str().unwrap().contains("will not restart"), "{alert}");
    rx.assert_all_well_formed();
    let slack = rx.accepted("/slack")[0].body["text"].as_str().unwrap().to_string();
    assert!(slack.contains(class), "the class is in the Slack text: {slack}");
    let bundle = ws.bundles().pop().expect("evidence archived");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["action"], "alert");
    assert_eq!(manifest["failure_class"], class);
    assert!(manifest["diagnosis"].as_str().unwrap().len() > 30);
    (d, rx, ws)
}

#[test]
fn exhausted_max_connections_is_alerted_not_restarted_and_recovery_is_noticed() {
    let pg = Pg::start();
    pg.psql("CREATE ROLE app LOGIN PASSWORD 'app-password-1'");
    pg.psql("ALTER SYSTEM SET max_connections = 6");
    pg.psql("ALTER SYSTEM SET superuser_reserved_connections = 3");
    pg.cluster.stop("fast").unwrap();
    pg.cluster.start().unwrap();
    // Three slots for ordinary roles, all taken by sleeping sessions.
    let mut holders: Vec<Child> = (0..3).map(|_| hold_connection(&pg, "app")).collect();
    wait_for(LONG, "the holders connected", || {
        (pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'") == "3").then_some(())
    });
    let dsn = format!("postgres://app:app-password-1@127.0.0.1:{}/postgres", pg.cluster.port);
    let (d, rx, _ws) = alerted_not_restarted(&pg, &dsn, "too_many_connections", "53300", "");
    assert!(rx.hook_events("failure")[0].body["summary"].as_str().unwrap().contains("max_connections"));

    // The sessions end: the probe passes and the recovery notice says no restart was made.
    for h in &mut holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'");
    d.wait_event("target_recovered", Some("orders"), LONG);
    wait_for(LONG, "recovery notice", || (rx.hook_events("recovery").len() == 1).then_some(()));
    assert!(rx.hook_events("recovery")[0].body["summary"].as_str().unwrap().contains("no restart"));
}

#[test]
fn a_wrong_password_is_alerted_not_restarted() {
    let pg = Pg::start();
    let dsn = format!("postgres://postgres:not-the-password@127.0.0.1:{}/postgres", pg.cluster.port);
    let (d, _rx, _ws) = alerted_not_restarted(&pg, &dsn, "authentication", "28P01", "");
    assert!(!d.log_text().contains("not-the-password"), "the password is never logged");
}

#[test]
fn a_missing_database_is_alerted_not_restarted() {
    let pg = Pg::start();
    let dsn = format!("postgres://postgres:{}@127.0.0.1:{}/dropped_db", pg.password(), pg.cluster.port);
    alerted_not_restarted(&pg, &dsn, "database_missing", "3D000", "");
}

#[test]
fn a_primary_that_answers_as_a_standby_is_alerted_as_read_only() {
    let pg = Pg::start();
    pg.cluster.stop("fast").unwrap();
    std::fs::write(pg.cluster.data.join("standby.signal"), "").unwrap();
    pg.cluster.start().unwrap();
    let dsn = pg.cluster.dsn();
    let (_d, rx, _ws) = alerted_not_restarted(&pg, &dsn, "read_only", "", ", role: primary");
    assert!(rx.hook_events("failure")[0].body["failure"]["detail"].as_str().unwrap().contains("pg_is_in_recovery"));
}

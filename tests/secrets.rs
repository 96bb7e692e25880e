//! Hardening against the parties the daemon sits next to (issue 13): secrets typed by database
//! users, DSN passwords with URI delimiters, webhooks that redirect, answer hostile headers or
//! endless bodies, and database text aimed at the terminal or at Slack and Discord.

mod support;

use std::time::Duration;
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
    let broken = format!(
        "targets:\n  - name: a\n    dsn: \"postgres://app:{secret}@db.example:99999/orders\"\n  - name: b\n    dsn: \"host=db.example PASSWORD={kv_secret} port=5432\"\n"
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
    for s in [secret, "s3cr", kv_secret] {
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
    for s in [secret, "s3cr", kv_secret] {
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

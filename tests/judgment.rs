//! Restart only when a restart helps: failures a restart cannot fix are archived and alerted
//! with a diagnosis, never restarted.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// Runs the daemon on one target with this DSN until the incident is declared and alerted;
/// checks that nothing was restarted. Returns the daemon, receiver and workspace for more checks.
fn alerted_not_restarted(
    pg: &Pg,
    dsn: &str,
    class: &str,
    sqlstate: &str,
    probe_extra: &str,
) -> (Daemon, Receiver, Workspace) {
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            threshold: 2,
            pid_watch: false,
            dsn: Some(dsn),
            probe_extra,
            ..TargetSpec::new("orders", pg)
        }],
    );
    let pid = pg.pid();
    let d = Daemon::run(&ws, &[]);
    let declared = d.wait_event("incident_declared", Some("orders"), LONG);
    assert_eq!(declared["class"], class, "{declared}");
    d.wait_event("alert_only", Some("orders"), LONG);
    wait_for(LONG, "the alert", || {
        (rx.hook_events("failure").len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.count("heal_issued", None), 0, "{class}: no restart");
    assert_eq!(pg.pid(), pid, "{class}: the server was not restarted");
    assert_eq!(rx.hook_events("failure").len(), 1, "{class}: one alert");
    let alert = &rx.hook_events("failure")[0].body;
    assert_eq!(alert["failure"]["class"], class);
    assert_eq!(
        alert["failure"]["sqlstate"].as_str().unwrap_or(""),
        sqlstate
    );
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .contains("will not restart"),
        "{alert}"
    );
    rx.assert_all_well_formed();
    let slack = rx.accepted("/slack")[0].body["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        slack.contains(class),
        "the class is in the Slack text: {slack}"
    );
    let bundle = ws.bundles().pop().expect("evidence archived");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
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
    // Three slots for ordinary roles, all taken by sleeping sessions (a holder that could not
    // get in, on a loaded machine, is started again).
    let mut holders: Vec<Child> = Vec::new();
    let count = || {
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
            .parse::<usize>()
            .unwrap_or(0)
    };
    wait_for(LONG, "three holders connected", || {
        holders.retain_mut(|h| h.try_wait().ok().flatten().is_none());
        while holders.len() < 3 {
            holders.push(pg.hold_connection("app"));
        }
        std::thread::sleep(Duration::from_millis(300));
        (count() == 3).then_some(())
    });
    let dsn = format!(
        "postgres://app:app-password-1@127.0.0.1:{}/postgres",
        pg.cluster.port
    );
    let (d, rx, _ws) = alerted_not_restarted(&pg, &dsn, "too_many_connections", "53300", "");
    assert!(rx.hook_events("failure")[0].body["summary"]
        .as_str()
        .unwrap()
        .contains("max_connections"));

    // The sessions end: the probe passes and the recovery notice says no restart was made.
    for h in &mut holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    // A backend in pg_sleep does not notice its client is gone; end the sessions for real.
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' AND query LIKE '%pg_sleep%'");
    d.wait_event("target_recovered", Some("orders"), LONG);
    wait_for(LONG, "recovery notice", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    assert!(rx.hook_events("recovery")[0].body["summary"]
        .as_str()
        .unwrap()
        .contains("no restart"));
}

#[test]
fn a_wrong_password_is_alerted_not_restarted() {
    let pg = Pg::start();
    let dsn = format!(
        "postgres://postgres:not-the-password@127.0.0.1:{}/postgres",
        pg.cluster.port
    );
    let (d, _rx, _ws) = alerted_not_restarted(&pg, &dsn, "authentication", "28P01", "");
    assert!(
        !d.log_text().contains("not-the-password"),
        "the password is never logged"
    );
}

/// A server asking for the password in clear (pg_hba.conf says `password`, or a squatter on
/// its port does): alerted once as insecure_auth, never restarted, and the probe goes on
/// refusing without a second incident or alert.
#[test]
fn a_server_asking_for_a_cleartext_password_is_alerted_once_never_restarted() {
    let pg = Pg::start();
    pg.psql("ALTER SYSTEM SET log_connections = on");
    pg.ask_tcp_logins_for("password");
    let (d, rx, _ws) = alerted_not_restarted(&pg, &pg.cluster.dsn(), "insecure_auth", "", "");
    // The probe goes on asking (and refusing): three more connections reach the server.
    let received = || {
        std::fs::read_to_string(&pg.cluster.log_file)
            .unwrap_or_default()
            .matches("connection received: host=127.0.0.1")
            .count()
    };
    let before = received();
    wait_for(LONG, "three more refused probes", || {
        (received() >= before + 3).then_some(())
    });
    assert_eq!(
        d.count("incident_declared", Some("orders")),
        1,
        "one incident"
    );
    assert_eq!(d.count("heal_issued", None), 0);
    assert_eq!(rx.hook_events("failure").len(), 1, "one alert");
    assert_eq!(pg.starts(), 1, "never restarted");
}

#[test]
fn a_missing_database_is_alerted_not_restarted() {
    let pg = Pg::start();
    let dsn = format!(
        "postgres://postgres:{}@127.0.0.1:{}/dropped_db",
        pg.password(),
        pg.cluster.port
    );
    alerted_not_restarted(&pg, &dsn, "database_missing", "3D000", "");
}

#[test]
fn a_primary_that_answers_as_a_standby_is_alerted_as_read_only() {
    let pg = Pg::start();
    pg.restart_as_standby(true);
    let dsn = pg.cluster.dsn();
    let (_d, rx, _ws) = alerted_not_restarted(&pg, &dsn, "read_only", "", ", role: primary");
    assert!(rx.hook_events("failure")[0].body["failure"]["detail"]
        .as_str()
        .unwrap()
        .contains("pg_is_in_recovery"));
}

#[test]
fn restarts_of_a_crash_looping_target_back_off_exponentially() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            max_restarts: 10,
            budget_extra: ", backoff: 5s, backoff_max: 1m",
            ..TargetSpec::new("loop", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("loop"), LONG);
    for n in 1..=3 {
        pg.kill9();
        d.wait_events("target_recovered", Some("loop"), n, LONG);
    }
    let heals: Vec<_> = d
        .events("heal_issued", Some("loop"))
        .iter()
        .map(ts)
        .collect();
    assert_eq!(
        heals.len(),
        3,
        "{}",
        d.log_text()
            .lines()
            .filter(|l| [
                "restart_backoff",
                "heal_issued",
                "incident_declared",
                "target_recovered",
                "heal_attempt"
            ]
            .iter()
            .any(|e| l.contains(&format!("\"event\":\"{e}\""))))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let gap1 = (heals[1] - heals[0]).num_milliseconds();
    let gap2 = (heals[2] - heals[1]).num_milliseconds();
    // Log stamps come a few ms after the instant the backoff counts from (the store's fsync).
    assert!(
        gap1 >= 4900,
        "second restart only {gap1} ms after the first (backoff 5s)"
    );
    assert!(
        gap2 >= 9900,
        "third restart only {gap2} ms after the second (backoff doubled to 10s)"
    );
    assert_eq!(
        d.count("restart_backoff", Some("loop")),
        2,
        "held twice, each time said once"
    );
    // Each incident still got exactly one alert, saying why the restart waited.
    wait_for(LONG, "three recoveries", || {
        (rx.hook_events("recovery").len() == 3).then_some(())
    });
    let failures = rx.hook_events("failure");
    assert_eq!(failures.len(), 3);
    assert!(
        failures[1].body["summary"]
            .as_str()
            .unwrap()
            .contains("backoff"),
        "{}",
        failures[1].body
    );
}

#[test]
fn the_fleet_guard_holds_restarts_when_most_targets_fail_together() {
    let pgs: Vec<Pg> = (0..4).map(|_| Pg::start()).collect();
    let rx = Receiver::start();
    let ws = Workspace::new();
    let names = ["a", "b", "c", "d"];
    // Probes only (no pid watch): a network cut or trouble on the daemon's host shows as
    // failing probes across the fleet within a probe interval, which is what the guard is for.
    let specs: Vec<TargetSpec> = names
        .iter()
        .zip(&pgs)
        .map(|(n, p)| TargetSpec {
            interval: "300ms",
            threshold: 3,
            pid_watch: false,
            ..TargetSpec::new(n, p)
        })
        .collect();
    ws.write_registry(&notify_all(&rx), &specs);
    let d = Daemon::run(&ws, &[]);
    for n in names {
        d.wait_event("probe_ok", Some(n), LONG);
    }
    // Three of four go down together (a network cut or this host's trouble, to the daemon).
    for p in &pgs[..3] {
        p.kill9();
    }
    d.wait_event("fleet_guard_tripped", None, LONG);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        d.count("heal_issued", None),
        0,
        "no restart while most of the fleet is failing"
    );
    assert_eq!(d.count("fleet_guard_tripped", None), 1, "one fleet alert");
    wait_for(LONG, "the fleet alert", || {
        rx.hook_events("escalation")
            .iter()
            .any(|h| h.body["reason"] == "fleet_guard")
            .then_some(())
    });
    assert_eq!(rx.hook_events("escalation").len(), 1);
    assert!(
        !pgs[0].answers() && !pgs[1].answers() && !pgs[2].answers(),
        "held: nothing restarted"
    );

    // One comes back by itself: 2 of 4 is not more than half, so the others are healed now.
    pgs[0].cluster.start().unwrap();
    d.wait_event("target_recovered", Some("b"), LONG);
    d.wait_event("target_recovered", Some("c"), LONG);
    d.wait_event("target_recovered", Some("a"), LONG);
    assert_eq!(
        d.count("heal_issued", Some("a")),
        0,
        "a came back without us"
    );
    assert_eq!(
        d.count("heal_issued", Some("b")) + d.count("heal_issued", Some("c")),
        2
    );
    assert!(pgs.iter().all(|p| p.answers()));
}

#[test]
fn two_daemons_sharing_a_lease_restart_a_killed_cluster_once() {
    let pg = Pg::start();
    let leases = tempfile::tempdir().unwrap();
    let mut daemons = Vec::new();
    let mut workspaces = Vec::new();
    for name in ["orders", "orders-replica-view"] {
        // Two daemons, two registries naming the same server differently.
        let ws = Workspace::new();
        ws.write_registry("  console: false\n", &[TargetSpec::new(name, &pg)]);
        let text = std::fs::read_to_string(ws.config()).unwrap();
        std::fs::write(
            ws.config(),
            format!("lease: {{ dir: \"{}\" }}\n{text}", leases.path().display()),
        )
        .unwrap();
        let d = Daemon::run(&ws, &[]);
        d.wait_event("probe_ok", Some(name), LONG);
        daemons.push(d);
        workspaces.push(ws);
    }
    pg.kill9();
    daemons[0].wait_event("target_recovered", None, LONG);
    daemons[1].wait_event("target_recovered", None, LONG);
    std::thread::sleep(Duration::from_secs(2));
    let restarts: usize = daemons.iter().map(|d| d.count("heal_issued", None)).sum();
    assert_eq!(restarts, 1, "exactly one of the two daemons restarted it");
    let refused: usize = daemons
        .iter()
        .map(|d| d.count("lease_held", None) + d.count("lease_already_restarted", None))
        .sum();
    assert_eq!(
        refused, 1,
        "the other one was refused by the lease and said so"
    );
    assert!(pg.answers());
}

#[test]
fn a_server_managed_by_patroni_is_not_restarted() {
    let pg = Pg::start();
    let rx = Receiver::start();
    // Patroni keeps sessions named "Patroni ..." on the servers it manages.
    let psql = sentinel_remedy::pgcluster::find_bin_dir()
        .unwrap()
        .join("psql");
    let mut patroni = Command::new(&psql)
        .args(["-X", "-q", "-h"])
        .arg(pg.cluster.root.join("sock"))
        .args([
            "-p",
            &pg.cluster.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "SELECT pg_sleep(120)",
        ])
        .env("PGAPPNAME", "Patroni heartbeat")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(LONG, "the Patroni session", || {
        (pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'Patroni%'")
            == "1")
            .then_some(())
    });
    let ws = Workspace::new();
    ws.write_registry(&notify_all(&rx), &[TargetSpec::new("orders", &pg)]);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("manager_detected", Some("orders"), LONG);
    pg.kill9();
    d.wait_event("manager_refused", Some("orders"), LONG);
    wait_for(LONG, "the alert", || {
        (rx.hook_events("failure").len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.count("heal_issued", None),
        0,
        "no restart under another manager"
    );
    assert!(!pg.answers(), "left to Patroni");
    assert!(rx.hook_events("failure")[0].body["summary"]
        .as_str()
        .unwrap()
        .contains("Patroni"));
    assert_eq!(
        ws.bundles().len(),
        1,
        "the evidence is archived all the same"
    );
    let _ = patroni.kill();
    let _ = patroni.wait();
}

#[test]
fn a_server_held_in_slow_crash_recovery_after_the_restart_is_not_killed_again() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    // The heal brings the server back in a recovery that does not end (a standby with no
    // primary and hot_standby off answers 57P03 for as long as it runs).
    let quoted: Vec<String> = pg
        .cluster
        .start_argv()
        .iter()
        .map(|a| format!("'{a}'"))
        .collect();
    let script = ws.path().join("heal.sh");
    std::fs::write(&script, format!("#!/bin/sh\nset -e\ntouch '{d}/standby.signal'\ngrep -q '^hot_standby = off' '{d}/postgresql.conf' || echo 'hot_standby = off' >> '{d}/postgresql.conf'\nexec {}\n",
        quoted.join(" "), d = pg.cluster.data.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            recovery_timeout: "6s",
            heal_argv: Some(vec![script.display().to_string()]),
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    d.wait_event("heal_issued", Some("orders"), LONG);
    d.wait_event("probe_recovering", Some("orders"), LONG);
    // A recovery with no redo progress in its log (a standby waiting for WAL that never comes)
    // is escalated at recovery_timeout.
    let esc = d.wait_event("escalation", Some("orders"), LONG);
    assert!(
        esc["why"].as_str().unwrap().contains("no redo progress"),
        "{esc}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.count("heal_issued", None),
        1,
        "restarted once, never again while it recovers"
    );
    assert!(
        pg.cluster.postmaster_pid().is_some(),
        "the recovering server is still running"
    );
    wait_for(LONG, "the escalation alert", || {
        (rx.hook_events("escalation").len() == 1).then_some(())
    });
}

/// The pids whose parent is `ppid` and whose title contains `title`.
fn children_titled(ppid: i32, title: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": the comm may hold spaces, so split after the last ')'.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if parent == Some(ppid) && cmdline.contains(title) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_crash_recovery_that_advances_is_waited_on_past_recovery_timeout() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    // A progress line every 100 ms of redo, and no checkpoint during the load: every byte of
    // it is replayed after the crash.
    for sql in [
        "ALTER SYSTEM SET log_startup_progress_interval = '100ms'",
        "ALTER SYSTEM SET checkpoint_timeout = '1h'",
        "ALTER SYSTEM SET max_wal_size = '8GB'",
        "SELECT pg_reload_conf()",
        "CHECKPOINT",
        "CREATE TABLE load AS SELECT g, md5(g::text) AS h FROM generate_series(1, 5000000) g",
    ] {
        pg.psql(sql);
    }
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            // Long enough for the restart itself (the killed postmaster is reaped by the host's
            // init first), far shorter than the throttled redo below.
            recovery_timeout: "4s",
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    d.wait_event("heal_issued", Some("orders"), LONG);
    // A slow disk, for real: the startup process replaying the WAL runs a sixth of the time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let throttle = {
        let (stop, pid_file) = (stop.clone(), pg.cluster.pid_file());
        std::thread::spawn(move || {
            let end = std::time::Instant::now() + LONG;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && std::time::Instant::now() < end
            {
                let postmaster = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
                let startup = postmaster
                    .map(|p| children_titled(p, "startup"))
                    .unwrap_or_default();
                for &p in &startup {
                    // SAFETY: the startup process of our own test cluster.
                    unsafe { libc::kill(p, libc::SIGSTOP) };
                }
                std::thread::sleep(Duration::from_millis(250));
                for &p in &startup {
                    // SAFETY: as above.
                    unsafe { libc::kill(p, libc::SIGCONT) };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let progress = d.wait_event("recovery_progress", Some("orders"), LONG);
    assert!(
        progress["lsn"].as_str().unwrap().contains('/'),
        "{progress}"
    );
    d.wait_event("target_recovered", Some("orders"), LONG);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    throttle.join().unwrap();
    assert!(pg.answers());
    assert_eq!(d.count("heal_issued", Some("orders")), 1, "restarted once");
    assert_eq!(
        d.count("escalation", Some("orders")),
        0,
        "a recovery that advances is not escalated, though it outlasted recovery_timeout: {:#?} {:#?}",
        d.events("escalation", None),
        d.events("recovery_progress", None)
    );
    assert!(
        d.count("recovery_progress", Some("orders")) >= 1,
        "waited past recovery_timeout"
    );
}

/// The `system_identifier` of a running cluster, as SQL shows it.
fn system_identifier(pg: &Pg) -> String {
    pg.psql("SELECT system_identifier FROM pg_control_system()")
}

/// `server: { listen }` added to the workspace's registry; the API's address.
fn with_api(ws: &Workspace) -> String {
    let port = sentinel_remedy::pgcluster::free_port().expect("free port");
    let addr = format!("127.0.0.1:{port}");
    let text = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(
        ws.config(),
        format!("server: {{ listen: \"{addr}\" }}\n{text}"),
    )
    .unwrap();
    addr
}

#[test]
fn another_cluster_on_the_targets_port_is_wrong_server_until_its_own_server_is_back() {
    let x = Pg::start();
    // Y: a cluster of its own (separate initdb) that accepts X's credentials, made to listen
    // on X's port once X is stopped.
    let mut y = Pg::start();
    y.psql(&format!("ALTER ROLE postgres PASSWORD '{}'", x.password()));
    y.cluster.stop("fast").unwrap();
    let conf = y.cluster.data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!("port = {}\n", x.cluster.port));
    std::fs::write(&conf, text).unwrap();
    y.cluster.port = x.cluster.port;
    let (x_id, rx, ws) = (system_identifier(&x), Receiver::start(), Workspace::new());
    let marker = ws.path().join("restarted");
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            // Room for the swap below (refused probes) before the threshold is reached.
            threshold: 25,
            pid_watch: false,
            heal_argv: Some(vec!["touch".into(), marker.display().to_string()]),
            ..TargetSpec::new("orders", &x)
        }],
    );
    let api = with_api(&ws);
    let d = Daemon::run(&ws, &[]);
    // Healthy on X (its identity learned at the first passing probe).
    d.wait_event("probe_ok", Some("orders"), LONG);

    x.cluster.stop("fast").unwrap();
    y.cluster.start().unwrap();
    let y_id = system_identifier(&y);
    assert_ne!(x_id, y_id, "two initdbs, two identities");
    let alert = wait_for(LONG, "the wrong_server alert", || {
        rx.hook_events("failure").into_iter().next()
    });
    let failure = &alert.body["failure"];
    assert_eq!(failure["class"], "wrong_server", "{}", alert.body);
    let detail = failure["detail"].as_str().unwrap();
    assert!(detail.contains(&x_id) && detail.contains(&y_id), "{detail}");
    let learned = d.events("server_identity_learned", Some("orders"));
    assert_eq!(learned.len(), 1, "learned once, from X");
    assert_eq!(learned[0]["system_identifier"], x_id.as_str());
    let status = http::get(&api, "/status").json();
    assert_eq!(status["targets"][0]["up"], false, "{status}");
    assert_ne!(status["targets"][0]["state"], "healthy", "{status}");
    // Y goes on answering the probe query: ten more probes, still no recovery nor second alert.
    let answered_by_y = || {
        d.records()
            .iter()
            .filter(|r| r["msg"] == "probe failed during incident" && r["class"] == "wrong_server")
            .count()
    };
    let seen = answered_by_y();
    wait_for(LONG, "ten more probes answered by Y", || {
        (answered_by_y() >= seen + 10).then_some(())
    });
    assert!(rx.hook_events("recovery").is_empty(), "no recovery from Y");
    assert_eq!(rx.hook_events("failure").len(), 1, "one alert");
    assert_eq!(d.count("heal_issued", None), 0, "no restart");
    assert!(!marker.exists(), "the heal command never ran");

    // X back on its port: the target's own server, a recovery.
    y.cluster.stop("fast").unwrap();
    x.cluster.start().unwrap();
    d.wait_event("target_recovered", Some("orders"), LONG);
    wait_for(LONG, "the recovery notice", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    assert_eq!(rx.hook_events("failure").len(), 1);
    assert!(!marker.exists(), "the heal command never ran");
    rx.assert_all_well_formed();
}

//! A probe sees what a new client sees: a stopped postmaster and connection slots that fill
//! up after the daemon connected are failures, a scram-sha-256 login passes, and a probe
//! query answering a huge result costs the daemon a bounded read.

mod support;

use std::process::Child;
use std::time::Duration;
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// Sends SIGCONT to a stopped postmaster when dropped, so the cluster can be stopped.
struct Continue(i32);

impl Drop for Continue {
    fn drop(&mut self) {
        // SAFETY: the postmaster of our own cluster.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The daemon's resident memory (VmRSS) in MiB, read from /proc.
fn rss_mib(pid: i32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Has the server log every session it authorizes (from now on, for new sessions).
fn log_connections(pg: &Pg) {
    pg.psql("ALTER SYSTEM SET log_connections = on");
    pg.psql("SELECT pg_reload_conf()");
}

/// Server log lines saying a session of the daemon's probe, as `user`, was authorized.
fn probe_logins(pg: &Pg, user: &str) -> usize {
    let who = format!("connection authorized: user={user} ");
    std::fs::read_to_string(&pg.cluster.log_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&who) && l.contains("application_name=sentinel-remedy"))
        .count()
}

/// Waits until the server has authorized `n` of the daemon's probe logins as `user`.
fn wait_logins(pg: &Pg, d: &Daemon, n: usize, user: &str) {
    let end = std::time::Instant::now() + LONG;
    while probe_logins(pg, user) < n {
        if std::time::Instant::now() > end {
            panic!(
                "no {n} probe logins; server log:\n{}\ndaemon log:\n{}",
                std::fs::read_to_string(&pg.cluster.log_file).unwrap_or_default(),
                d.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stopped_postmaster_is_a_timeout_incident_though_its_sessions_still_answer() {
    let pg = Pg::start();
    log_connections(&pg);
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            interval: "1s",
            timeout: "1s",
            threshold: 3,
            pid_watch: false,
            heal_argv: Some(vec!["true".into()]),
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    // Healthy first: the daemon's logins reach the server.
    wait_logins(&pg, &d, 2, "postgres");
    let pid = pg.pid();
    // SAFETY: our own cluster's postmaster; SIGCONT comes from the guard.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let _resume = Continue(pid);
    let alert = wait_for(LONG, "the failure alert", || {
        rx.hook_events("failure").into_iter().next()
    });
    assert_eq!(alert.body["failure"]["class"], "timeout", "{}", alert.body);
    assert_eq!(pg.pid(), pid, "the stopped postmaster is the same process");
    drop(d);
}

/// Whether a new session of `user` over the socket is refused for want of a slot.
fn refused_as(pg: &Pg, user: &str) -> bool {
    let psql = sentinel_remedy::pgcluster::find_bin_dir()
        .expect("PostgreSQL binaries")
        .join("psql");
    let out = std::process::Command::new(psql)
        .args(["-X", "-At", "-h"])
        .arg(pg.cluster.root.join("sock"))
        .args([
            "-p",
            &pg.cluster.port.to_string(),
            "-U",
            user,
            "-d",
            "postgres",
        ])
        .args(["-c", "SELECT 1"])
        .output()
        .expect("psql");
    let err = String::from_utf8_lossy(&out.stderr);
    err.contains("too many clients") || err.contains("slots are reserved")
}

#[test]
fn connection_slots_filled_after_the_daemon_connected_are_alerted_not_restarted() {
    let pg = Pg::start();
    log_connections(&pg);
    pg.psql("CREATE ROLE app LOGIN PASSWORD 'app-password-1'");
    // Three slots for ordinary roles; the superuser's reserved ones stay free for the test.
    pg.psql("ALTER SYSTEM SET max_connections = 6");
    pg.psql("ALTER SYSTEM SET superuser_reserved_connections = 3");
    pg.cluster.stop("fast").unwrap();
    pg.cluster.start().unwrap();
    let rx = Receiver::start();
    let ws = Workspace::new();
    let dsn = format!(
        "postgres://app:app-password-1@127.0.0.1:{}/postgres",
        pg.cluster.port
    );
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            pid_watch: false,
            dsn: Some(&dsn),
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    wait_logins(&pg, &d, 2, "app");
    let pid = pg.pid();
    // The ordinary slots fill up after the daemon connected (a holder that lost a race for a
    // slot is started again).
    let mut holders: Vec<Child> = Vec::new();
    wait_for(LONG, "every ordinary slot taken", || {
        holders.retain_mut(|h| h.try_wait().ok().flatten().is_none());
        while holders.len() < 3 {
            holders.push(pg.hold_connection("app"));
        }
        std::thread::sleep(Duration::from_millis(300));
        refused_as(&pg, "app").then_some(())
    });
    let alert = wait_for(LONG, "the failure alert", || {
        rx.hook_events("failure").into_iter().next()
    });
    assert_eq!(
        alert.body["failure"]["class"], "too_many_connections",
        "{}",
        alert.body
    );
    assert_eq!(alert.body["failure"]["sqlstate"], "53300");
    // The sessions end (a backend in pg_sleep does not notice its client is gone).
    for h in &mut holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' AND query LIKE '%pg_sleep%'");
    wait_for(LONG, "the recovery notice", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    assert_eq!(pg.pid(), pid, "the server was not restarted");
    drop(d);
}

#[test]
fn a_scram_sha_256_login_probes_healthy_with_a_new_session_each_time() {
    let pg = Pg::start();
    let hba = std::fs::read_to_string(pg.cluster.data.join("pg_hba.conf")).unwrap();
    assert!(
        hba.lines()
            .any(|l| l.starts_with("host") && l.trim_end().ends_with("scram-sha-256")),
        "TCP logins need scram-sha-256"
    );
    log_connections(&pg);
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            pid_watch: false,
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    // Probes every 200 ms: ten logins, each authorized by the server with SCRAM.
    wait_logins(&pg, &d, 10, "postgres");
    let log = std::fs::read_to_string(&pg.cluster.log_file).unwrap();
    assert!(
        !log.contains("password authentication failed"),
        "no login failed:\n{log}"
    );
    assert!(rx.hook_events("failure").is_empty(), "no alert");
    // Each probe ended its session: at most the one in flight is open.
    let open: usize = pg
        .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sentinel-remedy'")
        .parse()
        .unwrap();
    assert!(open <= 1, "{open} probe sessions left open");
    drop(d);
}

#[test]
fn a_probe_query_answering_100_mb_fails_without_the_daemon_reading_it() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            pid_watch: false,
            timeout: "5s",
            threshold: 2,
            heal: false,
            query: "SELECT repeat('x', 100000000)",
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    let mut peak: f64 = 0.0;
    let alert = wait_for(LONG, "the failure alert", || {
        peak = peak.max(rss_mib(d.pid()));
        rx.hook_events("failure").into_iter().next()
    });
    assert_eq!(
        alert.body["failure"]["class"], "unexpected_result",
        "{}",
        alert.body
    );
    assert!(
        alert.body["failure"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("read limit"),
        "{}",
        alert.body
    );
    peak = peak.max(rss_mib(d.pid()));
    assert!(
        peak < 64.0,
        "the daemon stayed small: {peak:.1} MiB resident"
    );
}

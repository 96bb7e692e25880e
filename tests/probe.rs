//! A probe sees what a new client sees: a stopped postmaster and connection slots that fill
//! up after the daemon connected are failures, a scram-sha-256 login passes, and a probe
//! query answering a huge result costs the daemon a bounded read. A server asking for the
//! password in clear or as md5 gets nothing unless the DSN's require_auth allows it.

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

/// Makes the server ask TCP logins for `method` (`password`: cleartext, `md5`), and creates
/// the role `app` with `password`, stored as md5 for `md5` (a SCRAM secret would make the
/// server use SCRAM anyway).
fn ask_for(pg: &Pg, method: &str, password: &str) {
    let encryption = if method == "md5" {
        "md5"
    } else {
        "scram-sha-256"
    };
    pg.psql(&format!(
        "SET password_encryption = '{encryption}'; CREATE ROLE app LOGIN PASSWORD '{password}'"
    ));
    pg.ask_tcp_logins_for(method);
}

/// Server log lines of sessions received, and authorized, as `app` (any application).
fn app_sessions(pg: &Pg) -> (usize, usize) {
    let log = std::fs::read_to_string(&pg.cluster.log_file).unwrap_or_default();
    let received = log.matches("connection received: host=127.0.0.1").count();
    let authorized = log.matches("connection authorized: user=app ").count();
    (received, authorized)
}

/// The daemon probes a server whose pg_hba.conf asks for `method`: without require_auth the
/// probe fails as `insecure_auth`, naming the request and the fix, and no session of `app`
/// is ever authorized (the archiver's SQL snapshot included); with `require_auth={method}`
/// in the DSN the same server probes healthy.
fn refused_unless_allowed(method: &str, request: &str) {
    let pg = Pg::start();
    log_connections(&pg);
    let password = format!("app-{:x}", rand::random::<u64>());
    ask_for(&pg, method, &password);
    let rx = Receiver::start();
    let ws = Workspace::new();
    let dsn = format!(
        "postgres://app:{password}@127.0.0.1:{}/postgres",
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
    let alert = wait_for(LONG, "the failure alert", || {
        rx.hook_events("failure").into_iter().next()
    });
    let failure = &alert.body["failure"];
    assert_eq!(failure["class"], "insecure_auth", "{}", alert.body);
    let detail = failure["detail"].as_str().unwrap_or("");
    for said in [
        request,
        "without TLS",
        "sent no password",
        "scram-sha-256",
        "pg_hba.conf",
    ] {
        assert!(detail.contains(said), "'{said}' in: {detail}");
    }
    assert!(
        detail.contains(&format!("require_auth={method}")),
        "{detail}"
    );
    // The evidence is archived (the bundle's SQL snapshot tried to log in too).
    wait_for(LONG, "the bundle", || ws.bundles().pop());
    let (received, authorized) = app_sessions(&pg);
    assert!(received > 0, "the probe reached the server");
    assert_eq!(authorized, 0, "no session of app was authorized");
    let log = std::fs::read_to_string(&pg.cluster.log_file).unwrap_or_default();
    assert!(
        !log.contains("password authentication failed"),
        "no password was sent to fail:\n{log}"
    );
    assert_eq!(pg.starts(), 1, "not restarted");
    assert_secret_absent(&password, &d, Some(&rx), &ws);
    drop(d);

    // Opted in: the same server probes healthy.
    let rx = Receiver::start();
    let ws = Workspace::new();
    let dsn = format!("{dsn}?require_auth={method}");
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            pid_watch: false,
            dsn: Some(&dsn),
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    wait_logins(&pg, &d, 3, "app");
    assert!(rx.hook_events("failure").is_empty(), "no alert");
    drop(d);
}

#[test]
fn a_server_asking_for_a_cleartext_password_gets_none_unless_require_auth_allows_it() {
    refused_unless_allowed("password", "AuthenticationCleartextPassword");
}

#[test]
fn a_server_asking_for_an_md5_password_gets_none_unless_require_auth_allows_it() {
    refused_unless_allowed("md5", "AuthenticationMD5Password");
}

/// A raw listener squatting a port: to each connection it sends
/// AuthenticationCleartextPassword after the startup message, and records what comes back.
struct Squatter {
    port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Squatter {
    fn start() -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (rec, count) = (received.clone(), connections.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { return };
                let (rec, count) = (rec.clone(), count.clone());
                std::thread::spawn(move || {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
                    let read_startup = |c: &mut std::net::TcpStream| {
                        let mut len = [0u8; 4];
                        c.read_exact(&mut len).ok()?;
                        let mut startup =
                            vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
                        c.read_exact(&mut startup).ok().map(|_| startup)
                    };
                    let Some(mut startup) = read_startup(&mut c) else {
                        return;
                    };
                    // An SSLRequest (sslmode=prefer, the default) gets 'N', as from a server
                    // without TLS: the squatter wants the plain connection.
                    if startup == [0x04, 0xd2, 0x16, 0x2f] {
                        let _ = c.write_all(b"N");
                        let Some(next) = read_startup(&mut c) else {
                            return;
                        };
                        startup = next;
                    }
                    let _ = startup;
                    let _ = c.write_all(b"R\0\0\0\x08\0\0\0\x03");
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        rec.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Self {
            port,
            received,
            connections,
        }
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

/// An extra check beside the real servers above: on the wire, a listener asking for the
/// password in clear receives no byte of it, from the probe or the SQL snapshot; opted in
/// with require_auth=password, the same listener does receive it (so the check can fail).
#[test]
fn a_squatter_asking_for_the_password_in_clear_receives_no_byte_of_it() {
    let pg = Pg::start(); // for the spec's paths only
    let squatter = Squatter::start();
    let password = format!("squat-{:x}", rand::random::<u64>());
    let rx = Receiver::start();
    let ws = Workspace::new();
    let dsn = format!(
        "postgres://app:{password}@127.0.0.1:{}/postgres",
        squatter.port
    );
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            pid_watch: false,
            heal: false,
            dsn: Some(&dsn),
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    let alert = wait_for(LONG, "the failure alert", || {
        rx.hook_events("failure").into_iter().next()
    });
    assert_eq!(
        alert.body["failure"]["class"], "insecure_auth",
        "{}",
        alert.body
    );
    wait_for(LONG, "the bundle", || ws.bundles().pop());
    wait_for(LONG, "three connections", || {
        (squatter
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 3)
            .then_some(())
    });
    drop(d);
    let got = squatter.received();
    assert!(
        !String::from_utf8_lossy(&got).contains(&password),
        "the password reached the squatter"
    );
    assert!(!got.contains(&b'p'), "no PasswordMessage at all: {got:?}");

    // Opted in, the squatter gets it: the listener does see a password when one is sent.
    let ws = Workspace::new();
    let dsn = format!("{dsn}?require_auth=password");
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            pid_watch: false,
            heal: false,
            dsn: Some(&dsn),
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    wait_for(LONG, "the password at the squatter", || {
        String::from_utf8_lossy(&squatter.received())
            .contains(&password)
            .then_some(())
    });
    drop(d);
}

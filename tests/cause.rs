//! The likely cause of every incident, named and quoted in the first line of every channel's
//! alert and in the bundle's `cause.json`, and the judgment that follows from it: each fault
//! injected for real (SIGKILL, a fast stop, a SIGSEGV'd backend, a bad postgresql.conf line, a
//! port taken by another process, a full tmpfs, a backend OOM-killed under a container's
//! memory limit, a missing control file's PANIC, a data directory opened to everyone, a lock
//! file naming a live process).

mod support;

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::docker::PgContainer;
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// Slack, Discord, PagerDuty and a generic webhook, all at one receiver.
fn notify_everywhere(rx: &Receiver) -> String {
    format!(
        "{}  pagerduty: {{ routing_key: \"k0123456789abcdef\", url: \"{}/pagerduty\" }}\n",
        notify_all(rx),
        rx.base()
    )
}

/// The first line a person reads of the `kind` notice (failure, escalation) on each channel.
struct FirstLines {
    slack: String,
    discord: String,
    pagerduty: String,
    webhook: String,
}

impl FirstLines {
    /// Waits until every channel has the `kind` notice and returns their first lines.
    fn of(d: &Daemon, rx: &Receiver, kind: &str) -> Self {
        let (emoji, severity) = match kind {
            "failure" => ("🔴", "error"),
            _ => ("🚨", "critical"),
        };
        let end = std::time::Instant::now() + LONG;
        let found = || {
            let webhook = rx.hook_events(kind).first()?.body["title"]
                .as_str()?
                .to_string();
            let slack = rx.accepted("/slack").into_iter().find_map(|h| {
                let text = h.body["text"].as_str()?;
                text.starts_with(emoji)
                    .then(|| text.lines().next().unwrap_or("").to_string())
            })?;
            let discord = rx.hits().into_iter().find_map(|h| {
                let c = h.body["content"].as_str()?;
                (h.path.starts_with("/discord") && h.status < 300 && c.starts_with(emoji))
                    .then(|| c.to_string())
            })?;
            let pagerduty = rx.accepted("/pagerduty").into_iter().find_map(|h| {
                (h.body["payload"]["severity"] == severity)
                    .then(|| h.body["payload"]["summary"].as_str().map(str::to_string))?
            })?;
            Some(Self {
                slack,
                discord,
                pagerduty,
                webhook,
            })
        };
        loop {
            if let Some(lines) = found() {
                return lines;
            }
            if std::time::Instant::now() > end {
                let got: Vec<String> = rx
                    .hits()
                    .iter()
                    .map(|h| format!("{} {} {}", h.path, h.status, h.raw))
                    .collect();
                let log = d.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "no {kind} notice on every channel; received:\n{}\ndaemon log (newest first):\n{}",
                    got.join("\n"),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every channel's first line says `what` (Discord's with its markdown escaped).
    fn all_say(&self, what: &str) {
        let discord = self.discord.replace('\\', "");
        for (channel, line) in [
            ("slack", &self.slack),
            ("discord", &discord),
            ("pagerduty", &self.pagerduty),
            ("webhook", &self.webhook),
        ] {
            assert!(
                line.contains(what),
                "{channel}'s first line lacks {what:?}: {line}"
            );
        }
        println!("first line: {}", self.webhook);
    }
}

/// The only bundle's `cause.json`, also listed (and hashed) in its manifest.
fn cause_json(ws: &Workspace) -> (std::path::PathBuf, Value) {
    let bundle = wait_for(LONG, "the bundle's cause.json", || {
        ws.bundles()
            .into_iter()
            .find(|b| b.join("cause.json").exists())
    });
    let cause: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("cause.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    assert!(
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "cause.json"),
        "{manifest}"
    );
    assert_eq!(manifest["cause"], cause);
    println!("cause.json: {cause}");
    (bundle, cause)
}

/// Each quoted log line is the line of that number in the bundle's copy of the file.
fn quotes_match_the_bundle(bundle: &std::path::Path, cause: &Value) {
    for q in cause["evidence"].as_array().unwrap() {
        let Some(n) = q["line"].as_u64() else {
            continue;
        };
        let text = std::fs::read_to_string(bundle.join(q["source"].as_str().unwrap())).unwrap();
        let line = text.lines().nth(n as usize - 1).unwrap();
        assert_eq!(line.trim(), q["text"].as_str().unwrap(), "{q}");
    }
}

/// The daemon on one target, every channel at one receiver, once a probe passed.
fn run_daemon(spec: TargetSpec) -> (Daemon, Receiver, Workspace) {
    let rx = Receiver::start();
    let ws = Workspace::new();
    let name = spec.name.to_string();
    ws.write_registry(&notify_everywhere(&rx), &[spec]);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some(&name), LONG);
    (d, rx, ws)
}

#[test]
fn a_sigkilled_postmaster_is_named_killed_without_warning_and_restarted() {
    let pg = Pg::start();
    let (d, rx, ws) = run_daemon(TargetSpec::new("orders", &pg));
    pg.kill9();
    FirstLines::of(&d, &rx, "failure").all_say("SIGKILL");
    let (bundle, cause) = cause_json(&ws);
    assert_eq!(cause["class"], "killed");
    quotes_match_the_bundle(&bundle, &cause);
    d.wait_event("target_recovered", Some("orders"), LONG);
    assert_eq!(d.count("heal_issued", Some("orders")), 1);
    rx.assert_all_well_formed();
}

#[test]
fn an_operators_fast_stop_is_named_a_shutdown_request_with_its_log_line() {
    let pg = Pg::start();
    let (d, rx, ws) = run_daemon(TargetSpec::new("orders", &pg));
    pg.cluster.stop_nowait("fast").expect("pg_ctl stop -m fast");
    FirstLines::of(&d, &rx, "failure").all_say("fast shutdown request");
    let (bundle, cause) = cause_json(&ws);
    assert_eq!(cause["class"], "shutdown_request");
    assert!(cause["evidence"][0]["text"]
        .as_str()
        .unwrap()
        .contains("received fast shutdown request"));
    quotes_match_the_bundle(&bundle, &cause);
    d.wait_event("target_recovered", Some("orders"), LONG);
    rx.assert_all_well_formed();
}

#[test]
fn a_backend_killed_by_sigsegv_opens_an_incident_names_the_query_and_is_not_restarted() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(&notify_everywhere(&rx), &[TargetSpec::new("orders", &pg)]);
    let port = sentinel_remedy::pgcluster::free_port().expect("free port");
    let addr = format!("127.0.0.1:{port}");
    let text = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(
        ws.config(),
        format!("server: {{ listen: \"{addr}\" }}\n{text}"),
    )
    .unwrap();
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    let postmaster = pg.pid();
    // The pid watch has looked at the postmaster's children once (it does when it starts).
    d.wait_event("process_watched", Some("orders"), LONG);
    let mut session = pg.hold_connection("postgres");
    let backend: i32 = wait_for(LONG, "the pg_sleep session", || {
        pg.psql("SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'")
            .parse()
            .ok()
    });
    // SAFETY: a signal to the backend process of our own throwaway cluster.
    unsafe { libc::kill(backend, libc::SIGSEGV) };
    let declared = d.wait_event("incident_declared", Some("orders"), LONG);
    assert_eq!(declared["class"], "backend_crash", "{declared}");
    let lines = FirstLines::of(&d, &rx, "failure");
    lines.all_say(&format!(
        "server process {backend} was terminated by signal 11"
    ));
    lines.all_say("SELECT pg_sleep(120)");
    wait_for(LONG, "the recovery notice", || {
        (!rx.hook_events("recovery").is_empty()).then_some(())
    });
    let (bundle, cause) = cause_json(&ws);
    assert_eq!(cause["class"], "backend_crash");
    quotes_match_the_bundle(&bundle, &cause);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pg.pid(), postmaster, "the postmaster was not restarted");
    assert_eq!(d.count("heal_issued", None), 0);
    assert_eq!(rx.hook_events("failure").len(), 1, "one alert");
    assert_eq!(
        pg.starts(),
        2,
        "one start and one crash recovery, no restart"
    );
    // The API, the status page and the CLI show the cause too.
    let said = format!("Backend crash: server process {backend} was terminated by signal 11");
    let list = support::http::get(&addr, "/incidents").json();
    assert_eq!(
        list["incidents"][0]["cause"]["class"], "backend_crash",
        "{list}"
    );
    assert!(list["incidents"][0]["cause"]["sentence"]
        .as_str()
        .unwrap()
        .starts_with(&said));
    let page = support::http::get(&addr, "/").body;
    assert!(page.contains(&said), "the status page shows the cause");
    let url = format!("http://{addr}");
    let (code, out, _) = run_cli(&["incidents", "--url", &url], ws.path(), &[]);
    assert_eq!(code, 0);
    assert!(out.contains("LIKELY CAUSE") && out.contains(&said), "{out}");
    let _ = session.kill();
    let _ = session.wait();
    rx.assert_all_well_formed();
}

#[test]
fn a_bad_postgresql_conf_line_stops_the_restart_at_the_first_failed_start() {
    let pg = Pg::start();
    let (d, rx, _ws) = run_daemon(TargetSpec::new("orders", &pg));
    let conf = pg.cluster.data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("shared_buffers = = 16MB\n");
    std::fs::write(&conf, &text).unwrap();
    let line = text.lines().count();
    pg.kill9();
    let lines = FirstLines::of(&d, &rx, "escalation");
    lines.all_say(&format!("postgresql.conf line {line}"));
    // No retry loop: one start, seen once in the server log.
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::read_to_string(&pg.cluster.log_file).unwrap();
    let starts = log.matches("syntax error in file").count();
    println!("failed starts in the server log: {starts}");
    assert_eq!(starts, 1, "one failed start, no retry loop");
    assert_eq!(d.count("heal_attempt", Some("orders")), 1);
    rx.assert_all_well_formed();
}

/// A process of its own listening on `port` (until killed).
fn hold_port(port: u16) -> Child {
    let code = format!(
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',{port}))\ns.listen(8)\ntime.sleep(300)"
    );
    let child = Command::new("python3")
        .args(["-c", &code])
        .stdin(Stdio::null())
        .spawn()
        .expect("python3");
    wait_for(LONG, "the port holder to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then_some(())
    });
    child
}

#[test]
fn a_start_on_a_port_held_by_another_process_names_the_holder_and_stops() {
    let pg = Pg::start();
    let spec = TargetSpec {
        pid_watch: false,
        threshold: 2,
        ..TargetSpec::new("orders", &pg)
    };
    let (d, rx, _ws) = run_daemon(spec);
    pg.kill9();
    let mut holder = hold_port(pg.cluster.port);
    let lines = FirstLines::of(&d, &rx, "escalation");
    lines.all_say(&format!("port {} is already in use", pg.cluster.port));
    lines.all_say(&format!("pid {} (python3)", holder.id()));
    assert_eq!(d.count("heal_attempt", Some("orders")), 1);
    let _ = holder.kill();
    let _ = holder.wait();
    rx.assert_all_well_formed();
}

/// A small tmpfs mounted on a cluster's data directory (root only); unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_holds_the_restart_with_the_numbers_and_heals_once_when_space_is_back() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mounted = std::sync::Mutex::new(None);
    let pg = Pg::start_prepared(&std::env::temp_dir(), |root| {
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=128m,mode=0700,uid=65534,gid=65534",
                "tmpfs",
            ])
            .arg(&data)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        *mounted.lock().unwrap() = Some(Tmpfs(data));
    });
    let (d, rx, ws) = run_daemon(TargetSpec::new("orders", &pg));
    let filler = pg.cluster.data.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let err = pg
        .cluster
        .psql("CREATE TABLE big AS SELECT repeat('x', 1000) AS x FROM generate_series(1, 100000)")
        .expect_err("no space for the table")
        .to_string();
    assert!(err.contains("No space left on device"), "{err}");
    pg.kill9();
    let lines = FirstLines::of(&d, &rx, "failure");
    lines.all_say("Disk full");
    lines.all_say("free of 128.0 MiB");
    let (bundle, cause) = cause_json(&ws);
    assert_eq!(cause["class"], "disk_full");
    quotes_match_the_bundle(&bundle, &cause);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(d.count("heal_issued", Some("orders")), 0, "held while full");
    assert_eq!(rx.hook_events("failure").len(), 1, "one alert");
    std::fs::remove_file(&filler).unwrap();
    d.wait_event("target_recovered", Some("orders"), LONG);
    assert_eq!(d.count("heal_issued", Some("orders")), 1, "healed once");
    assert!(pg.answers());
    rx.assert_all_well_formed();
}

#[test]
fn a_backend_oom_killed_under_a_containers_memory_limit_is_alerted_not_restarted() {
    let c = PgContainer::start_with(
        "oom",
        None,
        &["--memory=160m", "--memory-swap=160m"],
        &["shared_buffers=16MB"],
    );
    let rx = Receiver::start();
    let ws = Workspace::new();
    let text = format!(
        "archive:\n{}notify:\n{}\ntargets:\n  - name: boxed\n    dsn: \"{}\"\n    probe: {{ interval: 500ms, timeout: 2s, failure_threshold: 3 }}\n    heal:\n      docker: {{ container: {}, stop_timeout: 2s }}\n    forensics:\n      docker:\n        paths: [/var/lib/postgresql/data/log]\n        log_tail: 200\n",
        ws.local_archive(),
        notify_everywhere(&rx),
        c.dsn(),
        c.name
    );
    std::fs::write(ws.config(), text).unwrap();
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("boxed"), LONG);
    let started = c.started_at();
    let err = c
        .psql("SELECT length(string_agg(repeat('x', 1000000), '')) FROM generate_series(1, 2000)")
        .expect_err("the backend is OOM-killed");
    println!("the client saw: {err}");
    let declared = d.wait_event("incident_declared", Some("boxed"), LONG);
    assert_eq!(declared["class"], "backend_crash", "{declared}");
    let lines = FirstLines::of(&d, &rx, "failure");
    lines.all_say("OOM killer");
    lines.all_say("string_agg");
    let (_bundle, cause) = cause_json(&ws);
    assert_eq!(cause["class"], "backend_crash");
    wait_for(LONG, "the recovery notice", || {
        (!rx.hook_events("recovery").is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.started_at(), started, "the container was not restarted");
    assert_eq!(d.count("heal_issued", None), 0);
    assert!(c.answers());
    rx.assert_all_well_formed();
}

#[test]
fn a_postmaster_oom_killed_under_a_containers_memory_limit_is_named_and_restarted_once() {
    let c = PgContainer::start_with(
        "pmoom",
        None,
        &["--memory=160m", "--memory-swap=160m"],
        &["shared_buffers=16MB"],
    );
    let rx = Receiver::start();
    let ws = Workspace::new();
    let text = format!(
        "archive:\n{}notify:\n{}\ntargets:\n  - name: boxed\n    dsn: \"{}\"\n    probe: {{ interval: 500ms, timeout: 2s, failure_threshold: 3 }}\n    heal:\n      docker: {{ container: {}, stop_timeout: 2s }}\n",
        ws.local_archive(),
        notify_everywhere(&rx),
        c.dsn(),
        c.name
    );
    std::fs::write(ws.config(), text).unwrap();
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("boxed"), LONG);
    // The OOM killer picks the postmaster (PID 1) once its score is raised, which its owner
    // may do; the backend that grows was forked before, so it keeps its own score of 0.
    let hog = "SELECT length(string_agg(repeat(chr(120), 1000000), chr(32))) FROM generate_series(1, 2000)";
    let script = format!(
        "psql -c 'SELECT pg_sleep(2)' -c \"{hog}\" & sleep 1; echo 1000 > /proc/1/oom_score_adj; wait"
    );
    let _ = Command::new("docker")
        .args(["exec", "-u", "postgres", &c.name, "sh", "-c", &script])
        .output();
    wait_for(LONG, "the container to die", || {
        (c.inspect("{{.State.Running}}") == "false"
            || d.count("incident_declared", Some("boxed")) > 0)
            .then_some(())
    });
    let lines = FirstLines::of(&d, &rx, "failure");
    lines.all_say("OOM killer");
    let (bundle, cause) = cause_json(&ws);
    assert_eq!(cause["class"], "oom_killed", "{cause}");
    quotes_match_the_bundle(&bundle, &cause);
    d.wait_event("target_recovered", Some("boxed"), LONG);
    assert_eq!(d.count("heal_issued", Some("boxed")), 1, "restarted once");
    assert!(c.answers());
    rx.assert_all_well_formed();
}

#[test]
fn a_container_whose_server_stops_on_a_bad_config_line_is_restarted_once_and_escalated() {
    let c = PgContainer::start("badconf", None);
    let rx = Receiver::start();
    let ws = Workspace::new();
    let text = format!(
        "archive:\n{}notify:\n{}\ntargets:\n  - name: boxed\n    dsn: \"{}\"\n    probe: {{ interval: 500ms, timeout: 2s, failure_threshold: 3 }}\n    heal:\n      docker: {{ container: {}, stop_timeout: 2s }}\n",
        ws.local_archive(),
        notify_everywhere(&rx),
        c.dsn(),
        c.name
    );
    std::fs::write(ws.config(), text).unwrap();
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("boxed"), LONG);
    let conf = "/var/lib/postgresql/data/postgresql.conf";
    support::docker::docker(&[
        "exec",
        &c.name,
        "sh",
        "-c",
        &format!("echo 'shared_buffers = = 16MB' >> {conf}"),
    ]);
    let line = support::docker::docker(&["exec", &c.name, "sh", "-c", &format!("wc -l < {conf}")]);
    support::docker::docker(&["kill", &c.name]);
    let lines = FirstLines::of(&d, &rx, "escalation");
    lines.all_say(&format!("postgresql.conf line {}", line.trim()));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.count("heal_attempt", Some("boxed")), 1, "no retry loop");
    assert_eq!(c.inspect("{{.State.Running}}"), "false");
    rx.assert_all_well_formed();
}

#[test]
fn a_panic_before_death_is_quoted_with_its_log_line() {
    let pg = Pg::start();
    let (d, rx, ws) = run_daemon(TargetSpec::new("orders", &pg));
    // A missing control file: the checkpointer PANICs writing it, then the postmaster PANICs
    // reading it while it reinitializes, and dies.
    std::fs::remove_file(pg.cluster.data.join("global/pg_control")).unwrap();
    let _ = pg.cluster.psql("CHECKPOINT");
    FirstLines::of(&d, &rx, "failure").all_say("PANIC");
    let (bundle, cause) = cause_json(&ws);
    assert_eq!(cause["class"], "panic", "{cause}");
    assert!(
        cause["evidence"][0]["text"]
            .as_str()
            .unwrap()
            .contains("PANIC:  could not open file \"global/pg_control\""),
        "{cause}"
    );
    quotes_match_the_bundle(&bundle, &cause);
    // No start can succeed without the control file: escalated, not retried in a loop.
    FirstLines::of(&d, &rx, "escalation").all_say("pg_control");
    std::thread::sleep(Duration::from_secs(3));
    println!("heal attempts: {}", d.count("heal_attempt", Some("orders")));
    assert_eq!(d.count("heal_attempt", Some("orders")), 1, "no retry loop");
    rx.assert_all_well_formed();
}

#[test]
fn a_data_directory_opened_to_everyone_stops_the_restart_at_the_first_failed_start() {
    let pg = Pg::start();
    let (d, rx, _ws) = run_daemon(TargetSpec::new("orders", &pg));
    // A running server never looks again; the next start refuses the directory.
    std::fs::set_permissions(
        &pg.cluster.data,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    pg.kill9();
    let lines = FirstLines::of(&d, &rx, "escalation");
    lines.all_say("data directory's permissions");
    lines.all_say(&pg.cluster.data.display().to_string());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.count("heal_attempt", Some("orders")), 1, "no retry loop");
    rx.assert_all_well_formed();
}

#[test]
fn a_lock_file_naming_a_live_process_is_retried_briefly_then_escalated_naming_the_pid() {
    let pg = Pg::start();
    let (d, rx, _ws) = run_daemon(TargetSpec::new("orders", &pg));
    // A live process of the server's own user, named by the pid file the killed server left.
    let mut squatter = Command::new("sleep");
    squatter.arg("300").stdin(Stdio::null());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::process::CommandExt::uid(&mut squatter, 65534);
    }
    let mut squatter = squatter.spawn().expect("sleep");
    let pid_file = pg.cluster.data.join("postmaster.pid");
    let postmaster = pg.pid();
    let text = std::fs::read_to_string(&pid_file).unwrap();
    let rest: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(
        &pid_file,
        format!("{}\n{}\n", squatter.id(), rest.join("\n")),
    )
    .unwrap();
    // SAFETY: kill with the pid the cluster's own pid file named before we rewrote it.
    unsafe { libc::kill(postmaster, libc::SIGKILL) };
    let lines = FirstLines::of(&d, &rx, "escalation");
    lines.all_say("postmaster.pid");
    lines.all_say(&format!("PID {}", squatter.id()));
    // A lock file a dying server still holds clears by itself: a few quick retries, bounded.
    let attempts = d.count("heal_attempt", Some("orders"));
    println!("heal attempts before the escalation: {attempts}");
    assert!((1..=10).contains(&attempts), "{attempts} attempts");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        d.count("heal_attempt", Some("orders")),
        attempts,
        "none after it"
    );
    assert!(
        squatter.try_wait().unwrap().is_none(),
        "the process the lock file names is not the daemon's to kill"
    );
    let _ = squatter.kill();
    let _ = squatter.wait();
    rx.assert_all_well_formed();
}

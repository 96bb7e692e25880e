//! Hung servers, the restart budget, heal command hygiene and watching after an escalation:
//! real clusters stopped, killed and blocked for real, counted from outside the daemon.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

const LONG: Duration = Duration::from_secs(60);

/// Appends keys to the `heal:` of the last target (it is the last mapping of the registry).
fn add_heal_keys(ws: &Workspace, keys: &str) {
    let mut text = std::fs::read_to_string(ws.config()).expect("registry");
    text.push_str(keys);
    std::fs::write(ws.config(), text).expect("registry");
}

/// A shell script in the workspace, executable.
fn script(ws: &Workspace, name: &str, body: &str) -> PathBuf {
    let path = ws.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("script");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    path
}

/// The cluster's own start command, quoted for a shell script.
fn start_line(pg: &Pg) -> String {
    let quoted: Vec<String> = pg
        .cluster
        .start_argv()
        .iter()
        .map(|a| format!("'{a}'"))
        .collect();
    format!("exec {}", quoted.join(" "))
}

/// (state, parent pid) of a process, None once it is gone.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = s[s.rfind(')')? + 1..].split_whitespace();
    Some((f.next()?.chars().next()?, f.next()?.parse().ok()?))
}

/// Whether a process still runs (a zombie no longer does, but still holds its pid).
fn runs(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(s, _)| s != 'Z')
}

fn children(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| proc_stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_sigstopped_postmaster_is_stopped_and_started_again_once() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            interval: "1s",
            timeout: "1s",
            threshold: 3,
            ..TargetSpec::new("orders", &pg)
        }],
    );
    add_heal_keys(&ws, "      stop_timeout: 3s\n");
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    let old = pg.pid();
    // The whole server (postmaster and the backend the probe keeps): it answers nothing, not
    // even a connection it already has, while every pid lives.
    for pid in std::iter::once(old).chain(children(old)) {
        // SAFETY: our own cluster's postmaster and its children.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }
    d.wait_event("heal_attempt", Some("orders"), LONG);
    let fresh = wait_for(LONG, "a new postmaster", || {
        pg.cluster
            .postmaster_pid()
            .filter(|p| *p != old && runs(*p))
    });
    wait_for(LONG, "SELECT 1 on a new connection", || {
        pg.answers().then_some(())
    });
    wait_for(Duration::from_secs(10), "the hung postmaster gone", || {
        (!runs(old)).then_some(())
    });
    d.wait_event("target_recovered", Some("orders"), LONG);
    // Still the same server a while later: one restart, not two.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pg.cluster.postmaster_pid(), Some(fresh));
    assert!(runs(fresh));
    assert_eq!(
        files_under(&ws.state().join("heal-logs")).len(),
        1,
        "one heal"
    );
    assert_eq!(ws.bundles().len(), 1, "archived once, before the stop");
    let failures = rx.hook_events("failure");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].body["failure"]["class"], "timeout");
    assert_eq!(rx.hook_events("recovery").len(), 1);
}

#[test]
fn heal_commands_get_a_cleared_environment_plus_heal_env() {
    let pg = Pg::start();
    let ws = Workspace::new();
    let dump = ws.path().join("heal-env.txt");
    let heal = script(
        &ws,
        "heal.sh",
        &format!("env > \"$HEAL_ENV_DUMP\"\n{}", start_line(&pg)),
    );
    ws.write_registry(
        "  console: false\n",
        &[TargetSpec {
            heal_argv: Some(vec![heal.display().to_string()]),
            ..TargetSpec::new("orders", &pg)
        }],
    );
    add_heal_keys(
        &ws,
        &format!(
            "      env: {{ HEAL_ENV_DUMP: \"{}\", PGAPPNAME: healer }}\n",
            dump.display()
        ),
    );
    let secrets = [
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-7f3e1c"),
        ("SENTINEL_API_TOKEN", "api-token-91ab0d"),
    ];
    let d = Daemon::run(&ws, &secrets);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    let env = std::fs::read_to_string(&dump).expect("the heal command wrote its environment");
    assert!(env.contains("PGAPPNAME=healer"), "heal.env passed: {env}");
    assert!(
        env.lines().any(|l| l.starts_with("PATH=")),
        "PATH kept: {env}"
    );
    // Neither the command nor the server it started holds a secret of the daemon's.
    let server = std::fs::read(format!("/proc/{}/environ", pg.pid())).expect("environ");
    let server = String::from_utf8_lossy(&server);
    for (name, value) in secrets {
        assert!(!env.contains(value), "{name} reached the heal command");
        assert!(!server.contains(value), "{name} reached the postmaster");
    }
}

#[test]
fn a_heal_command_that_times_out_leaves_no_process_of_its_group() {
    let pg = Pg::start();
    let ws = Workspace::new();
    let pid_out = ws.path().join("sleep.pid");
    let heal = script(
        &ws,
        "heal.sh",
        "sleep 1000 &\necho $! > \"$SLEEP_PID\"\nwait",
    );
    ws.write_registry(
        "  console: false\n",
        &[TargetSpec {
            heal_argv: Some(vec![heal.display().to_string()]),
            ..TargetSpec::new("orders", &pg)
        }],
    );
    add_heal_keys(
        &ws,
        &format!(
            "      timeout: 1s\n      env: {{ SLEEP_PID: \"{}\" }}\n",
            pid_out.display()
        ),
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    let attempt = d.wait_event("heal_attempt", Some("orders"), LONG);
    assert!(
        attempt["verdict"].as_str().unwrap().contains("timed out"),
        "{attempt}"
    );
    let sleep: i32 = std::fs::read_to_string(&pid_out)
        .expect("the script wrote its child's pid")
        .trim()
        .parse()
        .expect("pid");
    wait_for(Duration::from_secs(5), "the command's child gone", || {
        (!runs(sleep)).then_some(())
    });
}

#[test]
fn a_postmaster_the_heal_started_is_reaped_at_once_and_restarted_at_the_first_attempt() {
    let pg = Pg::start();
    let ws = Workspace::new();
    let counter = ws.path().join("starts.txt");
    let heal = script(
        &ws,
        "heal.sh",
        &format!("echo start >> '{}'\n{}", counter.display(), start_line(&pg)),
    );
    ws.write_registry(
        "  console: false\n",
        &[TargetSpec {
            heal_argv: Some(vec![heal.display().to_string()]),
            budget_extra: ", backoff: 0s",
            ..TargetSpec::new("orders", &pg)
        }],
    );
    // Down before the daemon starts: the server it finds is one its heal started.
    pg.cluster.stop("fast").expect("stop");
    let d = Daemon::run(&ws, &[]);
    d.wait_event("target_recovered", Some("orders"), LONG);
    let before = lines(&counter);
    // The server our heal started is the daemon's to reap: it adopted it.
    let adopted = pg.pid();
    wait_for(
        Duration::from_secs(5),
        "the daemon adopts the postmaster",
        || (proc_stat(adopted).map(|(_, ppid)| ppid) == Some(d.pid())).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    pg.kill9();
    wait_for(
        Duration::from_secs(2),
        "the killed postmaster reaped",
        || proc_stat(adopted).is_none().then_some(()),
    );
    d.wait_events("target_recovered", Some("orders"), 2, LONG);
    assert_eq!(
        lines(&counter),
        before + 1,
        "one start for the kill: the first attempt found no zombie in its way"
    );
}

#[test]
fn a_start_blocked_by_a_zombie_holding_the_lock_file_does_not_loop() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    let counter = ws.path().join("attempts.txt");
    let heal = script(
        &ws,
        "heal.sh",
        &format!(
            "echo attempt >> '{}'\n{}",
            counter.display(),
            start_line(&pg)
        ),
    );
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            heal_argv: Some(vec![heal.display().to_string()]),
            recovery_timeout: "120s",
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    // A zombie of ours (never waited for) takes over the lock file: every start finds it
    // "running" and gives up, starting nothing.
    let mut cmd = std::process::Command::new("true");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // The server's user (the fixture runs it as nobody): a pid it may signal is "running".
        std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    }
    let mut zombie = cmd.spawn().expect("spawn true");
    wait_for(Duration::from_secs(5), "a zombie", || {
        (proc_stat(zombie.id() as i32).map(|(s, _)| s) == Some('Z')).then_some(())
    });
    let pid_file = pg.cluster.pid_file();
    let text = std::fs::read_to_string(&pid_file).expect("postmaster.pid");
    let rest = text.split_once('\n').map(|(_, r)| r).unwrap_or("");
    let killed = pg.kill9();
    std::fs::write(&pid_file, format!("{}\n{rest}", zombie.id())).expect("pid file");
    let t0 = Instant::now();
    d.wait_event("escalation", Some("orders"), LONG);
    wait_for(LONG, "one escalation", || {
        (rx.hook_events("escalation").len() == 1).then_some(())
    });
    let esc = t0.elapsed();
    let attempts = lines(&counter);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(lines(&counter), attempts, "no attempt after the escalation");
    assert!(
        (2..=10).contains(&attempts),
        "bounded retries: {attempts} attempts in {esc:?}"
    );
    assert_eq!(rx.hook_events("escalation").len(), 1);
    assert!(!runs(killed));
    let _ = zombie.wait();
}

#[test]
fn an_escalated_target_started_by_hand_is_reported_recovered_within_seconds() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            // Healthy cadence 30 s: only the watch after the escalation can be quick.
            interval: "30s",
            max_restarts: 1,
            heal_argv: Some(vec!["false".into()]),
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    let fault = Instant::now();
    pg.kill9();
    wait_for(LONG, "the escalation", || {
        (rx.hook_events("escalation").len() == 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    // A person starts it (once the killed server's pid is free).
    wait_for(LONG, "started by hand", || pg.cluster.start().ok());
    let started = Instant::now();
    let recovery = wait_for(LONG, "the recovery notice", || {
        rx.hook_events("recovery").pop()
    });
    let noticed = recovery.at.duration_since(started);
    assert!(
        noticed < Duration::from_millis(2500),
        "recovery noticed {noticed:?} after the manual start"
    );
    let down = recovery.body["downtime_seconds"]
        .as_f64()
        .expect("downtime_seconds");
    let real = recovery.at.duration_since(fault).as_secs_f64();
    assert!(
        (down - real).abs() < 1.5,
        "downtime {down:.1} s reported, {real:.1} s real"
    );
    assert_eq!(rx.hook_events("escalation").len(), 1);
    assert_eq!(d.count("heal_issued", Some("orders")), 1);
}

#[test]
fn a_container_killed_at_every_start_is_started_at_most_max_restarts_times_then_escalated_once() {
    use std::io::BufRead;
    use support::docker::{docker, PgContainer};
    let c = PgContainer::start("budget", None);
    let rx = Receiver::start();
    let ws = Workspace::new();
    let text = format!(
        "archive:\n{}notify:\n{}targets:\n  - name: boxed\n    dsn: \"{}\"\n    probe: {{ interval: 1s, timeout: 1s, failure_threshold: 3 }}\n    restart_budget: {{ max_restarts: 3, window: 1h, backoff: 1s }}\n    recovery_timeout: 120s\n    heal:\n      docker: {{ container: {}, stop_timeout: 1s }}\n",
        ws.local_archive(),
        notify_all(&rx),
        c.dsn(),
        c.name
    );
    std::fs::write(ws.config(), text).expect("registry");
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("boxed"), LONG);
    // Outside the daemon: every `start` the Engine reports for the container, counted, and
    // answered at once with a kill, so the server never gets to answer.
    let mut follower = std::process::Command::new("docker")
        .args([
            "events",
            "--filter",
            &format!("container={}", c.name),
            "--filter",
            "event=start",
            "--format",
            "{{.Action}}",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("docker events");
    let out = follower.stdout.take().expect("stdout");
    let starts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counted, name) = (starts.clone(), c.name.clone());
    std::thread::spawn(move || {
        for _ in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = std::process::Command::new("docker")
                .args(["kill", &name])
                .output();
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    docker(&["kill", &c.name]);
    d.wait_event("escalation", Some("boxed"), Duration::from_secs(120));
    wait_for(LONG, "the escalation delivered", || {
        (rx.hook_events("escalation").len() == 1).then_some(())
    });
    // Nothing more happens after it.
    std::thread::sleep(Duration::from_secs(8));
    let _ = follower.kill();
    let _ = follower.wait();
    let n = starts.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=3).contains(&n),
        "{n} Engine starts for one incident with max_restarts 3"
    );
    let esc = rx.hook_events("escalation");
    assert_eq!(esc.len(), 1, "one escalation");
    assert_eq!(
        esc[0].body["reason"], "restart_budget_exhausted",
        "{}",
        esc[0].body
    );
}

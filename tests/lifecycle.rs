//! The daemon's life: SIGHUP reloads, sidecar (environment-only) mode, and the demo.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn sighup_applies_added_removed_and_changed_targets_and_keeps_unchanged_ones() {
    let p1 = Pg::start();
    let p2 = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[
            TargetSpec::new("keep", &p1),
            TargetSpec::new("change", &p1),
            TargetSpec::new("drop", &p2),
        ],
    );
    let d = Daemon::run(&ws, &[]);
    for t in ["keep", "change", "drop"] {
        d.wait_event("probe_ok", Some(t), LONG);
    }

    ws.write_registry(
        &notify_all(&rx),
        &[
            TargetSpec::new("keep", &p1),
            TargetSpec {
                interval: "300ms",
                ..TargetSpec::new("change", &p1)
            },
            TargetSpec::new("new", &p2),
        ],
    );
    d.signal(libc::SIGHUP);
    let applied = d.wait_event("reload_applied", None, LONG);
    assert_eq!(applied["added"], "new");
    assert_eq!(applied["removed"], "drop");
    assert_eq!(applied["changed"], "change");
    assert_eq!(applied["unchanged"], 1);

    d.wait_event("probe_ok", Some("new"), LONG);
    d.wait_event("monitor_stopped", Some("drop"), LONG);
    let started: Vec<_> = d.events("monitor_started", Some("change"));
    assert_eq!(started.len(), 2, "the changed target's monitor restarted");
    assert_eq!(started[1]["interval"], "300ms");
    assert_eq!(
        d.count("monitor_started", Some("keep")),
        1,
        "the unchanged target's monitor was left alone"
    );

    // The removed target is no longer probed.
    let before = d.count("probe_ok", Some("drop"));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(d.count("probe_ok", Some("drop")), before);

    // A broken registry is rejected and the running one goes on, healing as before.
    std::fs::write(ws.config(), "targets:\n  - name: [\n").unwrap();
    d.signal(libc::SIGHUP);
    let rejected = d.wait_event("reload_rejected", None, LONG);
    assert!(
        rejected["error"]
            .as_str()
            .unwrap()
            .contains("not valid YAML"),
        "{rejected}"
    );
    p2.kill9();
    d.wait_event("target_recovered", Some("new"), LONG);
    assert_eq!(d.count("heal_issued", Some("new")), 1);
    assert!(p2.answers());
}

#[test]
fn sidecar_variables_alone_configure_a_target_that_is_healed() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    let port = pg.cluster.port.to_string();
    let mut env = pg.sidecar_env();
    env.extend([
        ("TARGET_NAME", "sidecar-db".to_string()),
        ("HEALTH_CHECK_INTERVAL", "200ms".into()),
        ("HEALTH_CHECK_TIMEOUT", "1s".into()),
        ("FAILURE_THRESHOLD", "2".into()),
        ("HEALTH_CHECK_QUERY", "SELECT 1".into()),
        ("ARCHIVE_DIR", ws.incidents().display().to_string()),
        ("WEBHOOK_URL", format!("{}/hook", rx.base())),
        ("SLACK_WEBHOOK_URL", format!("{}/slack", rx.base())),
    ]);
    let d = Daemon::sidecar(&ws, &as_env(&env));
    let started = d.wait_event("monitor_started", Some("sidecar-db"), LONG);
    assert_eq!(started["threshold"], 2);
    assert_eq!(started["endpoint"], format!("127.0.0.1:{port}/postgres"));
    d.wait_event("probe_ok", Some("sidecar-db"), LONG);

    pg.kill9();
    d.wait_event("target_recovered", Some("sidecar-db"), LONG);
    wait_for(LONG, "failure and recovery on the webhook", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    assert_eq!(rx.hook_events("failure").len(), 1);
    assert_eq!(ws.bundles().len(), 1);
    rx.assert_all_well_formed();
    assert_secret_absent(pg.password(), &d, Some(&rx), &ws);
}

#[test]
fn the_demo_heals_a_crashed_throwaway_cluster_and_cleans_up() {
    let ws = Workspace::new();
    let mut cmd = Command::new(bin());
    cmd.args(["demo", "--incidents"])
        .arg(ws.incidents())
        .current_dir(ws.path());
    let mut d = Daemon::spawn(cmd, &[]);
    let pid: i32 = wait_for(LONG, "the demo's instructions", || {
        let out = d.stdout_text();
        let at = out.find("kill -9 ")?;
        out[at + 8..].split_whitespace().next()?.parse().ok()
    });
    let out = d.stdout_text();
    let data_dir = out
        .split("data in ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("data dir printed")
        .to_string();
    d.wait_event("probe_ok", Some("demo"), LONG);
    // SAFETY: the pid the demo printed is its own cluster's postmaster.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    d.wait_event("target_recovered", Some("demo"), LONG);
    wait_for(LONG, "the console recovery notice", || {
        d.stdout_text()
            .to_lowercase()
            .contains("recover")
            .then_some(())
    });
    assert_eq!(ws.bundles().len(), 1, "the demo archived the crash");
    let pid_file = std::path::Path::new(&data_dir).join("postmaster.pid");
    let announced = |after: i32| {
        wait_for(LONG, "the new postmaster's pid printed", || {
            let out = d.stdout_text();
            let new: i32 = out
                .rsplit("new postmaster, pid ")
                .next()?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            let real: i32 = std::fs::read_to_string(&pid_file)
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse()
                .ok()?;
            (new != after && new == real).then_some(new)
        })
    };
    let second = announced(pid);

    // The "stop it hard" command, run as printed: it returns at once, and succeeds.
    let stop = out
        .lines()
        .find_map(|l| l.split_once("Or stop it hard:"))
        .map(|(_, c)| c.trim().to_string())
        .expect("a stop command printed");
    let argv: Vec<&str> = stop.split_whitespace().collect();
    let started = std::time::Instant::now();
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the stop command");
    let status = wait_for(
        Duration::from_secs(30),
        "the stop command to return",
        || child.try_wait().ok().flatten(),
    );
    assert!(status.success(), "`{stop}` failed");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "`{stop}` returned after {:?}",
        started.elapsed()
    );
    d.wait_events("target_recovered", Some("demo"), 2, LONG);
    announced(second);

    d.signal(libc::SIGINT);
    let st = d.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", d.log_text());
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "the throwaway cluster was removed"
    );
    assert_eq!(ws.bundles().len(), 2, "incidents are kept");
}

#[test]
fn the_demo_says_clearly_when_postgresql_is_missing() {
    let ws = Workspace::new();
    let (code, out, err) = run_cli(
        &["demo", "--incidents", "x"],
        ws.path(),
        &[
            ("PATH", "/nonexistent"),
            ("SENTINEL_PG_BIN_GLOB", "/nonexistent/*/bin"),
        ],
    );
    assert_eq!(code, 69, "{out}{err}");
    assert!(err.contains("apt-get install postgresql"), "{err}");
    assert!(!ws.path().join("x").exists(), "nothing was created");
}

#[test]
fn the_readmes_first_command_runs_as_written_in_a_fresh_directory() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a first sh block");
    let command = block.lines().next().expect("a first command");
    // `cargo build --release && ./target/release/sentinel-remedy ARGS`: the binary under test
    // stands in for the release build.
    let args: Vec<&str> = command
        .split("./target/release/sentinel-remedy")
        .nth(1)
        .unwrap_or_else(|| panic!("runs the release binary: {command}"))
        .split_whitespace()
        .collect();
    let ws = Workspace::new();
    let mut cmd = Command::new(bin());
    cmd.args(&args).current_dir(ws.path());
    let mut d = Daemon::spawn(cmd, &[]);
    wait_for(LONG, "the first command to be up and watching", || {
        d.records()
            .iter()
            .any(|r| r["event"] == "probe_ok")
            .then_some(())
    });
    d.signal(libc::SIGINT);
    let st = d.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "`{command}`: {}", d.log_text());
}

//! Container targets on the real Docker Engine: PostgreSQL containers killed, stopped and
//! paused for real, restarted through the Engine API, their evidence copied out of the
//! containers; a missing container and an unreachable Engine.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::docker::{docker, PgContainer};
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// One container target: restarted through the Engine, evidence copied out of it.
fn container_target(c: &PgContainer, name: &str) -> String {
    format!(
        r#"
  - name: {name}
    dsn: "{dsn}"
    probe: {{ interval: 1s, timeout: 1s, failure_threshold: 5 }}
    restart_budget: {{ backoff: 0s }}
    recovery_timeout: 60s
    heal:
      docker: {{ container: {container}, stop_timeout: 2s }}
    forensics:
      docker:
        paths: [/var/lib/postgresql/data/log, /var/lib/postgresql/data/pg_hba.conf, /var/lib/postgresql/data/postgresql.conf]
        log_tail: 200
"#,
        dsn = c.dsn(),
        container = c.name
    )
}

fn write_registry(ws: &Workspace, extra: &str, notify: &str, targets: &str) {
    let text = format!(
        "{extra}archive:\n{}notify:\n{notify}\ntargets:{targets}",
        ws.local_archive()
    );
    std::fs::write(ws.config(), text).expect("write registry");
}

fn manifest(bundle: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).expect("manifest.json"))
        .expect("manifest JSON")
}

fn bundles_of(ws: &Workspace, target: &str) -> Vec<std::path::PathBuf> {
    ws.bundles()
        .into_iter()
        .filter(|b| b.to_string_lossy().ends_with(&format!("-{target}")))
        .collect()
}

/// Waits until `target` has recovered from its `n`-th incident.
fn wait_recovered(d: &Daemon, target: &str, n: usize) {
    d.wait_events("target_recovered", Some(target), n, LONG);
}

#[test]
fn a_fleet_of_three_containers_is_healed_one_fault_at_a_time_and_only_where_it_failed() {
    let (a, b, c) = std::thread::scope(|s| {
        let a = s.spawn(|| PgContainer::start("kill", None));
        let b = s.spawn(|| PgContainer::start("stop", None));
        let c = s.spawn(|| PgContainer::start("pause", None));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    let rx = Receiver::start();
    let ws = Workspace::new();
    let targets = [
        container_target(&a, "pg-kill"),
        container_target(&b, "pg-stop"),
        container_target(&c, "pg-pause"),
    ]
    .concat();
    write_registry(&ws, "", &notify_all(&rx), &targets);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("docker_ready", None, LONG);
    for t in ["pg-kill", "pg-stop", "pg-pause"] {
        d.wait_event("monitor_started", Some(t), LONG);
    }

    // Kill: SIGKILL to the container's main process, as the OOM killer would.
    let marker_a = a.log_marker();
    docker(&["kill", &a.name]);
    wait_recovered(&d, "pg-kill", 1);
    // Stop: a clean shutdown someone issued by hand.
    let marker_b = b.log_marker();
    docker(&["stop", "-t", "5", &b.name]);
    wait_recovered(&d, "pg-stop", 1);
    // Pause: the container is frozen, a hang. Only a probe timeout shows it.
    let marker_c = c.log_marker();
    docker(&["pause", &c.name]);
    wait_recovered(&d, "pg-pause", 1);

    assert!(
        a.answers() && b.answers() && c.answers(),
        "all three serve again"
    );
    wait_for(LONG, "every notice delivered", || {
        (rx.hook_events("recovery").len() == 3
            && rx.accepted("/slack").len() == 6
            && rx
                .hits()
                .iter()
                .filter(|h| h.path.starts_with("/discord/messages/") && h.status == 200)
                .count()
                == 3)
            .then_some(())
    });
    assert_eq!(c.inspect("{{.State.Paused}}"), "false");

    let expect = [
        (
            "pg-kill",
            &a,
            marker_a,
            "exited (code 137)",
            "process_exited",
        ),
        ("pg-stop", &b, marker_b, "exited (code 0)", "process_exited"),
        ("pg-pause", &c, marker_c, "was paused", "timeout"),
    ];
    for (target, container, marker, said, class) in &expect {
        // Detected through the Engine's events: one confirming probe, not the threshold of 5.
        let declared = d.events("incident_declared", Some(target));
        assert_eq!(declared.len(), 1, "{target}: one incident: {declared:?}");
        assert_eq!(declared[0]["hard"], true, "{target}: hard failure");
        // (A scheduled probe may fail just before the event arrives: then the second.)
        assert!(
            declared[0]["failures"].as_u64().unwrap() <= 2,
            "{target}: declared on the probe confirming the event, not after the threshold of 5: {}",
            declared[0]
        );
        assert_eq!(declared[0]["class"], *class, "{target}");
        // Restarted exactly once, through the Engine.
        assert_eq!(
            d.count("heal_issued", Some(target)),
            1,
            "{target}: one restart"
        );
        let attempts = d.events("heal_attempt", Some(target));
        assert_eq!(
            attempts.len(),
            1,
            "{target}: one heal attempt: {attempts:?}"
        );
        let verdict = attempts[0]["verdict"].as_str().unwrap();
        assert!(
            verdict.contains(&format!("container {}", container.name))
                && (verdict.ends_with("accepting connections")
                    || verdict.ends_with("starting up (57P03)")),
            "{target}: {verdict}"
        );
        // Archived from inside its own container: the server log with this container's marker.
        let bundles = bundles_of(&ws, target);
        assert_eq!(bundles.len(), 1, "{target}: one bundle");
        let m = manifest(&bundles[0]);
        let log = std::fs::read_to_string(bundles[0].join("postgresql.log"))
            .expect("postgresql.log in the bundle");
        assert!(
            log.contains(marker.as_str()),
            "{target}: the bundle's postgresql.log has the marker"
        );
        for f in ["pg_hba.conf", "postgresql.conf", "container.log"] {
            assert!(bundles[0].join(f).is_file(), "{target}: {f} in the bundle");
        }
        let sources: Vec<&str> = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["source"].as_str())
            .collect();
        assert!(
            sources.contains(
                &format!(
                    "{}:/var/lib/postgresql/data/log/postgresql.log",
                    container.name
                )
                .as_str()
            ),
            "{target}: sources {sources:?}"
        );
        assert!(
            m["missing"].as_array().is_none_or(|v| v.is_empty()),
            "{target}: nothing missing: {m}"
        );
        assert!(
            m["failure"]["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(said),
            "{target}: failure detail says what Docker saw: {}",
            m["failure"]
        );
        // Alerted and recovered once: the JSON webhook's events, a Slack message for each,
        // one Discord message (edited once recovered).
        let of_target = |kind: &str| {
            rx.hook_events(kind)
                .iter()
                .filter(|h| h.body["target"] == *target)
                .count()
        };
        assert_eq!(
            (of_target("failure"), of_target("recovery")),
            (1, 1),
            "{target}"
        );
        let slack = rx
            .accepted("/slack")
            .into_iter()
            .filter(|h| h.raw.contains(target))
            .count();
        assert_eq!(slack, 2, "{target}: Slack alert and recovery");
        let discord = rx
            .accepted("/discord")
            .into_iter()
            .filter(|h| h.raw.contains(target))
            .count();
        assert_eq!(discord, 1, "{target}: one Discord message");
    }
    rx.assert_all_well_formed();
    for c in [&a, &b, &c] {
        assert_secret_absent(&c.password, &d, Some(&rx), &ws);
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[test]
// One target today, written as a loop over the targets so that more can be listed.
#[allow(clippy::single_element_loop)]
fn a_missing_container_is_its_own_incident_alerted_once_and_never_restarted_in_a_loop() {
    let rx = Receiver::start();
    let ws = Workspace::new();
    let ghost = format!("sr-test-never-created-{:x}", rand::random::<u32>());
    let ghost_target = format!(
        r#"
  - name: ghost
    dsn: "postgres://postgres:secret-ghost-pw@127.0.0.1:{port}/postgres"
    probe: {{ interval: 300ms, timeout: 1s, failure_threshold: 2 }}
    restart_budget: {{ backoff: 0s }}
    heal:
      docker: {{ container: {ghost} }}
    forensics:
      docker: {{ paths: [/var/lib/postgresql/data/log] }}
"#,
        port = closed_port()
    );
    write_registry(&ws, "", &notify_all(&rx), &ghost_target);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("docker_ready", None, LONG);

    for target in ["ghost"] {
        let refused = d.wait_event("heal_refused", Some(target), LONG);
        assert_eq!(refused["kind"], "container_missing", "{target}: {refused}");
        assert!(
            refused["error"]
                .as_str()
                .unwrap()
                .contains("does not exist"),
            "{target}: {refused}"
        );
        d.wait_event("escalation", Some(target), LONG);
    }
    wait_for(LONG, "the escalation delivered", || {
        (rx.hook_events("escalation").len() == 1).then_some(())
    });
    // Time for a crash loop to show, if there were one.
    std::thread::sleep(Duration::from_secs(3));
    for target in ["ghost"] {
        assert_eq!(
            d.count("incident_declared", Some(target)),
            1,
            "{target}: one incident"
        );
        assert_eq!(
            d.count("heal_attempt", Some(target)),
            1,
            "{target}: no retries: {:#?}",
            d.events("heal_attempt", Some(target))
        );
        assert_eq!(
            d.count("escalation", Some(target)),
            1,
            "{target}: one escalation"
        );
        let esc: Vec<_> = rx
            .hook_events("escalation")
            .into_iter()
            .filter(|h| h.body["target"] == target)
            .collect();
        assert_eq!(esc.len(), 1, "{target}: one escalation delivered");
        let body = &esc[0].body;
        assert_eq!(body["reason"], "heal_refused", "{target}: {body}");
        assert_eq!(
            body["failure"]["class"], "container_missing",
            "{target}: {body}"
        );
        assert!(
            body["summary"].as_str().unwrap().contains("does not exist"),
            "{target}: the alert says what is wrong: {body}"
        );
        // The bundle says the container could not be read, instead of failing the archive.
        let bundles = bundles_of(&ws, target);
        assert_eq!(bundles.len(), 1, "{target}: archived anyway");
        let m = manifest(&bundles[0]);
        assert!(
            m["missing"].to_string().contains("does not exist"),
            "{target}: manifest names the missing container: {m}"
        );
    }
    rx.assert_all_well_formed();
    assert_secret_absent("secret-ghost-pw", &d, Some(&rx), &ws);
}

#[test]
fn a_container_removed_with_rm_f_is_missing_one_alert_with_the_fix_and_no_restart() {
    let removed = PgContainer::start("removed", None);
    let rx = Receiver::start();
    let ws = Workspace::new();
    write_registry(
        &ws,
        "",
        &notify_all(&rx),
        &container_target(&removed, "removed"),
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("docker_ready", None, LONG);
    d.wait_event("probe_ok", Some("removed"), LONG);
    let since = docker(&["system", "info", "--format", "{{.SystemTime}}"]);
    // `docker rm -f` kills it first: the Engine reports `die` before `destroy`.
    support::docker::remove(&removed.name);
    wait_for(LONG, "the failure alert", || {
        (rx.hook_events("failure").len() == 1).then_some(())
    });
    // Time for a restart or an escalation to show, if there were one.
    std::thread::sleep(Duration::from_secs(5));
    let until = docker(&["system", "info", "--format", "{{.SystemTime}}"]);
    let engine = docker(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        &format!("container={}", removed.name),
        "--format",
        "{{.Action}}",
    ]);
    let actions: Vec<&str> = engine.lines().collect();
    assert!(
        actions.contains(&"destroy"),
        "the Engine saw the removal: {actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| *a == "start" || *a == "restart" || *a == "create"),
        "no restart issued: {actions:?}"
    );
    let failures = rx.hook_events("failure");
    assert_eq!(failures.len(), 1, "one alert");
    let body = &failures[0].body;
    assert_eq!(body["failure"]["class"], "container_missing", "{body}");
    let summary = body["summary"].as_str().unwrap();
    assert!(
        summary.contains("does not exist") && summary.contains("docker compose up"),
        "says so, with the fix: {summary}"
    );
    assert!(
        !summary.contains("restart issued"),
        "no restart announced: {summary}"
    );
    assert!(rx.hook_events("escalation").is_empty(), "no escalation");
    assert_eq!(
        rx.accepted("/slack").len(),
        1,
        "one message on each chat channel"
    );
    rx.assert_all_well_formed();
}

#[test]
fn an_unreachable_engine_is_reported_clearly_and_other_targets_keep_healing() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    let api_port = closed_port();
    let socket = ws.path().join("no-such-docker.sock");
    let local = TargetSpec {
        interval: "300ms",
        ..TargetSpec::new("local", &pg)
    }
    .yaml();
    let in_container = format!(
        r#"
  - name: boxed
    dsn: "postgres://postgres:pw@127.0.0.1:{}/postgres"
    probe: {{ interval: 300ms, timeout: 1s, failure_threshold: 2 }}
    recovery_timeout: 3s
    heal:
      docker: {{ container: some-container }}
"#,
        closed_port()
    );
    write_registry(
        &ws,
        &format!(
            "docker:\n  host: unix://{}\nserver:\n  listen: 127.0.0.1:{api_port}\n",
            socket.display()
        ),
        &notify_all(&rx),
        &[local, in_container].concat(),
    );
    let d = Daemon::run(&ws, &[]);
    // Said at start-up, with the fix.
    let down = d.wait_event("docker_unavailable", None, LONG);
    assert_eq!(down["level"], "ERRO");
    assert_eq!(down["kind"], "unreachable");
    let err = down["error"].as_str().unwrap();
    assert!(
        err.contains(&socket.display().to_string()) && err.contains("DOCKER_HOST"),
        "names the socket and the fix: {err}"
    );
    // And in /healthz.
    d.wait_event("api_listening", None, LONG);
    let resp = support::http::get(&format!("127.0.0.1:{api_port}"), "/healthz");
    assert_eq!(resp.status, 503, "{}", resp.body);
    let h = resp.json();
    assert_eq!(h["checks"]["docker"]["state"], "unreachable", "{h}");
    assert!(h.to_string().contains("Docker Engine unreachable"), "{h}");

    // The container target is alerted; its restart is retried (the Engine may come back) and
    // escalated at recovery_timeout, each attempt saying why it failed ...
    d.wait_event("escalation", Some("boxed"), LONG);
    let attempts = d.events("heal_attempt", Some("boxed"));
    assert!(!attempts.is_empty());
    for a in &attempts {
        assert!(
            a["verdict"]
                .as_str()
                .unwrap()
                .contains("cannot reach the Docker Engine"),
            "{a}"
        );
    }
    // ... while the local target is still healed.
    d.wait_event("monitor_started", Some("local"), LONG);
    pg.kill9();
    d.wait_event("target_recovered", Some("local"), LONG);
    assert!(pg.answers());
    assert!(d.count("monitor_replaced", None) == 0, "no monitor died");
}

#[test]
fn a_container_with_a_restart_policy_is_left_to_that_policy_not_restarted_twice() {
    let c = PgContainer::start("policy", Some("always"));
    let rx = Receiver::start();
    let ws = Workspace::new();
    write_registry(
        &ws,
        "",
        &notify_all(&rx),
        &container_target(&c, "pg-policy"),
    );
    let d = Daemon::run(&ws, &[]);
    let found = d.wait_event("restart_policy_found", Some("pg-policy"), LONG);
    assert_eq!(found["policy"], "always");
    let before = c.started_at();
    // A crash (not `docker kill`, which Docker counts as a manual stop): SIGKILL the
    // container's main process from the host. The Engine's policy restarts it.
    let pid: i32 = c.inspect("{{.State.Pid}}").parse().expect("container pid");
    // SAFETY: a pid the Engine reported for our own test container.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    d.wait_event("target_recovered", Some("pg-policy"), LONG);
    let attempt = d.wait_event("heal_attempt", Some("pg-policy"), LONG);
    let verdict = attempt["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("restart policy") && verdict.contains("not restarting it")
            || verdict.contains("restarted by its own restart policy"),
        "the heal waited for the policy: {verdict}"
    );
    // Exactly one restart, the policy's: the Engine counted it, and the container has run
    // since then without another start.
    wait_for(LONG, "the server answers", || c.answers().then_some(()));
    assert_eq!(c.inspect("{{.RestartCount}}"), "1");
    let after = c.started_at();
    assert_ne!(before, after);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.started_at(), after, "restarted only once");
    assert_eq!(d.count("heal_attempt", Some("pg-policy")), 1);
    // The alert says the policy restarts it.
    let failure = wait_for(LONG, "the failure alert", || {
        rx.hook_events("failure").into_iter().next()
    });
    assert!(
        failure.body["summary"]
            .as_str()
            .unwrap()
            .contains("its restart policy (always) restarts the container"),
        "{}",
        failure.body
    );
}

#[test]
fn a_forbidden_socket_is_reported_with_the_group_to_add() {
    // The daemon runs as `nobody`, outside the socket's group (root:docker, 0660 here).
    let ws = Workspace::new();
    std::fs::set_permissions(
        ws.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let target = format!(
        r#"
  - name: boxed
    dsn: "postgres://postgres:pw@127.0.0.1:{}/postgres"
    heal:
      docker: {{ container: some-container }}
"#,
        closed_port()
    );
    write_registry(&ws, "", "  console: false\n", &target);
    let mut cmd = std::process::Command::new("runuser");
    cmd.args(["-u", "nobody", "--", bin()])
        .args(["--log-format", "json", "run", "--config"])
        .arg(ws.config())
        .arg("--state-dir")
        .arg(ws.state())
        .current_dir(ws.path());
    let d = Daemon::spawn(cmd, &[]);
    let down = d.wait_event("docker_unavailable", None, LONG);
    assert_eq!(down["kind"], "forbidden", "{down}");
    let err = down["error"].as_str().unwrap();
    assert!(
        err.contains("permission denied") && err.contains("group_add"),
        "says what is wrong and the fix: {err}"
    );
    d.wait_event("monitor_started", Some("boxed"), LONG);
}

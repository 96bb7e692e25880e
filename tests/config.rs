//! Bad input gets a clear error naming the file, the key path and the fix; `check-config` and
//! `run` both exit 64 and start nothing.

mod support;

use std::time::Duration;
use support::*;

const GOOD_TARGET: &str =
    "  - name: a\n    dsn: \"postgres://u:hunter2secret@127.0.0.1:5432/db\"\n";

/// (case, registry text, key path expected, words expected in the message)
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "unknown top-level key",
        "colour: blue\ntargets:\n{T}",
        "colour",
        "unknown key",
    ),
    (
        "unknown nested key",
        "targets:\n{T}    probe: { intervall: 5s }\n",
        "targets[0].probe.intervall",
        "unknown field `intervall`",
    ),
    (
        "duplicate names",
        "targets:\n{T}{T}",
        "targets[1].name",
        "duplicate target name 'a'",
    ),
    (
        "bad duration",
        "defaults:\n  probe: { interval: 5 parsecs }\ntargets:\n{T}",
        "defaults.probe.interval",
        "'5 parsecs' is not a duration",
    ),
    (
        "threshold of zero",
        "targets:\n{T}    probe: { failure_threshold: 0 }\n",
        "targets[0].probe.failure_threshold",
        "0 is not a usable threshold",
    ),
    (
        "malformed DSN",
        "targets:\n  - name: a\n    dsn: \"mysql://u:hunter2secret@h/db\"\n",
        "targets[0].dsn",
        "malformed DSN",
    ),
    (
        "DSN with a bad port",
        "targets:\n  - name: a\n    dsn: \"postgres://u:hunter2secret@h:99999/db\"\n",
        "targets[0].dsn",
        "malformed DSN",
    ),
    (
        "bad webhook URL",
        "notify:\n  slack: { webhook_url: \"hooks dot slack\" }\ntargets:\n{T}",
        "notify.slack.webhook_url",
        "not a URL",
    ),
    (
        "non-http webhook",
        "notify:\n  webhooks: [ { url: \"ftp://example.com/x\" } ]\ntargets:\n{T}",
        "notify.webhooks[0].url",
        "not an http(s) URL",
    ),
    (
        "empty heal command",
        "targets:\n{T}    heal: { command: [] }\n",
        "targets[0].heal.command",
        "the heal command is empty",
    ),
    (
        "missing variable",
        "notify:\n  discord: { webhook_url: \"${SENTINEL_TEST_UNSET_VAR}\" }\ntargets:\n{T}",
        "notify.discord.webhook_url",
        "SENTINEL_TEST_UNSET_VAR is not set",
    ),
    (
        "broken YAML",
        "targets:\n  - name: [\n",
        "(document)",
        "not valid YAML",
    ),
    ("no targets", "defaults: {}\n", "targets", "no targets"),
    (
        "bad bucket name",
        "archive:\n  s3: { bucket: My_Bucket }\ntargets:\n{T}",
        "archive.s3.bucket",
        "not a valid bucket name",
    ),
    (
        "bad sse",
        "archive:\n  s3: { bucket: b-1, sse: rot13 }\ntargets:\n{T}",
        "archive.s3.sse",
        "not a server-side encryption mode",
    ),
    (
        "part size too small",
        "archive:\n  s3: { bucket: b-1, part_size: 1MiB }\ntargets:\n{T}",
        "archive.s3.part_size",
        "outside S3's part limits",
    ),
    (
        "bad size",
        "archive:\n  max_file_size: lots\ntargets:\n{T}",
        "archive.max_file_size",
        "not a size",
    ),
    (
        "bad endpoint",
        "archive:\n  s3: { bucket: b-1, endpoint: \"minio:9000\" }\ntargets:\n{T}",
        "archive.s3.endpoint",
        "not an http(s) URL",
    ),
    (
        "unknown s3 key",
        "archive:\n  s3: { bucket: b-1, buckit: x }\ntargets:\n{T}",
        "archive.s3.buckit",
        "unknown field",
    ),
    (
        "bad listen address",
        "server: { listen: \"localhost\" }\ntargets:\n{T}",
        "server.listen",
        "not an address and port",
    ),
    (
        "short token",
        "server: { listen: \"127.0.0.1:9187\", token: \"abc\" }\ntargets:\n{T}",
        "server.token",
        "3 characters",
    ),
    (
        "unknown failure class in policy",
        "defaults:\n  policy: { hang: restart }\ntargets:\n{T}",
        "defaults.policy.hang",
        "unknown failure class",
    ),
    (
        "restart on 57P03",
        "targets:\n{T}    policy: { recovering: restart }\n",
        "targets[0].policy.recovering",
        "never restarted",
    ),
    (
        "restart on a refused authentication",
        "targets:\n{T}    policy: { insecure_auth: restart }\n",
        "targets[0].policy.insecure_auth",
        "never restarted",
    ),
    (
        "gss in require_auth",
        "targets:\n  - name: gss\n    dsn: \"host=127.0.0.1 require_auth=gss\"\n",
        "targets[0].dsn",
        "not supported by this build",
    ),
    (
        "bad policy action",
        "targets:\n{T}    policy: { timeout: reboot }\n",
        "targets[0].policy.timeout",
        "not an action",
    ),
    (
        "bad probe role",
        "targets:\n{T}    probe: { role: leader }\n",
        "targets[0].probe.role",
        "not a role",
    ),
    (
        "two heal actions",
        "targets:\n{T}    heal: { command: [pg_ctl, start], docker: { container: pg1 } }\n",
        "targets[0].heal",
        "exactly one of",
    ),
    (
        "bad container name",
        "targets:\n{T}    heal: { docker: { container: \"pg 1\" } }\n",
        "targets[0].heal.docker.container",
        "not a container",
    ),
    (
        "compose heal without a service",
        "targets:\n{T}    heal: { compose: { project: shop } }\n",
        "targets[0].heal.compose",
        "missing field `service`",
    ),
    (
        "relative path in a container",
        "targets:\n{T}    heal: { docker: { container: pg1 } }\n    forensics: { docker: { paths: [log] } }\n",
        "targets[0].forensics.docker.paths[0]",
        "not an absolute path",
    ),
    (
        "container forensics with nothing to read",
        "targets:\n{T}    forensics: { docker: { paths: [/var/log] } }\n",
        "targets[0].forensics.docker",
        "no container to read from",
    ),
    (
        "bad docker host",
        "docker: { host: \"/var/run/docker.sock\" }\ntargets:\n{T}",
        "docker.host",
        "not a Docker Engine address",
    ),
    (
        "heartbeat every 0 s",
        "heartbeat: { url: \"http://127.0.0.1:9/ping\", interval: 0 }\ntargets:\n{T}",
        "heartbeat.interval",
        "busy loop",
    ),
    (
        "target name longer than a file name",
        "targets:\n  - name: {LONG}\n    dsn: \"postgres://u:hunter2secret@127.0.0.1:5432/db\"\n",
        "targets[0].name",
        "240 characters",
    ),
    (
        "target name starting with a dot",
        "targets:\n  - name: ..\n    dsn: \"postgres://u:hunter2secret@127.0.0.1:5432/db\"\n",
        "targets[0].name",
        "start with a letter or digit",
    ),
    (
        "S3 prefix climbing out",
        "archive:\n  s3: { bucket: b-1, prefix: \"incidents/../other\" }\ntargets:\n{T}",
        "archive.s3.prefix",
        "'..' segment",
    ),
    (
        "absolute S3 prefix",
        "archive:\n  s3: { bucket: b-1, prefix: \"/incidents\" }\ntargets:\n{T}",
        "archive.s3.prefix",
        "starts with '/'",
    ),
    (
        "S3 prefix with odd characters",
        "archive:\n  s3: { bucket: b-1, prefix: \"inc idents\" }\ntargets:\n{T}",
        "archive.s3.prefix",
        "not allowed",
    ),
    (
        "recovery timeout past the clock",
        "targets:\n{T}    recovery_timeout: 99999999999d\n",
        "targets[0].recovery_timeout",
        "longer than a year",
    ),
    (
        "alias bomb below serde_yaml's repetition limit",
        "{BOMB}targets:\n{T}",
        "(document)",
        "more than 250000 nodes",
    ),
    (
        "zero budget window",
        "targets:\n{T}    restart_budget: { window: 0 }\n",
        "targets[0].restart_budget.window",
        "unlimited restarts",
    ),
    (
        "stop_timeout of zero",
        "targets:\n{T}    heal: { command: [pg_ctl, start], stop_timeout: 0s }\n",
        "targets[0].heal.stop_timeout",
        "out of range",
    ),
    (
        "stop_timeout beside a container heal",
        "targets:\n{T}    heal: { docker: { container: pg1 }, stop_timeout: 5s }\n",
        "targets[0].heal.stop_timeout",
        "applies to a heal `command` only",
    ),
    (
        "empty stop command",
        "targets:\n{T}    heal: { command: [pg_ctl, start], stop_command: [] }\n",
        "targets[0].heal.stop_command",
        "the stop command is empty",
    ),
    (
        "bad heal.env name",
        "targets:\n{T}    heal: { command: [pg_ctl, start], env: { 1BAD: x } }\n",
        "targets[0].heal.env.1BAD",
        "not an environment variable name",
    ),
];

#[test]
fn every_bad_config_is_reported_with_file_key_and_fix_and_exits_64() {
    let ws = Workspace::new();
    for (case, text, key, words) in CASES {
        let file = ws.path().join("bad.yaml");
        let text = text
            .replace("{T}", GOOD_TARGET)
            .replace("{LONG}", &"a".repeat(240))
            .replace("{BOMB}", &alias_bomb());
        std::fs::write(&file, text).unwrap();
        for cmd in ["check-config", "run"] {
            let (code, out, err) =
                run_cli(&[cmd, "--config", file.to_str().unwrap()], ws.path(), &[]);
            let all = format!("{out}{err}");
            assert_eq!(code, 64, "{case} ({cmd}): exit status; output:\n{all}");
            let line = all
                .lines()
                .find(|l| l.contains(&format!(": {key}: ")))
                .unwrap_or_else(|| panic!("{case} ({cmd}): no line names {key}:\n{all}"));
            assert!(
                line.contains(file.to_str().unwrap()),
                "{case}: names the file: {line}"
            );
            assert!(
                line.contains(words),
                "{case}: says what is wrong ({words}): {line}"
            );
            assert!(
                line.contains("(fix: "),
                "{case}: says how to fix it: {line}"
            );
            assert!(
                !all.contains("hunter2secret"),
                "{case}: the password was printed:\n{all}"
            );
            assert!(!all.contains("monitoring"), "{case}: run started something");
        }
    }
    assert!(
        !ws.incidents().exists() && !ws.state().exists(),
        "nothing was created"
    );
}

#[test]
fn all_problems_are_listed_at_once() {
    let ws = Workspace::new();
    let file = ws.path().join("bad.yaml");
    std::fs::write(&file, "defaults:\n  probe: { interval: soon, failure_threshold: 0 }\ntargets:\n  - name: a\n    dsn: \"nope://\"\n    heal: { command: [] }\n  - name: a\n    dsn: \"postgres://h/db\"\n").unwrap();
    let (code, _, err) = run_cli(
        &["check-config", "-c", file.to_str().unwrap()],
        ws.path(),
        &[],
    );
    assert_eq!(code, 64);
    for key in [
        "defaults.probe.interval",
        "defaults.probe.failure_threshold",
        "targets[0].dsn",
        "targets[0].heal.command",
        "targets[1].name",
    ] {
        assert!(
            err.contains(&format!(": {key}: ")),
            "{key} missing from:\n{err}"
        );
    }
    assert!(err.contains("5 problems"), "{err}");
}

#[test]
fn a_missing_registry_file_is_named() {
    let ws = Workspace::new();
    let (code, _, err) = run_cli(
        &["check-config", "-c", "does-not-exist.yaml"],
        ws.path(),
        &[],
    );
    assert_eq!(code, 64);
    assert!(
        err.contains("does-not-exist.yaml") && err.contains("--config"),
        "{err}"
    );
    // What a newcomer types first, in a fresh checkout: pointed at the example and the demo.
    let (code, _, err) = run_cli(&["run", "--config", "targets.yaml"], ws.path(), &[]);
    assert_eq!(code, 64);
    assert!(
        err.contains("targets.yaml.example") && err.contains("sentinel-remedy demo"),
        "{err}"
    );
    let (code, _, err) = run_cli(&["run"], ws.path(), &[]);
    assert_eq!(code, 64, "no registry and no DB_HOST");
    assert!(err.contains("--config") && err.contains("DB_HOST"), "{err}");
}

#[test]
fn a_good_registry_passes_and_variables_come_from_dotenv() {
    let ws = Workspace::new();
    std::fs::write(
        ws.path().join(".env"),
        "ORDERS_PW=from-dotenv\nSLACK_URL=http://127.0.0.1:9/slack\n",
    )
    .unwrap();
    let file = ws.path().join("targets.yaml");
    std::fs::write(&file, "notify:\n  slack: { webhook_url: \"${SLACK_URL}\" }\ntargets:\n  - name: orders\n    dsn: \"postgres://app:${ORDERS_PW}@127.0.0.1:5432/orders\"\n    probe: { interval: 250ms }\n").unwrap();
    let (code, out, err) = run_cli(
        &["check-config", "-c", file.to_str().unwrap()],
        ws.path(),
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("orders"), "lists the targets: {out}");
    assert!(
        !format!("{out}{err}").contains("from-dotenv"),
        "the password is not printed"
    );
}

#[test]
fn the_shipped_example_registry_is_valid() {
    let ws = Workspace::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/targets.yaml.example");
    let env = [
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T/B/x",
        ),
        (
            "DISCORD_WEBHOOK_URL",
            "https://discord.com/api/webhooks/1/x",
        ),
        ("OPS_HOOK_TOKEN", "t"),
        ("SENTINEL_API_TOKEN", "0123456789abcdef0123"),
        ("ORDERS_DB_PASSWORD", "p"),
        ("BILLING_DB_PASSWORD", "p"),
        ("LEDGER_DB_PASSWORD", "p"),
        ("INVENTORY_DB_PASSWORD", "p"),
    ];
    let (code, out, err) = run_cli(&["check-config", "-c", example], ws.path(), &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK, 4 targets"), "{out}");
}

#[test]
fn sidecar_variables_that_are_wrong_name_the_variable() {
    let ws = Workspace::new();
    let (code, _, err) = run_cli(
        &["check-config"],
        ws.path(),
        &[
            ("DB_HOST", "db"),
            ("DB_PASSWORD", "pw-secret-1"),
            ("FAILURE_THRESHOLD", "lots"),
            ("HEALTH_CHECK_INTERVAL", "often"),
        ],
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("FAILURE_THRESHOLD") && err.contains("HEALTH_CHECK_INTERVAL"),
        "{err}"
    );
    assert!(!err.contains("pw-secret-1"));
}

/// About 10 KB of YAML: one anchor of 3000 scalars and five levels of ten aliases each, below
/// serde_yaml's repetition limit, standing for 3 * 10^8 nodes.
fn alias_bomb() -> String {
    let mut s = format!("a0: &a0 [{}]\n", vec!["x"; 3000].join(","));
    for i in 1..=5 {
        let p = format!("*a{}", i - 1);
        s.push_str(&format!("a{i}: &a{i} [{}]\n", vec![p; 10].join(", ")));
    }
    s
}

/// Item 8: a registry someone else could write chooses the heal command the daemon runs (as
/// root): refused, naming the file, why and the fix, with exit 64 and nothing started.
#[test]
fn a_registry_others_can_write_or_own_is_refused() {
    use std::os::unix::fs::{chown, PermissionsExt};
    let ws = Workspace::new();
    let file = ws.path().join("targets.yaml");
    std::fs::write(&file, format!("targets:\n{GOOD_TARGET}")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = run_cli(
        &["check-config", "-c", file.to_str().unwrap()],
        ws.path(),
        &[],
    );
    assert_eq!(code, 0, "a 0644 file of ours is fine: {out}{err}");

    let f = file.to_str().unwrap();
    let nobody = 65534;
    let cases: [(&str, u32, Option<u32>, &str, &str); 3] = [
        (
            "world-writable",
            0o646,
            None,
            "writable by every user",
            "chmod go-w",
        ),
        (
            "group-writable",
            0o664,
            None,
            "writable by its group",
            "chmod go-w",
        ),
        (
            "owned by nobody",
            0o644,
            Some(nobody),
            "owned by uid 65534",
            "chown",
        ),
    ];
    for (case, mode, owner, why, fix) in cases {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        chown(&file, owner.or(Some(0)), None).unwrap();
        for cmd in ["check-config", "run"] {
            let (code, out, err) = run_cli(&[cmd, "--config", f], ws.path(), &[]);
            let all = format!("{out}{err}");
            assert_eq!(code, 64, "{case} ({cmd}): {all}");
            assert!(
                all.contains(f) && all.contains(why) && all.contains(fix),
                "{case} ({cmd}): {all}"
            );
            assert!(!all.contains("hunter2secret"), "{case}: {all}");
        }
    }
    assert!(!ws.state().exists(), "nothing was started");

    // Mounted read-only (as compose mounts the fleet's registry `:ro` into the container),
    // a file of another host user is accepted: nobody on the daemon's side can write it.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    chown(&file, Some(nobody), None).unwrap();
    let ro = ws.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mount = |args: &[&str]| {
        std::process::Command::new("mount")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let (src, dst) = (ws.path().to_str().unwrap(), ro.to_str().unwrap());
    if mount(&["--bind", src, dst]) {
        let remounted = mount(&["-o", "remount,bind,ro", dst]);
        let on_ro = ro.join("targets.yaml");
        let (code, out, err) = run_cli(
            &["check-config", "-c", on_ro.to_str().unwrap()],
            ws.path(),
            &[],
        );
        let _ = std::process::Command::new("umount").arg(dst).status();
        assert!(remounted, "remount read-only");
        assert_eq!(code, 0, "read-only mount: {out}{err}");
    } else {
        eprintln!("SKIPPED the read-only mount case: cannot bind-mount here (not root?)");
    }
}

/// Item 8, performed for real: `nobody` writes `.env` into a working directory anyone can
/// write, choosing a HEAL_COMMAND for the sidecar. The daemon (root) refuses to start, says
/// which file and how to fix it, and never runs the command.
#[test]
fn a_dotenv_written_by_nobody_is_refused_and_its_heal_command_never_runs() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let ws = Workspace::new();
    std::fs::set_permissions(ws.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let marker = ws.path().join("pwned");
    let dead_port = sentinel_remedy::pgcluster::free_port().unwrap();
    let script = format!(
        "umask 022; printf 'HEAL_COMMAND=touch {}\\nFAILURE_THRESHOLD=1\\nHEALTH_CHECK_INTERVAL=200ms\\nDB_PORT={dead_port}\\n' > .env",
        marker.display()
    );
    let st = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(ws.path())
        .uid(65534)
        .gid(65534)
        .status()
        .expect("sh as nobody");
    assert!(st.success());
    let mut d = Daemon::sidecar(
        &ws,
        &[("DB_HOST", "127.0.0.1"), ("DB_PASSWORD", "pw-secret-2")],
    );
    let status = d.wait_exit(Duration::from_secs(30));
    let err = d.log_text();
    assert_eq!(status.code(), Some(64), "{err}");
    let env_file = ws.path().join(".env");
    assert!(
        err.contains(env_file.to_str().unwrap())
            && err.contains("owned by uid 65534")
            && err.contains("chown"),
        "{err}"
    );
    assert!(!marker.exists(), "the heal command of nobody's .env ran");
    assert!(!err.contains("pw-secret-2"));

    // Root's own .env, but group-writable: refused too, with the chmod fix.
    std::os::unix::fs::chown(&env_file, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o664)).unwrap();
    let (code, _, err) = run_cli(&["check-config"], ws.path(), &[("DB_HOST", "127.0.0.1")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("chmod go-w") && err.contains(".env"), "{err}");
}

/// A reload never kills a running daemon: SIGHUP with a registry others can write, then with
/// an alias bomb in its place, is rejected; the daemon stays up and keeps probing its target.
#[test]
fn a_sighup_with_an_alias_bomb_is_rejected_and_probing_goes_on() {
    let pg = Pg::start();
    let ws = Workspace::new();
    let port = sentinel_remedy::pgcluster::free_port().unwrap();
    ws.write_registry("  console: false\n", &[TargetSpec::new("orders", &pg)]);
    let text = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(
        ws.config(),
        format!("server: {{ listen: \"127.0.0.1:{port}\" }}\n{text}"),
    )
    .unwrap();
    let mut d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, Duration::from_secs(60));
    d.wait_event("probe_ok", Some("orders"), Duration::from_secs(60));

    // A registry made writable by others since the start is refused on reload too.
    use std::os::unix::fs::PermissionsExt;
    let mode = |m| std::fs::set_permissions(ws.config(), std::fs::Permissions::from_mode(m));
    mode(0o666).unwrap();
    d.signal(libc::SIGHUP);
    let rejected = d.wait_event("reload_rejected", None, Duration::from_secs(30));
    assert!(rejected.to_string().contains("chmod go-w"), "{rejected}");
    mode(0o644).unwrap();

    std::fs::write(ws.config(), format!("{}{text}", alias_bomb())).unwrap();
    d.signal(libc::SIGHUP);
    let rejected = d.wait_events("reload_rejected", None, 2, Duration::from_secs(30));
    assert!(rejected[1].to_string().contains("nodes"), "{}", rejected[1]);
    let addr = format!("127.0.0.1:{port}");
    let count = || {
        let m = support::http::parse_metrics(&support::http::get(&addr, "/metrics").body);
        support::http::metric(
            &m,
            "sentinel_probe_duration_seconds_count",
            &[("target", "orders")],
        )
        .unwrap_or(0.0)
    };
    let before = count();
    wait_for(
        Duration::from_secs(20),
        "probes after the rejected reload",
        || (count() >= before + 5.0).then_some(()),
    );
    // Still the running daemon: it stops cleanly when asked.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

#[test]
fn discovery_needs_no_target_list_and_its_mistakes_name_key_or_variable() {
    let ws = Workspace::new();
    let file = ws.path().join("targets.yaml");
    std::fs::write(&file, "discovery:\n  docker: { namespace: acme.pg }\n").unwrap();
    let (code, out, err) = run_cli(
        &["check-config", "-c", file.to_str().unwrap()],
        ws.path(),
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK, 0 targets"), "{out}");

    std::fs::write(
        &file,
        "discovery:\n  docker: { mode: most, namespace: \"a b\" }\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(
        &["check-config", "-c", file.to_str().unwrap()],
        ws.path(),
        &[],
    );
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("discovery.docker.mode: 'most' is not a discovery mode"),
        "{err}"
    );
    assert!(err.contains("discovery.docker.namespace"), "{err}");

    // The sidecar: DISCOVER_DOCKER alone is a registry; a wrong value names the variable.
    let (code, out, err) = run_cli(&["check-config"], ws.path(), &[("DISCOVER_DOCKER", "true")]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = run_cli(
        &["check-config"],
        ws.path(),
        &[("DISCOVER_DOCKER", "sometimes")],
    );
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("DISCOVER_DOCKER"), "{err}");
    // The sidecar's default credential for discovered containers: the password's variable
    // is read at load, and a missing one is named by its variable.
    let sidecar = [
        ("DISCOVER_DOCKER", "true"),
        ("DISCOVER_USER", "postgres"),
        ("DISCOVER_PASSWORD_ENV", "DISC_CRED_PW"),
    ];
    let (code, _, err) = run_cli(&["check-config"], ws.path(), &sidecar);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("DISCOVER_PASSWORD_ENV: environment variable DISC_CRED_PW is not set"),
        "{err}"
    );
    let mut with_pw = sidecar.to_vec();
    with_pw.push(("DISC_CRED_PW", "x"));
    let (code, out, err) = run_cli(&["check-config"], ws.path(), &with_pw);
    assert_eq!(code, 0, "{out}{err}");
}

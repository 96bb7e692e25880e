//! Bad input gets a clear error naming the file, the key path and the fix; `check-config` and
//! `run` both exit 64 and start nothing.

mod support;

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
        "zero budget window",
        "targets:\n{T}    restart_budget: { window: 0 }\n",
        "targets[0].restart_budget.window",
        "unlimited restarts",
    ),
];

#[test]
fn every_bad_config_is_reported_with_file_key_and_fix_and_exits_64() {
    let ws = Workspace::new();
    for (case, text, key, words) in CASES {
        let file = ws.path().join("bad.yaml");
        std::fs::write(&file, text.replace("{T}", GOOD_TARGET)).unwrap();
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
}

//! The shipped compose stacks, driven the way a user drives them: scripts/quickstart.sh starts
//! the sidecar stack (or the fleet) from the local images, scripts/test_system.sh breaks the
//! databases for real and must see every step; then the bundles are read from the daemon's
//! own container.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use support::docker::{docker, postgres_image};

/// One stack under a unique project, network and port; torn down on drop.
struct Stack {
    project: String,
    network: String,
    env_file: tempfile::NamedTempFile,
    fleet: bool,
    password: String,
    /// Variables set in the scripts' environment (they win over the .env file, as in compose).
    overrides: Vec<(String, String)>,
    /// compose/discover.yml: the fleet found by labels, no registry.
    discover: bool,
}

impl Stack {
    fn new(fleet: bool) -> Self {
        let tag = format!(
            "{}{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xffffff
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let project = format!("srtest{tag}");
        let network = format!("sr-test-net-{tag}");
        let env_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            env_file.path(),
            format!(
                "DB_PASSWORD={password}\nPOSTGRES_IMAGE={}\nSENTINEL_IMAGE=sentinel-remedy:local\n\
                 HEALTH_CHECK_INTERVAL=2s\nHEALTH_CHECK_TIMEOUT=2s\nCOMPOSE_NETWORK={network}\nSENTINEL_PORT={port}\n",
                postgres_image()
            ),
        )
        .unwrap();
        Self {
            project,
            network,
            env_file,
            fleet,
            password,
            overrides: vec![],
            discover: false,
        }
    }

    /// The sidecar stack with the .env that quickstart.sh writes from .env.template, as
    /// shipped: only the project, network and port are set from outside (in the environment),
    /// so that stacks of parallel tests do not meet.
    fn generated() -> Self {
        let mut s = Self::new(false);
        // quickstart.sh writes the file only when it does not exist.
        std::fs::remove_file(s.env_file.path()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        s.overrides = vec![
            ("COMPOSE_NETWORK".into(), s.network.clone()),
            ("SENTINEL_PORT".into(), port.to_string()),
        ];
        s
    }

    /// Runs a script of ours against this stack.
    fn script(&self, name: &str, args: &[&str]) -> Output {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Command::new(root.join("scripts").join(name))
            .args(args)
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("ENV_FILE", self.env_file.path())
            // The image is built from the binary under test, not a second release build.
            .env("SENTINEL_BINARY", support::bin())
            .envs(self.overrides.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run script")
    }

    fn compose(&self, args: &[&str]) -> String {
        let file = if self.discover {
            "discover.yml"
        } else if self.fleet {
            "fleet.yml"
        } else {
            "docker-compose.yml"
        };
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("compose")
            .join(file);
        // `docker compose` (v2) where it exists, else `docker-compose` (v1), as the scripts do.
        let v2 = Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
        let mut cmd = if v2 {
            let mut c = Command::new("docker");
            c.arg("compose");
            c
        } else {
            Command::new("docker-compose")
        };
        let out = cmd
            .envs(self.overrides.iter().map(|(k, v)| (k, v)))
            .args(["-p", &self.project, "--env-file"])
            .arg(self.env_file.path())
            .arg("-f")
            .arg(path)
            .args(args)
            .output()
            .expect("docker compose");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn sentinel(&self) -> String {
        self.compose(&["ps", "-q", "sentinel"])
    }

    /// Files in the daemon's incident bundles, as `bundle/file` lines.
    fn bundle_files(&self) -> Vec<String> {
        let out = docker(&[
            "exec",
            &self.sentinel(),
            "sh",
            "-c",
            "cd /var/lib/sentinel/incidents && ls -1d */* 2>/dev/null || true",
        ]);
        out.lines().map(str::to_string).collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.compose(&["down", "-v", "--timeout", "2"]);
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_sidecar_stack_starts_and_survives_the_chaos_test_which_fails_when_a_step_is_missing() {
    let stack = Stack::new(false);
    let up = stack.script("quickstart.sh", &[]);
    assert!(up.status.success(), "quickstart failed:\n{}", text(&up));
    assert!(text(&up).contains("watching 1 database"), "{}", text(&up));
    // The image's HEALTHCHECK (`sentinel-remedy healthcheck` against /healthz) passes.
    support::wait_for(
        std::time::Duration::from_secs(90),
        "the daemon's container to be healthy",
        || {
            (docker(&[
                "inspect",
                "-f",
                "{{.State.Health.Status}}",
                &stack.sentinel(),
            ]) == "healthy")
                .then_some(())
        },
    );

    let chaos = stack.script("test_system.sh", &["--fault", "kill"]);
    let out = text(&chaos);
    assert!(chaos.status.success(), "chaos test failed:\n{out}");
    for step in [
        "detection",
        "archive",
        "alert",
        "restart",
        "recovery_notice",
    ] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(step) && l.contains(" s")),
            "timeline has {step}:\n{out}"
        );
    }
    // Archived from inside the postgres container, into the daemon's volume.
    let files = stack.bundle_files();
    for f in [
        "postgresql.log",
        "pg_hba.conf",
        "postgresql.conf",
        "container.log",
        "manifest.json",
    ] {
        assert!(
            files.iter().any(|l| l.ends_with(&format!("-postgres/{f}"))),
            "{f} in the bundle: {files:?}"
        );
    }
    let logs = Command::new("docker")
        .args(["logs", &stack.sentinel()])
        .output()
        .unwrap();
    assert!(
        !text(&logs).contains(&stack.password),
        "no password in the daemon's log"
    );

    // With the daemon stopped, nothing heals: the chaos test must say which steps are missing.
    docker(&["stop", &stack.sentinel()]);
    let broken = stack.script("test_system.sh", &["--timeout", "5"]);
    let out = text(&broken);
    assert!(!broken.status.success(), "must fail:\n{out}");
    assert!(
        out.contains("detection        MISSING") && out.contains("FAILED"),
        "names the missing steps:\n{out}"
    );
}

#[test]
fn the_fleet_stack_heals_a_killed_a_stopped_and_a_paused_database_each_once() {
    let stack = Stack::new(true);
    let up = stack.script("quickstart.sh", &["--fleet"]);
    assert!(
        up.status.success(),
        "quickstart --fleet failed:\n{}",
        text(&up)
    );
    assert!(text(&up).contains("watching 3 database"), "{}", text(&up));

    let chaos = stack.script("test_system.sh", &["--fleet"]);
    let out = text(&chaos);
    assert!(chaos.status.success(), "fleet chaos test failed:\n{out}");
    assert!(out.contains("no cross-talk"), "{out}");
    let files = stack.bundle_files();
    for t in ["pg1", "pg2", "pg3"] {
        let bundles: std::collections::BTreeSet<&str> = files
            .iter()
            .filter_map(|l| l.split_once('/').map(|(b, _)| b))
            .filter(|b| b.ends_with(&format!("-{t}")))
            .collect();
        assert_eq!(bundles.len(), 1, "{t}: one bundle: {files:?}");
        assert!(
            files
                .iter()
                .any(|l| l.ends_with(&format!("-{t}/postgresql.log"))),
            "{t}: its server log was copied out of its container: {files:?}"
        );
    }
}

#[test]
fn the_generated_env_works_as_shipped_and_back_to_back_chaos_runs_judge_their_own_incident() {
    let stack = Stack::generated();
    let up = stack.script("quickstart.sh", &[]);
    assert!(up.status.success(), "quickstart failed:\n{}", text(&up));
    let env = std::fs::read_to_string(stack.env_file.path()).expect("quickstart wrote the .env");
    assert!(
        env.lines().any(|l| l.starts_with("DB_PASSWORD="))
            && !env.contains("DB_PASSWORD=change-me"),
        "a random password"
    );
    // The template's defaults: every fault healed, archived and alerted on a channel.
    for fault in ["kill", "stop", "pause"] {
        let chaos = stack.script("test_system.sh", &["--fault", fault]);
        let out = text(&chaos);
        assert!(
            chaos.status.success(),
            "{fault} with the shipped .env:\n{out}"
        );
        assert!(
            !out.contains("+ -") && !out.contains("+-"),
            "{fault}: only this run's incident is judged (no step before the fault):\n{out}"
        );
    }
    let files = stack.bundle_files();
    let bundles: std::collections::BTreeSet<&str> = files
        .iter()
        .filter(|l| l.ends_with("/manifest.json"))
        .map(String::as_str)
        .collect();
    assert_eq!(bundles.len(), 3, "three bundles written: {files:?}");

    // Run again: the three restarts of the first run spent the template's budget (3 an
    // hour). The chaos test says so at once, with the way out, instead of waiting 120 s.
    let started = std::time::Instant::now();
    let again = stack.script("test_system.sh", &["--fault", "kill"]);
    let out = text(&again);
    assert!(!again.status.success(), "the budget is spent:\n{out}");
    assert!(
        out.contains("restart budget is spent")
            && out.contains("MAX_RESTARTS")
            && out.contains("down -v"),
        "names the cause and the way out:\n{out}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "fails fast, not after the 120 s timeout: {:?}",
        started.elapsed()
    );
    assert!(
        !out.contains("restart          +"),
        "the earlier run's restart is not taken for this one:\n{out}"
    );
}

#[test]
fn an_archive_directory_the_daemon_cannot_write_stops_quickstart_with_the_reason() {
    let stack = Stack::new(false);
    // The value the template used to ship: relative to the image's working directory, which
    // its user (10001) cannot write.
    let mut env = std::fs::read_to_string(stack.env_file.path()).unwrap();
    env.push_str("ARCHIVE_DIR=./incidents\nNOTIFY_CONSOLE=true\n");
    std::fs::write(stack.env_file.path(), env).unwrap();
    let up = stack.script("quickstart.sh", &[]);
    let out = text(&up);
    assert!(!up.status.success(), "must not report success:\n{out}");
    assert!(
        out.contains("unhealthy") && out.contains("ARCHIVE_DIR") && out.contains("incidents"),
        "names the archive directory and the fix:\n{out}"
    );
    let logs = Command::new("docker")
        .args(["logs", &stack.sentinel()])
        .output()
        .unwrap();
    assert!(
        text(&logs).contains("\"event\":\"archive_unwritable\""),
        "an ERROR at start-up:\n{}",
        text(&logs)
    );

    // Run anyway, the chaos test stops at the failed archive, naming it, instead of waiting.
    let started = std::time::Instant::now();
    let chaos = stack.script("test_system.sh", &["--fault", "kill"]);
    let out = text(&chaos);
    assert!(!chaos.status.success(), "{out}");
    assert!(
        out.contains("archive FAILED") && out.contains("ARCHIVE_DIR"),
        "names the cause and the fix:\n{out}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "at once: {:?}",
        started.elapsed()
    );
}

#[test]
fn the_chaos_test_fails_at_once_when_the_alert_reaches_no_channel() {
    let stack = Stack::new(false);
    // Console off and no webhook: the value the template used to ship.
    let mut env = std::fs::read_to_string(stack.env_file.path()).unwrap();
    env.push_str("NOTIFY_CONSOLE=false\n");
    std::fs::write(stack.env_file.path(), env).unwrap();
    let up = stack.script("quickstart.sh", &[]);
    assert!(up.status.success(), "quickstart failed:\n{}", text(&up));
    let started = std::time::Instant::now();
    let chaos = stack.script("test_system.sh", &["--fault", "kill"]);
    let out = text(&chaos);
    assert!(!chaos.status.success(), "{out}");
    assert!(
        out.contains("zero channels") && out.contains("NOTIFY_CONSOLE=true"),
        "names the cause and the fix:\n{out}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "at once, not after 120 s: {:?}",
        started.elapsed()
    );
}

#[test]
fn the_discovered_fleet_stack_has_no_registry_and_heals_each_database_once() {
    let mut stack = Stack::new(true);
    stack.discover = true;
    let up = stack.script("quickstart.sh", &["--discover"]);
    assert!(
        up.status.success(),
        "quickstart --discover failed:\n{}",
        text(&up)
    );
    assert!(text(&up).contains("watching 3 database"), "{}", text(&up));
    // No registry in the daemon's container: the three targets came from the labels.
    let sentinel = stack.sentinel();
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &sentinel,
    ]);
    assert!(!env.contains("SENTINEL_CONFIG"), "{env}");
    let status = docker(&["exec", &sentinel, "sentinel-remedy", "status"]);
    for t in ["pg1", "pg2", "pg3"] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(t) && l.contains("container ")),
            "{t} discovered: {status}"
        );
    }

    // The same chaos test as the listed fleet.
    let chaos = stack.script("test_system.sh", &["--fleet"]);
    let out = text(&chaos);
    assert!(chaos.status.success(), "fleet chaos test failed:\n{out}");
    assert!(out.contains("no cross-talk"), "{out}");
    let files = stack.bundle_files();
    for t in ["pg1", "pg2", "pg3"] {
        assert!(
            files
                .iter()
                .any(|l| l.ends_with(&format!("-{t}/postgresql.log"))),
            "{t}: its server log was copied out of its container: {files:?}"
        );
    }
}

/// The host port a stack publishes the daemon's API on (its override, else its .env).
fn port_of(stack: &Stack) -> String {
    if let Some((_, p)) = stack.overrides.iter().find(|(k, _)| k == "SENTINEL_PORT") {
        return p.clone();
    }
    let env = std::fs::read_to_string(stack.env_file.path()).unwrap();
    env.lines()
        .find_map(|l| l.strip_prefix("SENTINEL_PORT="))
        .unwrap()
        .to_string()
}

fn running(container: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", container]) == "true"
}

#[test]
fn quickstarts_one_after_another_share_the_port_and_down_removes_a_stack() {
    // The README lists `--discover` and the plain stack: a user runs one, then the other, on
    // the same port (9187 as shipped; one free port here).
    let mut first = Stack::new(true);
    first.discover = true;
    let up = first.script("quickstart.sh", &["--discover"]);
    assert!(up.status.success(), "quickstart --discover:\n{}", text(&up));
    let first_daemon = first.sentinel();
    let port = port_of(&first);

    let mut second = Stack::new(false);
    second.overrides = vec![("SENTINEL_PORT".into(), port.clone())];
    let up = second.script("quickstart.sh", &[]);
    let out = text(&up);
    assert!(up.status.success(), "the second quickstart:\n{out}");
    assert!(
        out.contains(&format!("stopping quickstart stack {}", first.project))
            && out.contains("scripts/quickstart.sh --discover"),
        "says which stack it stopped and how to bring it back:\n{out}"
    );
    assert!(
        !running(&first_daemon),
        "the first stack's daemon is stopped"
    );
    assert!(
        running(&second.sentinel()),
        "the second stack's daemon runs"
    );

    // The same quickstart again: its own stack holds the port, nothing is stopped.
    let again = second.script("quickstart.sh", &[]);
    let out = text(&again);
    assert!(again.status.success(), "quickstart twice in a row:\n{out}");
    assert!(!out.contains("stopping quickstart stack"), "{out}");

    // A container that is not one of ours holding the port: named, with the fix, nothing
    // started.
    let squatter = docker(&[
        "run",
        "-d",
        "--rm",
        "-p",
        &format!("127.0.0.1:{}:80", port_of(&Stack::new(false))),
        "--name",
        &format!("squat-{}", first.project),
        support::docker::postgres_image(),
        "sleep",
        "120",
    ]);
    let mut third = Stack::new(false);
    let squat_port = docker(&["port", &squatter, "80"]);
    let squat_port = squat_port.rsplit(':').next().unwrap().to_string();
    third.overrides = vec![("SENTINEL_PORT".into(), squat_port)];
    let refused = third.script("quickstart.sh", &[]);
    let out = text(&refused);
    let _ = Command::new("docker")
        .args(["rm", "-f", &squatter])
        .output();
    assert!(!refused.status.success(), "{out}");
    assert!(
        out.contains(&format!("published by container squat-{}", first.project))
            && out.contains("SENTINEL_PORT")
            && !out.contains("port is already allocated"),
        "names the holder and the fix:\n{out}"
    );
    assert!(third.compose(&["ps", "-q"]).is_empty(), "nothing started");

    // --down removes the stack's containers.
    let down = second.script("quickstart.sh", &["--down"]);
    assert!(down.status.success(), "--down:\n{}", text(&down));
    assert!(
        second.compose(&["ps", "-q"]).is_empty(),
        "no container left after --down"
    );
}

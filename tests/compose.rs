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
            discover: false,
        }
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

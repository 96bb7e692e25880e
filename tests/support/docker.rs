//! PostgreSQL in real containers on the real Docker Engine, from the local images that
//! scripts/build_images.sh builds (or reuses). Each container has a unique name and a
//! loopback port, and is removed with its volume on drop.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The postgres image the tests run (POSTGRES_IMAGE overrides, e.g. postgres:16).
pub fn postgres_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let image = std::env::var("POSTGRES_IMAGE")
            .unwrap_or_else(|_| "sentinel-remedy/postgres:15".into());
        let present = Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !present {
            // Builds or reuses; the script takes a lock, so parallel tests build once.
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let st = Command::new(root.join("scripts/build_images.sh"))
                .arg("postgres")
                .env("POSTGRES_IMAGE", &image)
                .status()
                .expect("run scripts/build_images.sh");
            assert!(st.success(), "scripts/build_images.sh postgres failed");
        }
        image
    })
}

/// Runs `docker args...`, returning stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker rm -f -v`, retried: fuse-overlayfs sometimes fails to remove a root filesystem
/// that a process was still leaving ("directory not empty") and succeeds a moment later.
pub fn remove(name: &str) {
    for _ in 0..10 {
        let out = Command::new("docker")
            .args(["rm", "-f", "-v", name])
            .output()
            .expect("run docker");
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || err.contains("No such container") {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("could not remove container {name}");
}

/// One postgres container, published on a free loopback port.
pub struct PgContainer {
    pub name: String,
    pub password: String,
    pub port: u16,
}

impl PgContainer {
    /// Starts a container (with a restart policy if given) and waits until it answers SQL.
    pub fn start(label: &str, restart_policy: Option<&str>) -> Self {
        Self::start_with(label, restart_policy, &[], &[])
    }

    /// [`PgContainer::start`] with more `docker run` options (`--memory=128m`) and more
    /// server settings (`-c shared_buffers=16MB`).
    pub fn start_with(
        label: &str,
        restart_policy: Option<&str>,
        run_options: &[&str],
        settings: &[&str],
    ) -> Self {
        let name = format!(
            "sr-test-{label}-{}-{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xffffff
        );
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let policy = format!("--restart={}", restart_policy.unwrap_or("no"));
        // A fixed host port: an ephemeral one (`-p 127.0.0.1::5432`) changes on every restart,
        // and the DSN would point at nothing.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let (env, publish) = (
            format!("POSTGRES_PASSWORD={password}"),
            format!("127.0.0.1:{port}:5432"),
        );
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            &policy,
            "--label",
            "org.sentinel-remedy.test=1",
            "-e",
            &env,
            "-p",
            &publish,
        ];
        args.extend_from_slice(run_options);
        args.extend([
            postgres_image(),
            "postgres",
            "-c",
            "logging_collector=on",
            "-c",
            "log_directory=log",
            "-c",
            "log_filename=postgresql.log",
        ]);
        for s in settings {
            args.extend(["-c", s]);
        }
        docker(&args);
        let c = Self {
            name,
            password,
            port,
        };
        super::wait_for(
            Duration::from_secs(60),
            "the container to answer SQL",
            || c.answers().then_some(()),
        );
        c
    }

    pub fn dsn(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres?connect_timeout=2",
            self.password, self.port
        )
    }

    /// Runs SQL through the published port with the host's psql.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-XAtq",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "2")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    pub fn answers(&self) -> bool {
        self.psql("SELECT 1").is_ok_and(|o| o == "1")
    }

    /// Writes a unique line into the server log (inside the container) through the server.
    pub fn log_marker(&self) -> String {
        let marker = format!("sentinel-marker-{:x}", rand::random::<u64>());
        self.psql(&format!("DO $$BEGIN RAISE LOG '{marker}'; END$$"))
            .expect("write log marker");
        marker
    }

    /// `docker inspect -f FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "-f", format, &self.name])
    }

    /// When the container's main process last started.
    pub fn started_at(&self) -> String {
        self.inspect("{{.State.StartedAt}}")
    }
}

impl Drop for PgContainer {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| remove(&self.name));
    }
}

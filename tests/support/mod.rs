//! Shared fixtures for the black-box tests: real PostgreSQL clusters on free ports, the real
//! daemon binary with JSON logs, and real HTTP receivers that check what Slack and Discord
//! would accept. Nothing here imitates a component the daemon integrates with.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod docker;
pub mod etcd;
pub mod ha;
pub mod hostile;
pub mod hostile_pg;
pub mod http;
pub mod receiver;
pub mod s3server;
pub mod tls;

use sentinel_remedy::pgcluster::Cluster;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use receiver::Receiver;

/// The daemon binary under test: `SENTINEL_TEST_BIN` when set (a copy taken right after the
/// build, when several checkouts share one target directory), else the one cargo built.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("SENTINEL_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_sentinel-remedy").to_string())
    })
}

/// When the daemon wrote a JSON log record (its `ts`).
pub fn ts(record: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(record["ts"].as_str().expect("record has a ts"))
        .expect("ts is RFC 3339")
        .with_timezone(&chrono::Utc)
}

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A throwaway cluster in a temp dir; stopped and removed on drop.
pub struct Pg {
    pub cluster: Cluster,
    _dir: tempfile::TempDir,
}

impl Pg {
    /// initdb + start, with a password unique to this cluster (tests grep for it).
    /// The free port is picked before the server binds it, so a test running beside this one
    /// can take it first: the fixture then starts a new cluster on another port (3 tries).
    pub fn start() -> Self {
        Self::start_prepared(&std::env::temp_dir(), |_| {})
    }

    /// [`Pg::start`] with the cluster's directory (data, log, socket) under `parent`, e.g. a
    /// small tmpfs.
    pub fn start_in(parent: &Path) -> Self {
        Self::start_prepared(parent, |_| {})
    }

    /// [`Pg::start`] under `parent`, with `prepare` run on the cluster's root before initdb
    /// (e.g. to mount a small filesystem on `root/data`).
    pub fn start_prepared(parent: &Path, prepare: impl Fn(&Path)) -> Self {
        let mut last = None;
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("sentinel-pg-")
                .tempdir_in(parent)
                .expect("temp dir");
            prepare(dir.path());
            let password = format!("pw-{:016x}", rand::random::<u64>());
            let cluster = Cluster::init(dir.path(), &password).expect("initdb");
            match cluster.start() {
                Ok(()) => return Self { cluster, _dir: dir },
                Err(e) => last = Some(e),
            }
        }
        panic!("pg_ctl start: {last:?}")
    }

    /// Starts of this server since its log began: PostgreSQL logs one "ready" line per start.
    pub fn starts(&self) -> usize {
        files_under(&self.cluster.root.join("log"))
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|t| {
                t.matches("database system is ready to accept connections")
                    .count()
            })
            .sum()
    }

    pub fn pid(&self) -> i32 {
        self.cluster
            .postmaster_pid()
            .expect("postmaster.pid readable")
    }

    /// SIGKILL the postmaster, as the OOM killer would.
    pub fn kill9(&self) -> i32 {
        let pid = self.pid();
        // SAFETY: kill with a pid we read from the cluster's own pid file.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        pid
    }

    pub fn psql(&self, sql: &str) -> String {
        self.cluster
            .psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// Whether the server answers SQL now.
    pub fn answers(&self) -> bool {
        self.cluster
            .psql("SELECT 1")
            .map(|o| o == "1")
            .unwrap_or(false)
    }

    /// Writes a unique line into the server log through the server itself.
    pub fn log_marker(&self) -> String {
        let marker = format!("sentinel-marker-{:x}", rand::random::<u64>());
        self.psql(&format!("DO $$BEGIN RAISE LOG '{marker}'; END$$"));
        marker
    }

    pub fn password(&self) -> &str {
        &self.cluster.password
    }

    /// Makes the server ask TCP logins for `method` (e.g. `password`, `md5`) instead of
    /// scram-sha-256, from now on.
    pub fn ask_tcp_logins_for(&self, method: &str) {
        let path = self.cluster.data.join("pg_hba.conf");
        let hba = std::fs::read_to_string(&path).expect("pg_hba.conf");
        let hba: String = hba
            .lines()
            .map(|l| match l.strip_suffix("scram-sha-256") {
                Some(head) if l.starts_with("host") => format!("{head}{method}\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        assert!(hba
            .lines()
            .any(|l| l.starts_with("host") && l.ends_with(method)));
        std::fs::write(&path, hba).expect("pg_hba.conf written");
        self.psql("SELECT pg_reload_conf()");
    }

    /// A psql session as `user` over the cluster's socket that sleeps, holding its connection
    /// until the child is killed.
    pub fn hold_connection(&self, user: &str) -> Child {
        let psql = sentinel_remedy::pgcluster::find_bin_dir()
            .expect("PostgreSQL binaries")
            .join("psql");
        let mut cmd = Command::new(&psql);
        cmd.args(["-X", "-q", "-h"])
            .arg(self.cluster.root.join("sock"))
            .args([
                "-p",
                &self.cluster.port.to_string(),
                "-U",
                user,
                "-d",
                "postgres",
                "-c",
                "SELECT pg_sleep(120)",
            ]);
        let errors = self
            .cluster
            .root
            .join(format!("holder-{}.err", rand::random::<u32>()));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(errors).expect("holder's stderr file"))
            .spawn()
            .expect("psql")
    }
}

impl Pg {
    /// Restarts the cluster as a standby with no primary: it stays in recovery for good. With
    /// `hot_standby` off it answers every connection with 57P03.
    pub fn restart_as_standby(&self, hot_standby: bool) {
        self.cluster.stop("fast").expect("stop");
        std::fs::write(self.cluster.data.join("standby.signal"), "").expect("standby.signal");
        if !hot_standby {
            let conf = self.cluster.data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
            text.push_str("hot_standby = off\n");
            std::fs::write(&conf, text).expect("postgresql.conf");
        }
        self.cluster.start().expect("standby starts");
    }

    /// The sidecar variables for this cluster: connection, heal command, pid watch, forensics.
    pub fn sidecar_env(&self) -> Vec<(&'static str, String)> {
        let c = &self.cluster;
        vec![
            ("DB_HOST", "127.0.0.1".into()),
            ("DB_PORT", c.port.to_string()),
            ("DB_NAME", "postgres".into()),
            ("DB_USER", "postgres".into()),
            ("DB_PASSWORD", self.password().into()),
            (
                "HEAL_COMMAND",
                serde_json::to_string(&c.start_argv()).expect("argv"),
            ),
            ("PG_PID_FILE", c.pid_file().display().to_string()),
            (
                "FORENSICS_FILES",
                format!("{},{}/pg_hba.conf", c.log_file.display(), c.data.display()),
            ),
        ]
    }
}

/// Borrows owned environment values for [`Daemon::run`] and friends.
pub fn as_env<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.cluster.stop_quietly();
    }
}

/// A tmpfs mounted for one test and unmounted (lazily, so a daemon still holding files does
/// not keep it) when dropped.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// None when no tmpfs can be mounted here (mounting needs CAP_SYS_ADMIN).
    pub fn mount(at: &std::path::Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// How one target of a test registry is written.
pub struct TargetSpec<'a> {
    pub name: &'a str,
    pub pg: &'a Pg,
    pub interval: &'a str,
    pub timeout: &'a str,
    pub threshold: u32,
    pub pid_watch: bool,
    pub query: &'a str,
    pub max_restarts: u32,
    pub recovery_timeout: &'a str,
    /// Write the heal command (false: alert only).
    pub heal: bool,
    /// Another heal command than the cluster's `pg_ctl start`.
    pub heal_argv: Option<Vec<String>>,
    /// Another DSN than the cluster's (a role, password or database of its own).
    pub dsn: Option<&'a str>,
    /// More `probe:` keys, e.g. `, role: primary`.
    pub probe_extra: &'a str,
    /// More `restart_budget:` keys, e.g. `, backoff: 5s`.
    pub budget_extra: &'a str,
}

impl<'a> TargetSpec<'a> {
    pub fn new(name: &'a str, pg: &'a Pg) -> Self {
        Self {
            name,
            pg,
            interval: "200ms",
            timeout: "1s",
            threshold: 3,
            pid_watch: true,
            query: "SELECT 1",
            max_restarts: 3,
            recovery_timeout: "60s",
            heal: true,
            heal_argv: None,
            dsn: None,
            probe_extra: "",
            budget_extra: "",
        }
    }

    pub fn yaml(&self) -> String {
        let c = &self.pg.cluster;
        let argv = serde_json::to_string(self.heal_argv.as_ref().unwrap_or(&c.start_argv()))
            .expect("argv");
        let heal = if self.heal {
            format!("\n    heal:\n      command: {argv}")
        } else {
            String::new()
        };
        let process = if self.pid_watch {
            format!(
                "\n    process: {{ pid_file: \"{}\" }}",
                c.pid_file().display()
            )
        } else {
            String::new()
        };
        format!(
            r#"
  - name: {name}
    dsn: "{dsn}"
    probe: {{ query: "{query}", interval: {interval}, timeout: {timeout}, failure_threshold: {threshold}{probe_extra} }}
    restart_budget: {{ max_restarts: {max}, window: 1h{budget_extra} }}
    recovery_timeout: {rt}{process}
    forensics:
      files: ["{log}", "{data}/pg_hba.conf", "{data}/postgresql.conf"]{heal}
"#,
            name = self.name,
            dsn = self.dsn.map(str::to_string).unwrap_or_else(|| c.dsn()),
            probe_extra = self.probe_extra,
            budget_extra = self.budget_extra,
            query = self.query,
            interval = self.interval,
            timeout = self.timeout,
            threshold = self.threshold,
            max = self.max_restarts,
            rt = self.recovery_timeout,
            log = c.root.join("log").join("*.log").display(),
            data = c.data.display(),
        )
    }
}

/// A working directory for one daemon: registry, incidents and state dir.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        // The daemon refuses registries and .env files others can write: whatever umask the
        // tests were started with, the files they write are not group-writable.
        // SAFETY: umask has no preconditions.
        unsafe { libc::umask(0o022) };
        Self {
            dir: tempfile::Builder::new()
                .prefix("sentinel-ws-")
                .tempdir()
                .expect("temp dir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn config(&self) -> PathBuf {
        self.path().join("targets.yaml")
    }
    pub fn incidents(&self) -> PathBuf {
        self.path().join("incidents")
    }
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// Writes the registry: local archive in this workspace, the given notify section and targets.
    pub fn write_registry(&self, notify: &str, targets: &[TargetSpec]) -> PathBuf {
        self.write_registry_with(&self.local_archive(), notify, targets)
    }

    /// `  local: { dir: <workspace>/incidents }` for an `archive:` section.
    pub fn local_archive(&self) -> String {
        format!("  local: {{ dir: \"{}\" }}\n", self.incidents().display())
    }

    /// Writes the registry with the given `archive:` lines (indented by two spaces).
    pub fn write_registry_with(
        &self,
        archive: &str,
        notify: &str,
        targets: &[TargetSpec],
    ) -> PathBuf {
        let body: String = targets.iter().map(TargetSpec::yaml).collect();
        let text = format!("archive:\n{archive}notify:\n{notify}\ntargets:{body}");
        std::fs::write(self.config(), text).expect("write registry");
        self.config()
    }

    /// The incident bundles written so far (directories under incidents/).
    pub fn bundles(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.incidents())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Adds `server:` to the registry just written; returns the listen address.
pub fn with_server(ws: &Workspace, token: Option<&str>) -> String {
    let addr = format!(
        "127.0.0.1:{}",
        sentinel_remedy::pgcluster::free_port().unwrap()
    );
    let token = token
        .map(|t| format!(", token: \"{t}\""))
        .unwrap_or_default();
    ws.prepend_registry(&format!("server: {{ listen: \"{addr}\"{token} }}\n"));
    addr
}

impl Workspace {
    /// Puts `lines` (whole top-level sections) before the registry just written.
    pub fn prepend_registry(&self, lines: &str) {
        let text = std::fs::read_to_string(self.config()).expect("registry");
        std::fs::write(self.config(), format!("{lines}{text}")).expect("registry");
    }
}

/// `notify:` lines pointing Slack, Discord and a generic webhook at one receiver.
pub fn notify_all(r: &Receiver) -> String {
    format!(
        "  slack: {{ webhook_url: \"{0}/slack\" }}\n  discord: {{ webhook_url: \"{0}/discord\" }}\n  webhooks: [ {{ url: \"{0}/hook\" }} ]\n  max_backoff: 1s\n",
        r.base()
    )
}

/// The daemon running as a child process, its JSON log collected line by line.
pub struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    raw: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Daemon {
    /// `sentinel-remedy run --config <ws config> --state-dir <ws state>`.
    pub fn run(ws: &Workspace, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args([
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "run",
            "--config",
        ])
        .arg(ws.config())
        .arg("--state-dir")
        .arg(ws.state());
        cmd.current_dir(ws.path());
        Self::spawn(cmd, env)
    }

    /// `sentinel-remedy run` in sidecar mode: no registry, only the environment given.
    pub fn sidecar(ws: &Workspace, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--state-dir"])
            .arg(ws.state())
            .current_dir(ws.path());
        Self::spawn(cmd, env)
    }

    /// Any command line, with JSON logs at debug level.
    pub fn spawn(mut cmd: Command, env: &[(&str, &str)]) -> Self {
        cmd.env("SENTINEL_LOG_FORMAT", "json")
            .env("SENTINEL_LOG_LEVEL", "debug")
            .env_remove("SENTINEL_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn daemon");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let (l, r) = (lines.clone(), raw.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                r.lock().unwrap().push_str(&line);
                r.lock().unwrap().push('\n');
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    l.lock().unwrap().push(v);
                }
            }
        });
        let out = child.stdout.take().expect("stdout");
        let o = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                o.lock().unwrap().push_str(&line);
                o.lock().unwrap().push('\n');
            }
        });
        Self {
            child,
            lines,
            raw,
            stdout,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every log record so far.
    pub fn records(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Everything written to standard error, JSON or not.
    pub fn log_text(&self) -> String {
        self.raw.lock().unwrap().clone()
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Records with this `event` (and this `target`, when given).
    pub fn events(&self, event: &str, target: Option<&str>) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["event"] == event && target.is_none_or(|t| r["target"] == t))
            .collect()
    }

    pub fn count(&self, event: &str, target: Option<&str>) -> usize {
        self.events(event, target).len()
    }

    /// Waits until `n` records of `event` exist; on timeout, panics showing the log.
    pub fn wait_events(
        &self,
        event: &str,
        target: Option<&str>,
        n: usize,
        limit: Duration,
    ) -> Vec<Value> {
        let end = Instant::now() + limit;
        loop {
            let found = self.events(event, target);
            if found.len() >= n {
                return found;
            }
            if Instant::now() > end {
                panic!(
                    "timed out after {limit:?} waiting for {n} x {event} ({target:?}); log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_event(&self, event: &str, target: Option<&str>, limit: Duration) -> Value {
        self.wait_events(event, target, 1, limit).remove(0)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Give the reader threads a moment to drain the pipes.
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            if Instant::now() > end {
                panic!(
                    "daemon did not exit within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a short command of the binary to completion: (status, stdout, stderr).
pub fn run_cli(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("SENTINEL_CONFIG")
        .stdin(Stdio::null());
    for k in ["DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD"] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Asserts that `secret` appears nowhere in the log, the payloads received or the bundles.
pub fn assert_secret_absent(secret: &str, d: &Daemon, r: Option<&Receiver>, ws: &Workspace) {
    assert!(
        !d.log_text().contains(secret),
        "the password leaked into the daemon's log"
    );
    assert!(
        !d.stdout_text().contains(secret),
        "the password leaked into the daemon's stdout"
    );
    if let Some(r) = r {
        for h in r.hits() {
            assert!(
                !h.raw.contains(secret),
                "the password leaked into a payload to {}",
                h.path
            );
        }
    }
    for f in files_under(&ws.incidents())
        .into_iter()
        .chain(files_under(&ws.state()))
    {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "the password leaked into {}",
            f.display()
        );
    }
}

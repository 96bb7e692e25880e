//! Throwaway PostgreSQL clusters made with initdb/pg_ctl: the demo's database, and the real
//! servers the tests and benchmarks crash. PostgreSQL refuses to run as root, so as root the
//! server runs as `nobody` (through runuser) in directories handed to that user.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// initdb and pg_ctl could not be found.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin (or SENTINEL_PG_BIN_GLOB): install them (Debian: apt-get install postgresql) or add their directory to PATH")]
pub struct MissingPostgres;

/// A cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Missing(#[from] MissingPostgres),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The directory holding initdb, pg_ctl and postgres.
pub fn find_bin_dir() -> Result<PathBuf, MissingPostgres> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                // Prefer the real directory: a symlink in /usr/local/bin may lack its siblings.
                let real = std::fs::canonicalize(dir.join("pg_ctl"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf));
                return Ok(real.unwrap_or(dir));
            }
        }
    }
    // Other layouts (RHEL's /usr/pgsql-*/bin, say) can be named with SENTINEL_PG_BIN_GLOB.
    let pattern = std::env::var("SENTINEL_PG_BIN_GLOB")
        .unwrap_or_else(|_| "/usr/lib/postgresql/*/bin".into());
    let mut found: Vec<PathBuf> = glob::glob(&pattern)
        .map_err(|_| MissingPostgres)?
        .filter_map(Result::ok)
        .filter(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().ok_or(MissingPostgres)
}

/// A free TCP port on loopback (freed again before returning; a race is possible but rare).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One local cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub root: PathBuf,
    pub data: PathBuf,
    pub log_file: PathBuf,
    pub port: u16,
    pub password: String,
    bin: PathBuf,
    /// `runuser -u nobody --` when we are root.
    prefix: Vec<String>,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn give_to_nobody(path: &Path) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(65534), Some(65534))
}

impl Cluster {
    /// Runs initdb in `root/data` with password authentication over TCP, the server log going
    /// to `root/log/postgresql.log`.
    pub fn init(root: &Path, password: &str) -> Result<Self, ClusterError> {
        let bin = find_bin_dir()?;
        let port = free_port()?;
        let data = root.join("data");
        let logdir = root.join("log");
        let sock = root.join("sock");
        for d in [root, &logdir, &sock] {
            std::fs::create_dir_all(d)?;
        }
        let prefix: Vec<String> = if is_root() {
            for d in [root, &logdir, &sock] {
                give_to_nobody(d)?;
            }
            ["runuser", "-u", "nobody", "--"].map(String::from).to_vec()
        } else {
            vec![]
        };
        let pwfile = root.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))?;
        if is_root() {
            give_to_nobody(&pwfile)?;
        }
        let c = Self {
            root: root.to_path_buf(),
            data: data.clone(),
            log_file: logdir.join("postgresql.log"),
            port,
            password: password.into(),
            bin,
            prefix,
        };
        c.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        let _ = std::fs::remove_file(&pwfile);
        let conf = format!(
            "\n# sentinel-remedy throwaway cluster\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nshared_buffers = 16MB\nmax_connections = 60\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nlog_line_prefix = '%m [%p] '\n",
            sock.display()
        );
        let mut pc = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        io::Write::write_all(&mut pc, conf.as_bytes())?;
        Ok(c)
    }

    /// A streaming standby of this (running) cluster in `root/data`, from `pg_basebackup -R`
    /// over the unix socket, on a port of its own; not started.
    pub fn standby_of(&self, root: &Path) -> Result<Self, ClusterError> {
        let port = free_port()?;
        let (logdir, sock) = (root.join("log"), root.join("sock"));
        for d in [root, &logdir, &sock] {
            std::fs::create_dir_all(d)?;
            if is_root() {
                give_to_nobody(d)?;
            }
        }
        let c = Self {
            root: root.to_path_buf(),
            data: root.join("data"),
            log_file: logdir.join("postgresql.log"),
            port,
            password: self.password.clone(),
            bin: self.bin.clone(),
            prefix: self.prefix.clone(),
        };
        let primary_sock = self.root.join("sock").display().to_string();
        let (data, primary_port) = (c.data.display().to_string(), self.port.to_string());
        let args = ["-h", &primary_sock, "-p", &primary_port, "-U", "postgres"];
        c.run(
            "pg_basebackup",
            &[&args[..], &["-D", &data, "-R", "-X", "stream", "--no-sync"]].concat(),
        )?;
        let conf = format!(
            "\n# standby\nport = {port}\nunix_socket_directories = '{}'\n",
            sock.display()
        );
        let mut pc = std::fs::OpenOptions::new()
            .append(true)
            .open(c.data.join("postgresql.conf"))?;
        io::Write::write_all(&mut pc, conf.as_bytes())?;
        Ok(c)
    }

    /// `postgres --version` of the binaries in use.
    pub fn version() -> Result<String, ClusterError> {
        let out = Command::new(find_bin_dir()?.join("postgres"))
            .arg("--version")
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The argv that starts this cluster: also its heal command.
    pub fn start_argv(&self) -> Vec<String> {
        let mut v = self.prefix.clone();
        v.push(self.bin.join("pg_ctl").display().to_string());
        v.extend([
            "-D".to_string(),
            self.data.display().to_string(),
            "-l".into(),
            self.log_file.display().to_string(),
            "-w".into(),
            "-t".into(),
            "60".into(),
            "start".into(),
        ]);
        v
    }

    pub fn start(&self) -> Result<(), ClusterError> {
        let argv = self.start_argv();
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .output()?;
        check("pg_ctl start", out)
    }

    /// `pg_ctl stop -m <mode>` (fast, immediate, smart), waiting until the server is gone.
    pub fn stop(&self, mode: &str) -> Result<(), ClusterError> {
        self.pg_ctl_stop(mode, "-w")
    }

    /// `pg_ctl stop -m <mode> --no-wait`: signals the postmaster and returns at once.
    pub fn stop_nowait(&self, mode: &str) -> Result<(), ClusterError> {
        self.pg_ctl_stop(mode, "-W")
    }

    fn pg_ctl_stop(&self, mode: &str, wait_flag: &str) -> Result<(), ClusterError> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-m",
                mode,
                wait_flag,
                "stop",
            ],
        )
    }

    /// Stops the server if it runs; errors are ignored (cleanup).
    pub fn stop_quietly(&self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "-w",
                "-t",
                "10",
                "stop",
            ],
        );
    }

    pub fn pid_file(&self) -> PathBuf {
        self.data.join("postmaster.pid")
    }

    /// The running postmaster's pid, from its pid file.
    pub fn postmaster_pid(&self) -> Option<i32> {
        crate::pidwatch::read_pid_file(&self.pid_file()).ok()
    }

    /// A DSN with the password (for the daemon's registry).
    pub fn dsn(&self) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            self.password, self.port
        )
    }

    /// Runs SQL through psql over the unix socket (no password needed there).
    pub fn psql(&self, sql: &str) -> Result<String, ClusterError> {
        let psql = self.bin.join("psql");
        let mut cmd = Command::new(
            self.prefix
                .first()
                .map(String::as_str)
                .unwrap_or(psql.to_str().unwrap_or("psql")),
        );
        let mut args: Vec<String> = self.prefix.iter().skip(1).cloned().collect();
        if !self.prefix.is_empty() {
            args.push(psql.display().to_string());
        }
        args.extend(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h"].map(String::from));
        args.push(self.root.join("sock").display().to_string());
        args.extend([
            "-p".to_string(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
            "-d".into(),
            "postgres".into(),
            "-c".into(),
            sql.into(),
        ]);
        let out = cmd
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        check("psql", out)?;
        Ok(stdout)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), ClusterError> {
        let path = self.bin.join(tool);
        let mut argv = self.prefix.clone();
        argv.push(path.display().to_string());
        argv.extend(args.iter().map(|s| s.to_string()));
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .output()?;
        check(tool, out)
    }
}

fn check(what: &str, out: Output) -> Result<(), ClusterError> {
    if out.status.success() {
        return Ok(());
    }
    Err(ClusterError::Command {
        what: what.into(),
        detail: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
    })
}

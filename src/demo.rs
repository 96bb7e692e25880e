//! `sentinel-remedy demo`: a first run with no Docker and no cloud. Creates a throwaway
//! cluster, watches it every second with the pid watch on, and heals it when you crash it.

use crate::config::{self, Registry, Source, VarSource};
use crate::pgcluster::{Cluster, ClusterError};
use std::collections::HashMap;
use std::path::PathBuf;

/// A demo cluster and the registry that watches it.
pub struct Demo {
    pub cluster: Cluster,
    pub registry: Registry,
    pub incidents_dir: PathBuf,
}

/// Creates and starts the cluster under a fresh temp dir; incidents go to `incidents_dir`.
pub fn prepare(incidents_dir: PathBuf) -> Result<Demo, ClusterError> {
    let root = std::env::temp_dir().join(format!("sentinel-demo-{}", std::process::id()));
    let password: String = format!("demo-{:08x}", rand::random::<u32>());
    let cluster = Cluster::init(&root, &password)?;
    cluster.start()?;
    let argv = serde_json::to_string(&cluster.start_argv()).expect("strings serialize");
    let text = format!(
        r#"
defaults:
  probe: {{ query: "SELECT 1", interval: 1s, timeout: 2s, failure_threshold: 3 }}
  restart_budget: {{ max_restarts: 5, window: 1h }}
  recovery_timeout: 60s
archive:
  local: {{ dir: "{dir}" }}
notify:
  console: true
targets:
  - name: demo
    dsn: "{dsn}"
    process: {{ pid_file: "{pid}" }}
    forensics:
      files: ["{log}", "{data}/pg_hba.conf", "{data}/postgresql.conf"]
    heal:
      command: {argv}
"#,
        dir = incidents_dir.display(),
        dsn = cluster.dsn(),
        pid = cluster.pid_file().display(),
        log = cluster.log_file.display(),
        data = cluster.data.display(),
    );
    let registry = config::load_str(
        &text,
        Source::Generated("demo registry".into()),
        &VarSource::fixed(HashMap::new()),
    )
    .map_err(|e| ClusterError::Command {
        what: "demo registry".into(),
        detail: e.to_string(),
    })?;
    Ok(Demo {
        cluster,
        registry,
        incidents_dir,
    })
}

/// What to print so a newcomer knows what to do next.
pub fn instructions(d: &Demo) -> String {
    let pg_ctl = crate::pgcluster::find_bin_dir()
        .map(|b| b.join("pg_ctl").display().to_string())
        .unwrap_or_else(|_| "pg_ctl".into());
    // SAFETY: geteuid has no preconditions.
    let as_owner = if unsafe { libc::geteuid() } == 0 {
        "runuser -u nobody -- "
    } else {
        ""
    };
    let pid = d
        .cluster
        .postmaster_pid()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "<pid>".into());
    format!(
        "\nsentinel-remedy demo\n====================\n\
         A throwaway PostgreSQL is running on 127.0.0.1:{port} (data in {data}).\n\
         It is probed every second, and its postmaster (pid {pid}) is watched.\n\n\
         Crash it:            kill -9 {pid}\n\
         Or stop it hard:     {as_owner}{pg_ctl} -D {data} -m immediate --no-wait stop\n\n\
         Watch the daemon archive the logs to {inc}, restart it, alert (below) and confirm recovery;\n\
         after each heal the new postmaster's pid is printed here, to crash it again.\n\
         Press Ctrl-C to stop the demo (the cluster is stopped and removed; incidents are kept).\n",
        port = d.cluster.port,
        data = d.cluster.data.display(),
        inc = d.incidents_dir.display(),
    )
}

/// Prints the new postmaster's pid each time the server comes back under another one (a
/// heal), so the next crash needs no looking up. Its own thread: it only reads the pid file.
pub fn announce_heals(d: &Demo) {
    let pid_file = d.cluster.pid_file();
    let mut last = d.cluster.postmaster_pid();
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let Ok(pid) = crate::pidwatch::read_pid_file(&pid_file) else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if alive && Some(pid) != last {
            last = Some(pid);
            println!("demo: the server is back under a new postmaster, pid {pid} (crash it again: kill -9 {pid})");
        }
    });
}

/// Stops the cluster and removes its directory.
pub fn cleanup(d: &Demo) {
    d.cluster.stop_quietly();
    let _ = std::fs::remove_dir_all(&d.cluster.root);
}

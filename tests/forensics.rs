//! More evidence: the SQL snapshot taken while a target is suspect, and the per-file byte cap.

mod support;

use std::time::Duration;
use support::*;

const LONG: Duration = Duration::from_secs(90);

#[test]
fn a_blocked_transaction_shows_in_the_sql_snapshot_with_its_blocker() {
    let pg = Pg::start();
    pg.psql("CREATE TABLE orders(id int); INSERT INTO orders VALUES (1)");
    let ws = Workspace::new();
    ws.write_registry(
        "  console: false\n",
        &[TargetSpec {
            query: "SELECT count(*) FROM orders",
            interval: "300ms",
            timeout: "1s",
            threshold: 3,
            pid_watch: false,
            heal: false, // alert only: the evidence is what this test is about
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);

    // A session holds an exclusive lock inside an open transaction for a while.
    let cluster = pg.cluster.clone();
    let blocker = std::thread::spawn(move || {
        cluster.psql("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT 'blocker-session', pg_sleep(8); COMMIT;")
    });
    // An application query queues behind it, as clients do in production.
    wait_for(LONG, "blocker holds the lock", || {
        pg.psql("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'orders'::regclass").eq("1").then_some(())
    });
    let cluster = pg.cluster.clone();
    let victim =
        std::thread::spawn(move || cluster.psql("SELECT 'victim-session', count(*) FROM orders"));
    d.wait_event("incident_declared", Some("orders"), LONG);
    d.wait_event("archive_written", Some("orders"), LONG);
    let bundle = ws.bundles().pop().expect("bundle");
    let snap: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("sql-snapshot.json")).expect("sql-snapshot.json"),
    )
    .unwrap();
    assert_eq!(snap["answered"], true, "{snap}");
    let server = &snap["sections"]["server"];
    assert!(
        server["version"]
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL"),
        "{server}"
    );
    assert!(server["uptime_seconds"].as_f64().unwrap() > 0.0);

    // The blocker's session is in pg_stat_activity, and the waiting lock names it.
    let activity = snap["sections"]["activity"]
        .as_array()
        .expect("activity rows");
    let blocker_pid = activity
        .iter()
        .find(|a| {
            a["query"]
                .as_str()
                .unwrap_or("")
                .contains("blocker-session")
        })
        .expect("blocker in activity")["pid"]
        .as_i64()
        .unwrap();
    let locks = snap["sections"]["locks"].as_array().expect("lock rows");
    let waiting: Vec<_> = locks.iter().filter(|l| l["granted"] == false).collect();
    assert!(!waiting.is_empty(), "a waiting lock: {locks:?}");
    assert!(
        waiting
            .iter()
            .any(|l| l["query"].as_str().unwrap_or("").contains("victim-session")),
        "the victim waits: {waiting:?}"
    );
    assert!(
        waiting.iter().any(|l| l["blocked_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_i64() == Some(blocker_pid))),
        "blocked by the blocker: {waiting:?}"
    );
    assert!(locks.iter().any(|l| l["pid"].as_i64() == Some(blocker_pid)
        && l["granted"] == true
        && l["mode"] == "AccessExclusiveLock"));
    assert!(snap["sections"]["databases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|db| db["datname"] == "postgres"));
    let settings = snap["sections"]["settings"].as_array().unwrap();
    assert!(
        settings.iter().any(|s| s["name"] == "port"),
        "non-default settings listed"
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["sql_snapshot"]["answered"], true);
    assert!(manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "sql-snapshot.json"));
    assert!(
        !String::from_utf8_lossy(&std::fs::read(bundle.join("sql-snapshot.json")).unwrap())
            .contains(pg.password())
    );
    assert_eq!(d.count("heal_issued", None), 0);
    blocker.join().unwrap().expect("blocker ran");
    victim
        .join()
        .unwrap()
        .expect("victim ran after the blocker committed");
}

#[test]
fn a_log_over_the_cap_keeps_its_newest_bytes_and_the_manifest_says_so() {
    let pg = Pg::start();
    let old = pg.cluster.root.join("log").join("old.log");
    let text: String = (0..200_000).map(|i| format!("old line {i:06}\n")).collect();
    std::fs::write(&old, &text).unwrap();
    let ws = Workspace::new();
    ws.write_registry_with(
        &format!("{}  max_file_size: 64KiB\n", ws.local_archive()),
        "  console: false\n",
        &[TargetSpec::new("orders", &pg)],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    d.wait_event("archive_written", Some("orders"), LONG);
    let bundle = ws.bundles().pop().unwrap();
    let kept = std::fs::read_to_string(bundle.join("old.log")).unwrap();
    assert_eq!(kept.len(), 64 * 1024);
    assert!(
        text.ends_with(&kept) && kept.ends_with("old line 199999\n"),
        "the newest bytes are kept"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let entry = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "old.log")
        .unwrap()
        .clone();
    assert_eq!(entry["truncated"], true);
    assert_eq!(entry["original_size"].as_u64(), Some(text.len() as u64));
    assert_eq!(entry["size"].as_u64(), Some(64 * 1024));
}

/// Peak resident memory (VmHWM) of process `pid`, in KiB.
fn peak_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("/proc/<pid>/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Issue 21: a server fails the probe (its answer is over the probe's 1 MiB), then answers the
/// SQL snapshot with 2 MiB session rows and 32 MB lock rows, 134 MB in all. The daemon keeps
/// what fits its limits, says in `sql-snapshot.json` and the manifest which limit cut each
/// section, and its peak memory grows by less than 64 MiB over the snapshot.
#[test]
fn a_hostile_servers_huge_answers_to_the_sql_snapshot_are_cut_and_the_bundle_says_so() {
    use std::sync::{Arc, OnceLock};
    use support::hostile_pg::{Field, HostilePg};
    let daemon: Arc<OnceLock<i32>> = Arc::default();
    // The daemon's peak memory when the snapshot's first query arrives, before any answer.
    let before: Arc<OnceLock<u64>> = Arc::default();
    let (pid, peak_before) = (daemon.clone(), before.clone());
    let server = HostilePg::start(move |q| {
        if q.app == "sentinel-remedy-forensics" {
            peak_before.get_or_init(|| {
                peak_kib(wait_for(LONG, "the daemon's pid", || pid.get().copied()))
            });
        }
        let filled = |n, len| vec![Field::Filled { len, byte: b'x' }; n];
        if q.sql.contains("pg_locks") {
            filled(4, 32 << 20)
        } else if q.sql.contains("pg_stat_activity") {
            filled(3, 2 << 20)
        } else if q.sql.contains("version()") {
            vec![Field::Text(
                r#"{"version": "PostgreSQL 16 (hostile)"}"#.into(),
            )]
        } else if q.sql.starts_with("SET") {
            vec![]
        } else {
            filled(1, 2 << 20) // the probe's query, and databases and settings
        }
    });
    let ws = Workspace::new();
    std::fs::write(
        ws.config(),
        format!(
            "archive:\n{}notify:\n  console: false\ntargets:\n  - name: hostile\n    dsn: \"{}\"\n    probe: {{ interval: 300ms, timeout: 10s, failure_threshold: 3 }}\n",
            ws.local_archive(),
            server.dsn()
        ),
    )
    .unwrap();
    let d = Daemon::run(&ws, &[]);
    daemon.set(d.pid()).unwrap();
    d.wait_event("archive_written", Some("hostile"), LONG);
    let peak = peak_kib(d.pid());
    let before = *before
        .get()
        .expect("the snapshot's queries reached the server");
    eprintln!(
        "daemon peak RSS: {} KiB before the snapshot's answers, {peak} KiB after (+{} KiB)",
        before,
        peak - before
    );
    assert!(
        peak - before < 64 * 1024,
        "the daemon's peak RSS grew by {} KiB while reading the snapshot",
        peak - before
    );

    let bundle = ws.bundles().pop().expect("bundle");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(bundle.join(name)).expect(name)).unwrap()
    };
    let snap = read("sql-snapshot.json");
    assert_eq!(snap["answered"], true, "{snap}");
    assert_eq!(
        snap["sections"]["server"]["version"], "PostgreSQL 16 (hostile)",
        "what fits is kept: {snap}"
    );
    let cut = &snap["truncated"];
    eprintln!("truncated: {cut:#}");
    let note = |s: &str| cut[s].as_str().unwrap_or_default().to_string();
    assert!(note("activity").contains("1 MiB row limit"), "{cut}");
    assert!(note("locks").contains("16 MiB read limit"), "{cut}");
    for s in ["databases", "settings"] {
        assert!(note(s).starts_with("not read"), "{s}: {cut}");
    }
    assert_eq!(read("manifest.json")["sql_snapshot"]["truncated"], *cut);
}

/// A server that answers the snapshot's first sections and then never again: the sections
/// answered are kept, the others are said to be cut by the probe timeout, and the bundle is
/// written (before, a timeout anywhere lost every section).
#[test]
fn a_snapshot_cut_by_the_probe_timeout_keeps_the_sections_answered_before_it() {
    use support::hostile_pg::{Field, HostilePg};
    let server = HostilePg::start(|q| {
        if q.sql.contains("pg_locks") {
            loop {
                std::thread::park(); // no answer, ever
            }
        } else if q.sql.contains("version()") {
            vec![Field::Text(
                r#"{"version": "PostgreSQL 16 (stalling)"}"#.into(),
            )]
        } else if q.sql.contains("pg_stat_activity") {
            vec![Field::Text(r#"{"pid": 42, "query": "SELECT 1"}"#.into())]
        } else if q.sql.starts_with("SET") {
            vec![]
        } else {
            vec![Field::Filled {
                len: 2 << 20,
                byte: b'x',
            }] // the probe's: over its limit
        }
    });
    let ws = Workspace::new();
    std::fs::write(
        ws.config(),
        format!(
            "archive:\n{}notify:\n  console: false\ntargets:\n  - name: stalling\n    dsn: \"{}\"\n    probe: {{ interval: 300ms, timeout: 2s, failure_threshold: 3 }}\n",
            ws.local_archive(),
            server.dsn()
        ),
    )
    .unwrap();
    let d = Daemon::run(&ws, &[]);
    d.wait_event("archive_written", Some("stalling"), LONG);
    let bundle = ws.bundles().pop().expect("bundle");
    let snap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("sql-snapshot.json")).unwrap()).unwrap();
    assert_eq!(snap["answered"], true, "{snap}");
    assert_eq!(
        snap["sections"]["server"]["version"],
        "PostgreSQL 16 (stalling)"
    );
    assert_eq!(snap["sections"]["activity"][0]["pid"], 42, "{snap}");
    for s in ["locks", "databases", "settings"] {
        assert!(
            snap["truncated"][s]
                .as_str()
                .unwrap_or_default()
                .starts_with("not read: no answer within the probe timeout"),
            "{s}: {snap}"
        );
        assert!(snap["sections"].get(s).is_none(), "{s}: {snap}");
    }
    assert!(snap["error"]
        .as_str()
        .unwrap_or_default()
        .contains("probe timeout"));
}

fn manifest(bundle: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap()
}

/// A postgres container with the host directories `binds` (`host:container`) mounted too.
fn container_with(label: &str, binds: &[String]) -> support::docker::PgContainer {
    use support::docker::{docker, postgres_image, PgContainer};
    let c = PgContainer {
        name: format!(
            "sr-test-{label}-{}-{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xffffff
        ),
        password: format!("pw-{:016x}", rand::random::<u64>()),
        port: sentinel_remedy::pgcluster::free_port().unwrap(),
    };
    let (env, publish) = (
        format!("POSTGRES_PASSWORD={}", c.password),
        format!("127.0.0.1:{}:5432", c.port),
    );
    let mut args = vec!["run", "-d", "--name", &c.name, "--restart=no"];
    args.extend([
        "--label",
        "org.sentinel-remedy.test=1",
        "-e",
        &env,
        "-p",
        &publish,
    ]);
    for b in binds {
        args.extend(["-v", b.as_str()]);
    }
    args.extend([postgres_image(), "postgres", "-c", "logging_collector=on"]);
    docker(&args);
    wait_for(LONG, "the container to answer SQL", || {
        c.answers().then_some(())
    });
    c
}

/// A container whose root swapped its mount's host directory for a link to a root-only one.
struct Swapped {
    c: support::docker::PgContainer,
    /// The host's /srv: `x` (mounted at /top/evidence) is now the link, `x.old` the directory.
    srv: std::path::PathBuf,
    /// What the root-only host file holds.
    secret: String,
}

/// The host: /srv/x mounted at /top/evidence (inside another mount, which only the Engine
/// copies whole), and /srv, its parent, writable too; root in the container moves the
/// mount's host directory away and links a root-only host directory in its place.
fn swapped(ws: &Workspace, label: &str) -> Swapped {
    use std::os::unix::fs::PermissionsExt;
    use support::docker::docker;
    let (srv, top) = (ws.path().join("srv"), ws.path().join("top"));
    std::fs::create_dir(&top).unwrap();
    std::fs::create_dir_all(srv.join("x")).unwrap();
    std::fs::write(srv.join("x/app.log"), "the container's own log\n").unwrap();
    let secret = format!("HOST-SECRET-{:016x}", rand::random::<u64>());
    let private = ws.path().join("root-only");
    std::fs::create_dir(&private).unwrap();
    std::fs::write(private.join("app.log"), &secret).unwrap();
    std::fs::set_permissions(private.join("app.log"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&private, PermissionsExt::from_mode(0o700)).unwrap();
    let c = container_with(
        label,
        &[
            format!("{}:/top", top.display()),
            format!("{}:/top/evidence", srv.join("x").display()),
            format!("{}:/hostsrv", srv.display()),
        ],
    );
    let swap = format!(
        "mv /hostsrv/x /hostsrv/x.old && ln -s {} /hostsrv/x",
        private.display()
    );
    docker(&["exec", &c.name, "sh", "-c", &swap]);
    let link = std::fs::symlink_metadata(srv.join("x")).unwrap();
    assert!(link.is_symlink());
    Swapped { c, srv, secret }
}

#[test]
fn a_bind_mount_source_the_container_swapped_for_a_link_to_a_root_only_directory_is_refused() {
    use support::docker::docker;
    let ws = Workspace::new();
    let Swapped { c, srv, secret } = swapped(&ws, "swapped");
    // In its data volume (read on the host too) a FIFO and a device node wait.
    let log = "/var/lib/postgresql/data/log";
    let special = format!("mkfifo {log}/pipe && mknod {log}/null c 1 3");
    docker(&["exec", &c.name, "sh", "-c", &special]);
    let text = format!(
        r#"archive:
  local: {{ dir: "{incidents}" }}
  timeout: 10s
notify:
  console: false
targets:
  - name: swapped
    dsn: "{dsn}"
    probe: {{ interval: 1s, timeout: 1s, failure_threshold: 5 }}
    restart_budget: {{ backoff: 0s }}
    heal:
      docker: {{ container: {name}, stop_timeout: 2s }}
    forensics:
      docker:
        paths: [/top/evidence, /top, {log}]
"#,
        incidents = ws.incidents().display(),
        dsn = c.dsn(),
        name = c.name,
    );
    std::fs::write(ws.config(), text).unwrap();
    let d = Daemon::run(&ws, &[]);
    d.wait_event("docker_ready", None, LONG);
    d.wait_event("monitor_started", Some("swapped"), LONG);
    docker(&["kill", &c.name]);
    let timing = d.wait_event("archive_timing", None, LONG);
    let bundle = wait_for(LONG, "the bundle with its heal report", || {
        let b = ws.bundles().pop()?;
        manifest(&b)["heal"].is_object().then_some(b)
    });
    let m = manifest(&bundle);
    let all = serde_json::to_string(&m).unwrap();
    for f in files_under(&bundle) {
        let body = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(
            !body.contains(&secret),
            "{} holds the root-only file",
            f.display()
        );
    }
    assert!(!all.contains(&secret), "{all}");
    let missing = m["missing"].as_array().unwrap();
    let why = |pattern: &str| {
        missing
            .iter()
            .find(|e| e["pattern"].as_str().unwrap().ends_with(pattern))
            .map(|e| e["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{pattern} listed as missing: {all}"))
    };
    // Refused, not followed, and not left to the Engine (which would follow the link): the
    // mount's own path, and the path the Engine would copy with the mount inside it.
    for path in [":/top/evidence", ":/top"] {
        let refused = why(path);
        assert!(refused.contains("symbolic link"), "{path}: {refused}");
        assert!(
            refused.contains(&srv.join("x").display().to_string()),
            "{refused}"
        );
    }
    // The special files are listed, not opened, and the copy did not wait on them.
    assert!(
        why("/log/pipe").contains("not a regular file (Fifo)"),
        "{all}"
    );
    assert!(
        why("/log/null").contains("not a regular file (Char)"),
        "{all}"
    );
    assert_eq!(timing["container_source"], "host", "{timing}");
    let ms = timing["container_ms"].as_u64().unwrap();
    assert!(
        ms < 5_000,
        "the container's evidence took {ms} ms of the 10 s timeout"
    );
    let names: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".log")),
        "the server log copied: {all}"
    );
}

#[test]
fn a_running_containers_swapped_mount_is_read_as_mounted_and_never_through_the_link() {
    use sentinel_remedy::config::{ContainerRef, DockerConfig, DockerForensics};
    use sentinel_remedy::docker::copy::{collect, Limits};
    use sentinel_remedy::docker::DockerClient;
    let ws = Workspace::new();
    let Swapped { c, srv, secret } = swapped(&ws, "swapped-running");
    let spec = DockerForensics {
        container: ContainerRef::Name(c.name.clone()),
        paths: vec!["/top/evidence".into(), "/top".into()],
        log_tail: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let client = DockerClient::new(&DockerConfig::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let limits = Limits {
            per_file: 1 << 20,
            per_bundle: 4 << 20,
            max_entries: Limits::MAX_ENTRIES,
            deadline: tokio::time::Instant::now() + Duration::from_secs(30),
        };
        let mut used = std::collections::HashSet::new();
        collect(&client, &spec, dir.path(), &limits, &mut used).await
    });
    let all = format!("{:?} {:?}", got.files, got.missing);
    for f in files_under(dir.path()) {
        let body = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(
            !body.contains(&secret),
            "{} holds the root-only file",
            f.display()
        );
    }
    // Its own mount, read as the container has it mounted (its view through /proc).
    let kept = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
    assert_eq!(kept, "the container's own log\n", "{all}");
    assert_eq!(got.from_host, 1, "{all}");
    // The Engine would mount the link's target for /top: refused, not copied.
    let refused = got
        .missing
        .iter()
        .find(|m| m.pattern.ends_with(":/top"))
        .unwrap_or_else(|| panic!("/top refused: {all}"));
    assert!(
        refused.reason.contains("no longer the directory mounted"),
        "{all}"
    );
    assert!(
        refused
            .reason
            .contains(&srv.join("x").display().to_string()),
        "{all}"
    );
    assert_eq!(got.from_engine, 0, "{all}");
}

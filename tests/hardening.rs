//! Issue 13: a root daemon beside hostile inputs. Each test performs the attack for real with
//! only the powers its attacker has (the `postgres` user, here `nobody`, which owns the test
//! clusters' log and data directories; any local user), and checks from outside that no secret
//! leaks, the other targets keep being probed on cadence, and the user is told.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use support::http::{self, metric, parse_metrics};
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// Runs `argv` as `nobody` (the clusters' owner here: what the postgres user can do).
fn as_nobody(argv: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(argv);
    c
}

fn run_ok(mut c: Command) {
    let st = c.status().expect("run attacker step");
    assert!(st.success(), "attacker step failed: {c:?}");
}

/// Adds `server:` to the registry just written; returns the listen address.
fn with_server(ws: &Workspace) -> String {
    let addr = format!(
        "127.0.0.1:{}",
        sentinel_remedy::pgcluster::free_port().unwrap()
    );
    let text = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(
        ws.config(),
        format!("server: {{ listen: \"{addr}\" }}\n{text}"),
    )
    .unwrap();
    addr
}

/// Probes made of `target` so far, read from `/metrics`.
fn probes(addr: &str, target: &str) -> f64 {
    let m = parse_metrics(&http::get(addr, "/metrics").body);
    metric(
        &m,
        "sentinel_probe_duration_seconds_count",
        &[("target", target)],
    )
    .unwrap_or(0.0)
}

/// Waits until `target` has been probed `n` more times: the Monitor is alive and on cadence.
fn wait_probes(addr: &str, target: &str, n: f64, limit: Duration) {
    let from = probes(addr, target);
    wait_for(limit, &format!("{n} more probes of {target}"), || {
        (probes(addr, target) >= from + n).then_some(())
    });
}

/// Every file and directory under `root` (itself included), not following symlinks.
fn tree(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}

/// Everything under `root` is private: files 0600 (or stricter), directories 0700.
fn assert_private(root: &Path) {
    assert!(root.exists(), "{} exists", root.display());
    for p in tree(root) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(
            !m.file_type().is_symlink(),
            "{}: a symlink in the daemon's own files",
            p.display()
        );
        assert_eq!(
            m.mode() & 0o077,
            0,
            "{} is mode {:o}: readable or writable by others",
            p.display(),
            m.mode() & 0o777
        );
    }
}

fn manifest(bundle: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).expect("manifest.json"))
        .expect("manifest JSON")
}

#[test]
fn symlinks_to_root_files_and_proc_and_fifos_in_the_log_dir_are_refused_and_every_file_is_private()
{
    let (pg, other) = (Pg::start(), Pg::start());
    let rx = Receiver::start();
    // A root-only file holding a secret, and a secret in the daemon's own environment.
    let secrets = tempfile::tempdir().unwrap();
    let shadow = secrets.path().join("shadow");
    let root_secret = format!("root-only-{:016x}", rand::random::<u64>());
    std::fs::write(&shadow, &root_secret).unwrap();
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600)).unwrap();
    let env_secret = format!("aws-secret-{:016x}", rand::random::<u64>());

    // The attacker (the clusters' owner) plants links and a FIFO named like logs.
    let logdir = pg.cluster.root.join("log");
    let plant = |name: &str, to: &str| {
        run_ok(as_nobody(&[
            "ln",
            "-s",
            to,
            &logdir.join(name).display().to_string(),
        ]))
    };
    plant("shadow.log", &shadow.display().to_string());
    plant("environ.log", "/proc/self/environ");
    plant("parent-environ.log", "/proc/1/environ");
    run_ok(as_nobody(&[
        "mkfifo",
        &logdir.join("fifo.log").display().to_string(),
    ]));

    let ws = Workspace::new();
    // The workspace is reachable by all, as /var/lib usually is: the modes below decide.
    std::fs::set_permissions(ws.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    ws.write_registry(
        &format!("  webhooks: [ {{ url: \"{}/hook\" }} ]\n", rx.base()),
        &[
            TargetSpec::new("orders", &pg),
            TargetSpec::new("billing", &other),
        ],
    );
    let addr = with_server(&ws);
    let d = Daemon::run(&ws, &[("AWS_SECRET_ACCESS_KEY", env_secret.as_str())]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    d.wait_event("probe_ok", Some("billing"), LONG);

    let old = pg.kill9();
    // Healed: a new postmaster, seen from outside.
    wait_for(LONG, "a new postmaster", || {
        pg.cluster
            .postmaster_pid()
            .filter(|p| *p != old && pg.answers())
    });
    let bundle = wait_for(LONG, "the bundle with its heal report", || {
        let b = ws.bundles().pop()?;
        manifest(&b)["heal"].is_object().then_some(b)
    });
    // The other target kept being probed on cadence (interval 200 ms) all along.
    wait_probes(&addr, "billing", 10.0, Duration::from_secs(10));

    // No secret in the bundle, the state dir, the log or any payload.
    for secret in [&root_secret, &env_secret] {
        assert_secret_absent(secret, &d, Some(&rx), &ws);
    }
    // The refused entries are listed, with why.
    let m = manifest(&bundle);
    let missing = serde_json::to_string(&m["missing"]).unwrap();
    for (name, why) in [
        ("shadow.log", "symbolic link"),
        ("environ.log", "symbolic link"),
        ("parent-environ.log", "symbolic link"),
        ("fifo.log", "FIFO"),
    ] {
        let entry = m["missing"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["pattern"].as_str().unwrap_or("").ends_with(name))
            .unwrap_or_else(|| panic!("{name} listed as not archived: {missing}"));
        assert!(
            entry["reason"].as_str().unwrap().contains(why),
            "{name}: {entry}"
        );
    }
    let names: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"postgresql.log"),
        "the real log is kept: {names:?}"
    );
    assert!(names.contains(&"heal.log"), "{names:?}");

    // Bundles, the store, heal logs and leases: 0600 files in 0700 directories.
    assert_private(&ws.incidents());
    assert_private(&ws.state());
    assert!(ws.state().join("heal-logs").is_dir());
    assert!(ws.state().join("leases").is_dir());
    // And so the attacker cannot read them back.
    let out = as_nobody(&["cat", &bundle.join("postgresql.conf").display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody read a bundle file");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A target whose `process.pid_file` is `path` (probing `pg`, alert only).
fn pid_file_target(name: &str, pg: &Pg, path: &Path) -> String {
    TargetSpec {
        heal: false,
        ..TargetSpec::new(name, pg)
    }
    .yaml()
    .replace(
        &pg.cluster.pid_file().display().to_string(),
        &path.display().to_string(),
    )
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_fifo_or_a_dev_zero_link_as_pid_file_degrades_only_its_own_target() {
    let (good, other) = (Pg::start(), Pg::start());
    // The attacker's directory holds the "pid files" of two targets it controls.
    let hostile = tempfile::tempdir().unwrap();
    std::fs::set_permissions(hostile.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let fifo = hostile.path().join("fifo.pid");
    let zero = hostile.path().join("zero.pid");
    run_ok(as_nobody(&["mkfifo", &fifo.display().to_string()]));
    run_ok(as_nobody(&[
        "ln",
        "-s",
        "/dev/zero",
        &zero.display().to_string(),
    ]));

    let ws = Workspace::new();
    let targets = [
        TargetSpec::new("good", &good).yaml(),
        pid_file_target("fifo", &other, &fifo),
        pid_file_target("zero", &other, &zero),
    ]
    .concat();
    std::fs::write(
        ws.config(),
        format!(
            "archive:\n{}notify:\n  console: false\ntargets:{targets}",
            ws.local_archive()
        ),
    )
    .unwrap();
    let addr = with_server(&ws);
    let mut d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);

    // Every target is probed on cadence, the hostile ones included.
    for t in ["good", "fifo", "zero"] {
        wait_probes(&addr, t, 5.0, Duration::from_secs(20));
    }
    // The operator is told, once per hostile target.
    for t in ["fifo", "zero"] {
        d.wait_event("pid_file_refused", Some(t), LONG);
    }
    let health = http::get(&addr, "/healthz");
    assert!(
        [200, 503].contains(&health.status),
        "/healthz answers: {health:?}"
    );
    // The good target is still healed.
    let old = good.kill9();
    wait_for(LONG, "the good target restarted", || {
        good.cluster
            .postmaster_pid()
            .filter(|p| *p != old && good.answers())
    });
    wait_probes(&addr, "good", 5.0, Duration::from_secs(20));
    wait_probes(&addr, "zero", 5.0, Duration::from_secs(20));
    // /dev/zero was never read into memory.
    let peak = peak_rss_kib(d.pid());
    assert!(peak < 200 * 1024, "peak resident memory {peak} KiB");

    assert_eq!(d.count("pid_file_refused", Some("fifo")), 1, "said once");
    eprintln!("peak resident memory: {peak} KiB");
    // SIGTERM still stops the daemon, cleanly.
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "exit status {st:?}");
}

/// Holds `flock -x` on `path` as nobody until dropped.
struct NobodyLock(Child);

impl NobodyLock {
    fn hold(path: &Path) -> Self {
        let child = as_nobody(&["flock", "-x", &path.display().to_string(), "sleep", "600"])
            .spawn()
            .expect("flock");
        Self(child)
    }
}

impl Drop for NobodyLock {
    fn drop(&mut self) {
        // setpriv execs flock, which forks sleep: end both (the lock goes with the last fd).
        let pid = self.0.id() as i32;
        for p in std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: signalling a child of our own child.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn nobody_holding_flock_on_a_world_readable_lease_refuses_the_restart_without_freezing_the_fleet() {
    let (pg, other) = (Pg::start(), Pg::start());
    let rx = Receiver::start();
    let ws = Workspace::new();
    // An older install left the lease dir and file readable by all; nobody opened the file
    // and holds flock on it.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let leases = shared.path().join("leases");
    std::fs::create_dir(&leases).unwrap();
    std::fs::set_permissions(&leases, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lease = leases.join(format!("127.0.0.1_{}.lease", pg.cluster.port));
    std::fs::write(&lease, "").unwrap();
    std::fs::set_permissions(&lease, std::fs::Permissions::from_mode(0o644)).unwrap();
    let holder = NobodyLock::hold(&lease);
    wait_for(LONG, "nobody holds the lock", || {
        std::fs::read_to_string("/proc/locks")
            .ok()?
            .lines()
            .any(|l| {
                l.contains("FLOCK")
                    && l.contains(&format!(":{} ", std::fs::metadata(&lease).unwrap().ino()))
            })
            .then_some(())
    });

    ws.write_registry(
        &format!("  webhooks: [ {{ url: \"{}/hook\" }} ]\n", rx.base()),
        &[
            TargetSpec::new("orders", &pg),
            TargetSpec::new("billing", &other),
        ],
    );
    let text = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(
        ws.config(),
        format!("lease: {{ dir: \"{}\" }}\n{text}", leases.display()),
    )
    .unwrap();
    let addr = with_server(&ws);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);

    let old = pg.kill9();
    // The bundle is written; the restart decision (and the lease) comes next. Every other
    // target is still probed on cadence: the lock froze nothing.
    wait_for(LONG, "the bundle", || {
        ws.bundles()
            .pop()
            .filter(|b| b.join("manifest.json").exists())
    });
    wait_probes(&addr, "billing", 10.0, Duration::from_secs(10));
    // The user is told the restart was refused (fail closed), and why.
    wait_for(LONG, "a notice about the busy lease", || {
        rx.hits()
            .iter()
            .any(|h| h.raw.contains("lease file is busy"))
            .then_some(())
    });
    wait_probes(&addr, "billing", 10.0, Duration::from_secs(10));
    // The daemon made its lease directory private.
    assert_eq!(std::fs::metadata(&leases).unwrap().mode() & 0o777, 0o700);
    assert_eq!(
        pg.cluster.postmaster_pid(),
        Some(old),
        "no restart without the lease (the dead postmaster's pid file is unchanged)"
    );
    // The file is now private too: nobody cannot open it again.
    assert_eq!(std::fs::metadata(&lease).unwrap().mode() & 0o777, 0o600);
    let out = as_nobody(&["cat", &lease.display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "nobody reopened the lease file");

    // The holder lets go: the restart goes ahead.
    drop(holder);
    wait_for(LONG, "the restart once the lock is free", || {
        pg.cluster
            .postmaster_pid()
            .filter(|p| *p != old && pg.answers())
    });
}

#[test]
fn a_lease_dir_owned_by_another_user_is_refused_and_restarts_fail_closed() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    // An attacker pre-created the lease directory, world-writable and its own.
    let leases = ws.path().join("leases");
    std::fs::create_dir(&leases).unwrap();
    std::fs::set_permissions(&leases, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&leases, Some(nobody_uid()), None).unwrap();
    ws.write_registry(
        &format!("  webhooks: [ {{ url: \"{}/hook\" }} ]\n", rx.base()),
        &[TargetSpec::new("orders", &pg)],
    );
    let text = std::fs::read_to_string(ws.config()).unwrap();
    std::fs::write(
        ws.config(),
        format!("lease: {{ dir: \"{}\" }}\n{text}", leases.display()),
    )
    .unwrap();
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    let old = pg.kill9();
    wait_for(LONG, "a notice naming the untrusted lease dir", || {
        rx.hits()
            .iter()
            .any(|h| h.raw.contains("lease") && h.raw.contains("owned by uid"))
            .then_some(())
    });
    assert_eq!(pg.cluster.postmaster_pid(), Some(old), "no restart");
    assert_eq!(
        std::fs::read_dir(&leases).unwrap().count(),
        0,
        "nothing written into the attacker's directory"
    );
}

fn nobody_uid() -> u32 {
    let out = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_3_gib_sparse_file_in_a_container_costs_at_most_the_caps_and_the_archive_timeout() {
    use support::docker::{docker, PgContainer};
    let c = PgContainer::start("sparse", None);
    let log = "/var/lib/postgresql/data/log";
    // The container's owner plants a 3 GiB sparse "log", a file named like the daemon's own
    // manifest, a hard link and a symlink to a root-only file.
    let sh = |cmd: &str| docker(&["exec", "-u", "postgres", &c.name, "sh", "-c", cmd]);
    sh(&format!(
        "truncate -s 3G {log}/huge.log && echo FAKE-MANIFEST > {log}/manifest.json \
         && echo hello > {log}/a.log && ln {log}/a.log {log}/b.log && ln -s /etc/shadow {log}/etc-shadow.log"
    ));
    let ws = Workspace::new();
    let cap: u64 = 1 << 20;
    let text = format!(
        r#"archive:
  local: {{ dir: "{incidents}" }}
  timeout: 4s
  max_file_size: 1MiB
notify:
  console: false
targets:
  - name: boxed
    dsn: "{dsn}"
    probe: {{ interval: 1s, timeout: 1s, failure_threshold: 5 }}
    restart_budget: {{ backoff: 0s }}
    recovery_timeout: 60s
    heal:
      docker: {{ container: {name}, stop_timeout: 2s }}
    forensics:
      docker:
        paths: [{log}]
        log_tail: 200
"#,
        incidents = ws.incidents().display(),
        dsn = c.dsn(),
        name = c.name,
    );
    std::fs::write(ws.config(), text).unwrap();
    let d = Daemon::run(&ws, &[]);
    d.wait_event("docker_ready", None, LONG);
    d.wait_event("monitor_started", Some("boxed"), LONG);
    let started = c.started_at();

    let killed = std::time::Instant::now();
    docker(&["kill", &c.name]);
    wait_for(LONG, "the container restarted", || {
        (c.started_at() != started && c.inspect("{{.State.Running}}") == "true").then_some(())
    });
    let took = killed.elapsed();
    eprintln!("container killed -> restarted: {took:?}");
    // Detection (Engine event) + at most archive.timeout for the evidence + the restart.
    assert!(
        took < Duration::from_secs(4 + 11),
        "the restart waited {took:?} for the evidence"
    );
    let bundle = wait_for(LONG, "the bundle with its heal report", || {
        let b = ws.bundles().pop()?;
        manifest(&b)["heal"].is_object().then_some(b)
    });
    let total: u64 = files_under(&bundle)
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(
        total <= 4 * cap + (1 << 20),
        "the bundle holds {total} bytes"
    );
    eprintln!("bundle: {total} bytes");
    let m = manifest(&bundle);
    eprintln!("manifest: {m:#}");
    assert_eq!(m["target"], "boxed", "our manifest, not the container's");
    let all = serde_json::to_string(&m).unwrap();
    let files = m["files"].as_array().unwrap();
    let missing = m["missing"].as_array().unwrap();
    // The sparse file: its newest bytes within the cap, or listed as cut off by the timeout.
    let huge_kept = files
        .iter()
        .find(|f| f["source"].as_str().unwrap().ends_with("/huge.log"));
    match huge_kept {
        Some(f) => {
            assert!(f["size"].as_u64().unwrap() <= cap, "{f}");
            assert_eq!(f["original_size"].as_u64(), Some(3 << 30), "{f}");
        }
        None => assert!(
            missing
                .iter()
                .any(|e| e["pattern"].as_str().unwrap().contains("huge.log")
                    && e["reason"].as_str().unwrap().contains("archive.timeout")),
            "huge.log is said to be cut off: {all}"
        ),
    }
    // The container's own log is there: the huge file did not eat its time.
    assert!(
        files.iter().any(|f| f["name"] == "container.log"),
        "container.log kept: {all}"
    );
    // The container's manifest.json went in under another name.
    let fake = files
        .iter()
        .find(|f| f["source"].as_str().unwrap().ends_with("/manifest.json"));
    if let Some(f) = fake {
        assert_ne!(f["name"], "manifest.json", "{f}");
    }
    assert!(!std::fs::read_to_string(bundle.join("manifest.json"))
        .unwrap()
        .starts_with("FAKE"),);
    // Links are recorded as such, not followed and not silently missing.
    for what in ["symbolic link", "hard link"] {
        assert!(
            missing
                .iter()
                .any(|e| e["reason"].as_str().unwrap().contains(what)),
            "a {what} listed: {all}"
        );
    }
    assert!(!all.contains("root:"), "no /etc/shadow content");
    assert!(
        !files_under(&bundle).iter().any(|f| f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with(".tar")),
        "no tar left behind"
    );
}

#[test]
fn a_containers_links_to_host_files_and_its_fifo_are_not_followed_when_read_from_the_volume() {
    use support::docker::{docker, PgContainer};
    let c = PgContainer::start("hostlink", None);
    let ws = Workspace::new();
    // A host file outside the volume, at a path the container's owner can guess.
    let secret = format!("HOST-SECRET-{:016x}", rand::random::<u64>());
    let host_file = ws.path().join("host-secret.txt");
    std::fs::write(&host_file, &secret).unwrap();
    let host_file = host_file.display().to_string();
    let up = "../".repeat(12);
    let log = "/var/lib/postgresql/data/log";
    let sh = |cmd: &str| docker(&["exec", "-u", "postgres", &c.name, "sh", "-c", cmd]);
    sh(&format!(
        "ln -s {host_file} {log}/host.log && ln -s {up}{rel} {log}/up.log && ln -s / {log}/root \
         && ln -s /etc/shadow {log}/shadow.log && mkfifo {log}/pipe && echo ok > {log}/plain.log",
        rel = host_file.trim_start_matches('/'),
    ));
    let text = format!(
        r#"archive:
  local: {{ dir: "{incidents}" }}
  timeout: 5s
notify:
  console: false
targets:
  - name: linked
    dsn: "{dsn}"
    probe: {{ interval: 1s, timeout: 1s, failure_threshold: 5 }}
    restart_budget: {{ backoff: 0s }}
    heal:
      docker: {{ container: {name}, stop_timeout: 2s }}
    forensics:
      docker:
        paths: [{log}, /var/lib/postgresql/data/pg_hba.conf]
"#,
        incidents = ws.incidents().display(),
        dsn = c.dsn(),
        name = c.name,
    );
    std::fs::write(ws.config(), text).unwrap();
    let d = Daemon::run(&ws, &[]);
    d.wait_event("docker_ready", None, LONG);
    d.wait_event("monitor_started", Some("linked"), LONG);
    docker(&["kill", &c.name]);
    let timing = d.wait_event("archive_timing", None, LONG);
    assert_eq!(timing["container_source"], "host", "{timing}");
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
            "{} holds the host file",
            f.display()
        );
        assert!(!body.contains("root:"), "{} holds /etc/shadow", f.display());
    }
    let reasons: Vec<String> = m["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {}", e["pattern"], e["reason"]))
        .collect();
    for (name, why) in [
        ("host.log", "symbolic link"),
        ("up.log", "symbolic link"),
        ("root", "symbolic link"),
        ("shadow.log", "symbolic link"),
        ("pipe", "not a regular file (Fifo)"),
    ] {
        assert!(
            reasons
                .iter()
                .any(|r| r.contains(&format!("/log/{name}\"")) && r.contains(why)),
            "{name}: {why}: {all}"
        );
    }
    let names: Vec<&str> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    for want in ["plain.log", "postgresql.log", "pg_hba.conf"] {
        assert!(names.contains(&want), "{want} copied: {all}");
    }
}

#[test]
fn a_spool_removed_while_an_upload_waits_is_recreated_and_the_upload_lands() {
    use support::s3server::S3Server;
    let s3 = S3Server::start(false);
    let pg = Pg::start();
    let ws = Workspace::new();
    // The bucket does not exist yet: the upload fails and waits in the spool.
    ws.write_registry_with(
        &format!(
            "{}{}  timeout: 1s\n",
            ws.local_archive(),
            s3.yaml("late", "")
        ),
        "  console: false\n",
        &[TargetSpec::new("orders", &pg)],
    );
    let env = s3.daemon_env();
    let d = Daemon::run(&ws, &as_env(&env));
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    d.wait_event("archive_upload_failed", Some("orders"), LONG);
    let spool = ws.state().join("spool");
    assert!(spool.join("pending").is_dir());
    // A cleanup script removes the spool while the upload waits for its retry.
    std::fs::remove_dir_all(&spool).unwrap();
    s3.create_bucket("late");
    wait_for(LONG, "the bundle's manifest in S3", || {
        s3.objects("late")
            .iter()
            .any(|o| o.key.ends_with("/manifest.json"))
            .then_some(())
    });
    // Said, and the spool it re-created is private.
    assert!(d.count("spool_recreated", None) >= 1, "{}", d.log_text());
    assert_eq!(
        std::fs::metadata(&spool).unwrap().mode() & 0o777,
        0o700,
        "the re-created spool is private"
    );
}

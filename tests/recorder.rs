//! What happened around an incident that no failed probe shows (issue 25, items 3 to 5): a
//! restart nobody announced, the flight recorder's vitals before a failure, and the early
//! warnings for what a restart cannot fix. Real servers, real faults, a real receiver.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// Slack, Discord, PagerDuty and a generic webhook, all at one receiver.
fn notify_every_channel(rx: &Receiver) -> String {
    format!(
        "{}  pagerduty: {{ routing_key: \"k0123456789\", url: \"{}/pagerduty\" }}\n",
        notify_all(rx),
        rx.base()
    )
}

/// Generic-webhook payloads of this event about `target`.
fn hooks(rx: &Receiver, event: &str, target: &str) -> Vec<Value> {
    rx.hook_events(event)
        .into_iter()
        .map(|h| h.body)
        .filter(|b| b["target"] == target)
        .collect()
}

/// A script restarts the server (`pg_ctl stop -m immediate`, then start) inside one probe
/// interval of 5 s, so no probe fails: the receiver still gets exactly one notice naming the
/// restart with both start times, a bundle holds the server log, and the daemon restarts
/// nothing (one "ready to accept connections" more than before, the script's).
#[test]
fn a_restart_inside_one_interval_is_an_incident_told_once() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_every_channel(&rx),
        &[TargetSpec {
            interval: "5s",
            timeout: "2s",
            // A slow restart on a loaded host may fail a probe or two: never the threshold.
            threshold: 10,
            pid_watch: false,
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    // Two passing probes: the identity and the start time are known.
    d.wait_events("probe_ok", Some("orders"), 2, LONG);
    let starts = pg.starts();
    let before = pg.psql("SELECT pg_postmaster_start_time()");
    pg.cluster.stop("immediate").expect("stop -m immediate");
    pg.cluster.start().expect("start");
    let after = pg.psql("SELECT pg_postmaster_start_time()");
    println!("start time moved from {before} to {after}");
    d.wait_event("unannounced_restart", Some("orders"), LONG);
    let notice = wait_for(LONG, "the unannounced-restart notice", || {
        hooks(&rx, "unannounced_restart", "orders").pop()
    });
    let summary = notice["summary"].as_str().unwrap();
    println!("notice: {summary}");
    assert!(summary.contains("start time moved from"), "{notice}");
    assert!(notice["downtime_seconds"].as_f64().unwrap() > 0.0);
    // Two more intervals: nothing else is told, nothing restarted.
    d.wait_events("probe_ok", Some("orders"), 5, LONG);
    assert_eq!(hooks(&rx, "unannounced_restart", "orders").len(), 1);
    for kind in ["failure", "escalation", "recovery"] {
        assert!(hooks(&rx, kind, "orders").is_empty(), "no {kind} notice");
    }
    assert_eq!(d.count("heal_issued", None), 0, "no restart by the daemon");
    assert_eq!(pg.starts(), starts + 1, "only the script's restart");
    let bundle = ws.bundles().pop().expect("a bundle");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["failure_class"], "unannounced_restart");
    let logs: Vec<_> = files_under(&bundle)
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".log"))
        .collect();
    assert!(!logs.is_empty(), "the server log is archived");
    assert_eq!(rx.accepted("/pagerduty").len(), 1);
    assert_eq!(rx.accepted("/slack").len(), 1);
    rx.assert_all_well_formed();
}

/// `n` idle sessions on `pg` (psql waiting on a stdin that never speaks), kept until dropped.
struct Idle(Vec<std::process::Child>);

impl Idle {
    fn open(pg: &Pg, n: usize) -> Self {
        let psql = sentinel_remedy::pgcluster::find_bin_dir()
            .expect("PostgreSQL binaries")
            .join("psql");
        let c = &pg.cluster;
        let kids = (0..n)
            .map(|_| {
                std::process::Command::new(&psql)
                    .args(["-X", "-q", "-h"])
                    .arg(c.root.join("sock"))
                    .args([
                        "-p",
                        &c.port.to_string(),
                        "-U",
                        "postgres",
                        "-d",
                        "postgres",
                    ])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("psql")
            })
            .collect();
        Self(kids)
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        for k in &mut self.0 {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

/// The flight recorder samples every second into a one-minute ring.
const RECORDER_EVERY_SECOND: &str = "defaults:\n  recorder: { every: 1s, window: 1m }\n";

/// The newest vitals `/status` shows for `target`.
fn vitals(addr: &str, target: &str) -> Option<Value> {
    let st = support::http::get(addr, "/status").json();
    let t = st["targets"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == target)?
        .clone();
    Some(t["vitals"].clone()).filter(|v| !v.is_null())
}

/// Waits until `/status` shows at least (or, `above` false, at most) `n` connections.
fn wait_connections(addr: &str, target: &str, n: f64, above: bool) -> Value {
    wait_for(LONG, &format!("{n} connections in /status"), || {
        vitals(addr, target).filter(|v| {
            let c = v["connections"].as_f64().unwrap_or(f64::NAN);
            if above {
                c >= n
            } else {
                c <= n
            }
        })
    })
}

/// Connections raised (40 idle sessions) before the postmaster is SIGKILLed: `flight.json`
/// in the bundle holds the samples from before and after the rise, the failure alert names
/// connections with where they came from, and `/status` and the page showed the numbers.
#[test]
fn the_alert_names_the_connections_that_rose_before_a_kill() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_every_channel(&rx),
        &[TargetSpec::new("orders", &pg)],
    );
    ws.prepend_registry(RECORDER_EVERY_SECOND);
    let addr = with_server(&ws, None);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    let calm = wait_connections(&addr, "orders", 2.0, false);
    println!("before: {calm}");
    assert_eq!(calm["max_connections"], 60.0);
    assert!(calm["xid_age"].as_f64().is_some() && calm["wal_position_bytes"].as_f64().is_some());
    assert!(calm["data_disk_free_bytes"].as_f64().unwrap() > 0.0);
    assert!(calm["postmaster_rss_bytes"].as_f64().unwrap() > 0.0);
    std::thread::sleep(Duration::from_secs(3)); // a few calm samples
    let idle = Idle::open(&pg, 40);
    let busy = wait_connections(&addr, "orders", 40.0, true);
    println!("after: {busy}");
    let page = support::http::get(&addr, "/").body;
    assert!(
        page.contains("connections 4"),
        "the page shows the connections"
    );
    pg.kill9();
    let alert = wait_for(LONG, "the failure alert", || {
        hooks(&rx, "failure", "orders").pop()
    });
    let summary = alert["summary"].as_str().unwrap();
    println!("alert: {summary}");
    let line = summary
        .lines()
        .find(|l| l.starts_with("Before the failure:"))
        .unwrap_or_else(|| panic!("no flight recorder line in {summary}"));
    assert!(
        line.contains("connections 4") && line.contains("/60, up from"),
        "{line}"
    );
    drop(idle);
    let bundle = ws.bundles().pop().expect("a bundle");
    let flight: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("flight.json")).expect("flight.json"))
            .unwrap();
    let samples = flight["samples"].as_array().unwrap();
    println!("flight.json: {} samples", samples.len());
    let conns: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["connections"].as_f64())
        .collect();
    assert!(conns.first().is_some_and(|c| *c <= 2.0), "{conns:?}");
    assert!(conns.last().is_some_and(|c| *c >= 40.0), "{conns:?}");
    assert_eq!(flight["every_seconds"], 1.0);
    let manifest = std::fs::read_to_string(bundle.join("manifest.json")).unwrap();
    assert!(manifest.contains("flight.json"), "listed in the manifest");
    d.wait_event("target_recovered", Some("orders"), LONG);
    rx.assert_all_well_formed();
}

/// max_connections 20 and 18 idle sessions: exactly one early warning (connections nearly
/// exhausted) at every channel; closing them: exactly one clearing notice under the same id
/// (PagerDuty resolves what it triggered). No failure is declared.
#[test]
fn connections_nearly_exhausted_warn_once_and_clear_once() {
    let pg = Pg::start();
    pg.psql("ALTER SYSTEM SET max_connections = 20");
    pg.cluster.stop("fast").expect("stop");
    pg.cluster.start().expect("start");
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_every_channel(&rx),
        &[TargetSpec::new("orders", &pg)],
    );
    ws.prepend_registry(RECORDER_EVERY_SECOND);
    let addr = with_server(&ws, None);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    wait_connections(&addr, "orders", 2.0, false);
    let idle = Idle::open(&pg, 18);
    let warning = wait_for(LONG, "the warning", || {
        hooks(&rx, "warning", "orders").pop()
    });
    let summary = warning["summary"].as_str().unwrap();
    println!("warning: {summary}");
    assert!(
        summary.starts_with("Connections nearly exhausted: 18 of max_connections 20"),
        "{summary}"
    );
    std::thread::sleep(Duration::from_secs(4)); // more samples above the threshold
    assert_eq!(hooks(&rx, "warning", "orders").len(), 1, "one warning");
    drop(idle);
    let cleared = wait_for(LONG, "the clearing notice", || {
        hooks(&rx, "warning_cleared", "orders").pop()
    });
    println!("cleared: {}", cleared["summary"]);
    assert_eq!(cleared["incident_id"], warning["incident_id"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hooks(&rx, "warning", "orders").len(), 1);
    assert_eq!(hooks(&rx, "warning_cleared", "orders").len(), 1);
    assert!(hooks(&rx, "failure", "orders").is_empty());
    assert_eq!(d.count("incident_declared", None), 0);
    let pd: Vec<Value> = rx
        .accepted("/pagerduty")
        .into_iter()
        .map(|h| h.body)
        .collect();
    assert_eq!(pd.len(), 2, "{pd:?}");
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[0]["payload"]["severity"], "warning");
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[0]["dedup_key"], pd[1]["dedup_key"]);
    assert_eq!(rx.accepted("/slack").len(), 2);
    rx.assert_all_well_formed();
}

/// A container under a 256 MiB memory limit: each sample carries its cgroup's memory use and
/// limit, read through the Engine, and `/status` shows them.
#[test]
fn a_container_sample_carries_its_cgroup_memory_and_limit() {
    let c = support::docker::PgContainer::start("flight", None);
    support::docker::docker(&[
        "update",
        "--memory",
        "256m",
        "--memory-swap",
        "256m",
        &c.name,
    ]);
    let ws = Workspace::new();
    let text = format!(
        "{RECORDER_EVERY_SECOND}notify:\n  console: false\ntargets:\n  - name: box\n    dsn: \"{}\"\n    probe: {{ interval: 1s, timeout: 2s }}\n    heal:\n      docker: {{ container: {} }}\n",
        c.dsn(),
        c.name
    );
    std::fs::write(ws.config(), text).unwrap();
    let addr = with_server(&ws, None);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    let v = wait_for(LONG, "the container's memory in /status", || {
        vitals(&addr, "box").filter(|v| v["container_memory_bytes"].as_f64().is_some())
    });
    println!("vitals: {v}");
    assert_eq!(v["container_memory_limit_bytes"], 256.0 * 1024.0 * 1024.0);
    let used = v["container_memory_bytes"].as_f64().unwrap();
    assert!(used > 1e6 && used < 256.0 * 1024.0 * 1024.0, "{used}");
    assert!(
        v.get("postmaster_rss_bytes").is_none(),
        "no pid file: no host process"
    );
}

/// (free, size) bytes of the filesystem holding `path`.
fn statvfs(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs fills the struct we pass for a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    let f = st.f_frsize as u64;
    (st.f_bavail as u64 * f, st.f_blocks as u64 * f)
}

/// The data directory on a 128 MiB tmpfs that a file fills to 95 %: exactly one early warning
/// (disk nearly full) naming the filesystem; the file removed: one clearing notice. The server
/// is never declared failing.
#[test]
fn a_data_disk_filling_up_warns_once_and_clears_once() {
    let ws = Workspace::new();
    let mnt = ws.path().join("pgfs");
    let Some(_fs) = Tmpfs::mount(&mnt, "128m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    };
    // The server runs as nobody when the tests run as root: it must get through.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
    let pg = Pg::start_in(&mnt);
    let rx = Receiver::start();
    ws.write_registry(
        &notify_every_channel(&rx),
        &[TargetSpec::new("orders", &pg)],
    );
    ws.prepend_registry(RECORDER_EVERY_SECOND);
    let addr = with_server(&ws, None);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    wait_connections(&addr, "orders", 2.0, false);
    let (free, size) = statvfs(&mnt);
    let fill = free - size / 20; // leaves 5 % free
    println!("tmpfs: {free} free of {size}; writing {fill} bytes");
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![1u8; 1 << 20];
    let mut left = fill;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut f, &chunk[..n]).unwrap();
        left -= n as u64;
    }
    drop(f);
    let warning = wait_for(LONG, "the disk warning", || {
        hooks(&rx, "warning", "orders").pop()
    });
    let summary = warning["summary"].as_str().unwrap();
    println!("warning: {summary}");
    assert!(
        summary.starts_with("Disk nearly full: ") && summary.contains("% full"),
        "{summary}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hooks(&rx, "warning", "orders").len(), 1);
    std::fs::remove_file(&filler).unwrap();
    let cleared = wait_for(LONG, "the clearing notice", || {
        hooks(&rx, "warning_cleared", "orders").pop()
    });
    println!("cleared: {}", cleared["summary"]);
    assert_eq!(cleared["incident_id"], warning["incident_id"]);
    assert_eq!(d.count("incident_declared", None), 0);
    rx.assert_all_well_formed();
    drop(d);
    drop(pg);
}

/// Runs a PostgreSQL program of the cluster's owner (nobody when the tests run as root).
fn as_owner(program: &str, args: &[&str]) {
    let bin = sentinel_remedy::pgcluster::find_bin_dir().expect("postgres binaries");
    let path = bin.join(program);
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(&path);
        c
    } else {
        std::process::Command::new(&path)
    };
    let out = cmd.args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A cluster 1.6 billion transactions old (pg_resetwal moves the next XID on, with the commit
/// log segment it needs), autovacuum held back: one early warning (wraparound near, at the
/// default threshold of 1.5 billion); autovacuum let go freezes every database: one clearing
/// notice.
#[test]
fn transaction_id_wraparound_near_warns_once_and_clears_once_after_a_freeze() {
    let pg = Pg::start();
    // Not `autovacuum = off`: past the wraparound limit that starts a freezing worker at
    // once. A one-hour nap holds autovacuum's first round back instead.
    pg.psql("ALTER SYSTEM SET autovacuum_naptime = '1h'");
    pg.cluster.stop("fast").expect("stop");
    let next_xid: u64 = 1_600_000_000;
    let data = pg.cluster.data.display().to_string();
    as_owner("pg_resetwal", &["-x", &next_xid.to_string(), "-D", &data]);
    // One pg_xact segment holds 32 pages of 32768 transactions' status.
    let segment = pg
        .cluster
        .data
        .join(format!("pg_xact/{:04X}", next_xid / (32 * 32768)));
    std::fs::write(&segment, vec![0u8; 32 * 8192]).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let nobody = std::ffi::CString::new(segment.display().to_string()).unwrap();
        // SAFETY: chown on a NUL-terminated path we just wrote.
        assert_eq!(unsafe { libc::chown(nobody.as_ptr(), 65534, 65534) }, 0);
    }
    pg.cluster.start().expect("start");
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_every_channel(&rx),
        &[TargetSpec::new("orders", &pg)],
    );
    ws.prepend_registry(RECORDER_EVERY_SECOND);
    let addr = with_server(&ws, None);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    let warning = wait_for(LONG, "the wraparound warning", || {
        hooks(&rx, "warning", "orders").pop()
    });
    let summary = warning["summary"].as_str().unwrap();
    println!("warning: {summary}");
    assert!(summary.contains("transaction ID age 1599"), "{summary}");
    let shown = vitals(&addr, "orders").expect("vitals");
    println!("vitals: {shown}");
    assert!(shown["xid_age"].as_f64().unwrap() > 1.5e9, "{shown}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hooks(&rx, "warning", "orders").len(), 1, "one warning");
    pg.psql("ALTER SYSTEM SET autovacuum_naptime = '1s'");
    pg.psql("SELECT pg_reload_conf()");
    let cleared = wait_for(Duration::from_secs(180), "the clearing notice", || {
        hooks(&rx, "warning_cleared", "orders").pop()
    });
    println!("cleared: {}", cleared["summary"]);
    assert!(
        cleared["summary"]
            .as_str()
            .unwrap()
            .starts_with("No longer transaction ID wraparound near"),
        "{cleared}"
    );
    assert_eq!(cleared["incident_id"], warning["incident_id"]);
    assert_eq!(hooks(&rx, "warning", "orders").len(), 1);
    assert!(hooks(&rx, "failure", "orders").is_empty());
    assert_eq!(d.count("incident_declared", None), 0);
    rx.assert_all_well_formed();
}

/// A streaming standby whose replay is paused while its primary commits: `/status` shows
/// its replay lag, growing by the seconds that pass.
#[test]
fn a_standbys_replay_lag_is_recorded_and_grows_while_replay_is_paused() {
    let primary = Pg::start();
    let dir = tempfile::tempdir().unwrap();
    let standby = primary
        .cluster
        .standby_of(&dir.path().join("standby"))
        .expect("pg_basebackup");
    standby.start().expect("standby starts");
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()").unwrap(), "t");
    primary.psql("CREATE TABLE replayed AS SELECT 1 AS one");
    wait_for(LONG, "the standby to replay a commit", || {
        (standby
            .psql("SELECT pg_last_xact_replay_timestamp() IS NOT NULL")
            .ok()?
            == "t")
            .then_some(())
    });
    standby.psql("SELECT pg_wal_replay_pause()").unwrap();
    primary.psql("INSERT INTO replayed VALUES (2)");
    let rx = Receiver::start();
    let ws = Workspace::new();
    let standby_dsn = standby.dsn();
    // Watched by its DSN only: the fixture's heal command and pid file are the primary's.
    let spec = TargetSpec {
        dsn: Some(&standby_dsn),
        heal: false,
        pid_watch: false,
        ..TargetSpec::new("replica", &primary)
    };
    ws.write_registry(&notify_every_channel(&rx), &[spec]);
    ws.prepend_registry(RECORDER_EVERY_SECOND);
    let addr = with_server(&ws, None);
    let d = Daemon::run(&ws, &[]);
    d.wait_event("api_listening", None, LONG);
    let lag = |v: &Value| v["replay_lag_seconds"].as_f64();
    let first = wait_for(LONG, "a replay lag in /status", || {
        vitals(&addr, "replica").filter(|v| lag(v).is_some())
    });
    std::thread::sleep(Duration::from_secs(4));
    let later = vitals(&addr, "replica").unwrap();
    let (a, b) = (lag(&first).unwrap(), lag(&later).unwrap());
    println!("replay lag while paused: {a:.1} s, then {b:.1} s");
    assert!(
        b >= a + 2.0,
        "the lag grows with time: {first} then {later}"
    );
    assert_eq!(
        d.count("incident_declared", None),
        0,
        "a standby is not a failure"
    );
    standby.stop_quietly();
    rx.assert_all_well_formed();
}

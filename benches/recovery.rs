//! Recovery benchmark: how fast a crashed PostgreSQL is detected and back, next to the floor
//! (the same cluster restarted by a bare script), and what watching costs in memory and CPU.
//! Run through `scripts/bench.sh`. Prints figures; asserts nothing about time.
//!
//! Knobs (environment): BENCH_RUNS (5), BENCH_WINDOW (seconds of each resource sample, 60),
//! BENCH_TARGETS ("1,10,50"), BENCH_DOCKER (1: also the container section, with and without
//! the Docker events fast path; 0 skips it), BENCH_RECOVERY and BENCH_HANG (1; 0 skips the
//! crash or the hung-server section), BENCH_DISCOVER (50: labelled containers found by
//! discovery, its time and the daemon's memory; 0 skips it), BENCH_PROBE_TARGETS (targets of
//! each probe cost row, "1000"; 0 skips the section), BENCH_ARCHIVE_MIB (4: the server log
//! a killed container's archive copies), BENCH_TAKEOVER_RUNS (10: daemon SIGKILLs per TTL in
//! the containerized cluster takeover section; 0 skips it), BENCH_CLUSTER_TARGETS (300: targets
//! of the cluster load sections; 0 skips them), BENCH_CLUSTER (1; 0 skips the bare-process
//! cluster section), BENCH_CLUSTER_RUNS (10: its takeovers per TTL and postmaster kills during a
//! takeover), BENCH_CLUSTER_WINDOW (20 s), BENCH_TLS_TARGETS (50: targets of the TLS cost
//! rows, run with `probe` or alone as `tls`; 0 skips), BENCH_TLS_WINDOW (20 s), BENCH_ONLY (a
//! comma list of sections: recovery, hang, containers, archive, floor, resources, probe, tls,
//! discovery, takeover, cluster-load, cluster, cluster-scale, recorder), BENCH_FLOOR_RUNS (10:
//! kills per way in the floor section), BENCH_SCALE_TARGETS (10000: targets shared by the 3
//! daemons of the cluster-scale section, 0 skips it), BENCH_SCALE_SERVERS (3),
//! BENCH_SCALE_INTERVAL (10 s), BENCH_SCALE_TTL (5 s), BENCH_SCALE_WINDOW (30 s),
//! BENCH_RECORDER_TARGETS (1000: targets of the flight recorder's cost rows, section
//! `recorder`; 0 skips), BENCH_RECORDER_INTERVAL (1s: their probe interval).

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "recovery/cluster.rs"]
mod cluster;
#[path = "recovery/cluster_bare.rs"]
mod cluster_bare;
#[path = "recovery/cluster_scale.rs"]
mod cluster_scale;
#[path = "recovery/floor.rs"]
mod floor;
#[path = "recovery/recorder.rs"]
mod recorder;
#[path = "recovery/tls.rs"]
mod tls;

use chrono::{DateTime, Utc};
use sentinel_remedy::pgcluster::Cluster;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{ts, Daemon, Pg, TargetSpec, Workspace};

const LONG: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Kill9,
    ImmediateStop,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill -9",
            Fault::ImmediateStop => "stop -m immediate",
        }
    }

    /// Injects the fault; returns the wall-clock time it happened. The postmaster is reaped
    /// at once if it is our child (we are a subreaper, as a good init would be).
    fn inject(self, pg: &Pg) -> DateTime<Utc> {
        let pid = pg.pid();
        let at = Utc::now();
        match self {
            // SAFETY: the postmaster of our own cluster.
            Fault::Kill9 => unsafe {
                libc::kill(pid, libc::SIGKILL);
            },
            // --no-wait: a supervisor may restart the server before pg_ctl would see it gone.
            Fault::ImmediateStop => pg
                .cluster
                .stop_nowait("immediate")
                .expect("pg_ctl stop -m immediate"),
        }
        // SAFETY: waitpid on one pid; ECHILD at once when it is not our child.
        std::thread::spawn(move || unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) });
        at
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn env_num(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The floor: a script that starts the server again as soon as it can, no supervisor, no
/// probe. Retries `pg_ctl start` the way any restart script must right after a crash.
fn floor_once(pg: &Pg, fault: Fault) -> f64 {
    let t0 = Instant::now();
    fault.inject(pg);
    loop {
        if pg.cluster.start().is_ok() && pg.answers() {
            return t0.elapsed().as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            t0.elapsed() < LONG,
            "the floor script could not restart the cluster"
        );
    }
}

/// The `n`-th incident of target "bench": (seconds to detect, seconds to recover) from `at`.
fn incident_times(d: &Daemon, n: usize, at: DateTime<Utc>) -> (f64, f64) {
    let declared = d
        .wait_events("incident_declared", Some("bench"), n, LONG)
        .pop()
        .expect("declared");
    let recovered = d
        .wait_events("target_recovered", Some("bench"), n, LONG)
        .pop()
        .expect("recovered");
    let secs = |t: DateTime<Utc>| (t - at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    (secs(ts(&declared)), secs(ts(&recovered)))
}

/// One supervised incident: (seconds to detect, seconds to recover), from the fault.
fn supervised_once(d: &Daemon, pg: &Pg, fault: Fault, n: usize) -> (f64, f64) {
    let at = fault.inject(pg);
    let out = incident_times(d, n, at);
    // Let the target settle back into its healthy cadence before the next fault.
    support::wait_for(LONG, "answers again", || pg.answers().then_some(()));
    std::thread::sleep(Duration::from_millis(1500));
    out
}

fn recovery_section(runs: usize) {
    let pg = Pg::start();
    // The floor on this host as it is: the killed postmaster is reaped by the host's init.
    let mut init_floor: Vec<f64> = (0..runs).map(|_| floor_once(&pg, Fault::Kill9)).collect();
    let init_floor = median(&mut init_floor);
    // From here on the bench adopts the servers its scripts start and reaps them at once, as
    // the daemon does with the servers it restarts.
    sentinel_remedy::reaper::become_subreaper().expect("PR_SET_CHILD_SUBREAPER");
    pg.cluster.stop("fast").expect("stop");
    pg.cluster.start().expect("start adopted");
    println!("\n## Recovery (interval 1s, threshold 3, restart backoff off, median of {runs})\n");
    println!(
        "Floor with this host's init reaping the dead postmaster (kill -9): {init_floor:.3} s."
    );
    println!(
        "Below, the floor is a bare restart script whose dead postmaster is reaped at once.\n"
    );
    println!("| fault | floor (script restart) | pid watch | detect | recover | recover - floor | goal |");
    println!("|---|---|---|---|---|---|---|");
    for fault in [Fault::Kill9, Fault::ImmediateStop] {
        let mut floor: Vec<f64> = (0..runs).map(|_| floor_once(&pg, fault)).collect();
        let floor = median(&mut floor);
        for pid_watch in [true, false] {
            let ws = Workspace::new();
            ws.write_registry(
                "  console: false\n",
                &[TargetSpec {
                    interval: "1s",
                    timeout: "1s",
                    threshold: 3,
                    pid_watch,
                    max_restarts: 1000,
                    // Five crashes in a row: restart backoff off, so each one measures a first
                    // restart (by default a second restart within 10 min waits 10 s on purpose).
                    budget_extra: ", backoff: 0s",
                    ..TargetSpec::new("bench", &pg)
                }],
            );
            let d = Daemon::run(&ws, &[]);
            d.wait_event("probe_ok", Some("bench"), LONG);
            std::thread::sleep(Duration::from_millis(1200));
            let (mut det, mut rec): (Vec<f64>, Vec<f64>) = (1..=runs)
                .map(|n| supervised_once(&d, &pg, fault, n))
                .unzip();
            let (det, rec) = (median(&mut det), median(&mut rec));
            let allowance = if pid_watch { 0.5 } else { 0.5 + 3.0 };
            let goal = if rec - floor <= allowance {
                "met"
            } else {
                "MISSED"
            };
            println!("| {} | {floor:.3} s | {} | {det:.3} s | {rec:.3} s | {:+.3} s | within {allowance:.1} s: {goal} |",
                fault.label(), if pid_watch { "on" } else { "off" }, rec - floor);
            drop(d);
        }
    }
}

/// A container killed (or paused) and brought back: the daemon with the Docker events fast path
/// against the same daemon polling only.
fn container_section(runs: usize) {
    use support::docker::{docker, PgContainer};
    let c = PgContainer::start("bench", None);
    // Floor: `docker kill` then `docker start` by a script, until SQL answers.
    let mut floor: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            docker(&["kill", &c.name]);
            docker(&["start", &c.name]);
            while !c.answers() {
                std::thread::sleep(Duration::from_millis(20));
            }
            t0.elapsed().as_secs_f64()
        })
        .collect();
    let floor = median(&mut floor);
    println!("\n## Containers (interval 1s, timeout 1s, threshold 3, restart backoff off, median of {runs})\n");
    println!(
        "Floor: `docker kill` then `docker start` by a script, until SQL answers: {floor:.3} s.\n"
    );
    println!("| fault | Docker events | detect | recover | recover - floor |");
    println!("|---|---|---|---|---|");
    for (fault, verb) in [("docker kill", "kill"), ("docker pause", "pause")] {
        for events in [true, false] {
            let ws = Workspace::new();
            let text = format!(
                "docker:\n  events: {events}\narchive:\n{}notify:\n  console: false\ntargets:\n  - name: bench\n    dsn: \"{}\"\n    probe: {{ interval: 1s, timeout: 1s, failure_threshold: 3 }}\n    restart_budget: {{ max_restarts: 1000, backoff: 0s }}\n    heal:\n      docker: {{ container: {}, stop_timeout: 1s }}\n    forensics:\n      docker: {{ paths: [/var/lib/postgresql/data/log] }}\n",
                ws.local_archive(),
                c.dsn(),
                c.name
            );
            std::fs::write(ws.config(), text).expect("registry");
            let d = Daemon::run(&ws, &[]);
            d.wait_event("probe_ok", Some("bench"), LONG);
            let (mut det, mut rec): (Vec<f64>, Vec<f64>) = (1..=runs)
                .map(|n| {
                    std::thread::sleep(Duration::from_millis(1300));
                    let at = Utc::now();
                    docker(&[verb, &c.name]);
                    let times = incident_times(&d, n, at);
                    support::wait_for(LONG, "answers again", || c.answers().then_some(()));
                    times
                })
                .unzip();
            let (det, rec) = (median(&mut det), median(&mut rec));
            println!(
                "| {fault} | {} | {det:.3} s | {rec:.3} s | {:+.3} s |",
                if events { "on" } else { "off (polling)" },
                rec - floor
            );
        }
    }
}

/// The `q` quantile (0..=1) of `v`, nearest rank.
fn nearest_rank(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Seconds from `t0` until `SELECT 1` first answers on a new connection. A new attempt starts
/// every 20 ms on its own thread: an attempt made while the container is not yet on its network
/// hangs in the Engine's port proxy (its SYN is retried after 1 s), and must not hide the moment
/// the server answers.
fn first_answer(c: &support::docker::PgContainer, t0: Instant) -> f64 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| loop {
        let tx = tx.clone();
        s.spawn(move || {
            if c.answers() {
                let _ = tx.send(Instant::now());
            }
        });
        if let Ok(at) = rx.recv_timeout(Duration::from_millis(20)) {
            return (at - t0).as_secs_f64();
        }
        assert!(t0.elapsed() < LONG, "the container did not come back");
    })
}

/// A killed container's evidence (its log tail, a server log of BENCH_ARCHIVE_MIB in the data
/// directory's log dir and two configuration files): how long the archive takes (the daemon's
/// `archive_written` duration, from the request to the durable manifest), and kill → `SELECT 1`
/// on a new connection (polled the same way for both), next to the script floor on the same
/// container.
fn archive_section(runs: usize) {
    use support::docker::{docker, PgContainer};
    let c = PgContainer::start("archive", None);
    let mib = env_num("BENCH_ARCHIVE_MIB", 4);
    // base64 of 3 bytes is 4 characters: `mib` MiB of printable lines.
    docker(&[
        "exec",
        "-u",
        "postgres",
        &c.name,
        "sh",
        "-c",
        &format!(
            "head -c {} /dev/urandom | base64 -w 120 >> /var/lib/postgresql/data/log/postgresql.log",
            (mib << 20) * 3 / 4
        ),
    ]);
    let answered = |t0: Instant| first_answer(&c, t0);
    let mut floor: Vec<f64> = (0..runs)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(1300));
            let t0 = Instant::now();
            docker(&["kill", &c.name]);
            docker(&["start", &c.name]);
            answered(t0)
        })
        .collect();
    // The same script with `SELECT 1` polled while the container is down, as it is after the
    // daemon's kill: attempts made then slow the first answer (the Engine's port proxy).
    let mut floor_polled: Vec<f64> = (0..runs)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(1300));
            let t0 = Instant::now();
            docker(&["kill", &c.name]);
            std::thread::scope(|s| {
                s.spawn(|| docker(&["start", &c.name]));
                answered(t0)
            })
        })
        .collect();
    let ws = Workspace::new();
    let text = format!(
        "docker:\n  events: true\narchive:\n{}notify:\n  console: false\ntargets:\n  - name: bench\n    dsn: \"{}\"\n    probe: {{ interval: 1s, timeout: 1s, failure_threshold: 3 }}\n    restart_budget: {{ max_restarts: 1000, backoff: 0s }}\n    heal:\n      docker: {{ container: {}, stop_timeout: 1s }}\n    forensics:\n      docker: {{ paths: [/var/lib/postgresql/data/log, /var/lib/postgresql/data/pg_hba.conf, /var/lib/postgresql/data/postgresql.conf] }}\n",
        ws.local_archive(),
        c.dsn(),
        c.name
    );
    std::fs::write(ws.config(), text).expect("registry");
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("bench"), LONG);
    let (mut healed, mut archive): (Vec<f64>, Vec<f64>) = (1..=runs)
        .map(|n| {
            std::thread::sleep(Duration::from_millis(1300));
            let t0 = Instant::now();
            docker(&["kill", &c.name]);
            let back = answered(t0);
            let written = d
                .wait_events("archive_written", Some("bench"), n, LONG)
                .pop()
                .expect("archive written");
            d.wait_events("target_recovered", Some("bench"), n, LONG);
            let ms = written["duration_ms"].as_f64().unwrap_or(f64::NAN);
            (back, ms / 1000.0)
        })
        .unzip();
    let row = |what: &str, v: &mut Vec<f64>| {
        let (p50, p95) = (nearest_rank(v, 0.5), nearest_rank(v, 0.95));
        println!("| {what} | {p50:.3} s | {p95:.3} s |");
        p50
    };
    println!("\n## Container evidence archive ({mib} MiB server log + 2 config files + log tail; interval 1s, threshold 3, Docker events on; median and p95 of {runs})\n");
    println!("| | median | p95 |\n|---|---|---|");
    row("archive (request to durable manifest)", &mut archive);
    let f = row(
        "kill → `SELECT 1`, script floor (`docker kill`; `docker start`)",
        &mut floor,
    );
    let fp = row(
        "kill → `SELECT 1`, script floor, polled from the kill on (as for sentinel-remedy)",
        &mut floor_polled,
    );
    let h = row(
        "kill → `SELECT 1`, sentinel-remedy (archive, then restart)",
        &mut healed,
    );
    println!("\nsentinel-remedy − floor (medians): {:+.3} s", h - f);
    println!(
        "sentinel-remedy − floor polled the same way (medians): {:+.3} s",
        h - fp
    );
    // Where the container's paths were read (its volume on the host, or the Engine's archive
    // endpoint), and how long that took within the archive.
    let timings = d.events("archive_timing", None);
    let mut sources: Vec<String> = timings
        .iter()
        .map(|t| t["container_source"].as_str().unwrap_or("?").to_string())
        .collect();
    sources.dedup();
    let mut copy: Vec<f64> = timings
        .iter()
        .filter_map(|t| t["container_ms"].as_f64())
        .map(|ms| ms / 1000.0)
        .collect();
    println!(
        "container evidence (log tail + paths) read from {}: median {:.3} s, p95 {:.3} s",
        sources.join(", "),
        nearest_rank(&mut copy, 0.5),
        nearest_rank(&mut copy, 0.95)
    );
}

/// Pids whose parent is `parent`.
fn children(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s[s.rfind(')')? + 1..]
                        .split_whitespace()
                        .nth(1)?
                        .parse::<i32>()
                        .ok()
                })
                == Some(parent)
        })
        .collect()
}

/// A hung server: the postmaster and its backends SIGSTOPped (every pid lives, nothing
/// answers, not even the connection the probe keeps), until `SELECT 1` on a new connection
/// answers again. (seconds to detect, seconds to `SELECT 1`), from the fault.
fn hung_once(d: &Daemon, pg: &Pg, n: usize) -> (f64, f64) {
    let old = pg.pid();
    let at = Utc::now();
    let t0 = Instant::now();
    for pid in std::iter::once(old).chain(children(old)) {
        // SAFETY: our own cluster's postmaster and its children.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
    }
    // SAFETY: waitpid on one pid; ECHILD at once when it is not our child.
    std::thread::spawn(move || unsafe { libc::waitpid(old, std::ptr::null_mut(), 0) });
    // psql would wait forever on the stopped server: ask only once another postmaster runs.
    support::wait_for(LONG * 2, "a new postmaster", || {
        pg.cluster.postmaster_pid().filter(|p| *p != old)
    });
    support::wait_for(LONG, "SELECT 1", || pg.answers().then_some(()));
    let answered = t0.elapsed().as_secs_f64();
    let declared = d
        .wait_events("incident_declared", Some("bench"), n, LONG)
        .pop()
        .expect("declared");
    let detect = (ts(&declared) - at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    d.wait_events("target_recovered", Some("bench"), n, LONG);
    (detect, answered)
}

fn hang_section(runs: usize) {
    let pg = Pg::start();
    println!("\n## Hung server (SIGSTOP of the postmaster and its backends; stop timeout 10 s, median of {runs})\n");
    println!("Time from the SIGSTOP to `SELECT 1` answering on a new connection. Goal: probe timeout × threshold + stop timeout + 1 s.\n");
    println!("| probe (interval / timeout / threshold) | detect | `SELECT 1` again | goal | first failing probe → `SELECT 1` |");
    println!("|---|---|---|---|---|");
    for (interval, timeout, secs) in [("30s", "5s", 5.0), ("1s", "1s", 1.0)] {
        let ws = Workspace::new();
        ws.write_registry(
            "  console: false\n",
            &[TargetSpec {
                interval,
                timeout,
                threshold: 3,
                max_restarts: 1000,
                budget_extra: ", backoff: 0s",
                ..TargetSpec::new("bench", &pg)
            }],
        );
        let d = Daemon::run(&ws, &[]);
        d.wait_event("probe_ok", Some("bench"), LONG);
        let mut first_to_ok = Vec::new();
        let (mut det, mut ok): (Vec<f64>, Vec<f64>) = (1..=runs)
            .map(|n| {
                std::thread::sleep(Duration::from_millis(1300));
                let before = d.count("probe_failed", Some("bench"));
                let t = Utc::now();
                let out = hung_once(&d, &pg, n);
                let first = d.events("probe_failed", Some("bench"))[before].clone();
                // The first failing probe started one probe timeout before it failed.
                let lag = (ts(&first) - t).num_microseconds().unwrap_or(0) as f64 / 1e6 - secs;
                first_to_ok.push(out.1 - lag);
                out
            })
            .unzip();
        let (det, ok, from_first) = (median(&mut det), median(&mut ok), median(&mut first_to_ok));
        let goal = secs * 3.0 + 10.0 + 1.0;
        println!(
            "| {interval} / {timeout} / 3 | {det:.3} s | {ok:.3} s | {goal:.0} s: {} | {from_first:.3} s |",
            if ok <= goal { "met" } else { "MISSED" }
        );
        drop(d);
    }
}

/// utime+stime of a process in clock ticks, and its resident set in KiB.
fn proc_usage(pid: i32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

fn resource_section(counts: &[usize], window: Duration) {
    // A few clusters shared by all targets: the daemon's cost does not depend on which server
    // a connection goes to.
    let clusters: Vec<Pg> = (0..5).map(|_| Pg::start()).collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!("\n## Cost of watching healthy targets (interval 1s, pid watch on, log level info, {} s window)\n", window.as_secs());
    println!("| targets | resident memory | CPU (% of one core) | CPU seconds per minute | goal (< 15 MiB, < 0.5 %) |");
    println!("|---|---|---|---|---|");
    for &n in counts {
        let ws = Workspace::new();
        let names: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
        let specs: Vec<TargetSpec> = names
            .iter()
            .enumerate()
            .map(|(i, name)| TargetSpec {
                interval: "1s",
                ..TargetSpec::new(name, &clusters[i % clusters.len()])
            })
            .collect();
        ws.write_registry("  console: false\n", &specs);
        let mut cmd = Command::new(support::bin());
        cmd.args(["--log-format", "json", "run", "--config"])
            .arg(ws.config())
            .arg("--state-dir")
            .arg(ws.state());
        let d = Daemon::spawn(cmd, &[("SENTINEL_LOG_LEVEL", "info")]);
        d.wait_events("monitor_started", None, n, LONG);
        std::thread::sleep(Duration::from_secs(5)); // connections made, allocator warmed up
        let (t0, _) = proc_usage(d.pid());
        let start = Instant::now();
        std::thread::sleep(window);
        let (t1, rss) = proc_usage(d.pid());
        let cpu_s = (t1 - t0) as f64 / hz;
        let share = cpu_s / start.elapsed().as_secs_f64() * 100.0;
        let mib = rss as f64 / 1024.0;
        let goal = if mib < 15.0 && share < 0.5 {
            "met"
        } else {
            "MISSED"
        };
        println!(
            "| {n} | {mib:.1} MiB | {share:.3} % | {:.3} | {goal} |",
            cpu_s * 60.0 / start.elapsed().as_secs_f64()
        );
        assert_eq!(
            d.count("probe_failed", None),
            0,
            "targets stayed healthy during the sample"
        );
    }
    drop(clusters);
}

/// Discovery of `n` labelled containers (the project's PostgreSQL image, minimal settings, no
/// published port): how long until every one is a target, how long a container added later
/// takes, and what the daemon costs while watching them.
fn discovery_section(n: usize, window: Duration) {
    use support::docker::{docker, postgres_image, remove};
    let ns = format!("srbench{:06x}", rand::random::<u32>() & 0xffffff);
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    let run = |i: usize| -> String {
        let name = format!("sr-bench-disc-{}-{i:03}", std::process::id());
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--restart=no",
            "--label",
            "org.sentinel-remedy.test=1",
            "--label",
            &format!("{ns}.enable=true"),
            "--label",
            &format!("{ns}.credentials=bench"),
            "-e",
            &format!("POSTGRES_PASSWORD={pw}"),
            postgres_image(),
            "postgres",
            "-c",
            "shared_buffers=128kB",
            "-c",
            "max_connections=5",
            "-c",
            "fsync=off",
            "-c",
            "max_wal_senders=0",
            "-c",
            "autovacuum=off",
        ]);
        name
    };
    let names: Vec<String> = std::thread::scope(|s| {
        let chunks: Vec<Vec<usize>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(8)
            .map(<[usize]>::to_vec)
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|c| s.spawn(move || c.into_iter().map(run).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("docker run"))
            .collect()
    });
    // Discovery waits for a server to accept connections (initdb first); so does the bench.
    let accepts = |name: &str| {
        let ip = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            name,
        ]);
        std::net::TcpStream::connect_timeout(
            &format!("{ip}:5432").parse().expect("address"),
            Duration::from_millis(500),
        )
        .is_ok()
    };
    for name in &names {
        support::wait_for(Duration::from_secs(900), "the container's server", || {
            accepts(name).then_some(())
        });
    }
    let ws = Workspace::new();
    let addr = format!(
        "127.0.0.1:{}",
        sentinel_remedy::pgcluster::free_port().expect("port")
    );
    let text = format!(
        "server: {{ listen: \"{addr}\" }}\ndiscovery:\n  docker: {{ namespace: {ns}, credentials: {{ bench: {{ user: postgres, password_env: BENCH_PW }} }} }}\ndefaults:\n  probe: {{ interval: 1s, timeout: 2s, failure_threshold: 60 }}\narchive:\n{}notify:\n  console: false\n",
        ws.local_archive()
    );
    std::fs::write(ws.config(), text).expect("registry");
    let status = || -> Vec<serde_json::Value> {
        support::http::get(&addr, "/status").json()["targets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let mut cmd = Command::new(support::bin());
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(ws.config())
        .arg("--state-dir")
        .arg(ws.state());
    let t0 = Instant::now();
    let d = Daemon::spawn(cmd, &[("SENTINEL_LOG_LEVEL", "info"), ("BENCH_PW", &pw)]);
    d.wait_event("api_listening", None, LONG);
    support::wait_for(LONG, "every container a target", || {
        (status().len() == n).then_some(())
    });
    let found = t0.elapsed().as_secs_f64();
    let started = d.events("discovery_started", None);
    let applied = d.events("discovery_applied", None);
    let listing = match (started.first(), applied.first()) {
        (Some(a), Some(b)) => (ts(b) - ts(a)).num_milliseconds() as f64 / 1000.0,
        _ => f64::NAN,
    };
    support::wait_for(Duration::from_secs(600), "every target answering", || {
        status().iter().all(|t| t["up"] == true).then_some(())
    });
    let all_up = t0.elapsed().as_secs_f64();
    // One more while it runs.
    let extra = run(n);
    support::wait_for(LONG, "the added container's server", || {
        accepts(&extra).then_some(())
    });
    let t1 = Instant::now();
    support::wait_for(LONG, "the added container a target", || {
        (status().len() == n + 1).then_some(())
    });
    let added = t1.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(5));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (c0, _) = proc_usage(d.pid());
    let w0 = Instant::now();
    std::thread::sleep(window);
    let (c1, rss) = proc_usage(d.pid());
    let share = (c1 - c0) as f64 / hz / w0.elapsed().as_secs_f64() * 100.0;
    println!("\n## Discovery of {n} labelled containers (no published ports, interval 1s, {} s window)\n", window.as_secs());
    println!("| containers | first listing to targets | daemon start to {n} targets | to all answering | one added (server ready) until a target | resident memory | CPU (% of one core) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {listing:.3} s | {found:.3} s | {all_up:.1} s | {added:.3} s | {:.1} MiB | {share:.3} % |",
        rss as f64 / 1024.0
    );
    drop(d);
    let all: Vec<&String> = names.iter().chain([&extra]).collect();
    std::thread::scope(|s| {
        for chunk in all.chunks(8) {
            s.spawn(move || chunk.iter().for_each(|c| remove(c)));
        }
    });
}

/// CPU ticks of a cluster: its postmaster and live children, plus the children that already
/// exited (the postmaster's cutime+cstime), so short-lived probe backends are counted.
fn cluster_ticks(pg: &Pg) -> u64 {
    let fields = |pid: i32| -> Option<Vec<String>> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 2..];
        Some(after.split_whitespace().map(str::to_string).collect())
    };
    let num = |f: &[String], i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let pm = pg.pid();
    let Some(f) = fields(pm) else { return 0 };
    // After the ")": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let mut ticks = num(&f, 11) + num(&f, 12) + num(&f, 13) + num(&f, 14);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(f) = fields(pid) {
            if f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(pm) {
                ticks += num(&f, 11) + num(&f, 12);
            }
        }
    }
    ticks
}

/// Cumulative buckets (upper bound, count) of the fleet-wide probe lateness histogram.
fn lateness_buckets(addr: &str) -> Vec<(f64, f64)> {
    let text = support::http::get(addr, "/metrics").body;
    text.lines()
        .filter_map(|l| l.strip_prefix("sentinel_probe_lateness_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, rest) = l.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect()
}

/// The q-quantile of the observations between two readings of the histogram, interpolated
/// linearly inside its bucket (as Prometheus' histogram_quantile does).
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let d: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - b)
        })
        .collect();
    let total = d.last().map_or(0.0, |(_, n)| *n);
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, n) in d {
        if n >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let span = n - prev.1;
            let frac = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                0.0
            };
            return prev.0 + (le - prev.0) * frac;
        }
        prev = (le, n);
    }
    f64::NAN
}

/// The probe cost table's title and header.
fn probe_cost_header(window: Duration) {
    println!("\n## Probe cost (healthy scram-sha-256 targets on 4 clusters, interval 1s, a new login per probe, {} s window)\n", window.as_secs());
    println!("Lateness: how long after its due time (previous probe's end + interval) each probe started, from the daemon's `sentinel_probe_lateness_seconds` histogram (read before and after the window, interpolated in its bucket). Servers' CPU: every process of the clusters, exited probe backends included (the postmasters' cutime+cstime); in brackets, per login. The daemon's CPU per probe is in brackets too.\n");
    println!("| targets | probes/s | daemon CPU, % of one core (per probe) | RSS (peak) | lateness p50 | lateness p99 | servers' CPU, % of one core (per login) | host load (1 min) | goal (8 %, 48 MiB, p99 50 ms) |");
    println!("|---|---|---|---|---|---|---|---|---|");
}

/// Probe cost: `n` healthy targets on scram-sha-256 clusters, each probe a new login, for
/// `window`: the daemon's CPU and memory, how late probes start, and the servers' CPU.
fn probe_cost_section(n: usize, window: Duration) {
    const CLUSTERS: usize = 4;
    let clusters: Vec<Pg> = (0..CLUSTERS).map(|_| Pg::start()).collect();
    for pg in &clusters {
        // Room for the daemon's logins next to anything else (a probe session lives a few ms).
        pg.psql("ALTER SYSTEM SET max_connections = 200");
        pg.cluster.stop("fast").expect("stop");
        pg.cluster.start().expect("start");
    }
    let dsns: Vec<String> = (0..n)
        .map(|i| {
            let c = &clusters[i % CLUSTERS].cluster;
            format!("{}?application_name=bench-{i:04}", c.dsn())
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("p{i:04}")).collect();
    let specs: Vec<TargetSpec> = (0..n)
        .map(|i| TargetSpec {
            interval: "1s",
            timeout: "5s",
            dsn: Some(&dsns[i]),
            ..TargetSpec::new(&names[i], &clusters[i % CLUSTERS])
        })
        .collect();
    let ws = Workspace::new();
    ws.write_registry("  console: false\n", &specs);
    let addr = format!(
        "127.0.0.1:{}",
        sentinel_remedy::pgcluster::free_port().expect("port")
    );
    let text = std::fs::read_to_string(ws.config()).expect("registry");
    std::fs::write(
        ws.config(),
        format!("server: {{ listen: \"{addr}\" }}\n{text}"),
    )
    .expect("registry");
    let mut cmd = Command::new(support::bin());
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(ws.config())
        .arg("--state-dir")
        .arg(ws.state());
    let d = Daemon::spawn(cmd, &[("SENTINEL_LOG_LEVEL", "info")]);
    d.wait_events("monitor_started", None, n, LONG);
    // Every target probed a few times: SCRAM keys derived, allocator warmed up.
    std::thread::sleep(Duration::from_secs(10));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, _) = proc_usage(d.pid());
    let s0: u64 = clusters.iter().map(cluster_ticks).sum();
    let l0 = lateness_buckets(&addr);
    let start = Instant::now();
    let mut peak_kib = 0;
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1));
        peak_kib = peak_kib.max(proc_usage(d.pid()).1);
    }
    let (t1, rss) = proc_usage(d.pid());
    let s1: u64 = clusters.iter().map(cluster_ticks).sum();
    let l1 = lateness_buckets(&addr);
    let secs = start.elapsed().as_secs_f64();
    let cpu = (t1 - t0) as f64 / hz / secs * 100.0;
    let server = (s1 - s0) as f64 / hz / secs * 100.0;
    let probes = l1.last().map_or(0.0, |(_, c)| *c) - l0.last().map_or(0.0, |(_, c)| *c);
    let (p50, p99) = (
        quantile(&l0, &l1, 0.5) * 1e3,
        quantile(&l0, &l1, 0.99) * 1e3,
    );
    let (mib, peak) = (rss as f64 / 1024.0, peak_kib as f64 / 1024.0);
    let goal = if cpu <= 8.0 && peak <= 48.0 && p99 <= 50.0 {
        "met"
    } else {
        "MISSED"
    };
    // Lateness on a shared host says as much about the host as about the daemon.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let per_probe_us = (t1 - t0) as f64 / hz / probes.max(1.0) * 1e6;
    let server_per_login_ms = (s1 - s0) as f64 / hz / probes.max(1.0) * 1e3;
    println!(
        "| {n} | {:.0} | {cpu:.2} % ({per_probe_us:.0} µs) | {mib:.1} MiB ({peak:.1}) | {p50:.1} ms | {p99:.1} ms | {server:.1} % ({server_per_login_ms:.2} ms) | {load} | {goal} |",
        probes / secs
    );
    let failed = d.count("probe_failed", None);
    if failed > 0 {
        println!(
            "\n{failed} probes failed during the sample (a loaded host): the figures include them."
        );
    }
    drop(d);
    drop(clusters);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful either.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs = env_num("BENCH_RUNS", 5) as usize;
    let window = Duration::from_secs(env_num("BENCH_WINDOW", 60));
    let counts: Vec<usize> = std::env::var("BENCH_TARGETS")
        .unwrap_or_else(|_| "1,10,50".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!("# sentinel-remedy recovery benchmark");
    println!(
        "PostgreSQL: {}",
        Cluster::version().unwrap_or_else(|_| "unknown".into())
    );
    let discover = env_num("BENCH_DISCOVER", 50) as usize;
    let probe_targets: Vec<usize> = std::env::var("BENCH_PROBE_TARGETS")
        .unwrap_or_else(|_| "1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    // BENCH_ONLY=probe,hang runs those sections only.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |s: &str| only.is_empty() || only.split(',').any(|o| o.trim() == s);
    if run("recovery") && env_num("BENCH_RECOVERY", 1) == 1 {
        recovery_section(runs);
    }
    if run("hang") && env_num("BENCH_HANG", 1) == 1 {
        hang_section(runs);
    }
    if run("containers") && env_num("BENCH_DOCKER", 1) == 1 {
        container_section(runs);
    }
    if run("archive") && env_num("BENCH_DOCKER", 1) == 1 {
        archive_section(runs);
    }
    if run("floor") && env_num("BENCH_DOCKER", 1) == 1 {
        floor::section(env_num("BENCH_FLOOR_RUNS", 10) as usize);
    }
    if run("resources") && !counts.is_empty() {
        resource_section(&counts, window);
    }
    if run("probe") && !probe_targets.is_empty() {
        probe_cost_header(window);
        for n in probe_targets {
            probe_cost_section(n, window);
        }
    }
    // TLS's cost per probe next to libpq's (BENCH_TLS_TARGETS, 50; 0 skips).
    let tls_targets = env_num("BENCH_TLS_TARGETS", 50) as usize;
    if (run("probe") || run("tls")) && tls_targets > 0 {
        tls::section(
            tls_targets,
            Duration::from_secs(env_num("BENCH_TLS_WINDOW", 20)),
        );
    }
    if run("discovery") && discover > 0 && env_num("BENCH_DOCKER", 1) == 1 {
        discovery_section(discover, window);
    }
    let takeovers = env_num("BENCH_TAKEOVER_RUNS", 10) as usize;
    if run("takeover") && takeovers > 0 && env_num("BENCH_DOCKER", 1) == 1 {
        cluster::takeover_section(takeovers);
    }
    let cluster_targets = env_num("BENCH_CLUSTER_TARGETS", 300) as usize;
    if run("cluster-load") && cluster_targets > 0 && env_num("BENCH_DOCKER", 1) == 1 {
        cluster::load_section(cluster_targets, window);
    }
    if run("cluster") && env_num("BENCH_CLUSTER", 1) == 1 {
        cluster_bare::section(env_num("BENCH_CLUSTER_RUNS", 10) as usize);
    }
    if run("cluster-scale") {
        cluster_scale::section();
    }
    let recorder_targets = env_num("BENCH_RECORDER_TARGETS", 1000) as usize;
    if run("recorder") && recorder_targets > 0 {
        let interval = std::env::var("BENCH_RECORDER_INTERVAL").unwrap_or_else(|_| "1s".into());
        recorder::section(recorder_targets, &interval, window);
    }
}

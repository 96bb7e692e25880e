//! The floor section (`BENCH_ONLY=floor`): a killed container, kill → `SELECT 1` on a new
//! connection through the published port, measured from outside and the same way for each way
//! of bringing it back, interleaved run by run in one session:
//!
//! - the script floor: `docker kill`, then `docker start` at once;
//! - the same script while a 100 ms prober (a new connection every 100 ms, as the daemon's
//!   probes during an incident) knocks on the port proxy;
//! - Docker's own restart policy (`--restart=always`), the main process SIGKILLed from the host
//!   (`docker kill` counts as a manual stop, which a policy never undoes);
//! - sentinel-remedy: Docker events on, the container's evidence archived before the start,
//!   restart backoff 1 s (back to 1 s after 5 s healthy: each kill is a first crash, not a
//!   crash loop, whose growing backoff would hold the restart);
//! - with BENCH_FLOOR_BASELINE=<another daemon binary>, the same daemon settings with that
//!   binary on its own container (before and after a change, in one session).
//!
//! The poll: a new connection and `SELECT 1` every 20 ms from the kill, each attempt its own task
//! (an attempt stuck in the port proxy must not hide the first answer). Then where the time goes,
//! from the kill: the Engine's `die` and `start` events (`docker events`, nanosecond times), the
//! daemon's log lines, and the server's "ready to accept connections" line (its log file).

use super::{median, LONG};
use crate::support::docker::{docker, PgContainer};
use crate::support::{ts, Daemon, Workspace};
use chrono::{DateTime, NaiveDateTime, Utc};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The ways of bringing the container back, in the order each run tries them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Way {
    Script,
    ScriptProbed,
    Policy,
    Daemon,
    /// The same with another daemon binary (BENCH_FLOOR_BASELINE): before and after a change,
    /// side by side.
    Baseline,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Script => "script: `docker kill`; `docker start`",
            Way::ScriptProbed => {
                "script, with a new connection every 100 ms (as the daemon's probes)"
            }
            Way::Policy => "Docker's restart policy (`always`; main process SIGKILLed)",
            Way::Daemon => "sentinel-remedy (events on, evidence archived first, backoff 1 s)",
            Way::Baseline => "sentinel-remedy, BENCH_FLOOR_BASELINE binary (same settings)",
        }
    }
}

/// The steps timed from the kill; the daemon's only for the daemon.
const STEPS: [(&str, &str); 9] = [
    ("die", "Engine: `die` event"),
    ("container_event", "daemon: die event received"),
    ("incident_declared", "daemon: incident declared"),
    ("archive_written", "daemon: archive written"),
    ("heal_issued", "daemon: heal issued"),
    ("start", "Engine: `start` event"),
    ("ready", "server: \"ready to accept connections\""),
    ("answer", "outside: first `SELECT 1`"),
    ("heal_attempt", "daemon: heal reports it answering"),
];

/// An Engine event: container name, action, time.
type Seen = (String, String, DateTime<Utc>);

/// `docker events` for some containers: each `die` and `start`.
struct EngineEvents {
    child: Child,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl EngineEvents {
    fn follow(names: &[&str]) -> Self {
        let mut cmd = Command::new("docker");
        cmd.args([
            "events",
            "--format",
            "{{json .}}",
            "--filter",
            "type=container",
        ]);
        for a in ["die", "start"] {
            cmd.args(["--filter", &format!("event={a}")]);
        }
        for n in names {
            cmd.args(["--filter", &format!("container={n}")]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker events");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (out, s) = (child.stdout.take().expect("stdout"), seen.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let name = v["Actor"]["Attributes"]["name"].as_str().unwrap_or("");
                let action = v["Action"].as_str().unwrap_or("");
                let nanos = v["timeNano"].as_i64().unwrap_or(0);
                let at = DateTime::from_timestamp_nanos(nanos);
                s.lock()
                    .unwrap()
                    .push((name.to_string(), action.to_string(), at));
            }
        });
        Self { child, seen }
    }

    /// The first `action` of container `name` at or after `since`, waited for up to 10 s.
    fn first(&self, name: &str, action: &str, since: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .find_map(|(n, a, t)| (n == name && a == action && *t >= since).then_some(*t));
            if found.is_some() || Instant::now() > end {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EngineEvents {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `SELECT 1` on a new connection; whether it answered.
async fn select1(cfg: tokio_postgres::Config) -> bool {
    let connect = cfg.connect(tokio_postgres::NoTls);
    let Ok(Ok((client, conn))) = tokio::time::timeout(Duration::from_secs(5), connect).await else {
        return false;
    };
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.is_ok()
}

fn pg_config(c: &PgContainer) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(c.port)
        .user("postgres")
        .password(c.password.as_str())
        .dbname("postgres");
    cfg
}

/// When `SELECT 1` first answers, trying every `every` from now on (each try its own task), on
/// a connection attempted once `down` was set (the server gone: an attempt made before the kill
/// took effect would time the old server); until `stop` is set, when given.
fn first_answer(
    c: &PgContainer,
    every: Duration,
    down: &AtomicBool,
    stop: Option<&AtomicBool>,
) -> Instant {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t0 = Instant::now();
    let cfg = pg_config(c);
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tries = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(at) = rx.recv() => return at,
                _ = tick.tick() => {
                    if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                        return Instant::now();
                    }
                    assert!(
                        t0.elapsed() < LONG,
                        "container {} did not come back: {}",
                        c.name,
                        c.inspect("{{.State.Status}} {{.State.StartedAt}} {{.RestartCount}}")
                    );
                    let (cfg, tx) = (cfg.clone(), tx.clone());
                    let after_kill = down.load(Ordering::SeqCst);
                    tries.spawn(async move {
                        if select1(cfg).await && after_kill {
                            let _ = tx.send(Instant::now());
                        }
                    });
                }
            }
        }
    })
}

/// When the server last said it was ready to accept connections, after `since` (its log file,
/// `%m` prefix in UTC).
fn ready_at(c: &PgContainer, since: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let out = docker(&[
        "exec",
        &c.name,
        "grep",
        "-h",
        "ready to accept connections",
        "/var/lib/postgresql/data/log/postgresql.log",
    ]);
    out.lines()
        .filter_map(|l| {
            let stamp = l.get(..23)?;
            NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.3f")
                .ok()
                .map(|t| t.and_utc())
        })
        .find(|t| *t >= since - chrono::Duration::milliseconds(1))
}

/// Seconds from `a` to `b`.
fn secs(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_microseconds().unwrap_or(0) as f64 / 1e6
}

/// One run's times, seconds from the kill, by step.
type Steps = BTreeMap<&'static str, f64>;

/// Kills the container the way `way` needs, brings it back that way (the daemon: on its own),
/// and times it from outside: (kill → first answer, steps).
fn once(way: Way, c: &PgContainer, ev: &EngineEvents) -> (f64, Steps) {
    let at = Utc::now();
    let t0 = Instant::now();
    let (done, down) = (AtomicBool::new(false), AtomicBool::new(false));
    let answer = std::thread::scope(|s| {
        // The server is gone once the Engine says the container died.
        s.spawn(|| {
            ev.first(&c.name, "die", at);
            down.store(true, Ordering::SeqCst);
        });
        match way {
            Way::Script | Way::ScriptProbed => {
                s.spawn(|| {
                    docker(&["kill", &c.name]);
                    docker(&["start", &c.name]);
                });
            }
            Way::Policy => {
                let pid: i32 = c.inspect("{{.State.Pid}}").parse().expect("container pid");
                // SAFETY: a pid the Engine reported for our own bench container.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            Way::Daemon | Way::Baseline => {
                s.spawn(|| docker(&["kill", &c.name]));
            }
        }
        if way == Way::ScriptProbed {
            s.spawn(|| first_answer(c, Duration::from_millis(100), &done, Some(&done)));
        }
        let answer = first_answer(c, Duration::from_millis(20), &down, None);
        done.store(true, Ordering::SeqCst);
        answer
    });
    let answer_at = at + chrono::Duration::from_std(answer - t0).unwrap_or_default();
    let mut steps = Steps::new();
    steps.insert("answer", secs(at, answer_at));
    for action in ["die", "start"] {
        if let Some(t) = ev.first(&c.name, action, at) {
            steps.insert(action, secs(at, t));
        }
    }
    if let Some(t) = ready_at(c, at) {
        steps.insert("ready", secs(at, t));
    }
    ((answer - t0).as_secs_f64(), steps)
}

/// The daemon's log lines of the run that started at `at`: seconds from `at`, by event.
fn daemon_steps(d: &Daemon, at: DateTime<Utc>, steps: &mut Steps) {
    d.wait_events("target_recovered", Some("bench"), 1, LONG);
    let deadline = Instant::now() + LONG;
    while d
        .events("target_recovered", Some("bench"))
        .iter()
        .all(|r| ts(r) < at)
    {
        assert!(
            Instant::now() < deadline,
            "no recovery logged after the kill"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (event, _) in STEPS {
        if let Some(r) = d
            .events(event, Some("bench"))
            .into_iter()
            .find(|r| ts(r) >= at)
        {
            steps.insert(event, secs(at, ts(&r)));
        }
    }
}

fn registry(ws: &Workspace, c: &PgContainer) -> String {
    format!(
        "docker:\n  events: true\narchive:\n{}notify:\n  console: false\ntargets:\n  - name: bench\n    dsn: \"{}\"\n    probe: {{ interval: 1s, timeout: 1s, failure_threshold: 3 }}\n    restart_budget: {{ max_restarts: 1000, backoff: 1s, backoff_reset: 5s }}\n    heal:\n      docker: {{ container: {}, stop_timeout: 1s }}\n    forensics:\n      docker: {{ paths: [/var/lib/postgresql/data/log, /var/lib/postgresql/data/pg_hba.conf, /var/lib/postgresql/data/postgresql.conf] }}\n",
        ws.local_archive(),
        c.dsn(),
        c.name
    )
}

/// A daemon watching container `c` as target "bench", run from `bin`.
fn watch(c: &PgContainer, bin: &str) -> (Workspace, Daemon) {
    let ws = Workspace::new();
    std::fs::write(ws.config(), registry(&ws, c)).expect("registry");
    let mut cmd = Command::new(bin);
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
    .arg(ws.state())
    .current_dir(ws.path());
    let d = Daemon::spawn(cmd, &[]);
    d.wait_event("probe_ok", Some("bench"), LONG);
    (ws, d)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

pub fn section(runs: usize) {
    let script = PgContainer::start("floor-script", None);
    let policy = PgContainer::start("floor-policy", Some("always"));
    let mut ways = vec![
        (Way::Script, &script, None),
        (Way::ScriptProbed, &script, None),
        (Way::Policy, &policy, None),
    ];
    let healed = PgContainer::start("floor-daemon", None);
    let daemon = watch(&healed, crate::support::bin());
    ways.push((Way::Daemon, &healed, Some(&daemon.1)));
    let baseline_bin = std::env::var("BENCH_FLOOR_BASELINE").ok();
    let old = baseline_bin
        .as_ref()
        .map(|_| PgContainer::start("floor-baseline", None));
    let baseline = baseline_bin
        .as_deref()
        .zip(old.as_ref())
        .map(|(bin, c)| watch(c, bin));
    if let Some((c, (_, d))) = old.as_ref().zip(baseline.as_ref()) {
        ways.push((Way::Baseline, c, Some(d)));
    }
    let names: Vec<&str> = ways.iter().map(|(_, c, _)| c.name.as_str()).collect();
    let ev = EngineEvents::follow(&names);
    let mut totals: BTreeMap<Way, Vec<f64>> = BTreeMap::new();
    let mut steps: BTreeMap<Way, Vec<Steps>> = BTreeMap::new();
    for _ in 0..runs {
        for &(way, c, d) in &ways {
            // Each container settles (its first checkpoint, the daemon's healthy cadence).
            std::thread::sleep(Duration::from_millis(1500));
            let at = Utc::now();
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let (total, mut s) = once(way, c, &ev);
                if let Some(d) = d {
                    daemon_steps(d, at, &mut s);
                }
                (total, s)
            }));
            let (total, s) = run.unwrap_or_else(|e| {
                if let Some(d) = d {
                    let log = d.log_text();
                    eprintln!(
                        "daemon log (tail):\n{}",
                        &log[log.len().saturating_sub(20_000)..]
                    );
                }
                std::panic::resume_unwind(e)
            });
            totals.entry(way).or_default().push(total);
            steps.entry(way).or_default().push(s);
        }
    }
    println!("\n## Kill → `SELECT 1`: script floor, Docker's restart policy, sentinel-remedy ({runs} runs each, interleaved; one outside poll: a new connection and `SELECT 1` every 20 ms from the kill)\n");
    println!("| | median | max | median − script |\n|---|---|---|---|");
    let floor = median(&mut totals[&Way::Script].clone());
    for &(way, _, _) in &ways {
        let v = &totals[&way];
        let m = median(&mut v.clone());
        println!(
            "| {} | {m:.3} s | {:.3} s | {:+.3} s |",
            way.label(),
            max(v),
            m - floor
        );
    }
    println!(
        "\nWhere the time goes (median seconds from the kill; — where the step does not apply):\n"
    );
    let heads = [
        "script",
        "script + 100 ms probes",
        "restart policy",
        "sentinel-remedy",
        "baseline binary",
    ];
    println!("| step | {} |", heads[..ways.len()].join(" | "));
    println!("|---|{}", "---|".repeat(ways.len()));
    for (key, label) in STEPS {
        let cells: Vec<String> = ways
            .iter()
            .map(|(w, _, _)| {
                let mut v: Vec<f64> = steps[w]
                    .iter()
                    .filter_map(|s| s.get(key).copied())
                    .collect();
                if v.is_empty() {
                    "—".to_string()
                } else {
                    format!("{:.3}", median(&mut v))
                }
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
}

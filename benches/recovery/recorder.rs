//! What issue 25's additions cost (section `recorder`): the flight recorder at `n` healthy
//! targets probed every second (4 clusters, targets told apart by application_name), the
//! daemon's CPU and memory with the recorder off, at its default cadence (a sample every
//! 10 s) and at every 1 s with a one-minute window (61 samples a target, the default ring's
//! size, full after a minute); and, on one server with pgbench, what the identity query's
//! extra column (`pg_postmaster_start_time()`) and the vitals query cost a round trip.

use super::support::{self, Daemon, Pg, TargetSpec, Workspace};
use super::{proc_usage, tls::pgbench, LONG};
use std::process::Command;
use std::time::{Duration, Instant};

const CLUSTERS: usize = 4;

/// One daemon run: (CPU % of one core, RSS KiB at the end, probes failed).
fn run(
    clusters: &[Pg],
    (n, interval): (usize, &str),
    recorder: &str,
    warm: Duration,
    window: Duration,
) -> (f64, u64, usize) {
    let dsns: Vec<String> = (0..n)
        .map(|i| {
            let c = &clusters[i % CLUSTERS].cluster;
            format!("{}?application_name=bench-{i:04}", c.dsn())
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("r{i:04}")).collect();
    let specs: Vec<TargetSpec> = (0..n)
        .map(|i| TargetSpec {
            interval,
            timeout: "5s",
            pid_watch: false,
            dsn: Some(&dsns[i]),
            ..TargetSpec::new(&names[i], &clusters[i % CLUSTERS])
        })
        .collect();
    let ws = Workspace::new();
    ws.write_registry("  console: false\n", &specs);
    ws.prepend_registry(&format!("defaults:\n  recorder: {recorder}\n"));
    let mut cmd = Command::new(support::bin());
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(ws.config())
        .arg("--state-dir")
        .arg(ws.state());
    let d = Daemon::spawn(cmd, &[("SENTINEL_LOG_LEVEL", "info")]);
    d.wait_events("monitor_started", None, n, LONG);
    std::thread::sleep(warm);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, _) = proc_usage(d.pid());
    let start = Instant::now();
    std::thread::sleep(window);
    let (t1, rss) = proc_usage(d.pid());
    let cpu = (t1 - t0) as f64 / hz / start.elapsed().as_secs_f64() * 100.0;
    (cpu, rss, d.count("probe_failed", None))
}

/// µs per run of `sql` (statements separated by `;`) for `secs`: over one kept pgbench
/// connection, or (`login`) each run on a new session as a probe is.
fn per_run(pg: &Pg, sql: &str, secs: u64, login: bool) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("q.sql");
    std::fs::write(&script, format!("{sql};\n")).expect("script");
    let (n, _) = pgbench(pg, &[], &script, secs, login);
    secs as f64 * 1e6 / n.max(1) as f64
}

/// The identity query before and after the start time joined it, and the vitals query.
fn query_costs(pg: &Pg) {
    println!("\n## Queries added to the probe (pgbench on loopback, 5 s per cell: a kept connection, and a new scram-sha-256 login per run with SELECT 1 first, as a probe)\n");
    println!("| query | µs per query, kept connection | µs per login with SELECT 1 and it |");
    println!("|---|---|---|");
    let rows = [
        ("SELECT 1 (the probe's own)", "SELECT 1".to_string()),
        (
            "identity before issue 25 (system_identifier)",
            "SELECT system_identifier FROM pg_control_system()".to_string(),
        ),
        (
            "identity now (+ pg_postmaster_start_time(), every probe)",
            sentinel_remedy::probe::identity::QUERY.to_string(),
        ),
        (
            "flight recorder vitals (every recorder.every)",
            sentinel_remedy::probe::vitals::QUERY.to_string(),
        ),
    ];
    for (label, sql) in rows {
        let kept = per_run(pg, &sql, 5, false);
        let with_probe = match sql.as_str() {
            "SELECT 1" => sql.clone(),
            _ => format!("SELECT 1;\n{sql}"),
        };
        let login = per_run(pg, &with_probe, 5, true);
        println!("| {label} | {kept:.1} | {login:.0} |");
    }
}

/// The recorder's rows at `n` targets probed every `interval`, `window` each, then the query
/// costs. A host whose servers cannot take `n` logins a second runs `n` at a longer interval:
/// more of the probes then carry the vitals query, so the share it adds is an upper bound.
pub fn section(n: usize, interval: &str, window: Duration) {
    let clusters: Vec<Pg> = (0..CLUSTERS).map(|_| Pg::start()).collect();
    for pg in &clusters {
        pg.psql("ALTER SYSTEM SET max_connections = 200");
        pg.cluster.stop("fast").expect("stop");
        pg.cluster.start().expect("start");
    }
    println!("\n## Flight recorder cost ({n} healthy targets on {CLUSTERS} clusters, interval {interval}, {} s window)\n", window.as_secs());
    println!("| recorder | daemon CPU, % of one core | vs off | RSS | per target vs off | probes failed |");
    println!("|---|---|---|---|---|---|");
    let rows = [
        ("off", "{ enabled: false }", Duration::from_secs(15)),
        (
            "default (every 10s, window 10m)",
            "{ }",
            Duration::from_secs(15),
        ),
        // 61 samples a target, as the default ring holds: full after a minute.
        (
            "every 1s, window 1m (ring full)",
            "{ every: 1s, window: 1m }",
            Duration::from_secs(70),
        ),
    ];
    let mut off: Option<(f64, u64)> = None;
    for (label, cfg, warm) in rows {
        let (cpu, rss, failed) = run(&clusters, (n, interval), cfg, warm, window);
        let (vs, per) = match off {
            None => ("–".to_string(), "–".to_string()),
            Some((c, r)) => (
                format!("{:+.1} %", (cpu / c - 1.0) * 100.0),
                format!("{:+.1} KiB", (rss as f64 - r as f64) / n as f64),
            ),
        };
        println!(
            "| {label} | {cpu:.2} % | {vs} | {:.1} MiB | {per} | {failed} |",
            rss as f64 / 1024.0
        );
        off.get_or_insert((cpu, rss));
    }
    println!("\nGoals: CPU at the default cadence within +10 % of off; at most 16 KiB per target (a full ring is {} samples of {} bytes).", 61, std::mem::size_of::<sentinel_remedy::flight::Sample>());
    query_costs(&clusters[0]);
}

//! What TLS costs a probe, side by side in one run on one server: the daemon's CPU per probe
//! (a new login each, SELECT 1, Terminate) with plain TCP, `sslmode=require` and
//! `verify-full`, next to libpq's (`pgbench -C`: a full login per transaction, the same
//! `SELECT 1`, the same settings). PostgreSQL's server turns off session tickets and its
//! session cache (be-secure-openssl.c), so every login is a full handshake for both clients.

use super::support::tls::{enable_tls, Hba, Pki};
use super::support::{Daemon, Pg, TargetSpec, Workspace};
use super::{lateness_buckets, proc_usage, LONG};
use std::process::Command;
use std::time::{Duration, Instant};

/// libpq's environment for pgbench.
type Env = Vec<(&'static str, String)>;

/// (label, DSN parameters, libpq environment) of each row.
fn modes(pki: &Pki) -> Vec<(&'static str, String, Env)> {
    let ca = pki.file("ca.crt");
    vec![
        (
            "plain TCP (sslmode=disable)",
            "sslmode=disable".into(),
            vec![("PGSSLMODE", "disable".into())],
        ),
        (
            "sslmode=require",
            "sslmode=require".into(),
            vec![("PGSSLMODE", "require".into())],
        ),
        (
            "sslmode=verify-full",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            vec![
                ("PGSSLMODE", "verify-full".into()),
                ("PGSSLROOTCERT", ca.clone()),
            ],
        ),
    ]
}

/// CPU seconds of this process's waited-for children so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// pgbench for `secs` (`-C`, a login per transaction, when `connect` is set): (transactions,
/// client CPU per transaction in µs).
pub(super) fn pgbench(
    pg: &Pg,
    env: &[(&'static str, String)],
    script: &std::path::Path,
    secs: u64,
    connect: bool,
) -> (u64, f64) {
    let bin = sentinel_remedy::pgcluster::find_bin_dir()
        .map(|d| d.join("pgbench"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| "pgbench".into());
    let before = children_cpu();
    let out = Command::new(bin)
        .args(["-n"])
        .args(connect.then_some("-C"))
        .args(["-c", "1", "-j", "1", "-T", &secs.to_string(), "-f"])
        .arg(script)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.cluster.port.to_string(),
            "-U",
            "postgres",
            "postgres",
        ])
        .env("PGPASSWORD", pg.password())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("pgbench runs");
    let cpu = children_cpu() - before;
    let text = String::from_utf8_lossy(&out.stdout);
    let n = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next()?.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("pgbench: {text}{}", String::from_utf8_lossy(&out.stderr)));
    (n, cpu / n.max(1) as f64 * 1e6)
}

/// The daemon probing `n` targets (all on `pg`, with `params`) every second for `window`:
/// (probes, daemon CPU per probe in µs, probes failed).
fn daemon(pg: &Pg, params: &str, n: usize, window: Duration) -> (f64, f64, usize) {
    let dsns: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{}?{params}&application_name=bench-{i:03}",
                pg.cluster.dsn()
            )
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
    let specs: Vec<TargetSpec> = (0..n)
        .map(|i| TargetSpec {
            interval: "1s",
            timeout: "5s",
            dsn: Some(&dsns[i]),
            pid_watch: false,
            heal: false,
            ..TargetSpec::new(&names[i], pg)
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
    let mut cmd = Command::new(super::support::bin());
    cmd.args(["--log-format", "json", "run", "--config"])
        .arg(ws.config())
        .arg("--state-dir")
        .arg(ws.state());
    let d = Daemon::spawn(cmd, &[("SENTINEL_LOG_LEVEL", "info")]);
    d.wait_events("monitor_started", None, n, LONG);
    std::thread::sleep(Duration::from_secs(5)); // every target past its first login
                                                // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (t0, _) = proc_usage(d.pid());
    let l0 = lateness_buckets(&addr);
    let start = Instant::now();
    std::thread::sleep(window);
    let (t1, _) = proc_usage(d.pid());
    let l1 = lateness_buckets(&addr);
    let _ = start;
    let probes = l1.last().map_or(0.0, |(_, c)| *c) - l0.last().map_or(0.0, |(_, c)| *c);
    let per = (t1 - t0) as f64 / hz / probes.max(1.0) * 1e6;
    (probes, per, d.count("probe_failed", None))
}

/// The table: one row per mode, the daemon and pgbench -C on the same TLS-enabled server.
pub fn section(n: usize, window: Duration) {
    let pki = Pki::new();
    let pg = Pg::start();
    enable_tls(&pg, &pki, "server", Hba::AllowTls);
    pg.psql("ALTER SYSTEM SET max_connections = 200");
    pg.cluster.stop("fast").expect("stop");
    pg.cluster.start().expect("start");
    let script = pki.path("select1.sql");
    std::fs::write(&script, "SELECT 1;\n").expect("pgbench script");
    println!("\n## TLS cost per probe ({n} targets on one scram-sha-256 server with ssl = on, interval 1 s, {} s window; pgbench -C -c 1 for the same time)\n", window.as_secs());
    println!("CPU per login, the client's side only (the daemon: its whole process per probe, SELECT 1 included; pgbench: its process per transaction, a full login each). libpq derives the SCRAM key (PBKDF2, 4096 rounds) at every login; the daemon caches it per target. PostgreSQL's server disables session tickets and its session cache, so neither client can resume a TLS session: every login is a full handshake.\n");
    println!("| mode | daemon CPU per probe | probes in window (failed) | pgbench -C CPU per login | pgbench logins/s |");
    println!("|---|---|---|---|---|");
    for (label, params, env) in modes(&pki) {
        let (probes, per, failed) = daemon(&pg, &params, n, window);
        let (logins, lib) = pgbench(&pg, &env, &script, window.as_secs().min(10), true);
        println!(
            "| {label} | {per:.0} µs | {probes:.0} ({failed}) | {lib:.0} µs | {:.0} |",
            logins as f64 / window.as_secs().min(10) as f64
        );
    }
}

//! The cluster section: several daemons sharing one fleet through a real etcd (Debian's
//! etcd-server), bare processes on loopback, counted from outside the daemons: the servers'
//! own logs (`log_connections`, one "ready to accept connections" line per start), owner keys
//! in etcd, payloads at a real webhook receiver, /proc and etcd's /metrics.
//!
//! - Takeover: SIGKILL of the daemon owning targets → the first connection of each of those
//!   targets' probes by a new owner (each daemon's DSNs carry `application_name=<member>.<target>`
//!   and the server logs every connection with an epoch timestamp), 10 runs at TTL 5 s and 2 s.
//! - A postmaster killed right after its owner daemon: → `SELECT 1` on a new connection,
//!   restarts and pages per run.
//! - 3 daemons × 300 targets: CPU and RSS per daemon, etcd's write and read rates.

use super::{env_num, median, proc_usage, LONG};
use crate::support::{self, etcd::shares, etcd::Etcd, Daemon, Pg, Receiver, TargetSpec, Workspace};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// One daemon of the cluster, run from its own workspace.
pub(super) struct Node {
    ws: Workspace,
    pub(super) d: Daemon,
    pub(super) member: String,
    pub(super) api: String,
}

impl Node {
    /// Writes the registry (server, cluster and fleet guard sections on top of `specs`) and
    /// starts the release binary at log level info.
    fn start(
        member: &str,
        etcd: &Etcd,
        ttl: u64,
        notify: &str,
        extra: &str,
        specs: &[TargetSpec],
    ) -> Self {
        let ws = Workspace::new();
        let api = support::etcd::write_cluster_registry(
            &ws, member, &etcd.url, ttl, extra, notify, specs,
        );
        Self::run(member, ws, api, &[])
    }

    /// Starts a member whose registry `ws` holds already (its API at `api`), with `env` for
    /// the registry's `${VAR}`s.
    pub(super) fn run(member: &str, ws: Workspace, api: String, env: &[(&str, &str)]) -> Self {
        let d = Self::spawn(&ws, env);
        Self {
            ws,
            d,
            member: member.into(),
            api,
        }
    }

    fn spawn(ws: &Workspace, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(support::bin());
        cmd.args(["--log-format", "json", "run", "--config"])
            .arg(ws.config())
            .arg("--state-dir")
            .arg(ws.state())
            .current_dir(ws.path());
        let mut env = env.to_vec();
        env.push(("SENTINEL_LOG_LEVEL", "info"));
        Daemon::spawn(cmd, &env)
    }

    /// SIGKILL, reaped at once.
    pub(super) fn kill(&mut self) {
        self.d.signal(libc::SIGKILL);
        self.d.wait_exit(LONG);
    }

    /// Starts this member again from the same workspace.
    fn restart(&mut self) {
        self.d = Self::spawn(&self.ws, &[]);
    }
}

/// Waits until every one of `n` targets is owned and each of `members` owns `n / members`.
fn wait_balanced(etcd: &Etcd, n: usize, members: usize) -> BTreeMap<String, String> {
    support::wait_for(LONG * 2, "an even share", || {
        let o = etcd.owners();
        let c = shares(&o);
        (o.len() == n && c.len() == members && c.values().all(|k| *k == n / members)).then_some(o)
    })
}

/// Turns on what the figures are read from: one log line per connection, stamped with the
/// Unix epoch in milliseconds (`%n`), and room for the probes' logins.
pub(super) fn log_connections(pg: &Pg, max_connections: u32) {
    pg.psql("ALTER SYSTEM SET log_connections = on");
    pg.psql("ALTER SYSTEM SET log_line_prefix = '%n [%p] '");
    pg.psql(&format!(
        "ALTER SYSTEM SET max_connections = {max_connections}"
    ));
    pg.cluster.stop("fast").expect("stop");
    pg.cluster.start().expect("start");
}

/// The server log from byte `from` on.
pub(super) fn log_since(pg: &Pg, from: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(&pg.cluster.log_file) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.read_to_string(&mut text);
    }
    text
}

pub(super) fn log_len(pg: &Pg) -> u64 {
    std::fs::metadata(&pg.cluster.log_file).map_or(0, |m| m.len())
}

/// Epoch seconds of the first "connection authorized" line for `application_name=app` in
/// `text` (lines start with `%n`: seconds.milliseconds).
fn first_login(text: &str, app: &str) -> Option<f64> {
    let needle = format!("application_name={app}");
    text.lines()
        .filter(|l| l.contains("connection authorized") && l.trim_end().ends_with(&needle))
        .find_map(|l| l.split_whitespace().next()?.parse().ok())
}

pub(super) fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub(super) const MEMBERS: [&str; 3] = ["n1", "n2", "n3"];

/// The fleet of one sub-section: target names, the server each is on, and how its targets
/// are probed and healed.
pub(super) struct Fleet<'a> {
    pub(super) pgs: &'a [Pg],
    pub(super) names: Vec<String>,
    /// Give each member its own `application_name` per target.
    pub(super) named_logins: bool,
    pub(super) tune: fn(&mut TargetSpec),
}

impl Fleet<'_> {
    fn server(&self, i: usize) -> &Pg {
        &self.pgs[i % self.pgs.len()]
    }

    /// Starts the three members on `etcd`, each from its own registry.
    pub(super) fn start(&self, etcd: &Etcd, ttl: u64, notify: &str, extra: &str) -> Vec<Node> {
        MEMBERS
            .iter()
            .map(|m| {
                let dsns: Vec<String> = (0..self.names.len())
                    .map(|i| {
                        let dsn = self.server(i).cluster.dsn();
                        if self.named_logins {
                            format!("{dsn}?application_name={m}.{}", self.names[i])
                        } else {
                            dsn
                        }
                    })
                    .collect();
                let specs: Vec<TargetSpec> = (0..self.names.len())
                    .map(|i| {
                        let mut s = TargetSpec {
                            dsn: Some(&dsns[i]),
                            ..TargetSpec::new(&self.names[i], self.server(i))
                        };
                        (self.tune)(&mut s);
                        s
                    })
                    .collect();
                Node::start(m, etcd, ttl, notify, extra, &specs)
            })
            .collect()
    }
}

/// Seconds from `t0` (epoch) to each of `targets`' first login by a member other than
/// `victim`, and to its owner key naming another member, polled until all are seen.
fn takeover_times(
    etcd: &Etcd,
    pg: &Pg,
    from: u64,
    t0: (f64, Instant),
    victim: &str,
    targets: &[String],
) -> (Vec<f64>, Vec<f64>) {
    let mut login: BTreeMap<&str, f64> = BTreeMap::new();
    let mut key: BTreeMap<&str, f64> = BTreeMap::new();
    while (login.len() < targets.len() || key.len() < targets.len()) && t0.1.elapsed() < LONG {
        let owners = etcd.owners();
        let text = log_since(pg, from);
        for t in targets {
            if !key.contains_key(t.as_str()) && owners.get(t).is_some_and(|m| m != victim) {
                key.insert(t.as_str(), t0.1.elapsed().as_secs_f64());
            }
            for m in MEMBERS.iter().filter(|m| **m != victim) {
                if let Some(at) = first_login(&text, &format!("{m}.{t}")) {
                    let secs = at - t0.0;
                    let e = login.entry(t.as_str()).or_insert(secs);
                    *e = e.min(secs);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (login.into_values().collect(), key.into_values().collect())
}

pub(super) fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Takeover time at one TTL: `runs` SIGKILLs of the member owning targets, rotating among
/// the three; per run the slowest of the victim's targets. Prints one table row.
fn takeover_row(pg: &Pg, ttl: u64, runs: usize) -> Vec<f64> {
    let etcd = Etcd::start();
    let fleet = Fleet {
        pgs: std::slice::from_ref(pg),
        names: (0..6).map(|i| format!("k{i}")).collect(),
        named_logins: true,
        tune: |s| {
            s.interval = "1s";
            s.pid_watch = false;
        },
    };
    let mut nodes = fleet.start(&etcd, ttl, "  console: false\n", "");
    let (mut per_run, mut per_key) = (vec![], vec![]);
    for run in 0..runs {
        let owners = wait_balanced(&etcd, fleet.names.len(), 3);
        // Every owner probing its share, the victim's lease at whatever phase it is.
        std::thread::sleep(Duration::from_millis(2500));
        let victim = &mut nodes[run % 3];
        let mine: Vec<String> = owners
            .iter()
            .filter(|(_, m)| **m == victim.member)
            .map(|(t, _)| t.clone())
            .collect();
        let from = log_len(pg);
        let t0 = (epoch_now(), Instant::now());
        victim.kill();
        let (login, key) = takeover_times(&etcd, pg, from, t0, &victim.member, &mine);
        assert_eq!(
            login.len(),
            mine.len(),
            "every target probed by a new owner"
        );
        per_run.push(max(&login));
        per_key.push(max(&key));
        victim.restart();
    }
    let runs_logins = per_run.clone();
    let (m, x) = (median(&mut per_run.clone()), max(&per_run));
    let (km, kx) = (median(&mut per_key.clone()), max(&per_key));
    let goal = ttl as f64 + 1.0;
    println!(
        "| {ttl} s | {m:.2} s | {x:.2} s | {km:.2} s | {kx:.2} s | {goal:.0} s: {} |",
        if x <= goal { "met" } else { "MISSED" }
    );
    drop(nodes);
    runs_logins
}

fn takeover_section(runs: usize) {
    let pg = Pg::start();
    log_connections(&pg, 100);
    println!("\n## Cluster: takeover (3 daemons, 6 targets on one server, interval 1 s, SIGKILL of a daemon, {runs} runs per TTL)\n");
    println!("From the SIGKILL to the first login of each of its targets by a new owner, read from the server's log (`log_connections`, `%n` epoch stamps; each daemon logs in as `application_name=<member>.<target>`); per run the slowest of the killed daemon's 2 targets. The owner key in etcd naming another member, polled with etcdctl every ~20 ms plus the call, bounds the claim from above. Each run restarts the killed daemon and waits for an even share again.\n");
    println!("| TTL | takeover median | max | owner key moved, median | max | goal (TTL + 1 s) |");
    println!("|---|---|---|---|---|---|");
    let rows: Vec<(u64, Vec<f64>)> = [5, 2]
        .into_iter()
        .map(|ttl| (ttl, takeover_row(&pg, ttl, runs)))
        .collect();
    println!();
    for (ttl, v) in rows {
        println!("Runs at TTL {ttl} s (s): {}", list(&v));
    }
}

/// One run: SIGKILL of the member owning a target, then kill -9 of that target's postmaster.
/// (seconds to `SELECT 1`, restarts, failure pages, recovery notices).
fn kill9_run(
    etcd: &Etcd,
    fleet: &Fleet,
    nodes: &mut [Node],
    r: &Receiver,
    run: usize,
) -> (f64, usize, usize, usize) {
    let owners = wait_balanced(etcd, fleet.names.len(), 3);
    std::thread::sleep(Duration::from_millis(1500));
    let victim = &mut nodes[run % 3];
    let (target, _) = owners
        .iter()
        .find(|(_, m)| **m == victim.member)
        .expect("the victim owns a target");
    let i = fleet.names.iter().position(|n| n == target).expect("known");
    let pg = fleet.server(i);
    let before = (
        pg.starts(),
        r.hook_count("failure", target),
        r.hook_count("recovery", target),
    );
    let t0 = Instant::now();
    victim.d.signal(libc::SIGKILL);
    let pid = pg.kill9();
    // SAFETY: waitpid on one pid; ECHILD at once when it is not our child.
    std::thread::spawn(move || unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) });
    victim.d.wait_exit(LONG);
    support::wait_for(LONG, "SELECT 1 again", || pg.answers().then_some(()));
    let back = t0.elapsed().as_secs_f64();
    support::wait_for(LONG, "the recovery notice", || {
        (r.hook_count("recovery", target) > before.2).then_some(())
    });
    // Room for a second restart or a duplicate page to show, if one were coming.
    std::thread::sleep(Duration::from_secs(6));
    victim.restart();
    (
        back,
        pg.starts() - before.0,
        r.hook_count("failure", target) - before.1,
        r.hook_count("recovery", target) - before.2,
    )
}

fn kill9_section(runs: usize) {
    const TTL: u64 = 2;
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pgs: Vec<Pg> = (0..3).map(|_| Pg::start()).collect();
    let fleet = Fleet {
        pgs: &pgs,
        names: (0..3).map(|i| format!("db{i}")).collect(),
        named_logins: false,
        tune: |s| {
            s.interval = "1s";
            s.recovery_timeout = "20s";
            s.max_restarts = 1000;
            s.budget_extra = ", backoff: 0s";
        },
    };
    let mut nodes = fleet.start(&etcd, TTL, &support::notify_all(&r), "");
    println!("\n## Cluster: kill -9 of a postmaster right after SIGKILL of its owner daemon (TTL {TTL} s, 3 daemons, 3 targets on 3 servers, interval 1 s, threshold 3, pid watch on, {runs} runs)\n");
    println!("From the two kills to `SELECT 1` answering on a new connection. Restarts: the server log's \"ready to accept connections\" lines; pages: `failure` payloads at a real webhook receiver (also sent to Slack and Discord receivers); both counted 6 s after the recovery notice.\n");
    println!("| run | `SELECT 1` again | restarts | failure pages | recovery notices |");
    println!("|---|---|---|---|---|");
    let mut back = vec![];
    let mut bad = 0;
    for run in 0..runs {
        let (secs, restarts, pages, recoveries) = kill9_run(&etcd, &fleet, &mut nodes, &r, run);
        println!(
            "| {} | {secs:.2} s | {restarts} | {pages} | {recoveries} |",
            run + 1
        );
        bad += usize::from(restarts != 1 || pages != 1 || recoveries != 1);
        back.push(secs);
    }
    let problems = r.hits().iter().filter(|h| !h.problems.is_empty()).count();
    println!(
        "\n`SELECT 1` again: median {:.2} s, max {:.2} s; runs with other than exactly one restart, one page and one recovery notice: {bad} of {runs}; malformed payloads: {problems}.",
        median(&mut back.clone()),
        max(&back)
    );
    drop(nodes);
}

/// The sum of every sample of a counter in Prometheus text (`label`: only samples whose
/// labels contain it).
pub(super) fn counter(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| label.is_none_or(|s| l.contains(s)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// etcd's own /metrics on its client URL.
fn etcd_metrics(etcd: &Etcd) -> String {
    let out = Command::new("curl")
        .args(["-s", "-m", "5"])
        .arg(format!("{}/metrics", etcd.url))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the etcd table shows: (label, counter, label filter).
pub(super) const ETCD_RATES: [(&str, &str, Option<&str>); 8] = [
    ("puts", "etcd_mvcc_put_total", None),
    ("deletes", "etcd_mvcc_delete_total", None),
    ("txns (read or write)", "etcd_mvcc_txn_total", None),
    (
        "raft proposals",
        "etcd_server_proposals_committed_total",
        None,
    ),
    (
        "WAL fsyncs",
        "etcd_disk_wal_fsync_duration_seconds_count",
        None,
    ),
    ("ranges (reads)", "etcd_mvcc_range_total", None),
    (
        "gRPC Txn calls",
        "grpc_server_handled_total",
        Some("grpc_method=\"Txn\""),
    ),
    (
        "keep-alive messages",
        "grpc_server_msg_received_total",
        Some("grpc_method=\"LeaseKeepAlive\""),
    ),
];

/// One reading of everything the load figures are differences of.
pub(super) struct Reading {
    pub(super) at: Instant,
    pub(super) daemons: Vec<(u64, u64)>,
    pub(super) etcd_ticks: u64,
    pub(super) servers: u64,
    pub(super) etcd: String,
    pub(super) probes: f64,
}

pub(super) fn read_load(etcd: &Etcd, nodes: &[Node], pgs: &[Pg]) -> Reading {
    Reading {
        at: Instant::now(),
        daemons: nodes.iter().map(|n| proc_usage(n.d.pid())).collect(),
        etcd_ticks: proc_usage(etcd.pid()).0,
        servers: pgs.iter().map(super::cluster_ticks).sum(),
        etcd: etcd_metrics(etcd),
        probes: nodes
            .iter()
            .map(|n| super::lateness_buckets(&n.api).last().map_or(0.0, |b| b.1))
            .sum(),
    }
}

/// 3 daemons × `n` targets on 3 servers: each daemon's CPU and RSS, etcd's rates.
fn load_section(n: usize, window: Duration) {
    let etcd = Etcd::start();
    let pgs: Vec<Pg> = (0..3).map(|_| Pg::start()).collect();
    for pg in &pgs {
        pg.psql(&format!(
            "ALTER SYSTEM SET max_connections = {}",
            n / 3 + 60
        ));
        pg.cluster.stop("fast").expect("stop");
        pg.cluster.start().expect("start");
    }
    let fleet = Fleet {
        pgs: &pgs,
        names: (0..n).map(|i| format!("s{i:03}")).collect(),
        named_logins: false,
        tune: |s| {
            s.interval = "1s";
            s.timeout = "5s";
            s.pid_watch = false;
        },
    };
    // The first daemon up claims everything; hand-offs at 20/s settle the shares in seconds.
    let nodes = fleet.start(
        &etcd,
        5,
        "  console: false\n",
        "  handoffs_per_second: 20\n",
    );
    let owners = wait_balanced(&etcd, n, 3);
    std::thread::sleep(Duration::from_secs(5));
    let a = read_load(&etcd, &nodes, &pgs);
    std::thread::sleep(window);
    let b = read_load(&etcd, &nodes, &pgs);
    let secs = b.at.duration_since(a.at).as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let pct = |t0: u64, t1: u64| (t1 - t0) as f64 / hz / secs * 100.0;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1 = load.split_whitespace().next().unwrap_or("?");
    println!("\n## Cluster: 3 daemons × {n} targets (3 servers, interval 1 s, a new login per probe, TTL 5 s, {} s window after the shares settled)\n", window.as_secs());
    println!("Probes: {:.0}/s in all (the daemons' lateness histograms); the servers' CPU: {:.1} % of one core; etcd's CPU: {:.2} %; host load (1 min) at the end: {load1}.\n",
        (b.probes - a.probes) / secs, pct(a.servers, b.servers), pct(a.etcd_ticks, b.etcd_ticks));
    println!("| daemon | targets owned | CPU (% of one core) | RSS |");
    println!("|---|---|---|---|");
    let owned = shares(&owners);
    for (i, node) in nodes.iter().enumerate() {
        let ((t0, _), (t1, rss)) = (a.daemons[i], b.daemons[i]);
        println!(
            "| {} | {} | {:.2} % | {:.1} MiB |",
            node.member,
            owned.get(&node.member).copied().unwrap_or(0),
            pct(t0, t1),
            rss as f64 / 1024.0
        );
    }
    println!(
        "\n| etcd (per second over the window) | {} |",
        ETCD_RATES.map(|r| r.0).join(" | ")
    );
    println!("|---|{}", "---|".repeat(ETCD_RATES.len()));
    let rates: Vec<String> = ETCD_RATES
        .iter()
        .map(|(_, name, label)| {
            let d = counter(&b.etcd, name, *label) - counter(&a.etcd, name, *label);
            format!("{:.1}", d / secs)
        })
        .collect();
    println!("| rate | {} |", rates.join(" | "));
    let failed: usize = nodes.iter().map(|n| n.d.count("probe_failed", None)).sum();
    if failed > 0 {
        println!("\n{failed} probes failed during the section (a loaded host): the figures include them.");
    }
    drop(nodes);
}

/// The build the figures come from (the bench profile inherits the release one).
fn build_note() -> &'static str {
    match std::env::var("CARGO_PROFILE_RELEASE_LTO").as_deref() {
        Ok("false") | Ok("off") => {
            "lean release build (LTO off, CARGO_PROFILE_RELEASE_CODEGEN_UNITS as set)"
        }
        _ => "release build (the profile's LTO and codegen units)",
    }
}

/// BENCH_ONLY=cluster: takeover at TTL 5 s and 2 s and a postmaster killed during a takeover
/// (`runs` each; 0 skips both), and 3 daemons × BENCH_CLUSTER_TARGETS (300) targets for
/// BENCH_CLUSTER_WINDOW (20) s.
pub fn section(runs: usize) {
    println!(
        "\n# Cluster mode (bare processes on loopback, etcd {}; {})",
        etcd_version(),
        build_note()
    );
    if runs > 0 {
        takeover_section(runs);
        kill9_section(runs);
    }
    let n = env_num("BENCH_CLUSTER_TARGETS", 300) as usize;
    if n > 0 {
        load_section(n, Duration::from_secs(env_num("BENCH_CLUSTER_WINDOW", 20)));
    }
}

pub(super) fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim_start_matches("etcd Version: ").to_string())
        })
        .unwrap_or_else(|| "?".into())
}

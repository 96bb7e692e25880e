//! The scale section (`BENCH_ONLY=cluster-scale`): three daemons sharing one large fleet
//! through a real etcd, bare processes on loopback, counted from outside: /proc for each
//! daemon's and etcd's CPU and RSS, etcd's own /metrics for its reads, the servers' logs
//! (`log_connections`: every probe logs in as `application_name=<member>.<target>`) for who
//! probes what and when, their "ready to accept connections" lines for restarts, and a real
//! webhook receiver for pages.
//!
//! - Steady state: each daemon's CPU and RSS, etcd's CPU, reads (ranges and range calls),
//!   transactions and bytes sent to clients per second, over a window after the shares
//!   settled. With watches instead of polling, etcd's reads stay flat in the number of
//!   targets; with polling they grow with it (each read returns every owner key).
//! - Takeover: SIGKILL of one daemon → the first login of each of its targets by another
//!   member (the slowest is the takeover time; the goal is TTL + 2 s), then restarts of the
//!   (healthy) servers and pages, both of which should be 0.
//!
//! Knobs: BENCH_SCALE_TARGETS (10000; 0 skips), BENCH_SCALE_SERVERS (3), BENCH_SCALE_INTERVAL
//! (10 s), BENCH_SCALE_TTL (5 s), BENCH_SCALE_WINDOW (30 s), BENCH_SCALE_SETTLE (300 s: how
//! long the shares may take to even out).

use super::cluster_bare::{
    counter, epoch_now, etcd_version, log_connections, log_len, log_since, max, read_load, Node,
    ETCD_RATES, MEMBERS,
};
use super::{env_num, median, LONG};
use crate::support::{self, etcd::shares, etcd::Etcd, Pg, Receiver, Workspace};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The section's knobs.
struct Scale {
    targets: usize,
    servers: usize,
    interval: u64,
    ttl: u64,
    window: Duration,
    /// How long the shares may take to even out before the section goes on without.
    settle: Duration,
}

pub fn section() {
    let s = Scale {
        targets: env_num("BENCH_SCALE_TARGETS", 10_000) as usize,
        servers: env_num("BENCH_SCALE_SERVERS", 3).max(1) as usize,
        interval: env_num("BENCH_SCALE_INTERVAL", 10).max(1),
        ttl: env_num("BENCH_SCALE_TTL", 5).max(2),
        window: Duration::from_secs(env_num("BENCH_SCALE_WINDOW", 30)),
        settle: Duration::from_secs(env_num("BENCH_SCALE_SETTLE", 300)),
    };
    if s.targets == 0 {
        return;
    }
    let build = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    println!(
        "\n## Cluster at scale: 3 daemons × {} targets ({} in all) on {} servers, interval {} s, TTL {} s (etcd {}, {build}, {} cores)\n",
        s.targets.div_ceil(3),
        s.targets,
        s.servers,
        s.interval,
        s.ttl,
        etcd_version(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pgs: Vec<Pg> = (0..s.servers).map(|_| Pg::start()).collect();
    // A takeover starts a third of the fleet's first probes at once.
    let per_server = s.targets.div_ceil(s.servers) as u32;
    for pg in &pgs {
        log_connections(pg, (per_server + 100).min(5000));
    }
    let names: Vec<String> = (0..s.targets).map(|i| format!("t{i:05}")).collect();
    let t0 = Instant::now();
    let mut nodes: Vec<Node> = MEMBERS
        .iter()
        .map(|m| start_member(&s, m, &etcd, &pgs, &names, &support::notify_all(&r)))
        .collect();
    let owners = wait_even(&etcd, &nodes, s.targets, s.settle);
    println!(
        "Shares settled in {:.1} s from the daemons' start (hand-offs at {}/s): {:?}.\n",
        t0.elapsed().as_secs_f64(),
        handoffs(&s),
        shares(&owners)
    );
    // Every owner through at least one full interval of probes.
    std::thread::sleep(Duration::from_secs(s.interval + 5));
    let starts: usize = pgs.iter().map(Pg::starts).sum();
    steady_state(&s, &etcd, &nodes, &pgs, &owners);
    takeover(&s, &etcd, &mut nodes, &pgs, &owners);
    // Room for a restart or a page to show, if one were coming.
    std::thread::sleep(Duration::from_secs(s.interval * 2));
    let restarts = pgs.iter().map(Pg::starts).sum::<usize>() - starts;
    let pages = r.hook_events("failure").len();
    let failed: usize = nodes.iter().map(|n| n.d.count("probe_failed", None)).sum();
    println!(
        "\nFailed probes by class, all daemons: {}.",
        failure_classes(&nodes)
    );
    println!(
        "\nRestarts of the (healthy) servers from the steady state to {} s after the takeover: {restarts}; failure pages at the receiver: {pages}; every notification received: {}; probes failed (a loaded host): {failed}.",
        s.interval * 2,
        r.hits().len()
    );
    drop(nodes);
}

/// Hand-offs per second: the first daemon up claims everything, the others get their share
/// within about 30 s.
fn handoffs(s: &Scale) -> usize {
    (s.targets / 30).max(20)
}

/// Writes `member`'s registry and starts it. The registry is compact (a registry file is at
/// most 1 MiB): probe settings in `defaults:`, each server's heal command once as a YAML
/// anchor, and each DSN as `${DBi}<member>.<target>` with `DBi` (the server's URL up to
/// `application_name=`) in the daemon's environment.
fn start_member(
    s: &Scale,
    member: &str,
    etcd: &Etcd,
    pgs: &[Pg],
    names: &[String],
    notify: &str,
) -> Node {
    let ws = Workspace::new();
    let extra = format!(
        "  handoffs_per_second: {}\ndefaults:\n  probe: {{ interval: {}s, timeout: 5s, failure_threshold: 3 }}\n  recovery_timeout: 60s\n",
        handoffs(s),
        s.interval
    );
    let api =
        support::etcd::write_cluster_registry(&ws, member, &etcd.url, s.ttl, &extra, notify, &[]);
    let mut text = std::fs::read_to_string(ws.config()).expect("registry");
    for (i, name) in names.iter().enumerate() {
        let server = i % pgs.len();
        let heal = if i < pgs.len() {
            let argv = serde_json::to_string(&pgs[server].cluster.start_argv()).expect("argv");
            format!("&h{server} {{ command: {argv} }}")
        } else {
            format!("*h{server}")
        };
        text += &format!(
            "\n  - {{ name: {name}, dsn: \"${{DB{server}}}{member}.{name}\", heal: {heal} }}"
        );
    }
    text.push('\n');
    std::fs::write(ws.config(), text).expect("write registry");
    let vars: Vec<(String, String)> = pgs
        .iter()
        .enumerate()
        .map(|(i, pg)| {
            (
                format!("DB{i}"),
                format!("{}?application_name=", pg.cluster.dsn()),
            )
        })
        .collect();
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node::run(member, ws, api, &env)
}

/// Waits until every target is owned and the three shares differ by at most one; past
/// `limit`, says so with what the daemons logged, and goes on with the shares as they are.
fn wait_even(etcd: &Etcd, nodes: &[Node], n: usize, limit: Duration) -> BTreeMap<String, String> {
    let t0 = Instant::now();
    loop {
        let o = etcd.owners();
        let c = shares(&o);
        let even = c
            .values()
            .max()
            .zip(c.values().min())
            .is_some_and(|(hi, lo)| hi - lo <= 1);
        if o.len() == n && c.len() == 3 && even {
            return o;
        }
        if t0.elapsed() > limit {
            println!(
                "**Not settled after {} s**: {} of {n} targets owned, shares {c:?}.",
                limit.as_secs(),
                o.len()
            );
            for node in nodes {
                let count = |e: &str| node.d.count(e, None);
                println!("- {}: cluster_fenced {}, cluster_lease_expired {}, cluster_session_lost {}, cluster_join_failed {}, probe_failed {}, heal_attempt {}",
                    node.member, count("cluster_fenced"), count("cluster_lease_expired"), count("cluster_session_lost"),
                    count("cluster_join_failed"), count("probe_failed"), count("heal_attempt"));
            }
            return o;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn steady_state(
    s: &Scale,
    etcd: &Etcd,
    nodes: &[Node],
    pgs: &[Pg],
    owners: &BTreeMap<String, String>,
) {
    let a = read_load(etcd, nodes, pgs);
    std::thread::sleep(s.window);
    let b = read_load(etcd, nodes, pgs);
    let secs = b.at.duration_since(a.at).as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let pct = |t0: u64, t1: u64| (t1 - t0) as f64 / hz / secs * 100.0;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("Steady state over {:.0} s: probes {:.0}/s in all (the daemons' lateness histograms), the servers' CPU {:.1} % of one core, etcd's CPU {:.2} % and RSS {:.1} MiB, host load {}.\n",
        secs, (b.probes - a.probes) / secs, pct(a.servers, b.servers), pct(a.etcd_ticks, b.etcd_ticks),
        super::proc_usage(etcd.pid()).1 as f64 / 1024.0, load.split_whitespace().next().unwrap_or("?"));
    println!("| daemon | targets owned | CPU (% of one core) | RSS |");
    println!("|---|---|---|---|");
    let owned = shares(owners);
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
    let mut rates: Vec<(&str, &str, Option<&str>)> = ETCD_RATES.to_vec();
    rates.push((
        "gRPC Range calls",
        "grpc_server_handled_total",
        Some("grpc_method=\"Range\""),
    ));
    rates.push((
        "bytes sent to clients",
        "etcd_network_client_grpc_sent_bytes_total",
        None,
    ));
    let head: Vec<&str> = rates.iter().map(|r| r.0).collect();
    println!("\n| etcd, per second | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(rates.len()));
    let cells: Vec<String> = rates
        .iter()
        .map(|(_, name, label)| {
            let d = counter(&b.etcd, name, *label) - counter(&a.etcd, name, *label);
            format!("{:.1}", d / secs)
        })
        .collect();
    println!("| rate | {} |", cells.join(" | "));
}

/// SIGKILL of the first daemon; seconds from the kill to each of its targets' first login
/// by another member, read from every server's log.
fn takeover(
    s: &Scale,
    etcd: &Etcd,
    nodes: &mut [Node],
    pgs: &[Pg],
    owners: &BTreeMap<String, String>,
) {
    let victim = &mut nodes[0];
    let mine: BTreeSet<&str> = owners
        .iter()
        .filter(|(_, m)| **m == victim.member)
        .map(|(t, _)| t.as_str())
        .collect();
    let mut from: Vec<u64> = pgs.iter().map(log_len).collect();
    let (epoch0, t0) = (epoch_now(), Instant::now());
    victim.kill();
    let limit = Duration::from_secs(s.ttl + s.interval * 3) + LONG;
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    let mut claimed: BTreeMap<&str, f64> = BTreeMap::new();
    let (mut fatal, mut first_fatal) = (0, None::<String>);
    let mut polled = Instant::now() - Duration::from_secs(1);
    while (seen.len() < mine.len() || claimed.len() < mine.len()) && t0.elapsed() < limit {
        // The owner keys, about once a second (each read returns every key).
        if polled.elapsed() >= Duration::from_secs(1) {
            polled = Instant::now();
            let keys = etcd.owners();
            let at = t0.elapsed().as_secs_f64();
            for t in &mine {
                if keys.get(*t).is_some_and(|m| *m != victim.member) {
                    claimed.entry(t).or_insert(at);
                }
            }
        }
        for (i, pg) in pgs.iter().enumerate() {
            let text = log_since(pg, from[i]);
            // Whole lines only: a line still being written is read next time.
            let done = text.rfind('\n').map_or(0, |p| p + 1);
            from[i] += done as u64;
            for l in text[..done].lines().filter(|l| l.contains("FATAL")) {
                fatal += 1;
                first_fatal.get_or_insert_with(|| l.to_string());
            }
            for (at, member, target) in logins(&text[..done]) {
                if member != victim.member && mine.contains(target) {
                    let e = seen.entry(target.to_string()).or_insert(at - epoch0);
                    *e = e.min(at - epoch0);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(l) = first_fatal {
        println!("\nThe servers logged {fatal} FATAL lines during the takeover, the first: `{l}`.");
    }
    let mut keys: Vec<f64> = claimed.into_values().collect();
    let mut times: Vec<f64> = seen.into_values().collect();
    let goal = s.ttl as f64 + 2.0;
    let slowest = max(&times);
    println!(
        "\nTakeover after SIGKILL of {} ({} targets): probed by a new owner {} of {}; from the kill, median {:.2} s, slowest {:.2} s (goal TTL + 2 s = {goal:.0} s: {}). Owner keys naming a new owner (polled about once a second): {} of {}, median {:.1} s, slowest {:.1} s.",
        victim.member,
        mine.len(),
        times.len(),
        mine.len(),
        median(&mut times),
        slowest,
        if times.len() == mine.len() && slowest <= goal { "met" } else { "MISSED" },
        keys.len(),
        mine.len(),
        median(&mut keys),
        max(&keys),
    );
}

/// (epoch seconds, member, target) of each "connection authorized" line with an
/// `application_name=<member>.<target>` (lines start with `%n`).
fn logins(text: &str) -> impl Iterator<Item = (f64, &str, &str)> {
    text.lines().filter_map(|l| {
        if !l.contains("connection authorized") {
            return None;
        }
        let at = l.split_whitespace().next()?.parse().ok()?;
        let app = l.split("application_name=").nth(1)?.trim();
        let (member, target) = app.split_once('.')?;
        MEMBERS.contains(&member).then_some((at, member, target))
    })
}

/// `class=count` of `sentinel_probe_failures_total` summed over the daemons still running.
fn failure_classes(nodes: &[Node]) -> String {
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    for n in nodes.iter().skip(1) {
        let text = support::http::get(&n.api, "/metrics").body;
        for l in text
            .lines()
            .filter(|l| l.starts_with("sentinel_probe_failures_total{"))
        {
            let class = l.split("class=\"").nth(1).and_then(|c| c.split('"').next());
            let value = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(c), Some(v)) = (class, value) {
                *by.entry(c.to_string()).or_default() += v;
            }
        }
    }
    let parts: Vec<String> = by.iter().map(|(c, v)| format!("{c} {v:.0}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

//! Cluster mode (issue 15) figures, on the HA test bed (tests/support/ha.rs): daemons, etcd
//! and PostgreSQL in containers. Counted from outside like the tests: owner keys through
//! etcdctl, the databases' connection logs, Engine start events, receiver pages.

use super::{median, proc_usage};
use crate::support::docker::docker;
use crate::support::ha::{Bed, Spec};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const MEMBERS: [&str; 3] = ["node-a", "node-b", "node-c"];

fn seconds_between(a: chrono::NaiveDateTime, b: chrono::NaiveDateTime) -> f64 {
    (b - a).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// One takeover: SIGKILL the owner of t00 and kill t00's database at once. Returns the time
/// to the new owner key, to the new owner's first probe of the dead daemon's targets on the
/// live databases (None if it owned none there), to SQL back, and the extra restarts and
/// pages beyond one each.
fn takeover_once(bed: &Bed, pages_before: usize) -> (f64, Option<f64>, f64, usize, usize) {
    let owners = bed.wait_settled(&MEMBERS, Duration::from_secs(90));
    let victim = owners["t00"].clone();
    let orphans: Vec<String> = owners
        .iter()
        .filter(|(t, m)| **m == victim && t.as_str() != "t00")
        .map(|(t, _)| t.clone())
        .collect();
    let container = bed.daemon(&victim).container.clone();
    let t0 = Instant::now();
    let wall0 = chrono::Utc::now().naive_utc();
    docker(&["kill", &container]);
    let since = bed.kill_db(bed.db_of("t00"));
    let key = bed.wait(Duration::from_secs(30), "t00 owned again", || {
        bed.owners()
            .get("t00")
            .filter(|m| **m != victim)
            .map(|_| t0.elapsed().as_secs_f64())
    });
    let sql = bed.wait(Duration::from_secs(60), "t00's database back", || {
        bed.db_answers(bed.db_of("t00"))
            .then(|| t0.elapsed().as_secs_f64())
    });
    bed.wait(Duration::from_secs(60), "t00's recovery page", || {
        (bed.pages("t00", "recovery").len() > pages_before).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    // The first login by any new owner to the dead daemon's targets on the live databases.
    let ip_of: BTreeMap<String, String> = bed
        .daemons
        .iter()
        .map(|d| (bed.ip(&d.container, &bed.data), d.member.clone()))
        .collect();
    let probe = orphans
        .iter()
        .filter_map(|t| {
            bed.probe_logins(t)
                .into_iter()
                .filter(|(at, host)| *at >= wall0 && ip_of.get(host).is_some_and(|m| *m != victim))
                .map(|(at, _)| seconds_between(wall0, at))
                .reduce(f64::min)
        })
        .reduce(f64::max);
    let starts = bed.starts_since(&bed.db_of("t00").container, since);
    let failures = bed.pages("t00", "failure").len() - pages_before;
    docker(&["start", &container]);
    let i = bed.daemons.iter().position(|d| d.member == victim).unwrap();
    bed.wait_healthy(i, Duration::from_secs(60));
    (
        key,
        probe,
        sql,
        starts.saturating_sub(1),
        failures.saturating_sub(1),
    )
}

/// Takeover time after a daemon's SIGKILL at each TTL, median and max of `runs`.
pub fn takeover_section(runs: usize) {
    println!("\n## Cluster takeover (3 daemons, 6 targets on 6 databases, probe interval 500 ms, median / max of {runs})\n");
    println!("SIGKILL of the daemon owning t00 and `docker kill` of t00's database at once.\n");
    println!("| TTL | new owner key | first probe by the new owner | kill -> SQL back | goal (<= TTL + 1 s) | double restarts | duplicate pages |");
    println!("|---|---|---|---|---|---|---|");
    for ttl in [5u64, 2] {
        // One target per database: t00's fault is one incident.
        let mut bed = Bed::new(Spec {
            databases: 6,
            targets: 6,
            ttl_secs: ttl,
            ..Spec::default()
        });
        bed.start_daemons();
        let (mut keys, mut probes, mut sqls) = (vec![], vec![], vec![]);
        let (mut doubles, mut dups) = (0, 0);
        for _ in 0..runs {
            let before = bed.pages("t00", "failure").len();
            let (k, p, s, d, u) = takeover_once(&bed, before);
            keys.push(k);
            probes.extend(p);
            sqls.push(s);
            doubles += d;
            dups += u;
        }
        let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        let worst = max(&keys).max(max(&probes));
        println!(
            "| {ttl} s | {:.2} / {:.2} s | {:.2} / {:.2} s ({} runs) | {:.2} / {:.2} s | {} | {doubles} | {dups} |",
            median(&mut keys.clone()),
            max(&keys),
            median(&mut probes.clone()),
            max(&probes),
            probes.len(),
            median(&mut sqls.clone()),
            max(&sqls),
            if worst <= ttl as f64 + 1.0 { "met" } else { "MISSED" },
        );
    }
}

/// Three daemons watching `n` healthy targets: CPU and memory per daemon, and etcd's write
/// rate (revisions per second: every put, delete and transaction that wrote).
pub fn load_section(n: usize, window: Duration) {
    let bed = {
        let mut b = Bed::new(Spec {
            databases: 3,
            targets: n,
            probe_interval: "5s",
            ..Spec::default()
        });
        b.start_daemons();
        b
    };
    bed.wait_settled(&MEMBERS, Duration::from_secs(600));
    // Steady state: no hand-off for 5 s (the last ones trickle in after the shares are near
    // even), so the window counts the cost of watching, not of rebalancing.
    let mut last = (bed.owners(), Instant::now());
    bed.wait(Duration::from_secs(300), "no owner change for 5 s", || {
        let now = bed.owners();
        if now != last.0 {
            last = (now, Instant::now());
        }
        (last.1.elapsed() >= Duration::from_secs(5)).then_some(())
    });
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let pids: Vec<i32> = bed
        .daemons
        .iter()
        .map(|d| {
            docker(&["inspect", "-f", "{{.State.Pid}}", &d.container])
                .parse()
                .expect("pid")
        })
        .collect();
    let revision = || -> f64 {
        let out = bed
            .etcdctl(&["endpoint", "status", "-w", "json"])
            .expect("etcd status");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v[0]["Status"]["header"]["revision"].as_f64().unwrap_or(0.0)
    };
    // Every gRPC call etcd handled (reads, writes, lease keep-alives), from its own metrics.
    let etcd_addr = format!("{}:2379", bed.ip(&bed.etcd[0], &bed.coord));
    let calls = || -> f64 {
        let (_, text) = crate::support::ha::http_get(&etcd_addr, "/metrics").expect("etcd metrics");
        text.lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before: Vec<(u64, u64)> = pids.iter().map(|p| proc_usage(*p)).collect();
    let (rev0, calls0, start) = (revision(), calls(), Instant::now());
    std::thread::sleep(window);
    let secs = start.elapsed().as_secs_f64();
    let writes = (revision() - rev0) / secs;
    let rate = (calls() - calls0) / secs;
    println!(
        "\n## Cluster load (3 daemons x {n} targets, probe interval 5 s, TTL 2 s, {} s window)\n",
        window.as_secs()
    );
    println!("| daemon | targets owned | resident memory | CPU (% of one core) |");
    println!("|---|---|---|---|");
    let owners = bed.owners();
    for ((d, pid), (t0, _)) in bed.daemons.iter().zip(&pids).zip(&before) {
        let (t1, rss) = proc_usage(*pid);
        println!(
            "| {} | {} | {:.1} MiB | {:.2} % |",
            d.member,
            owners.values().filter(|m| **m == d.member).count(),
            rss as f64 / 1024.0,
            (t1 - t0) as f64 / hz / secs * 100.0
        );
    }
    println!("\netcd: {writes:.1} writes per second (revision delta over the window), {rate:.1} gRPC calls per second (reads, writes, keep-alives; grpc_server_handled_total).");
}

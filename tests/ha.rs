//! Cluster mode (issue 15), for real: daemons, etcd and PostgreSQL in containers on private
//! networks, killed, paused and cut off with the Docker Engine. Each outcome is counted from
//! outside the daemons: owner keys read with etcdctl, Engine `start` events of the database
//! containers, pages at a real webhook receiver, logins in the databases' own logs.
//! Probes every 500 ms, lease TTL 2 s unless a scenario needs more.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::docker::docker;
use support::ha::{Bed, Spec};

const MEMBERS: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Targets per member.
fn shares(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for m in owners.values() {
        *n.entry(m.clone()).or_insert(0) += 1;
    }
    n
}

/// The first target the member owns.
fn owned_by(owners: &BTreeMap<String, String>, member: &str) -> Option<String> {
    owners
        .iter()
        .find(|(_, m)| m.as_str() == member)
        .map(|(t, _)| t.clone())
}

/// A clustered bed with its daemons up and every target owned; returns it and the owners.
fn clustered(spec: Spec) -> (Bed, BTreeMap<String, String>) {
    let mut bed = Bed::new(spec);
    bed.start_daemons();
    let owners = bed.wait_settled(&MEMBERS[..bed.spec.daemons], Duration::from_secs(60));
    (bed, owners)
}

/// The member owning a target, that target, and the other live members.
fn victim(owners: &BTreeMap<String, String>) -> (String, String, Vec<&'static str>) {
    let (target, member) = owners.iter().next().expect("an owned target");
    let others = MEMBERS.iter().copied().filter(|m| m != member).collect();
    (member.clone(), target.clone(), others)
}

/// After a fault injected at `since` on `target`'s database: healed by exactly one Engine
/// start, one failure page and one recovery page, of the same incident. Checked again after
/// `settle`, so a late second restart or page is caught too.
fn assert_healed_once(bed: &Bed, target: &str, since: f64, settle: Duration) {
    bed.wait_healed(target, Duration::from_secs(60));
    std::thread::sleep(settle);
    let db = bed.db_of(target);
    let starts = bed.starts_since(&db.container, since);
    let failures = bed.pages(target, "failure");
    let recoveries = bed.pages(target, "recovery");
    assert_eq!(
        starts,
        1,
        "{target}: one Engine start of {} since the fault\n{}",
        db.container,
        bed.diagnose()
    );
    assert_eq!(
        (failures.len(), recoveries.len()),
        (1, 1),
        "{target}: one failure and one recovery page: {failures:?} {recoveries:?}"
    );
    assert_eq!(
        failures[0]["incident_id"], recoveries[0]["incident_id"],
        "{target}: one incident"
    );
    bed.receiver.assert_all_well_formed();
}

/// The infrastructure alone, with a daemon as before issue 15 (no `cluster:`): the three-node
/// etcd cluster elects a leader, the daemon container (the sentinel image with the binary
/// under test) answers /healthz over the data network, restarts a killed database through the
/// mounted Engine socket and pages the receiver on the host.
#[test]
fn the_test_bed_runs_etcd_databases_and_a_daemon_container_that_heals_and_pages() {
    let mut bed = Bed::new(Spec {
        etcd_nodes: 3,
        databases: 1,
        targets: 1,
        daemons: 1,
        cluster: false,
        ..Spec::default()
    });
    // The helpers the scenarios count with: keys read back, probe logins by address, leader.
    let key = format!("/{}/owner/t00", support::ha::PREFIX);
    bed.etcdctl(&["put", &key, "node-x"]).expect("etcdctl put");
    assert_eq!(
        bed.owners(),
        BTreeMap::from([("t00".to_string(), "node-x".to_string())])
    );
    bed.start_daemons();
    let from = chrono::Utc::now().naive_utc() - chrono::Duration::seconds(1);
    let since = bed.kill_db(bed.db_of("t00"));
    assert_healed_once(&bed, "t00", since, Duration::from_secs(1));
    let daemon_ip = bed.ip(&bed.daemons[0].container, &bed.data);
    let logins = bed.probe_logins("t00");
    assert!(
        logins
            .iter()
            .any(|(at, host)| *at >= from && *host == daemon_ip),
        "the database logged the daemon's probes from {daemon_ip}: {logins:?}"
    );
    let leader = bed.leader().expect("etcd has a leader");
    docker(&["kill", &leader]);
    bed.wait(Duration::from_secs(15), "a new etcd leader", || {
        bed.leader().filter(|l| *l != leader)
    });
    assert_eq!(bed.owners().len(), 1, "the keys survive the leader");
}

/// Three daemons, thirty targets: each target has one owner, a live member; the shares are
/// within ±30 % of even; only the owner logs in to probe it; each daemon's status shows the
/// three members and is not fenced.
#[test]
fn three_daemons_share_thirty_targets_each_owned_and_probed_by_exactly_one() {
    let (bed, owners) = clustered(Spec {
        targets: 30,
        ..Spec::default()
    });
    assert_eq!(owners.len(), 30, "{owners:?}");
    let n = shares(&owners);
    for m in MEMBERS {
        let got = n.get(m).copied().unwrap_or(0);
        assert!((7..=13).contains(&got), "{m} owns {got} of 30: {n:?}");
    }
    let mut members = bed.members();
    members.sort();
    assert_eq!(members, MEMBERS, "registered members");
    for (i, d) in bed.daemons.iter().enumerate() {
        let v = bed.status(i);
        assert_eq!(v["cluster"]["member"], d.member.as_str(), "{v}");
        let fenced = &v["cluster"]["fenced"];
        assert!(fenced == false || fenced.is_null(), "not fenced: {v}");
        let listed = v["cluster"]["members"].as_array().map_or(0, Vec::len);
        assert_eq!(listed, 3, "{}: members in its status: {v}", d.member);
        // A hand-off may still land after the shares settled: the gauge is compared with the
        // owner keys read at the same time, until they agree.
        let samples = bed.wait(
            Duration::from_secs(15),
            &format!("{}'s owned-targets gauge to match its owner keys", d.member),
            || {
                let (code, text) = bed.api(i, "/metrics")?;
                let samples = support::http::parse_metrics(&text);
                let gauge = support::http::metric(&samples, "sentinel_cluster_owned_targets", &[]);
                let keys = shares(&bed.owners()).get(&d.member).copied().unwrap_or(0) as f64;
                (code == 200 && gauge == Some(keys)).then_some(samples)
            },
        );
        let m = |name| support::http::metric(&samples, name, &[]);
        assert_eq!(m("sentinel_cluster_members"), Some(3.0), "{}", d.member);
        assert_eq!(m("sentinel_cluster_fenced"), Some(0.0), "{}", d.member);
        assert!(
            m("sentinel_cluster_lease_age_seconds").is_some_and(|a| a < bed.spec.ttl_secs as f64),
            "{}: a fresh lease",
            d.member
        );
        // Every daemon shows each target's owner as etcd has it.
        for t in v["targets"].as_array().expect("targets in the status") {
            let name = t["name"].as_str().unwrap_or_default();
            assert_eq!(
                t["owner"].as_str(),
                owners.get(name).map(String::as_str),
                "{}'s status: owner of {name}",
                d.member
            );
        }
    }

    // Probes over the next 3 s come from the owner's address only.
    let from = chrono::Utc::now().naive_utc();
    std::thread::sleep(Duration::from_secs(3));
    let stable = bed.owners();
    assert_eq!(stable, owners, "ownership stays put while nothing happens");
    let ip_of: BTreeMap<String, String> = bed
        .daemons
        .iter()
        .map(|d| (bed.ip(&d.container, &bed.data), d.member.clone()))
        .collect();
    for (t, owner) in &owners {
        let logins: Vec<_> = bed
            .probe_logins(t)
            .into_iter()
            .filter(|(at, _)| *at >= from)
            .collect();
        assert!(!logins.is_empty(), "{t} was probed in 3 s");
        for (at, host) in logins {
            let who = ip_of.get(&host).map_or(host.as_str(), String::as_str);
            assert_eq!(who, owner, "{t} probed at {at} by {who}, owner {owner}");
        }
    }
    let alerts = bed.coordination_alerts(bed.created);
    assert!(
        alerts.is_empty(),
        "daemons that start against a healthy etcd page no coordination loss: {alerts:?}"
    );
}

/// SIGKILL the owner of a target and kill that target's database in the gap: the dead
/// daemon's targets are owned again (goal TTL + 1 s), the database is started exactly once,
/// one failure and one recovery page, one incident.
#[test]
fn a_killed_daemons_targets_are_taken_over_within_ttl_and_a_fault_in_the_gap_is_healed_once() {
    // One target per database: a fault is one target's incident.
    let (bed, owners) = clustered(Spec::default());
    let (dead, target, others) = victim(&owners);
    let orphans: Vec<String> = owners
        .iter()
        .filter(|(_, m)| **m == dead)
        .map(|(t, _)| t.clone())
        .collect();
    let killed = Instant::now();
    docker(&["kill", &bed.daemon(&dead).container]);
    let since = bed.kill_db(bed.db_of(&target));
    let taken = bed.wait(
        Duration::from_secs(bed.spec.ttl_secs + 10),
        &format!("{dead}'s targets {orphans:?} owned by {others:?}"),
        || {
            let o = bed.owners();
            orphans
                .iter()
                .all(|t| o.get(t).is_some_and(|m| others.contains(&m.as_str())))
                .then(|| killed.elapsed())
        },
    );
    // The goal, TTL + 1 s, is a figure of scripts/bench.sh (takeover section) and checked by
    // scripts/test_ha.sh; here, on a machine shared with other tests, only a bound that says
    // the targets were not stranded.
    eprintln!(
        "takeover after SIGKILL: {taken:?} (ttl {} s)",
        bed.spec.ttl_secs
    );
    assert!(
        taken <= Duration::from_secs(2 * bed.spec.ttl_secs + 2),
        "owned again within 2 x ttl + 2 s: took {taken:?}"
    );
    assert_healed_once(&bed, &target, since, Duration::from_secs(2));
}

/// Cut the owner of a target off from etcd only (it still reaches the database and the
/// Engine): its /healthz says 503, its targets are taken over, a fault injected then is
/// healed once with no duplicate page; reconnected, it comes back by itself.
#[test]
fn a_daemon_cut_off_from_etcd_stops_its_targets_are_taken_over_and_a_fault_is_healed_once() {
    let (bed, owners) = clustered(Spec {
        etcd_nodes: 3,
        ..Spec::default()
    });
    let (cut, target, others) = victim(&owners);
    let i = bed.daemons.iter().position(|d| d.member == cut).unwrap();
    docker(&[
        "network",
        "disconnect",
        &bed.coord.name,
        &bed.daemon(&cut).container,
    ]);
    let cut_at = Instant::now();
    bed.wait(
        Duration::from_secs(bed.spec.ttl_secs + 10),
        &format!("{target} owned by one of {others:?}"),
        || {
            bed.owners()
                .get(&target)
                .filter(|m| others.contains(&m.as_str()))
                .map(|_| ())
        },
    );
    eprintln!("takeover after the cut: {:?}", cut_at.elapsed());
    let (status, body) = bed.wait(
        Duration::from_secs(bed.spec.ttl_secs + 5),
        &format!("{cut}'s /healthz to say 503"),
        || bed.api(i, "/healthz").filter(|(s, _)| *s == 503),
    );
    assert_eq!(status, 503);
    assert!(
        ["etcd", "coordination", "cluster", "lease"]
            .iter()
            .any(|w| body.to_lowercase().contains(w)),
        "the 503 names the cause: {body}"
    );
    let since = bed.kill_db(bed.db_of(&target));
    assert_healed_once(&bed, &target, since, Duration::from_secs(2));
    // One "coordination lost" alert since the cut, from the daemon that lost it, however
    // long it lasts.
    let lost = bed.coordination_alerts(cut_at);
    assert_eq!(lost.len(), 1, "one coordination-lost alert: {lost:?}");
    assert!(
        lost[0].to_string().contains(&cut),
        "it names {cut}: {}",
        lost[0]
    );

    docker(&[
        "network",
        "connect",
        &bed.coord.name,
        &bed.daemon(&cut).container,
    ]);
    bed.wait_healthy(i, Duration::from_secs(bed.spec.ttl_secs + 20));
    bed.wait(
        Duration::from_secs(10),
        &format!("{cut} a member again"),
        || bed.members().contains(&cut).then_some(()),
    );
    assert_eq!(
        bed.pages(&target, "failure").len(),
        1,
        "no page for the fault after it rejoined"
    );
}

/// A fault right after the owner is cut off from etcd, while its lease still runs: the cut
/// daemon may see it first but cannot record a restart intent, so the database is started
/// once in all (by whoever holds the owner key), with one failure and one recovery page.
#[test]
fn a_fault_in_the_moment_a_daemon_is_cut_off_is_restarted_once_and_paged_once() {
    let (bed, owners) = clustered(Spec {
        etcd_nodes: 3,
        ..Spec::default()
    });
    let (cut, target, others) = victim(&owners);
    docker(&[
        "network",
        "disconnect",
        &bed.coord.name,
        &bed.daemon(&cut).container,
    ]);
    let since = bed.kill_db(bed.db_of(&target));
    bed.wait(
        Duration::from_secs(bed.spec.ttl_secs + 10),
        &format!("{target} owned by one of {others:?}"),
        || {
            bed.owners()
                .get(&target)
                .filter(|m| others.contains(&m.as_str()))
                .map(|_| ())
        },
    );
    assert_healed_once(&bed, &target, since, Duration::from_secs(3));
}

/// Pause the owner of a target past its TTL (docker pause: SIGSTOP to every process), kill
/// the database meanwhile, let the new owner heal it, then resume the paused one: it must not
/// act on the ownership it held (its buffered Engine events included).
#[test]
fn a_daemon_paused_past_its_ttl_does_not_act_on_stale_ownership_when_resumed() {
    let (bed, owners) = clustered(Spec::default());
    let (paused, target, others) = victim(&owners);
    let container = bed.daemon(&paused).container.clone();
    docker(&["pause", &container]);
    let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        bed.wait(
            Duration::from_secs(bed.spec.ttl_secs + 10),
            &format!("{target} owned by one of {others:?} while {paused} is paused"),
            || {
                bed.owners()
                    .get(&target)
                    .filter(|m| others.contains(&m.as_str()))
                    .map(|_| ())
            },
        );
        let since = bed.kill_db(bed.db_of(&target));
        bed.wait_healed(&target, Duration::from_secs(60));
        since
    }));
    docker(&["unpause", &container]);
    let since = resumed.unwrap_or_else(|e| std::panic::resume_unwind(e));
    // It notices its lease is gone and registers again; two more intervals for any stale act.
    bed.wait(
        Duration::from_secs(bed.spec.ttl_secs + 15),
        &format!("{paused} registered again after the pause"),
        || bed.members().contains(&paused).then_some(()),
    );
    assert_healed_once(&bed, &target, since, Duration::from_secs(2));
}

/// A 3-node etcd cluster loses its leader during an incident: the database is still
/// restarted exactly once and paged once; the fleet stays owned.
#[test]
fn killing_the_etcd_leader_during_an_incident_causes_no_double_restart() {
    let (bed, _) = clustered(Spec {
        etcd_nodes: 3,
        ttl_secs: 3,
        ..Spec::default()
    });
    let target = "t00".to_string();
    let since = bed.kill_db(bed.db_of(&target));
    bed.wait(
        Duration::from_secs(15),
        &format!("{target}'s failure page"),
        || (!bed.pages(&target, "failure").is_empty()).then_some(()),
    );
    let leader = bed.leader().expect("etcd has a leader");
    docker(&["kill", &leader]);
    assert_healed_once(&bed, &target, since, Duration::from_secs(3));
    bed.wait_all_owned(&MEMBERS, Duration::from_secs(20));
    assert!(bed.leader().is_some_and(|l| l != leader), "a new leader");
}

/// Restart every daemon in turn (docker stop, then start); while each is down a database it
/// owned is killed. Every fault is healed by one start, paged once, none missed.
#[test]
fn a_rolling_restart_of_all_daemons_misses_no_fault_and_pages_none_twice() {
    let (bed, _) = clustered(Spec::default());
    let began = Instant::now();
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    for (i, member) in MEMBERS.iter().enumerate() {
        let owners = bed.wait_settled(&MEMBERS, Duration::from_secs(60));
        let target = owned_by(&owners, member).unwrap_or_else(|| format!("t{i:02}"));
        let container = bed.daemon(member).container.clone();
        docker(&["stop", "-t", "10", &container]);
        let since = bed.kill_db(bed.db_of(&target));
        *faults.entry(target.clone()).or_insert(0) += 1;
        let want = faults[&target];
        bed.wait(
            Duration::from_secs(60),
            &format!("{target} healed while {member} is down (fault {want})"),
            || {
                (bed.db_answers(bed.db_of(&target)) && bed.pages(&target, "recovery").len() >= want)
                    .then_some(())
            },
        );
        docker(&["start", &container]);
        bed.wait_healthy(i, Duration::from_secs(30));
        let db = bed.db_of(&target);
        assert_eq!(
            bed.starts_since(&db.container, since),
            1,
            "{target}: one start for the fault while {member} was down\n{}",
            bed.diagnose()
        );
    }
    bed.wait_all_owned(&MEMBERS, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    for t in bed.target_names() {
        let want = faults.get(&t).copied().unwrap_or(0);
        assert_eq!(
            (
                bed.pages(&t, "failure").len(),
                bed.pages(&t, "recovery").len()
            ),
            (want, want),
            "{t}: one failure and one recovery page per fault"
        );
    }
    // A graceful stop leaves quietly: no daemon pages a coordination loss.
    let lost = bed.coordination_alerts(began);
    assert!(lost.is_empty(), "no coordination-lost page: {lost:?}");
    bed.receiver.assert_all_well_formed();
}

/// Two daemons own thirty targets; a third joins. It takes its share at the configured
/// hand-off rate (per daemon handing off), not all at once; every target keeps an owner key
/// throughout, and each is probed during and after it, with no gap of three TTLs (its
/// database's login log; the gaps are printed).
#[test]
fn a_joining_daemon_takes_targets_gradually_and_none_goes_unprobed() {
    let mut bed = Bed::new(Spec {
        targets: 30,
        daemons: 2,
        ..Spec::default()
    });
    bed.start_daemons();
    bed.wait_settled(&MEMBERS[..2], Duration::from_secs(60));
    let from = chrono::Utc::now().naive_utc();
    let i = bed.add_daemon("node-c");
    // Hand-offs to node-c start once its member key is there: the pace is counted from the
    // moment it was seen (plus a second for the polls' own lag on a loaded host).
    bed.wait(Duration::from_secs(60), "node-c's member key", || {
        bed.members().iter().any(|m| m == "node-c").then_some(())
    });
    let joined = Instant::now() - Duration::from_secs(1);
    bed.wait_healthy(i, Duration::from_secs(60));
    let rate = f64::from(bed.spec.handoffs_per_second);
    let mut first: Option<Instant> = None;
    let mut samples = vec![];
    let end = Instant::now() + Duration::from_secs(40);
    loop {
        let o = bed.owners();
        let mine = shares(&o).get("node-c").copied().unwrap_or(0);
        if mine > 0 && first.is_none() {
            first = Some(joined);
        }
        let missing: Vec<String> = bed
            .target_names()
            .into_iter()
            .filter(|t| !o.contains_key(t))
            .collect();
        assert!(
            missing.is_empty(),
            "targets without an owner key during the hand-off: {missing:?}"
        );
        if let Some(f) = first {
            let s = f.elapsed().as_secs_f64();
            samples.push((s, mine));
            // Each of the two daemons that give targets away keeps to the rate.
            assert!(
                mine as f64 <= 2.0 * (rate * s + rate) + 1.0,
                "node-c owns {mine} after {s:.1} s: faster than {rate}/s from each giver ({samples:?})"
            );
        }
        if mine >= 7 {
            break;
        }
        assert!(
            Instant::now() < end,
            "node-c took only {mine} of 30 in 40 s: {samples:?}\n{}",
            bed.diagnose()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("hand-off samples (s since the first, owned by node-c): {samples:?}");
    // Seven seconds more: a target left unwatched in the hand-off shows as a gap to the end.
    std::thread::sleep(Duration::from_secs(7));
    let to = chrono::Utc::now().naive_utc();
    let mut gaps = vec![];
    for t in bed.target_names() {
        let mut at: Vec<_> = bed
            .probe_logins(&t)
            .into_iter()
            .map(|(at, _)| at)
            .filter(|at| *at >= from && *at <= to)
            .collect();
        at.sort();
        at.push(to);
        let worst = at
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_else(|| chrono::Duration::seconds(999));
        // Unwatched means a gap past a takeover (TTL 2 s and the claim); a loaded host's late
        // probes and a hand-off's own steps make gaps of one to four seconds (printed).
        assert!(
            worst < chrono::Duration::milliseconds(6000),
            "{t} went {worst} without a probe during or after the hand-off ({} probes)",
            at.len() - 1
        );
        gaps.push(worst.num_milliseconds());
    }
    gaps.sort();
    eprintln!(
        "longest gap between two probes of a target during the hand-off: median {} ms, worst {} ms (interval 500 ms)",
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1]
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// compose/ha.yml as shipped, driven by scripts/test_ha.sh the way an operator runs it: it
/// brings the stack up from the local images, kills a daemon and cuts one off etcd, and must
/// report every step OK. Unique project, networks and ports, so it runs beside other tests.
#[test]
fn the_ha_compose_stack_passes_its_chaos_script() {
    let tag = format!("{:06x}", rand::random::<u32>() & 0xffffff);
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env.ha");
    let port = free_port();
    std::fs::write(
        &env,
        format!(
            "DB_PASSWORD=pw-{tag}\nWEBHOOK_URL=http://host.docker.internal:{port}/hook\n\
             CLUSTER_TTL=2s\nHEALTH_CHECK_INTERVAL=500ms\nPOSTGRES_IMAGE={}\nETCD_IMAGE={}\n\
             SENTINEL_IMAGE={}\nCOORD_NETWORK=sr-ha-{tag}-coord\nDATA_NETWORK=sr-ha-{tag}-data\n\
             SENTINEL_PORT_A={}\nSENTINEL_PORT_B={}\nSENTINEL_PORT_C={}\n",
            support::docker::postgres_image(),
            support::ha::etcd_image(),
            support::ha::sentinel_image(),
            free_port(),
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("scripts/test_ha.sh"))
        // Takeover goal TTL + 5 s here: this machine runs other tests beside it.
        .args(["--up", "--down", "--timeout", "30", "--slack", "5"])
        .env("COMPOSE_PROJECT_NAME", format!("srha{tag}"))
        .env("ENV_FILE", &env)
        .env("HA_RECEIVER_PORT", port.to_string())
        .env("SENTINEL_BINARY", support::bin())
        .output()
        .expect("run scripts/test_ha.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "test_ha.sh failed:\n{text}");
    for step in ["ownership", "kill", "cut-off"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(step) && l.trim_end().ends_with("OK")),
            "{step} OK:\n{text}"
        );
    }
}

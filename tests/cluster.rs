//! Several daemons sharing one fleet through a real etcd (bare processes on loopback; the
//! Docker-based scenarios with hosts cut off for real are in tests/ha.rs). Every outcome is
//! counted from outside the daemons: owner keys in etcd, the servers' own logs (one "ready to
//! accept connections" per start), postmaster pids, and payloads at a real receiver.

mod support;

use std::time::Duration;
use support::etcd::{shares, time_until, write_cluster_registry, Etcd, Relay};
use support::receiver::Receiver;
use support::*;

const TTL: Duration = Duration::from_secs(2);
const LONG: Duration = Duration::from_secs(60);

/// One daemon of the cluster.
struct Node {
    ws: Workspace,
    d: Daemon,
    member: String,
    api: String,
}

impl Node {
    fn start(member: &str, etcd_url: &str, notify: &str, targets: &[TargetSpec]) -> Self {
        let ws = Workspace::new();
        let api = Self::write(&ws, member, etcd_url, notify, targets);
        let d = Daemon::run(&ws, &[]);
        Self {
            ws,
            d,
            member: member.into(),
            api,
        }
    }

    /// The registry of one daemon of the cluster; answers its API address.
    fn write(
        ws: &Workspace,
        member: &str,
        etcd_url: &str,
        notify: &str,
        targets: &[TargetSpec],
    ) -> String {
        let ttl = TTL.as_secs();
        write_cluster_registry(ws, member, etcd_url, ttl, "", notify, targets)
    }

    /// Starts this member again (same workspace, same registry).
    fn restart(&mut self) {
        self.d = Daemon::run(&self.ws, &[]);
    }

    fn get(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        let out = std::process::Command::new("curl")
            .args(["-s", "-m", "3", "-w", "\n%{http_code}"])
            .arg(format!("http://{}{path}", self.api))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n')?;
        Some((code.trim().parse().ok()?, serde_json::from_str(body).ok()?))
    }

    /// The targets this daemon says it runs.
    fn running(&self) -> Vec<String> {
        self.get("/status")
            .map(|(_, v)| {
                v["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn spec<'a>(name: &'a str, pg: &'a Pg) -> TargetSpec<'a> {
    let mut s = TargetSpec::new(name, pg);
    s.recovery_timeout = "20s";
    s
}

#[test]
fn three_daemons_share_thirty_targets_each_owned_by_exactly_one() {
    let etcd = Etcd::start();
    let pgs: Vec<Pg> = (0..3).map(|_| Pg::start()).collect();
    let names: Vec<String> = (0..30).map(|i| format!("db{i:02}")).collect();
    let specs: Vec<TargetSpec> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut s = spec(n, &pgs[i % 3]);
            s.interval = "1s";
            s.pid_watch = false;
            s
        })
        .collect();
    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|m| Node::start(m, &etcd.url, "  console: false\n", &specs))
        .collect();
    // Hand-offs settle on an even share (each member takes at most its ceiling share).
    let owners = wait_for(LONG, "30 targets shared evenly by 3 daemons", || {
        let o = etcd.owners();
        let c = shares(&o);
        (o.len() == 30 && c.len() == 3 && c.values().all(|n| *n == 10)).then_some(o)
    });
    println!("shares: {:?}", shares(&owners));
    // Each daemon runs exactly what etcd gives it; together, every target once.
    let mut seen: Vec<String> = vec![];
    for n in &nodes {
        let mine: Vec<String> = owners
            .iter()
            .filter(|(_, m)| **m == n.member)
            .map(|(t, _)| t.clone())
            .collect();
        let running = wait_for(LONG, "the daemon runs its share", || {
            let mut r = n.running();
            r.sort();
            (r == mine).then_some(r)
        });
        seen.extend(running);
    }
    seen.sort();
    assert_eq!(seen, names, "every target run by exactly one daemon");
    let (code, health) = nodes[0].get("/healthz").expect("healthz");
    assert_eq!(code, 200, "{health}");
    assert_eq!(
        health["checks"]["cluster"]["members"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[test]
fn a_killed_daemons_targets_are_taken_over_and_a_fault_in_the_gap_is_healed_once() {
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pgs: Vec<Pg> = (0..4).map(|_| Pg::start()).collect();
    let names = ["a", "b", "c", "d"];
    let specs: Vec<TargetSpec> = names.iter().zip(&pgs).map(|(n, pg)| spec(n, pg)).collect();
    let notify = notify_all(&r);
    let n1 = Node::start("n1", &etcd.url, &notify, &specs);
    let n2 = Node::start("n2", &etcd.url, &notify, &specs);
    let owners = wait_for(LONG, "both daemons own targets", || {
        let o = etcd.owners();
        (o.len() == 4 && shares(&o).len() == 2).then_some(o)
    });
    let (victim, _) = owners
        .iter()
        .find(|(_, m)| *m == "n1")
        .expect("n1 owns a target");
    let pg = &pgs[names.iter().position(|n| n == victim).expect("known")];
    wait_for(LONG, "n1 runs its targets", || {
        n1.running().contains(victim).then_some(())
    });
    let (starts_before, pid_before) = (pg.starts(), pg.pid());

    n1.d.signal(libc::SIGKILL);
    pg.kill9();
    let took = time_until(LONG, || {
        etcd.owners().get(victim.as_str()).map(String::as_str) == Some("n2")
    })
    .expect("n2 takes the target over");
    println!(
        "takeover of {victim}: {:.2} s (ttl {} s)",
        took.as_secs_f64(),
        TTL.as_secs()
    );
    assert!(
        took <= TTL * 2 + Duration::from_secs(2),
        "takeover took {took:?} with a {TTL:?} ttl"
    );
    wait_for(LONG, "the server answers again", || {
        pg.answers().then_some(())
    });
    wait_for(LONG, "the recovery notice", || {
        (r.hook_count("recovery", victim) >= 1).then_some(())
    });
    // Time for a second restart or a duplicate page to show, if one were coming.
    std::thread::sleep(TTL * 3);
    assert_eq!(pg.starts() - starts_before, 1, "started exactly once");
    assert_ne!(pg.pid(), pid_before);
    assert_eq!(r.hook_count("failure", victim), 1, "one failure notice");
    assert_eq!(r.hook_count("recovery", victim), 1, "one recovery notice");
    r.assert_all_well_formed();
    drop(n1);
    drop(n2);
}

#[test]
fn a_daemon_cut_off_from_etcd_stops_remediating_and_its_targets_are_healed_once_by_another() {
    let etcd = Etcd::start();
    let relay = Relay::to(&etcd.url);
    let r = Receiver::start();
    let pgs: Vec<Pg> = (0..4).map(|_| Pg::start()).collect();
    let names = ["a", "b", "c", "d"];
    let specs: Vec<TargetSpec> = names.iter().zip(&pgs).map(|(n, pg)| spec(n, pg)).collect();
    let notify = notify_all(&r);
    // n1 reaches etcd only through the relay; both reach the servers.
    let n1 = Node::start("n1", &relay.url, &notify, &specs);
    let n2 = Node::start("n2", &etcd.url, &notify, &specs);
    let owners = wait_for(LONG, "both daemons own targets", || {
        let o = etcd.owners();
        (o.len() == 4 && shares(&o).len() == 2).then_some(o)
    });
    let victim = owners
        .iter()
        .find(|(_, m)| *m == "n1")
        .map(|(t, _)| t.clone())
        .expect("n1 owns a target");
    let pg = &pgs[names.iter().position(|n| *n == victim).expect("known")];

    relay.cut();
    // n1 must give up its targets: /healthz says why, before its lease can be taken over.
    wait_for(LONG, "n1 reports lost coordination", || {
        n1.get("/healthz").filter(|(c, _)| *c == 503).map(|_| ())
    });
    wait_for(LONG, "n2 owns every target", || {
        etcd.owners().values().all(|m| m == "n2").then_some(())
    });
    let starts_before = pg.starts();
    pg.kill9();
    wait_for(LONG, "the server answers again", || {
        pg.answers().then_some(())
    });
    std::thread::sleep(TTL * 3);
    assert_eq!(pg.starts() - starts_before, 1, "healed exactly once");
    assert_eq!(
        r.hook_count("failure", &victim),
        1,
        "one failure notice: {:#?}\nn1: {}",
        r.hook_events("failure")
            .iter()
            .map(|h| &h.body)
            .collect::<Vec<_>>(),
        n1.d.log_text()
    );
    wait_for(LONG, "n1's coordination-lost alert", || {
        r.hook_events("escalation")
            .iter()
            .any(|h| h.body["reason"] == "coordination_lost")
            .then_some(())
    });

    relay.mend();
    wait_for(LONG, "n1 joins again and gets its share back", || {
        (shares(&etcd.owners()).get("n1").copied().unwrap_or(0) >= 1).then_some(())
    });
    wait_for(LONG, "n1 healthy again", || {
        n1.get("/healthz").filter(|(c, _)| *c == 200).map(|_| ())
    });
    assert_eq!(
        r.hook_events("escalation")
            .iter()
            .filter(|h| h.body["reason"] == "coordination_lost")
            .count(),
        1,
        "coordination lost said once"
    );
    drop(n2);
}

#[test]
fn a_daemon_paused_past_its_ttl_never_acts_on_stale_ownership() {
    let etcd = Etcd::start();
    let pgs: Vec<Pg> = (0..4).map(|_| Pg::start()).collect();
    let names = ["a", "b", "c", "d"];
    let specs: Vec<TargetSpec> = names.iter().zip(&pgs).map(|(n, pg)| spec(n, pg)).collect();
    let n1 = Node::start("n1", &etcd.url, "  console: false\n", &specs);
    let n2 = Node::start("n2", &etcd.url, "  console: false\n", &specs);
    let owners = wait_for(LONG, "both daemons own targets", || {
        let o = etcd.owners();
        (o.len() == 4 && shares(&o).len() == 2).then_some(o)
    });
    let victim = owners
        .iter()
        .find(|(_, m)| *m == "n1")
        .map(|(t, _)| t.clone())
        .expect("n1 owns a target");
    let pg = &pgs[names.iter().position(|n| *n == victim).expect("known")];
    wait_for(LONG, "n1 runs its targets", || {
        n1.running().contains(&victim).then_some(())
    });
    let starts_before = pg.starts();
    n1.d.signal(libc::SIGSTOP);
    pg.kill9();
    wait_for(LONG, "n2 takes over and heals", || {
        (etcd.owners().get(&victim).map(String::as_str) == Some("n2") && pg.answers()).then_some(())
    });
    n1.d.signal(libc::SIGCONT);
    std::thread::sleep(TTL * 3);
    assert_eq!(pg.starts() - starts_before, 1, "started once, by n2 only");
    drop(n2);
}

#[test]
fn with_etcd_unreachable_nothing_is_restarted_until_it_answers_again() {
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pgs: Vec<Pg> = (0..4).map(|_| Pg::start()).collect();
    let names = ["a", "b", "c", "d"];
    let specs: Vec<TargetSpec> = names.iter().zip(&pgs).map(|(n, pg)| spec(n, pg)).collect();
    let notify = notify_all(&r);
    let n1 = Node::start("n1", &etcd.url, &notify, &specs);
    let n2 = Node::start("n2", &etcd.url, &notify, &specs);
    wait_for(LONG, "both daemons own targets", || {
        let o = etcd.owners();
        (o.len() == 4 && shares(&o).len() == 2).then_some(())
    });
    let pg = &pgs[0];
    let starts_before = pg.starts();
    etcd.signal(libc::SIGSTOP);
    pg.kill9();
    std::thread::sleep(TTL * 4);
    assert_eq!(
        pg.starts(),
        starts_before,
        "no restart without etcd (fail closed)"
    );
    for n in [&n1, &n2] {
        let (code, body) = n.get("/healthz").expect("healthz");
        assert_eq!(code, 503, "{body}");
        assert!(body["problems"].to_string().contains("cluster"), "{body}");
    }
    let lost = r
        .hook_events("escalation")
        .iter()
        .filter(|h| h.body["reason"] == "coordination_lost")
        .count();
    assert_eq!(lost, 2, "one coordination-lost alert per daemon");

    etcd.signal(libc::SIGCONT);
    wait_for(LONG, "the server is healed once etcd answers", || {
        pg.answers().then_some(())
    });
    std::thread::sleep(TTL * 3);
    assert_eq!(pg.starts() - starts_before, 1, "healed exactly once");
    assert_eq!(r.hook_count("recovery", "a"), 1, "one recovery notice");
}

#[test]
fn a_rolling_restart_of_every_daemon_misses_no_fault_and_pages_once() {
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pgs: Vec<Pg> = (0..4).map(|_| Pg::start()).collect();
    let names = ["a", "b", "c", "d"];
    let specs: Vec<TargetSpec> = names.iter().zip(&pgs).map(|(n, pg)| spec(n, pg)).collect();
    let notify = notify_all(&r);
    let mut nodes: Vec<Node> = ["n1", "n2"]
        .iter()
        .map(|m| Node::start(m, &etcd.url, &notify, &specs))
        .collect();
    let balanced = |etcd: &Etcd| {
        let o = etcd.owners();
        o.len() == 4 && shares(&o).values().all(|n| *n == 2)
    };
    wait_for(LONG, "an even share", || balanced(&etcd).then_some(()));
    let before: Vec<usize> = pgs.iter().map(Pg::starts).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        // A graceful stop revokes the lease: the other daemon takes over at once.
        node.d.signal(libc::SIGTERM);
        node.d.wait_exit(LONG);
        let pg = &pgs[i];
        pg.kill9();
        wait_for(LONG, "the fault is healed while one daemon is down", || {
            pg.answers().then_some(())
        });
        node.restart();
        wait_for(LONG, "an even share again", || {
            balanced(&etcd).then_some(())
        });
    }
    std::thread::sleep(TTL * 3);
    for i in 0..2 {
        assert_eq!(pgs[i].starts() - before[i], 1, "{} started once", names[i]);
        assert_eq!(
            r.hook_count("failure", names[i]),
            1,
            "{}: one failure page",
            names[i]
        );
        assert_eq!(
            r.hook_count("recovery", names[i]),
            1,
            "{}: one recovery",
            names[i]
        );
    }
    for (i, pg) in pgs.iter().enumerate().skip(2) {
        assert_eq!(pg.starts(), before[i], "{} untouched", names[i]);
    }
    // A graceful stop is no loss of coordination.
    assert_eq!(r.hook_events("escalation").len(), 0, "no escalation");
    r.assert_all_well_formed();
}

/// When the server accepted each connection of `app` (its log, with log_connections on).
fn connections(pg: &Pg, app: &str) -> Vec<chrono::NaiveDateTime> {
    let needle = format!("application_name={app}");
    files_under(&pg.cluster.root.join("log"))
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .filter(|l| l.contains("connection authorized") && l.ends_with(&needle))
                .filter_map(|l| {
                    chrono::NaiveDateTime::parse_from_str(l.get(..23)?, "%Y-%m-%d %H:%M:%S%.3f")
                        .ok()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_joining_daemon_takes_its_share_gradually_and_no_target_goes_unprobed() {
    let etcd = Etcd::start();
    let pg = Pg::start();
    pg.psql("ALTER SYSTEM SET log_connections = on");
    pg.psql("SELECT pg_reload_conf()");
    let names: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    // Each target logs in under its own application_name: the server's log shows who probed
    // what and when, whichever daemon it was.
    let dsns: Vec<String> = names
        .iter()
        .map(|n| format!("{}?application_name={n}", pg.cluster.dsn()))
        .collect();
    let specs: Vec<TargetSpec> = names
        .iter()
        .zip(&dsns)
        .map(|(n, d)| {
            let mut s = spec(n, &pg);
            s.interval = "1s";
            s.pid_watch = false;
            s.dsn = Some(d);
            s
        })
        .collect();
    let _n1 = Node::start("n1", &etcd.url, "  console: false\n", &specs);
    wait_for(LONG, "n1 owns all", || {
        (etcd.owners().len() == 10).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let joined = chrono::Utc::now().naive_utc();
    let _n2 = Node::start("n2", &etcd.url, "  console: false\n", &specs);
    // 5 move to n2 at 2 a second: a few seconds, not at once.
    let mut seen_partial = false;
    wait_for(LONG, "an even share", || {
        let c = shares(&etcd.owners());
        let n2 = c.get("n2").copied().unwrap_or(0);
        seen_partial |= (1..5).contains(&n2);
        (n2 == 5).then_some(())
    });
    assert!(seen_partial, "targets moved one by one, not all at once");
    std::thread::sleep(Duration::from_secs(3));
    for n in &names {
        let times: Vec<_> = connections(&pg, n)
            .into_iter()
            .filter(|t| *t >= joined - chrono::Duration::seconds(2))
            .collect();
        assert!(times.len() >= 5, "{n} probed {} times", times.len());
        let worst = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        // The interval, plus the hand-off: the old owner stops, the new one starts and probes.
        assert!(
            worst <= chrono::Duration::milliseconds(2000),
            "{n} went unprobed for {worst} around the hand-off"
        );
    }
}

#[test]
fn a_daemon_killed_mid_incident_is_followed_by_one_that_continues_the_same_incident() {
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pgs: Vec<Pg> = (0..4).map(|_| Pg::start()).collect();
    let names = ["a", "b", "c", "d"];
    let specs: Vec<TargetSpec> = names.iter().zip(&pgs).map(|(n, pg)| spec(n, pg)).collect();
    let notify = notify_all(&r);
    // n1 alone owns everything, and dies (SIGKILL, by itself) once a's evidence is archived.
    let ws1 = Workspace::new();
    Node::write(&ws1, "n1", &etcd.url, &notify, &specs);
    let mut n1 = Daemon::run(&ws1, &[("SENTINEL_FAULT_KILL", "a:archived")]);
    wait_for(LONG, "n1 owns all", || {
        (etcd.owners().len() == 4).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let before = pgs[0].starts();
    pgs[0].kill9();
    n1.wait_exit(LONG);
    let bundle = ws1.bundles().pop().expect("n1 archived a's evidence");
    let incident = bundle.file_name().unwrap().to_string_lossy().to_string();
    assert!(!pgs[0].answers(), "nothing restarted a yet");

    let _n2 = Node::start("n2", &etcd.url, &notify, &specs);
    wait_for(LONG, "n2 heals a", || pgs[0].answers().then_some(()));
    wait_for(LONG, "the recovery notice", || {
        (r.hook_count("recovery", "a") >= 1).then_some(())
    });
    std::thread::sleep(TTL * 3);
    assert_eq!(pgs[0].starts() - before, 1, "started exactly once");
    let ids: Vec<String> = r
        .accepted("/hook")
        .iter()
        .filter(|h| h.body["target"] == "a")
        .map(|h| {
            let f = |k: &str| h.body[k].as_str().unwrap_or_default().to_string();
            format!("{}:{}", f("event"), f("incident_id"))
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            format!("failure:{incident}"),
            format!("recovery:{incident}")
        ],
        "one incident, continued by the new owner"
    );
}

/// Two daemons; the owner of `a` is killed during a slow heal, after its failure page went
/// out: the other takes the incident over and sends only what was not delivered.
#[test]
fn an_owner_killed_mid_heal_after_its_page_went_out_is_followed_by_no_second_page() {
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pg = Pg::start();
    let mut s = spec("a", &pg);
    // The heal takes a while: the owner is killed while it runs (its child lives on and
    // starts the server, as a service manager's would).
    let start = pg.cluster.start_argv().join(" ");
    s.heal_argv = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("sleep 10; exec {start}"),
    ]);
    s.recovery_timeout = "40s";
    let specs = [s];
    let notify = notify_all(&r);
    let mut nodes: Vec<Node> = ["n1", "n2"]
        .iter()
        .map(|m| Node::start(m, &etcd.url, &notify, &specs))
        .collect();
    let owner = wait_for(LONG, "a is owned and run", || {
        let o = etcd.owners().get("a").cloned()?;
        let n = nodes.iter().find(|n| n.member == o)?;
        n.running().contains(&"a".to_string()).then_some(o)
    });
    let starts_before = pg.starts();
    pg.kill9();
    let page = wait_for(LONG, "the failure page", || {
        r.hook_events("failure").into_iter().next()
    });
    let incident = page.body["incident_id"].as_str().expect("id").to_string();
    // The owner records the delivery in the target's state in etcd right after the receiver
    // accepted it.
    let state_key = "/sentinel-remedy/state/a";
    let recorded = time_until(Duration::from_secs(3), || {
        etcd.ctl(&["get", state_key, "--print-value-only"])
            .is_some_and(|v| v.contains("\"delivered\""))
    });
    println!(
        "delivery recorded in etcd after {recorded:?}: {}",
        etcd.ctl(&["get", state_key, "--print-value-only"])
            .unwrap_or_default()
    );
    let victim = nodes.iter().position(|n| n.member == owner).expect("owner");
    assert!(
        !pg.answers(),
        "the slow heal has not started the server yet: {}",
        nodes[victim].d.log_text()
    );
    nodes[victim].d.signal(libc::SIGKILL);
    nodes[victim].d.wait_exit(LONG);
    let other = &nodes[1 - victim];
    wait_for(LONG, "the other daemon takes a over", || {
        (etcd.owners().get("a") == Some(&other.member)).then_some(())
    });
    wait_for(LONG, "the recovery notice", || {
        (r.hook_count("recovery", "a") >= 1).then_some(())
    });
    std::thread::sleep(TTL * 3);
    let seen: Vec<String> = r
        .accepted("/hook")
        .iter()
        .filter(|h| h.body["target"] == "a")
        .map(|h| {
            let f = |k: &str| h.body[k].as_str().unwrap_or_default().to_string();
            format!("{}:{}", f("event"), f("incident_id"))
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            format!("failure:{incident}"),
            format!("recovery:{incident}")
        ],
        "one failure page and one recovery, whichever daemon sent them\n{}",
        other.d.log_text()
    );
    let slack_pages = r
        .accepted("/slack")
        .iter()
        .filter(|h| {
            h.body["text"]
                .as_str()
                .unwrap_or_default()
                .contains("a failed:")
        })
        .count();
    assert_eq!(slack_pages, 1, "one failure message on Slack");
    assert_eq!(pg.starts() - starts_before, 1, "started exactly once");
}

/// `members/{member}`'s value and lease, as etcdctl shows them.
fn member_key(etcd: &Etcd, member: &str) -> Option<(serde_json::Value, String)> {
    let key = format!("/sentinel-remedy/members/{member}");
    let value = etcd.ctl(&["get", &key, "--print-value-only"])?;
    let value: serde_json::Value = serde_json::from_str(value.trim()).ok()?;
    let lease = value["lease"].to_string();
    Some((value, lease))
}

#[test]
fn a_daemon_restarted_quickly_takes_its_old_session_over_and_another_of_its_name_is_refused() {
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pg = Pg::start();
    let specs = [spec("a", &pg)];
    let notify = notify_all(&r);
    // A long TTL: the killed daemon's lease outlives its restart by seconds.
    let ttl = 8;
    let ws = Workspace::new();
    write_cluster_registry(&ws, "n1", &etcd.url, ttl, "", &notify, &specs);
    let mut d = Daemon::run(&ws, &[]);
    wait_for(LONG, "n1 owns a", || {
        (etcd.owners().get("a").map(String::as_str) == Some("n1")).then_some(())
    });
    let (before, old_lease) = member_key(&etcd, "n1").expect("n1's member key");

    // A service manager's restart: killed, started again at once, same state directory.
    d.signal(libc::SIGKILL);
    d.wait_exit(LONG);
    let restarted = std::time::Instant::now();
    let d = Daemon::run(&ws, &[]);
    let (after, new_lease) = wait_for(LONG, "n1 registered again", || {
        member_key(&etcd, "n1").filter(|(_, l)| *l != old_lease)
    });
    let took = restarted.elapsed();
    wait_for(LONG, "n1 owns a again", || {
        (etcd.owners().get("a").map(String::as_str) == Some("n1")).then_some(())
    });
    println!(
        "rejoined {:.2} s after the restart (ttl {ttl} s); member key before {before}, after {after}",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(ttl),
        "the old session was taken over, not waited out: {took:?}"
    );
    assert_eq!(
        before["session"], after["session"],
        "the same session proof"
    );
    assert_ne!(old_lease, new_lease);
    assert_eq!(d.count("cluster_join_failed", None), 0, "{}", d.log_text());
    let errors: Vec<_> = d
        .records()
        .into_iter()
        .filter(|l| l["level"] == "ERRO")
        .collect();
    assert!(
        errors.is_empty(),
        "no ERROR on a quick restart: {errors:#?}"
    );
    d.wait_event("cluster_session_resumed", None, LONG);
    let token = ws.state().join("cluster-session");
    let mode = std::fs::metadata(&token)
        .expect("the session token file")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let lost = r
        .hook_events("escalation")
        .iter()
        .filter(|h| h.body["reason"] == "coordination_lost")
        .count();
    assert_eq!(lost, 0, "no coordination-lost page with etcd healthy");

    // Another daemon under the same member name (its own state directory: no token) is
    // refused, and n1's session stays.
    let ws2 = Workspace::new();
    write_cluster_registry(&ws2, "n1", &etcd.url, ttl, "", &notify, &specs);
    let impostor = Daemon::run(&ws2, &[]);
    let refused = impostor.wait_event("cluster_join_failed", None, LONG);
    println!("the other daemon named n1: {refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("another live daemon is registered as member 'n1'"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        member_key(&etcd, "n1").map(|(_, l)| l),
        Some(new_lease),
        "the running n1 keeps its member key"
    );
    assert_eq!(impostor.count("cluster_session_resumed", None), 0);
}

#[test]
fn with_every_daemon_cut_off_from_etcd_a_down_target_is_paged_once_never_restarted_then_healed_once(
) {
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pgs: Vec<Pg> = (0..2).map(|_| Pg::start()).collect();
    let names = ["a", "b"];
    let specs: Vec<TargetSpec> = names.iter().zip(&pgs).map(|(n, pg)| spec(n, pg)).collect();
    let notify = notify_all(&r);
    let relays = [Relay::to(&etcd.url), Relay::to(&etcd.url)];
    let nodes: Vec<Node> = ["n1", "n2"]
        .iter()
        .zip(&relays)
        .map(|(m, relay)| Node::start(m, &relay.url, &notify, &specs))
        .collect();
    let owner = wait_for(LONG, "each daemon owns a target", || {
        let o = etcd.owners();
        (o.len() == 2 && shares(&o).len() == 2).then(|| o["a"].clone())
    });
    let at = nodes.iter().position(|n| n.member == owner).expect("owner");
    wait_for(LONG, "a's owner runs it", || {
        nodes[at].running().contains(&"a".to_string()).then_some(())
    });
    let pg = &pgs[0];

    for relay in &relays {
        relay.cut();
    }
    for n in &nodes {
        wait_for(LONG, "the daemon reports lost coordination", || {
            n.get("/healthz").filter(|(c, _)| *c == 503).map(|_| ())
        });
    }
    let (starts_before, pid_before) = (pg.starts(), pg.pid());
    let killed = std::time::Instant::now();
    pg.kill9();
    let alerted = time_until(LONG, || r.hook_count("failure", "a") > 0);
    assert!(
        alerted.is_some(),
        "no alert that a is down: {}",
        nodes[at].d.log_text()
    );
    let page = r.hook_events("failure").remove(0);
    println!(
        "alerted {:.1} s after the kill: {}",
        killed.elapsed().as_secs_f64(),
        page.body
    );
    let summary = page.body["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("not restarting: coordination lost"),
        "{summary}"
    );
    std::thread::sleep(TTL * 3);
    assert_eq!(pg.starts(), starts_before, "no restart without etcd");
    assert!(!pg.answers(), "the postmaster was not started");
    assert_eq!(r.hook_count("failure", "a"), 1, "said once");

    // etcd answers again (a's last owner first): the incident continues, restarted once.
    relays[at].mend();
    wait_for(LONG, "a is healed once etcd answers", || {
        pg.answers().then_some(())
    });
    relays[1 - at].mend();
    wait_for(LONG, "the recovery notice", || {
        (r.hook_count("recovery", "a") >= 1).then_some(())
    });
    std::thread::sleep(TTL * 3);
    assert_eq!(pg.starts() - starts_before, 1, "started exactly once");
    assert_ne!(pg.pid(), pid_before);
    let incident = page.body["incident_id"].as_str().expect("id").to_string();
    let seen: Vec<String> = r
        .accepted("/hook")
        .iter()
        .filter(|h| h.body["target"] == "a")
        .map(|h| {
            let f = |k: &str| h.body[k].as_str().unwrap_or_default().to_string();
            format!("{}:{}", f("event"), f("incident_id"))
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            format!("failure:{incident}"),
            format!("recovery:{incident}")
        ],
        "one incident: paged once, recovered once\n{}",
        nodes[at].d.log_text()
    );
    assert_eq!(r.hook_count("failure", "b"), 0, "b was never down");
}

#[test]
fn a_page_withheld_during_a_short_fence_is_sent_when_the_fence_lifts_with_the_outage_on() {
    let etcd = Etcd::start();
    let relay = Relay::to(&etcd.url);
    let r = Receiver::start();
    let pg = Pg::start();
    let mut s = spec("a", &pg);
    s.heal = false; // alert only: the page is the only notice of this outage
    let ws = Workspace::new();
    let ttl = 8;
    let api = write_cluster_registry(&ws, "n1", &relay.url, ttl, "", &notify_all(&r), &[s]);
    // The agent stands down 10 s into a fence: a fence shorter than its reaction, during which
    // the Monitor runs on and withholds its notices.
    let d = Daemon::run(&ws, &[("SENTINEL_FAULT_STANDDOWN_DELAY", "10")]);
    wait_for(LONG, "n1 owns a", || {
        (etcd.owners().get("a").map(String::as_str) == Some("n1")).then_some(())
    });
    let (_, lease) = member_key(&etcd, "n1").expect("member key");
    std::thread::sleep(Duration::from_secs(1));

    let cut = std::time::Instant::now();
    relay.cut();
    let node = Node {
        ws,
        d,
        member: "n1".into(),
        api,
    };
    wait_for(LONG, "n1 is fenced", || {
        node.get("/healthz").filter(|(c, _)| *c == 503).map(|_| ())
    });
    pg.kill9();
    let withheld = node.d.wait_event("notice_withheld", Some("a"), LONG);
    relay.mend();
    println!(
        "relay cut for {:.1} s (ttl {ttl} s); withheld: {withheld}",
        cut.elapsed().as_secs_f64()
    );
    let incident = withheld["incident"].as_str().expect("incident").to_string();
    wait_for(LONG, "the page once the fence lifts", || {
        r.hook_events("escalation")
            .into_iter()
            .find(|h| h.body["target"] == "a")
    });
    std::thread::sleep(TTL * 3);
    assert_eq!(
        member_key(&etcd, "n1").map(|(_, l)| l),
        Some(lease),
        "the lease survived the fence"
    );
    let pages: Vec<String> = r
        .accepted("/hook")
        .iter()
        .filter(|h| h.body["target"] == "a")
        .map(|h| {
            let f = |k: &str| h.body[k].as_str().unwrap_or_default().to_string();
            format!("{}:{}:{}", f("event"), f("reason"), f("incident_id"))
        })
        .collect();
    assert_eq!(
        pages,
        vec![format!("escalation:no_heal_action:{incident}")],
        "the withheld page, once\n{}",
        node.d.log_text()
    );
    assert!(!pg.answers(), "alert only: nothing restarted");
}

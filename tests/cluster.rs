//! Several daemons sharing one fleet through a real etcd (bare processes on loopback; the
//! Docker-based scenarios with hosts cut off for real are in tests/ha.rs). Every outcome is
//! counted from outside the daemons: owner keys in etcd, the servers' own logs (one "ready to
//! accept connections" per start), postmaster pids, and payloads at a real receiver.

mod support;

use std::time::Duration;
use support::etcd::{shares, time_until, write_cluster_registry, Etcd, Relay};
use support::receiver::Receiver;
use support::tls::Pki;
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
        Self::start_with(member, etcd_url, "", &[], notify, targets)
    }

    /// As `start`, with `extra` lines in `cluster:` (tls, auth) and `env` for the daemon.
    fn start_with(
        member: &str,
        etcd_url: &str,
        extra: &str,
        env: &[(&str, &str)],
        notify: &str,
        targets: &[TargetSpec],
    ) -> Self {
        let ws = Workspace::new();
        let ttl = TTL.as_secs();
        let api = write_cluster_registry(&ws, member, etcd_url, ttl, extra, notify, targets);
        let d = Daemon::run(&ws, env);
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

    /// Like `start`, with another TTL (seconds).
    fn start_with_ttl(member: &str, etcd_url: &str, ttl_s: u64, targets: &[TargetSpec]) -> Self {
        let ws = Workspace::new();
        let quiet = "  console: false\n";
        let api = write_cluster_registry(&ws, member, etcd_url, ttl_s, "", quiet, targets);
        let d = Daemon::run(&ws, &[]);
        Self {
            ws,
            d,
            member: member.into(),
            api,
        }
    }

    /// Gives this daemon another list of targets, the rest of its registry as it was, and
    /// reloads it (SIGHUP).
    fn relist(&self, targets: &[TargetSpec]) {
        let text = std::fs::read_to_string(self.ws.config()).expect("registry");
        let head = &text[..text.rfind("targets:").expect("a targets section")];
        let body: String = targets.iter().map(TargetSpec::yaml).collect();
        std::fs::write(self.ws.config(), format!("{head}targets:{body}")).expect("registry");
        self.d.signal(libc::SIGHUP);
        self.d.wait_event("reload_applied", None, LONG);
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
    let names: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    let mut dsns = vec![];
    let specs = logged_specs(&pg, &names, &mut dsns);
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

/// Targets logging in under their own `application_name`, probed every second, on `pg` (its
/// log shows who probed what, whichever daemon it was).
fn logged_specs<'a>(
    pg: &'a Pg,
    names: &'a [String],
    dsns: &'a mut Vec<String>,
) -> Vec<TargetSpec<'a>> {
    pg.psql("ALTER SYSTEM SET log_connections = on");
    pg.psql("SELECT pg_reload_conf()");
    *dsns = names
        .iter()
        .map(|n| format!("{}?application_name={n}", pg.cluster.dsn()))
        .collect();
    names
        .iter()
        .zip(dsns.iter())
        .map(|(n, d)| {
            let mut s = spec(n, pg);
            s.interval = "1s";
            s.pid_watch = false;
            s.dsn = Some(d);
            s
        })
        .collect()
}

#[test]
fn an_owner_key_naming_no_live_member_is_taken_over_and_its_target_probed() {
    let etcd = Etcd::start();
    let pg = Pg::start();
    // Ghosts, written by hand before any daemon runs: a's key on no lease, b's on a live lease
    // of etcdctl's whose member never registered, c's for a target no daemon lists.
    let granted = etcd.ctl(&["lease", "grant", "600"]).expect("lease grant");
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    for (t, m, l) in [
        ("a", "ghost", None),
        ("b", "gone", Some(&lease)),
        ("c", "ghost", None),
    ] {
        let key = format!("/sentinel-remedy/owner/{t}");
        let mut args = vec!["put", key.as_str(), m];
        if let Some(l) = l {
            args.extend(["--lease", l.as_str()]);
        }
        etcd.ctl(&args).expect("put a ghost owner key");
    }
    let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    let mut dsns = vec![];
    let specs = logged_specs(&pg, &names, &mut dsns);
    let n1 = Node::start("n1", &etcd.url, "  console: false\n", &specs);
    wait_for(LONG, "n1 registered", || {
        etcd.under("sentinel-remedy", "members")
            .contains_key("n1")
            .then_some(())
    });
    let took = time_until(LONG, || {
        let o = etcd.owners();
        o.get("a").map(String::as_str) == Some("n1") && o.get("b").map(String::as_str) == Some("n1")
    })
    .unwrap_or_else(|| {
        panic!(
            "n1 never took the ghosts' targets over: {:?}",
            etcd.owners()
        )
    });
    println!(
        "ghost owners taken over {:.2} s after n1 joined (ttl {} s)",
        took.as_secs_f64(),
        TTL.as_secs()
    );
    assert!(took <= TTL * 2 + Duration::from_secs(2), "took {took:?}");
    for t in &names {
        wait_for(LONG, "the new owner probes the target", || {
            (!connections(&pg, t).is_empty()).then_some(())
        });
    }
    // A ghost nobody can take over (no daemon lists c) stays, and the status says so.
    let ghosts = wait_for(LONG, "the status shows c's ghost owner", || {
        let (_, v) = n1.get("/status")?;
        let g = v["cluster"]["ghost_owners"].clone();
        (g == serde_json::json!({"c": "ghost"})).then_some(g)
    });
    println!("status ghost_owners: {ghosts}");
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn daemons_listing_different_targets_run_only_what_they_list_and_the_keys_stay_put() {
    let etcd = Etcd::start();
    let pg = Pg::start();
    // a lists only-a and the shared ones, b the shared ones and only-b.
    let (a_names, b_names) = (
        strings(&["only-a", "s1", "s2", "s3", "s4"]),
        strings(&["s1", "s2", "s3", "s4", "only-b"]),
    );
    let (mut da, mut db) = (vec![], vec![]);
    let a_specs = logged_specs(&pg, &a_names, &mut da);
    let b_specs = logged_specs(&pg, &b_names, &mut db);
    let watch = etcd.watch_owners();
    let quiet = "  console: false\n";
    let a = Node::start("a", &etcd.url, quiet, &a_specs);
    let b = Node::start("b", &etcd.url, quiet, &b_specs);
    wait_for(
        LONG,
        "every target owned, only-a by a and only-b by b",
        || {
            let o = etcd.owners();
            let by = |t: &str| o.get(t).map(String::as_str);
            (o.len() == 6 && by("only-a") == Some("a") && by("only-b") == Some("b")).then_some(())
        },
    );
    let settled = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    let owners = etcd.owners();
    for (t, m) in [("only-a", "a"), ("only-b", "b")] {
        let changes = watch.changes(t, settled);
        println!(
            "{t}: {} owner-key changes in the 12 s after settling",
            changes.len()
        );
        let seq: Vec<&str> = changes.iter().map(|(_, m)| m.as_str()).collect();
        assert!(changes.len() <= 1, "{t}'s owner key moved: {seq:?}");
        assert_eq!(owners.get(t).map(String::as_str), Some(m), "{owners:?}");
    }
    assert!(
        !a.running().contains(&"only-b".to_string()),
        "a runs only-b"
    );
    assert!(
        !b.running().contains(&"only-a".to_string()),
        "b runs only-a"
    );
    // The disagreement is visible: /status, the metric, one WARN per daemon naming both.
    let disputed = serde_json::json!({"only-a": ["a"], "only-b": ["b"]});
    for n in [&a, &b] {
        let (_, st) = n.get("/status").expect("status");
        assert_eq!(st["cluster"]["disputed"], disputed, "{}", st["cluster"]);
        let warns = n.d.events("cluster_targets_disputed", None);
        assert_eq!(warns.len(), 1, "{warns:?}");
        let named = warns[0]["targets"].as_str().unwrap_or_default();
        assert!(
            named.contains("only-a") && named.contains("only-b"),
            "{named}"
        );
        let metrics = std::process::Command::new("curl")
            .args(["-s", "-m", "3", &format!("http://{}/metrics", n.api)])
            .output()
            .expect("curl metrics");
        let text = String::from_utf8_lossy(&metrics.stdout).to_string();
        let gauge = text
            .lines()
            .find_map(|l| l.strip_prefix("sentinel_cluster_targets_disputed "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert_eq!(gauge, Some(2.0), "sentinel_cluster_targets_disputed");
    }
}

#[test]
fn a_target_reloaded_away_from_its_owner_moves_once_to_a_daemon_that_lists_it() {
    let etcd = Etcd::start();
    let pg = Pg::start();
    let names = strings(&["s1", "s2", "s3", "s4"]);
    let (mut da, mut db) = (vec![], vec![]);
    let a_specs = logged_specs(&pg, &names, &mut da);
    let b_specs = logged_specs(&pg, &names, &mut db);
    let quiet = "  console: false\n";
    let a = Node::start("a", &etcd.url, quiet, &a_specs);
    let _b = Node::start("b", &etcd.url, quiet, &b_specs);
    let owners = wait_for(LONG, "an even share", || {
        let o = etcd.owners();
        (o.len() == 4 && shares(&o).values().all(|n| *n == 2)).then_some(o)
    });
    let (moved, _) = owners.iter().find(|(_, m)| *m == "a").expect("a owns one");
    let moved = moved.clone();
    let watch = etcd.watch_owners();
    let sighup = std::time::Instant::now();
    let mut dk = vec![];
    let kept: Vec<TargetSpec> = logged_specs(&pg, &names, &mut dk)
        .into_iter()
        .filter(|s| s.name != moved)
        .collect();
    a.relist(&kept);
    let took = time_until(LONG, || {
        etcd.owners().get(&moved).map(String::as_str) == Some("b")
    })
    .unwrap_or_else(|| panic!("b never took {moved}: {:?}", etcd.owners()));
    let taken = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(12));
    let all = watch.changes(&moved, sighup);
    let after = watch.changes(&moved, taken);
    println!(
        "{moved}: owned by b {:.2} s after a's reload; {} owner-key changes in all, {} in the 12 s after",
        took.as_secs_f64(),
        all.len(),
        after.len()
    );
    let seq: Vec<&str> = all.iter().map(|(_, m)| m.as_str()).collect();
    assert!(
        after.is_empty(),
        "{moved} moved on after b took it: {seq:?}"
    );
    assert!(all.len() <= 2, "{moved}: {seq:?}");
    assert_eq!(etcd.owners().get(&moved).map(String::as_str), Some("b"));
    assert!(!a.running().contains(&moved), "a still runs {moved}");
}

/// The revision etcd is at now.
fn etcd_revision(etcd: &Etcd) -> i64 {
    let out = etcd
        .ctl(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "--limit=1",
            "-w",
            "json",
        ])
        .expect("get");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    v["header"]["revision"].as_i64().expect("revision")
}

/// One daemon (TTL 10 s) reaching etcd through a relay owns x and y; the relay is cut, x's
/// owner key overwritten by a ghost's while the daemon cannot see it (and, with `compact`, the
/// history compacted past that change), the relay mended. Answers the daemon, once it has taken
/// x back and probes it again.
fn overwrite_while_cut_off(compact: bool) -> (Node, Etcd, Pg) {
    let etcd = Etcd::start();
    let relay = Relay::to(&etcd.url);
    let pg = Pg::start();
    let names = strings(&["x", "y"]);
    let mut dsns = vec![];
    let specs = logged_specs(&pg, &names, &mut dsns);
    // A long TTL, so the cut below ends well before the daemon would stand down.
    let n1 = Node::start_with_ttl("n1", &relay.url, 10, &specs);
    wait_for(LONG, "n1 owns and runs both", || {
        let o = etcd.owners();
        let mut r = n1.running();
        r.sort();
        (o.len() == 2 && o.values().all(|m| m == "n1") && r == names).then_some(())
    });
    relay.cut();
    etcd.ctl(&["put", "/sentinel-remedy/owner/x", "ghost"])
        .expect("put");
    if compact {
        etcd.ctl(&["put", "/elsewhere/k", "v"]).expect("put");
        let rev = etcd_revision(&etcd);
        etcd.ctl(&["compact", &rev.to_string()]).expect("compact");
    }
    std::thread::sleep(Duration::from_secs(1));
    relay.mend();
    wait_for(LONG, "n1 takes x back from the ghost", || {
        (etcd.owners().get("x").map(String::as_str) == Some("n1")).then_some(())
    });
    let since = chrono::Utc::now().naive_utc();
    wait_for(LONG, "x probed again", || {
        connections(&pg, "x")
            .iter()
            .any(|t| *t >= since - chrono::Duration::seconds(1))
            .then_some(())
    });
    assert_eq!(etcd.owners().get("y").map(String::as_str), Some("n1"));
    (n1, etcd, pg)
}

/// The daemon's own count of full reads of the cluster.
fn full_reads(n: &Node) -> f64 {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "3", &format!("http://{}/metrics", n.api)])
        .output()
        .expect("curl metrics");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("sentinel_cluster_full_reads_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_daemon_whose_watch_fell_behind_a_compaction_reads_the_cluster_again_and_loses_nothing() {
    let (n1, _etcd, _pg) = overwrite_while_cut_off(true);
    let reread = n1.d.events("cluster_watch_reread", None);
    println!(
        "watch canceled: {reread:?}; full reads: {}",
        full_reads(&n1)
    );
    assert_eq!(reread.len(), 1, "{reread:?}");
    assert!(reread[0]["compact_revision"].as_i64().unwrap_or(0) > 0);
    assert_eq!(
        full_reads(&n1),
        2.0,
        "the join's, and one after the compaction"
    );
}

#[test]
fn a_daemon_cut_off_from_etcd_for_a_moment_resumes_its_watch_without_reading_everything() {
    let (n1, _etcd, _pg) = overwrite_while_cut_off(false);
    assert!(n1.d.events("cluster_watch_reread", None).is_empty());
    assert_eq!(full_reads(&n1), 1.0, "only the join's full read");
}

/// etcd's reads (ranges, in plain reads and in transactions) and gRPC calls over `span`.
fn etcd_load(etcd: &Etcd, span: Duration) -> (f64, f64, f64) {
    let sample = || {
        (
            etcd.metric("etcd_debugging_mvcc_range_total", ""),
            etcd.metric("grpc_server_handled_total", "grpc_type=\"unary\""),
            etcd.metric("etcd_network_client_grpc_sent_bytes_total", ""),
        )
    };
    let before = sample();
    std::thread::sleep(span);
    let after = sample();
    (after.0 - before.0, after.1 - before.1, after.2 - before.2)
}

#[test]
fn etcd_serves_no_reads_in_the_steady_state_however_many_targets() {
    const FAST_HANDOFFS: &str = "  handoffs_per_second: 100\n";
    let pg = Pg::start();
    let mut figures = vec![];
    for n in [50usize, 500] {
        let etcd = Etcd::start();
        let names: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
        // Alert only, probed rarely: the daemons' own work stays small.
        let specs: Vec<TargetSpec> = names
            .iter()
            .map(|t| {
                let mut s = spec(t, &pg);
                s.interval = "30s";
                s.pid_watch = false;
                s.heal = false;
                s
            })
            .collect();
        let quiet = "  console: false\n";
        let nodes: Vec<Node> = ["n1", "n2"]
            .iter()
            // Hand-offs paced at 2 a second (the default) would take minutes to even out
            // 500 targets; the steady state is what this test measures.
            .map(|m| Node::start_with(m, &etcd.url, FAST_HANDOFFS, &[], quiet, &specs))
            .collect();
        let t0 = std::time::Instant::now();
        wait_for(Duration::from_secs(120), "an even share", || {
            let o = etcd.owners();
            (o.len() == n && shares(&o).values().all(|c| *c == n / 2)).then_some(())
        });
        println!(
            "{n} targets: an even share after {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        // The new owners write each gained target's state (a burst of some thousand calls at
        // 500 targets, over within one probe interval): the steady state starts after it.
        let settled = std::time::Instant::now();
        wait_for(Duration::from_secs(90), "a quiet 5 s", || {
            let (ranges, unary, _) = etcd_load(&etcd, Duration::from_secs(5));
            (ranges <= 4.0 && unary <= 4.0).then_some(())
        });
        println!(
            "{n} targets: the hand-over's writes settled after {:.1} s more",
            settled.elapsed().as_secs_f64()
        );
        let (ranges, unary, sent) = etcd_load(&etcd, Duration::from_secs(10));
        println!(
            "{n} targets, 2 daemons, 10 s of steady state: {ranges} range reads, {unary} unary gRPC calls, {sent} bytes sent by etcd"
        );
        figures.push((n, ranges, unary, sent));
        drop(nodes);
    }
    for (n, ranges, unary, _) in &figures {
        // The keep-alives are a stream, not unary calls; a stray call or two is tolerated.
        assert!(
            *ranges <= 4.0 && *unary <= 4.0,
            "{n} targets: {ranges} ranges, {unary} calls"
        );
    }
    let (small, large) = (figures[0].3, figures[1].3);
    assert!(
        large <= small * 2.0 + 20_000.0,
        "etcd sent {large} bytes at 500 targets, {small} at 50"
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

/// `cluster.tls` lines for `write_cluster_registry`: the CA file, and a client pair if given.
fn tls_lines(pki: &Pki, ca: &str, client: Option<&str>) -> String {
    let mut s = format!("  tls:\n    ca_file: {}\n", pki.file(&format!("{ca}.crt")));
    if let Some(c) = client {
        s += &format!(
            "    cert_file: {}\n    key_file: {}\n",
            pki.file(&format!("{c}.crt")),
            pki.file(&format!("{c}.key"))
        );
    }
    s
}

/// The `cluster_access_refused` lines a daemon logged: the keys they name.
fn refused_keys(n: &Node) -> Vec<String> {
    n.d.events("cluster_access_refused", None)
        .iter()
        .filter_map(|e| e["key"].as_str().map(String::from))
        .collect()
}

#[test]
fn over_mutual_tls_a_daemon_owns_its_targets_and_a_wrong_ca_or_client_certificate_is_named() {
    let pki = Pki::new();
    let etcd = Etcd::start_mtls(&pki);
    let pg = Pg::start();
    let specs = [spec("a", &pg), spec("b", &pg)];
    let none = "  console: false\n";
    let good = Node::start_with(
        "good",
        &etcd.url,
        &tls_lines(&pki, "ca", Some("client")),
        &[],
        none,
        &specs,
    );
    let owners = wait_for(LONG, "the daemon owns both targets over mTLS", || {
        let o = etcd.owners();
        (o.len() == 2 && o.values().all(|m| m == "good")).then_some(o)
    });
    println!("owners: {owners:?}");
    wait_for(LONG, "it runs them", || {
        (good.running().len() == 2).then_some(())
    });
    let bad = [
        (
            "wrong-ca",
            tls_lines(&pki, "other-ca", Some("client")),
            "cluster.tls.ca_file",
        ),
        (
            "no-cert",
            tls_lines(&pki, "ca", None),
            "cluster.tls.cert_file",
        ),
        (
            "wrong-cert",
            tls_lines(&pki, "ca", Some("other")),
            "cluster.tls.cert_file",
        ),
    ];
    for (member, lines, key) in bad {
        let n = Node::start_with(member, &etcd.url, &lines, &[], none, &specs);
        let keys = wait_for(LONG, "the refusal is logged", || {
            Some(refused_keys(&n)).filter(|k| !k.is_empty())
        });
        println!(
            "{member}: {keys:?}: {}",
            n.d.events("cluster_access_refused", None)[0]
        );
        assert_eq!(keys, [key], "{member}: said once, naming the key to fix");
        assert!(
            !etcd
                .under("sentinel-remedy", "members")
                .contains_key(member),
            "{member} never joined"
        );
        assert!(n.running().is_empty(), "{member} runs nothing");
    }
    assert_eq!(etcd.owners(), owners, "the good daemon kept its targets");
}

#[test]
fn with_etcd_authentication_a_daemon_logs_in_and_a_wrong_or_missing_password_is_named() {
    let mut etcd = Etcd::start();
    etcd.enable_auth("r00t-pw", "sentinel", "g00d-pw");
    let pg = Pg::start();
    let specs = [spec("a", &pg)];
    let none = "  console: false\n";
    let auth = "  auth:\n    user: sentinel\n    password_env: ETCD_PASSWORD\n";
    let good = Node::start_with(
        "good",
        &etcd.url,
        auth,
        &[("ETCD_PASSWORD", "g00d-pw")],
        none,
        &specs,
    );
    wait_for(LONG, "the daemon logs in and owns the target", || {
        (etcd.owners().get("a").map(String::as_str) == Some("good")).then_some(())
    });
    let wrong = Node::start_with(
        "wrong",
        &etcd.url,
        auth,
        &[("ETCD_PASSWORD", "b4d-pw")],
        none,
        &specs,
    );
    let anonymous = Node::start_with("anonymous", &etcd.url, "", &[], none, &specs);
    for (n, key) in [
        (&wrong, "cluster.auth.password_env"),
        (&anonymous, "cluster.auth"),
    ] {
        let keys = wait_for(LONG, "the refusal is logged", || {
            Some(refused_keys(n)).filter(|k| !k.is_empty())
        });
        println!(
            "{}: {}",
            n.member,
            n.d.events("cluster_access_refused", None)[0]
        );
        assert_eq!(keys, [key], "{}", n.member);
        assert!(!etcd
            .under("sentinel-remedy", "members")
            .contains_key(&n.member));
    }
    for (n, pw) in [(&good, "g00d-pw"), (&wrong, "b4d-pw")] {
        assert_secret_absent(pw, &n.d, None, &n.ws);
    }
}

#[test]
fn check_config_names_each_unusable_etcd_tls_or_auth_setting_and_exits_64() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let loose = dir.path().join("loose.key");
    std::fs::copy(pki.path("client.key"), &loose).expect("copy key");
    let write = |cluster: &str| {
        let text = format!(
            "cluster:\n  etcd: [\"https://127.0.0.1:2379\"]\n  member: m\n{cluster}targets:\n  - name: db\n    dsn: postgres://u@127.0.0.1:5432/postgres\n"
        );
        let path = dir.path().join("registry.yaml");
        std::fs::write(&path, text).expect("write registry");
        path.display().to_string()
    };
    let cases = [
        // A key that is not the certificate's.
        (format!("  tls:\n    ca_file: {}\n    cert_file: {}\n    key_file: {}\n", pki.file("ca.crt"), pki.file("client.crt"), pki.file("other.key")), "cluster.tls.key_file"),
        // A CA file that is not there.
        (format!("  tls:\n    ca_file: {}\n", pki.file("nowhere.crt")), "cluster.tls.ca_file"),
        // A password variable that is not set.
        (format!("  tls:\n    ca_file: {}\n  auth:\n    user: s\n    password_env: NOT_SET_ANYWHERE\n", pki.file("ca.crt")), "cluster.auth.password_env"),
    ];
    for (cluster, key) in cases {
        let config = write(&cluster);
        let (code, out, err) = run_cli(&["check-config", "--config", &config], dir.path(), &[]);
        println!("{key}: {out}{err}");
        assert_eq!(code, 64, "{key}");
        assert!(err.contains(key) || out.contains(key), "{key} named");
    }
    // A key others may read: refused, as libpq refuses it.
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let config = write(&format!(
        "  tls:\n    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
        pki.file("ca.crt"),
        pki.file("client.crt"),
        loose.display()
    ));
    let (code, out, err) = run_cli(&["check-config", "--config", &config], dir.path(), &[]);
    assert_eq!(code, 64, "{out}{err}");
    assert!(format!("{out}{err}").contains("chmod 600"));
}

/// `text` without its `cluster:` section (the lines up to `fleet_guard:`, as
/// `write_cluster_registry` writes them).
fn without_cluster(text: &str) -> String {
    let start = text.find("cluster:\n").expect("cluster section");
    let end = text.find("fleet_guard:").expect("fleet_guard section");
    format!("{}{}", &text[..start], &text[end..])
}

#[test]
fn a_sighup_moving_the_cluster_prefix_leaves_and_rejoins_without_a_page_or_a_restart() {
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pg = Pg::start();
    let specs = [spec("a", &pg), spec("b", &pg)];
    let notify = notify_all(&r);
    let n = Node::start("n1", &etcd.url, &notify, &specs);
    wait_for(LONG, "n1 owns and runs both targets", || {
        (etcd.owners().len() == 2 && n.running().len() == 2).then_some(())
    });
    let text = std::fs::read_to_string(n.ws.config()).expect("registry");
    let moved = text.replacen("  ttl: 2s\n", "  ttl: 2s\n  prefix: fleet-b\n", 1);
    assert_ne!(moved, text);
    std::fs::write(n.ws.config(), &moved).expect("write registry");
    n.d.signal(libc::SIGHUP);
    let took = time_until(LONG, || {
        let o = etcd.under("fleet-b", "owner");
        o.len() == 2
            && o.values().all(|m| m == "n1")
            && etcd.under("fleet-b", "members").contains_key("n1")
    })
    .expect("n1 owns both targets under the new prefix");
    println!(
        "rejoined under fleet-b and owns both in {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        etcd.under("sentinel-remedy", "members").is_empty(),
        "the old member key is gone"
    );
    assert!(etcd.owners().is_empty(), "the old owner keys are released");
    wait_for(LONG, "n1 runs both again", || {
        (n.running().len() == 2).then_some(())
    });
    // Turning cluster mode off is refused whole: still a member, still running both.
    std::fs::write(n.ws.config(), without_cluster(&moved)).expect("write registry");
    n.d.signal(libc::SIGHUP);
    let rejected = n.d.wait_event("reload_rejected", None, LONG);
    println!("refused: {}", rejected["error"]);
    assert!(rejected["error"].as_str().unwrap_or("").contains("cluster"));
    std::thread::sleep(TTL * 2);
    assert!(etcd.under("fleet-b", "members").contains_key("n1"));
    assert_eq!(etcd.under("fleet-b", "owner").len(), 2);
    assert_eq!(n.running().len(), 2);
    assert_eq!(pg.starts(), 1, "the server was never restarted");
    assert!(
        r.hits().is_empty(),
        "no notification: {:?}",
        r.hits().iter().map(|h| &h.raw).collect::<Vec<_>>()
    );
    assert_eq!(n.d.count("reload_applied", None), 1);
}

#[test]
fn a_sighup_fixing_the_etcd_endpoints_joins_and_closes_the_coordination_alert_once() {
    let etcd = Etcd::start();
    let r = Receiver::start();
    let pg = Pg::start();
    let specs = [spec("a", &pg)];
    let notify = notify_all(&r);
    // A wrong endpoint: nothing listens there.
    let dead = format!(
        "http://127.0.0.1:{}",
        sentinel_remedy::pgcluster::free_port().expect("port")
    );
    let n = Node::start("n1", &dead, &notify, &specs);
    wait_for(LONG, "the coordination-lost page", || {
        (!r.hook_events("escalation").is_empty()).then_some(())
    });
    let text = std::fs::read_to_string(n.ws.config()).expect("registry");
    std::fs::write(n.ws.config(), text.replace(&dead, &etcd.url)).expect("write registry");
    n.d.signal(libc::SIGHUP);
    wait_for(
        LONG,
        "n1 joins with the fixed endpoint and owns the target",
        || (etcd.owners().get("a").map(String::as_str) == Some("n1")).then_some(()),
    );
    wait_for(LONG, "the coordination alert closed", || {
        (!r.hook_events("recovery").is_empty()).then_some(())
    });
    std::thread::sleep(TTL * 2);
    let (lost, back) = (r.hook_events("escalation"), r.hook_events("recovery"));
    println!("escalations: {}, recoveries: {}", lost.len(), back.len());
    assert_eq!(lost.len(), 1, "coordination lost said once");
    assert_eq!(back.len(), 1, "and closed once");
    assert_eq!(lost[0].body["incident_id"], back[0].body["incident_id"]);
    assert_eq!(pg.starts(), 1, "the server was never restarted");
}

#[test]
fn a_cluster_change_during_an_open_incident_is_refused_whole_and_applies_once_it_closes() {
    let etcd = Etcd::start();
    let pg = Pg::start();
    let r = Receiver::start();
    // A heal that does nothing: the incident stays open until the server is back.
    let mut s = spec("a", &pg);
    s.heal_argv = Some(vec!["/bin/true".into()]);
    s.pid_watch = false;
    let n = Node::start("n1", &etcd.url, &notify_all(&r), &[s]);
    wait_for(LONG, "n1 owns and runs the target", || {
        (etcd.owners().len() == 1 && n.running().len() == 1).then_some(())
    });
    pg.kill9();
    wait_for(LONG, "the failure page", || {
        (r.hook_count("failure", "a") == 1).then_some(())
    });
    let text = std::fs::read_to_string(n.ws.config()).expect("registry");
    let moved = text.replacen("  ttl: 2s\n", "  ttl: 2s\n  prefix: fleet-b\n", 1);
    std::fs::write(n.ws.config(), &moved).expect("write registry");
    n.d.signal(libc::SIGHUP);
    let rejected = n.d.wait_event("reload_rejected", None, LONG);
    println!("refused: {}", rejected["error"]);
    assert!(rejected["error"]
        .as_str()
        .unwrap_or("")
        .contains("a has an open incident"));
    assert!(
        etcd.under("fleet-b", "members").is_empty(),
        "nothing of it applied"
    );
    assert_eq!(etcd.owners().get("a").map(String::as_str), Some("n1"));
    // The server back, the incident closed: the same reload applies.
    wait_for(
        LONG,
        "the server starts again (its killed backends gone)",
        || pg.cluster.start().ok(),
    );
    wait_for(LONG, "the recovery notice", || {
        (r.hook_count("recovery", "a") == 1).then_some(())
    });
    n.d.signal(libc::SIGHUP);
    wait_for(LONG, "n1 owns the target under the new prefix", || {
        (etcd.under("fleet-b", "owner").get("a").map(String::as_str) == Some("n1")).then_some(())
    });
    assert!(etcd.owners().is_empty(), "the old owner key is released");
    assert_eq!(r.hook_count("failure", "a"), 1, "one failure page");
    assert_eq!(r.hook_count("recovery", "a"), 1, "one recovery notice");
}

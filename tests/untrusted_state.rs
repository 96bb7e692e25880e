//! Issue 21: what etcd or the local store hands back is data, never a path. A client that can
//! write etcd (or whoever can write the state directory) plants an open incident whose id
//! climbs out of the archive (`../../escape`), or that belongs to another target; a daemon
//! then takes the target over (or starts) while its server is down. Checked from outside:
//! nothing appears beside the daemon's directories, the refusal is logged naming the key, and
//! the outage is still handled as a fresh incident archived inside the archive directory.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::etcd::{write_cluster_registry, Etcd};
use support::http::{self, metric, parse_metrics};
use support::receiver::Receiver;
use support::*;

const LONG: Duration = Duration::from_secs(60);

/// An open incident as a daemon keeps it (in etcd's `state/{target}`), with `id` and `target`.
fn open_incident(id: &str, target: &str) -> serde_json::Value {
    let now = chrono::Utc::now();
    serde_json::json!({
        "restarts": [], "backoff_step": 0, "maintenance_until": null, "written_by": "n0",
        "incident": {
            "row": {
                "id": id, "target": target, "class": "connection_refused", "hard": false,
                "detail": "planted", "sqlstate": null, "phase": "archiving",
                "first_failure_at": now, "declared_at": now, "archive": null,
                "heal_issued_at": null, "heal_succeeded": null, "recovered_at": null,
                "escalated_at": null, "closed": false, "downtime_seconds": null,
                "time_to_recovery_seconds": null, "alerted": false
            },
            "notices": []
        }
    })
}

/// Every path under `dir` whose name contains `needle`.
fn named_like(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(needle) {
                found.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            }
        }
    }
    found
}

/// The planted id wrote nothing anywhere: not in the workspace (which holds the state and
/// archive directories), not beside it (`incidents/../../escape-{target}`).
fn assert_nothing_escaped(ws: &Workspace, target: &str) {
    let beside = ws.path().parent().expect("workspace parent");
    let out = beside.join(format!("escape-{target}"));
    if out.exists() {
        let _ = std::fs::remove_dir_all(&out);
        panic!("{} was created", out.display());
    }
    let inside = named_like(ws.path(), "escape");
    assert!(inside.is_empty(), "written from the planted id: {inside:?}");
}

/// The outage was handled as a fresh incident of `target`: every bundle is `{stamp}-{target}` directly under the archive directory, with a manifest.
fn assert_fresh_incident_handled(ws: &Workspace, target: &str) {
    let bundles = wait_for(LONG, "a bundle", || {
        let b = ws.bundles();
        (!b.is_empty() && b.iter().all(|b| b.join("manifest.json").exists())).then_some(b)
    });
    for b in &bundles {
        let name = b.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.ends_with(&format!("-{target}")) && !name.contains("planted"),
            "bundle {name} is not a fresh incident of {target}"
        );
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["incident_id"], name.as_str());
        assert_eq!(manifest["target"], target);
    }
}

/// The user was told: an escalation for `target` that names the refusal.
fn assert_alerted(r: &Receiver, target: &str) {
    let hook = wait_for(LONG, "the refusal's alert", || {
        r.hook_events("escalation")
            .into_iter()
            .find(|h| h.body["target"] == target && h.body.to_string().contains("refused"))
    });
    assert!(
        hook.body.to_string().contains("incident id"),
        "{}",
        hook.body
    );
}

fn spec<'a>(name: &'a str, pg: &'a Pg) -> TargetSpec<'a> {
    let mut s = TargetSpec::new(name, pg);
    s.recovery_timeout = "20s";
    s
}

/// Plants `value` under `state/{target}`, then lets a daemon take `target` over while its
/// server is down; answers the daemon and its workspace.
fn take_over_planted(
    etcd: &Etcd,
    pg: &Pg,
    target: &str,
    value: &serde_json::Value,
    notify: &str,
) -> (Daemon, Workspace) {
    let key = format!("/sentinel-remedy/state/{target}");
    etcd.ctl(&["put", &key, &value.to_string()])
        .expect("etcdctl put");
    pg.kill9();
    let ws = Workspace::new();
    let specs = [spec(target, pg)];
    write_cluster_registry(&ws, "n1", &etcd.url, 2, "", notify, &specs);
    (Daemon::run(&ws, &[]), ws)
}

/// The refusal was logged once at ERROR, naming the key and saying `what` was wrong.
fn assert_refused(d: &Daemon, key: &str, what: &str) {
    let refused = d.wait_event("untrusted_state_refused", None, LONG);
    assert_eq!(refused["level"], "ERRO", "{refused}");
    assert!(refused["key"].as_str().unwrap().contains(key), "{refused}");
    assert!(
        refused["what"].as_str().unwrap().contains(what),
        "{refused}"
    );
}

#[test]
fn an_incident_planted_in_etcd_with_a_climbing_id_writes_nothing_outside_and_the_outage_is_handled()
{
    let etcd = Etcd::start();
    let pg = Pg::start();
    let target = format!("t{}", std::process::id());
    let planted = open_incident("../../escape", &target);
    let r = Receiver::start();
    let (d, ws) = take_over_planted(&etcd, &pg, &target, &planted, &notify_all(&r));
    wait_for(LONG, "the server is healed", || pg.answers().then_some(()));
    assert_nothing_escaped(&ws, &target);
    assert_fresh_incident_handled(&ws, &target);
    assert_refused(
        &d,
        &format!("/sentinel-remedy/state/{target}"),
        "incident id",
    );
    assert_alerted(&r, &target);
}

#[test]
fn an_incident_of_another_target_planted_in_etcd_is_refused_and_the_outage_is_handled() {
    let etcd = Etcd::start();
    let pg = Pg::start();
    let target = format!("u{}", std::process::id());
    // A well-formed incident, but of target `other`, kept under this target's key.
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let planted = open_incident(&format!("{stamp}-other"), "other");
    let notify = "  console: false\n";
    let (d, ws) = take_over_planted(&etcd, &pg, &target, &planted, notify);
    wait_for(LONG, "the server is healed", || pg.answers().then_some(()));
    assert_fresh_incident_handled(&ws, &target);
    assert_refused(
        &d,
        &format!("/sentinel-remedy/state/{target}"),
        "is for target",
    );
}

#[test]
fn an_incident_planted_in_the_store_with_a_climbing_id_writes_nothing_outside_and_the_outage_is_handled(
) {
    let pg = Pg::start();
    let target = format!("s{}", std::process::id());
    let ws = Workspace::new();
    let r = Receiver::start();
    ws.write_registry(&notify_all(&r), &[spec(&target, &pg)]);
    // The store as a previous run left it, plus the planted row.
    drop(sentinel_remedy::store::Store::open(&ws.state()).expect("store"));
    let db = ws.state().join("sentinel.db");
    let conn = rusqlite::Connection::open(&db).expect("open the store");
    conn.execute(
        "INSERT INTO incidents (id, target, class, hard, detail, phase, first_failure_at, declared_at)
         VALUES ('../../escape', ?1, 'connection_refused', 0, 'planted', 'archiving', ?2, ?2)",
        rusqlite::params![target, chrono::Utc::now()],
    )
    .expect("plant the row");
    drop(conn);
    pg.kill9();
    let d = Daemon::run(&ws, &[]);
    wait_for(LONG, "the server is healed", || pg.answers().then_some(()));
    assert_nothing_escaped(&ws, &target);
    assert_fresh_incident_handled(&ws, &target);
    assert_refused(
        &d,
        "sentinel.db incidents row \"../../escape\"",
        "incident id",
    );
    assert_alerted(&r, &target);
}

#[test]
fn member_and_owner_keys_no_daemon_writes_are_ignored_said_once_and_counted() {
    let etcd = Etcd::start();
    let pg = Pg::start();
    let target = format!("m{}", std::process::id());
    // A member id with a slash; an owner key whose member has a space; one whose target
    // name is no target name. None may rank, own or be shown.
    let planted = [
        ("/sentinel-remedy/members/../x", "{}"),
        ("/sentinel-remedy/owner/elsewhere", "a b"),
        ("/sentinel-remedy/owner/..", "n9"),
    ];
    for (k, v) in planted {
        etcd.ctl(&["put", k, v]).expect("etcdctl put");
    }
    let ws = Workspace::new();
    let specs = [spec(&target, &pg)];
    let api = write_cluster_registry(&ws, "n1", &etcd.url, 2, "", "  console: false\n", &specs);
    let d = Daemon::run(&ws, &[]);
    wait_for(LONG, "n1 owns its target", || {
        (etcd.owners().get(&target).map(String::as_str) == Some("n1")).then_some(())
    });
    d.wait_events("untrusted_state_refused", None, planted.len(), LONG);
    // The daemon plans from what it read and watched many times a second: 2 s later each
    // key was still said once (a window for an absence, as in tests/cluster.rs).
    std::thread::sleep(Duration::from_secs(2));
    let refused = d.events("untrusted_state_refused", None);
    let mut keys: Vec<&str> = refused.iter().map(|r| r["key"].as_str().unwrap()).collect();
    keys.sort();
    let mut want: Vec<&str> = planted.iter().map(|(k, _)| *k).collect();
    want.sort();
    assert_eq!(keys, want, "{refused:?}");
    let m = parse_metrics(&http::get(&api, "/metrics").body);
    let n = metric(
        &m,
        "sentinel_untrusted_state_rejected_total",
        &[("source", "etcd")],
    );
    assert_eq!(n, Some(planted.len() as f64));
}

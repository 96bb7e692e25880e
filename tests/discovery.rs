//! Targets discovered from container labels on the real Docker Engine: labelled PostgreSQL
//! containers with no published port become targets, follow containers added and removed,
//! are healed when killed or stopped (unless opted out), and bad labels skip one container.
//! Each test uses its own label namespace, so other tests' containers are never discovered.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::docker::{docker, postgres_image, remove};
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// A PostgreSQL container with labels and no published port.
struct Labelled {
    name: String,
}

impl Labelled {
    /// Starts it (not waiting for SQL).
    fn run(tag: &str, password: &str, labels: &[(String, String)]) -> Self {
        Self::run_with(tag, password, labels, &["log_directory=log"])
    }

    /// Starts it with more server settings (`-c` values).
    fn run_with(tag: &str, password: &str, labels: &[(String, String)], settings: &[&str]) -> Self {
        Self::start(tag, password, labels, settings, None)
    }

    /// Starts it on a network of the test's own.
    fn run_on(tag: &str, password: &str, labels: &[(String, String)], network: &str) -> Self {
        Self::start(tag, password, labels, &["log_directory=log"], Some(network))
    }

    fn start(
        tag: &str,
        password: &str,
        labels: &[(String, String)],
        settings: &[&str],
        network: Option<&str>,
    ) -> Self {
        Self::start_image(tag, password, labels, settings, network, postgres_image())
    }

    fn start_image(
        tag: &str,
        password: &str,
        labels: &[(String, String)],
        settings: &[&str],
        network: Option<&str>,
        image: &str,
    ) -> Self {
        let name = format!(
            "sr-disc-{tag}-{}-{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xffffff
        );
        Self::start_named(&name, password, labels, settings, network, image)
    }

    /// Starts a container of this exact name.
    fn start_named(
        name: &str,
        password: &str,
        labels: &[(String, String)],
        settings: &[&str],
        network: Option<&str>,
        image: &str,
    ) -> Self {
        let name = name.to_string();
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.clone()];
        args.extend([
            "--restart=no".into(),
            "--label".into(),
            "org.sentinel-remedy.test=1".into(),
        ]);
        for (k, v) in labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        if let Some(n) = network {
            args.push(format!("--network={n}"));
        }
        args.extend([
            "-e".into(),
            format!("POSTGRES_PASSWORD={password}"),
            image.into(),
            "postgres".into(),
            "-c".into(),
            "logging_collector=on".into(),
            "-c".into(),
            "log_filename=postgresql.log".into(),
            "-c".into(),
            "shared_buffers=16MB".into(),
        ]);
        for setting in settings {
            args.extend(["-c".into(), setting.to_string()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&refs);
        Self { name }
    }

    fn ip(&self) -> String {
        docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.name,
        ])
    }

    /// SQL over the container's network address, as the daemon reaches it.
    fn psql(&self, password: &str, sql: &str) -> Result<String, String> {
        let out = std::process::Command::new("psql")
            .args(["-XAtq", "-U", "postgres", "-d", "postgres", "-h"])
            .arg(self.ip())
            .arg("-c")
            .arg(sql)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "2")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn wait_sql(&self, password: &str) {
        wait_for(LONG, "the container to answer SQL", || {
            self.psql(password, "SELECT 1").ok().filter(|o| o == "1")
        });
    }

    fn state(&self) -> String {
        docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.StartedAt}}",
            &self.name,
        ])
    }
}

impl Drop for Labelled {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| remove(&self.name));
    }
}

/// A label namespace of this test's own.
fn namespace() -> String {
    format!("srt{:08x}", rand::random::<u32>())
}

/// Opted in; the login is the operator's default credential (see [`write_registry`]).
fn opt_in(ns: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = vec![(format!("{ns}.enable"), "true".to_string())];
    v.extend(
        extra
            .iter()
            .map(|(k, val)| (format!("{ns}.{k}"), val.to_string())),
    );
    v
}

/// A registry with no targets, only discovery, whose default credential is postgres with the
/// password in the daemon's DISC_PW; returns the API address.
fn write_registry(ws: &Workspace, ns: &str, notify: &str) -> String {
    let addr = format!(
        "127.0.0.1:{}",
        sentinel_remedy::pgcluster::free_port().unwrap()
    );
    let text = format!(
        "server: {{ listen: \"{addr}\" }}\ndiscovery:\n  docker: {{ namespace: {ns}, credentials: {{ default: {{ user: postgres, password_env: DISC_PW }} }} }}\ndefaults:\n  probe: {{ interval: 1s, timeout: 1s, failure_threshold: 10 }}\n  restart_budget: {{ backoff: 0s }}\n  recovery_timeout: 60s\narchive:\n{}notify:\n{notify}\n",
        ws.local_archive()
    );
    std::fs::write(ws.config(), text).expect("write registry");
    addr
}

/// The daemon, once its API answers.
fn daemon(ws: &Workspace, pw: &str) -> Daemon {
    let d = Daemon::run(ws, &[("DISC_PW", pw)]);
    d.wait_event("api_listening", None, LONG);
    d
}

/// The daemon's targets as `status` shows them: name → status.
fn targets(addr: &str) -> std::collections::BTreeMap<String, Value> {
    let st = http::get(addr, "/status").json();
    st["targets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t["name"].as_str().unwrap_or_default().to_string(), t))
        .collect()
}

fn bundles_of(ws: &Workspace, target: &str) -> Vec<std::path::PathBuf> {
    ws.bundles()
        .into_iter()
        .filter(|b| b.to_string_lossy().ends_with(&format!("-{target}")))
        .collect()
}

#[test]
fn labelled_containers_become_targets_follow_the_engine_and_are_healed() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    let labels = opt_in(&ns, &[]);
    let (a, b, c) = std::thread::scope(|s| {
        let a = s.spawn(|| Labelled::run("a", &pw, &labels));
        let b = s.spawn(|| Labelled::run("b", &pw, &labels));
        let c = s.spawn(|| Labelled::run("c", &pw, &labels));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    // Same image, no label: never a target.
    let plain = Labelled::run("plain", &pw, &[]);
    for x in [&a, &b, &c, &plain] {
        x.wait_sql(&pw);
        assert_eq!(
            docker(&["port", &x.name]),
            "",
            "{}: no published port",
            x.name
        );
    }
    let rx = Receiver::start();
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, &notify_all(&rx));
    let d = daemon(&ws, &pw);

    // Exactly the three labelled containers, each probed at its address on the Docker network.
    let three = [&a, &b, &c];
    wait_for(LONG, "three discovered targets that answer", || {
        let t = targets(&addr);
        (t.len() == 3 && t.values().all(|s| s["up"] == true)).then_some(())
    });
    let t = targets(&addr);
    for x in three {
        let s = &t[&x.name];
        assert_eq!(
            s["endpoint"],
            format!("{}:5432/postgres", x.ip()),
            "{}",
            x.name
        );
        assert_eq!(s["discovered"]["container"], x.name.as_str());
        assert_eq!(s["discovered"]["labels"][format!("{ns}.enable")], "true");
    }
    assert!(!t.contains_key(&plain.name));

    // Killed: healed once, with its own server log in the bundle.
    let marker = format!("disc-marker-{:x}", rand::random::<u64>());
    a.psql(&pw, &format!("DO $$BEGIN RAISE LOG '{marker}'; END$$"))
        .expect("marker");
    docker(&["kill", &a.name]);
    d.wait_event("target_recovered", Some(&a.name), LONG);
    a.wait_sql(&pw);
    assert_eq!(d.count("heal_issued", Some(&a.name)), 1, "one restart");
    let bundles = bundles_of(&ws, &a.name);
    assert_eq!(bundles.len(), 1, "one bundle");
    let log = std::fs::read_to_string(bundles[0].join("postgresql.log")).expect("postgresql.log");
    assert!(
        log.contains(&marker),
        "the bundle holds this container's server log"
    );
    for f in ["pg_hba.conf", "postgresql.conf", "container.log"] {
        assert!(bundles[0].join(f).is_file(), "{f} in the bundle");
    }

    // A fourth one, added while the daemon runs: a target within a second of its start.
    // (Until its server accepts connections it is initialising, and not a target yet.)
    let e = Labelled::run("e", &pw, &labels);
    e.wait_sql(&pw);
    let started = Instant::now();
    wait_for(LONG, "the added container's target", || {
        targets(&addr).contains_key(&e.name).then_some(())
    });
    let appeared = started.elapsed();
    wait_for(LONG, "the added target to answer", || {
        (targets(&addr)[&e.name]["up"] == true).then_some(())
    });

    // One removed: its target goes within a second, with no incident for it.
    let gone = b.name.clone();
    let started = Instant::now();
    // `docker rm -f` returns once the volume is gone too; the target goes at the kill.
    let removing = std::thread::spawn({
        let gone = gone.clone();
        move || remove(&gone)
    });
    wait_for(LONG, "the removed container's target to go", || {
        (!targets(&addr).contains_key(&gone)).then_some(())
    });
    let retired = started.elapsed();
    removing.join().expect("docker rm");
    eprintln!("discovery: added in {appeared:?}, removed in {retired:?}");
    // The figures are printed above; the bounds only tell the Engine's events (well under a
    // second on a quiet machine) from a periodic listing, without flaking on a loaded one.
    assert!(
        appeared < Duration::from_secs(10),
        "added on the Engine's event: {appeared:?}"
    );
    assert!(
        retired < Duration::from_secs(10),
        "removed on the Engine's event: {retired:?}"
    );
    std::thread::sleep(Duration::from_secs(3)); // what a late incident would need
    assert_eq!(
        d.count("incident_declared", Some(&gone)),
        0,
        "no incident for a removed container"
    );
    assert!(
        rx.hits()
            .iter()
            .all(|h| !h.body.to_string().contains(&gone)),
        "no alert for it"
    );
    assert!(bundles_of(&ws, &gone).is_empty());
    let t = targets(&addr);
    assert_eq!(t.len(), 3, "{:?}", t.keys());
    assert_eq!(
        d.count("heal_issued", Some(&e.name)),
        0,
        "no restart while it initialised"
    );
    assert_secret_absent(&pw, &d, Some(&rx), &ws);
}

#[test]
fn a_stopped_container_is_started_once_unless_its_label_turns_healing_off() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    let (on, off) = std::thread::scope(|s| {
        // Its log directory is set in the configuration (ALTER SYSTEM), not on the command line.
        let on = s.spawn(|| Labelled::run_with("on", &pw, &opt_in(&ns, &[]), &[]));
        let off = s.spawn(|| Labelled::run("off", &pw, &opt_in(&ns, &[("heal", "false")])));
        (on.join().unwrap(), off.join().unwrap())
    });
    on.wait_sql(&pw);
    off.wait_sql(&pw);
    on.psql(&pw, "ALTER SYSTEM SET log_directory = 'conf_log'")
        .expect("alter system");
    on.psql(&pw, "SELECT pg_reload_conf()").expect("reload");
    let rx = Receiver::start();
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, &notify_all(&rx));
    let d = daemon(&ws, &pw);
    wait_for(LONG, "two discovered targets that answer", || {
        let t = targets(&addr);
        (t.len() == 2 && t.values().all(|s| s["up"] == true)).then_some(())
    });
    let off_before = off.state();
    docker(&["stop", "-t", "5", &on.name]);
    docker(&["stop", "-t", "5", &off.name]);
    d.wait_event("target_recovered", Some(&on.name), LONG);
    on.wait_sql(&pw);
    assert_eq!(
        d.count("heal_issued", Some(&on.name)),
        1,
        "started again once"
    );
    // Its server log came from where its configuration puts it.
    let bundle = bundles_of(&ws, &on.name);
    assert_eq!(bundle.len(), 1);
    let manifest = std::fs::read_to_string(bundle[0].join("manifest.json")).expect("manifest");
    assert!(
        manifest.contains(&format!("{}:/var/lib/postgresql/data/conf_log/", on.name)),
        "{manifest}"
    );
    // Opted out: one notice that says no heal is configured, and it stays down.
    wait_for(LONG, "the opted-out container's notice", || {
        (!rx.hook_events("escalation").is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let notices: Vec<_> = rx
        .hook_events("escalation")
        .into_iter()
        .filter(|h| h.body["target"] == off.name.as_str())
        .collect();
    eprintln!(
        "escalations for the opted-out container: {:?}",
        notices
            .iter()
            .map(|h| &h.body["reason"])
            .collect::<Vec<_>>()
    );
    // The restarted container may be given the stopped one's address: that is another
    // server (`wrong_server`, alerted once), never the opted-out container's recovery.
    let notices: Vec<_> = notices
        .into_iter()
        .filter(|h| h.body["reason"] != "wrong_server")
        .collect();
    assert_eq!(notices.len(), 1, "one notice for the opted-out container");
    assert_eq!(rx.hook_count("recovery", &off.name), 0, "never recovered");
    assert!(
        notices[0].body.to_string().contains("no heal action"),
        "{}",
        notices[0].body
    );
    assert!(
        off.state().starts_with("exited"),
        "still stopped: {}",
        off.state()
    );
    assert_ne!(off.state(), off_before);
    assert_eq!(d.count("heal_issued", Some(&off.name)), 0);
}

#[test]
fn a_container_with_bad_labels_is_skipped_with_one_error_and_the_others_are_watched() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    let good = Labelled::run("good", &pw, &opt_in(&ns, &[]));
    let bad_duration = Labelled::run(
        "baddur",
        &pw,
        &opt_in(&ns, &[("probe.interval", "5 parsecs")]),
    );
    let no_password = Labelled::run("nopw", &pw, &opt_in(&ns, &[("credentials", "nope")]));
    // Probing every millisecond would cost the daemon more than any registry target.
    let too_often = Labelled::run("often", &pw, &opt_in(&ns, &[("probe.interval", "1ms")]));
    // A server that never accepts connections from outside (as while the image's init runs
    // its temporary, local-only server): never a target, so never restarted half made.
    let local_only = Labelled::run_with(
        "local",
        &pw,
        &opt_in(&ns, &[]),
        &["listen_addresses=localhost"],
    );
    // Named like a target of the registry: a clash, not watched.
    let clash = Labelled::run("clash", &pw, &opt_in(&ns, &[("name", "listed")]));
    good.wait_sql(&pw);
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, "  console: false\n");
    let mut text = std::fs::read_to_string(ws.config()).unwrap();
    text.push_str("targets:\n  - name: listed\n    dsn: postgres://u@127.0.0.1:1/x\n    probe: { interval: 1h }\n");
    std::fs::write(ws.config(), text).unwrap();
    let d = daemon(&ws, &pw);
    wait_for(LONG, "the good container's target answering", || {
        let t = targets(&addr);
        (t.get(&good.name).is_some_and(|s| s["up"] == true)).then_some(())
    });
    // More resyncs (a container event in the namespace) must not repeat the errors.
    let later = Labelled::run("later", &pw, &opt_in(&ns, &[]));
    wait_for(LONG, "the later container's target", || {
        targets(&addr).contains_key(&later.name).then_some(())
    });
    let t = targets(&addr);
    assert_eq!(
        t.len(),
        3,
        "the listed one and the good ones: {:?}",
        t.keys()
    );
    assert!(
        t["listed"]["discovered"].is_null(),
        "the registry's target stays"
    );
    assert!(!t.contains_key(&local_only.name));
    let first_start = local_only.state();
    let clashes = d.events("discovery_name_clash", None);
    assert_eq!(clashes.len(), 1, "{clashes:?}");
    assert_eq!(clashes[0]["container"], clash.name.as_str());
    assert_eq!(clashes[0]["target"], "listed");
    let skipped = |c: &str| -> Vec<Value> {
        d.events("discovery_skipped", None)
            .into_iter()
            .filter(|e| e["container"] == c)
            .collect()
    };
    for (c, label, fix) in [
        (&bad_duration.name, format!("{ns}.probe.interval"), "250ms"),
        (
            &no_password.name,
            format!("{ns}.credentials"),
            "discovery.docker.credentials.nope",
        ),
        (
            &too_often.name,
            format!("{ns}.probe.interval"),
            "discovery.docker.limits.probe_interval.min",
        ),
    ] {
        let e = skipped(c);
        assert_eq!(e.len(), 1, "{c}: one error: {e:?}");
        assert_eq!(e[0]["level"], "ERRO", "{:?}", e[0]);
        assert_eq!(e[0]["label"], label.as_str());
        assert!(
            e[0]["fix"].as_str().unwrap_or_default().contains(fix),
            "{:?}",
            e[0]
        );
    }
    assert!(skipped(&good.name).is_empty());
    let often = skipped(&too_often.name);
    assert!(
        often[0]["problem"]
            .as_str()
            .unwrap_or_default()
            .contains("1ms is below the operator's min of 1s"),
        "{:?}",
        often[0]
    );
    assert!(!targets(&addr).contains_key(&too_often.name));
    // Longer than its threshold of 10 probes at 1 s: still no target, still not restarted.
    std::thread::sleep(Duration::from_secs(12));
    assert!(!targets(&addr).contains_key(&local_only.name));
    assert_eq!(local_only.state(), first_start, "never restarted");

    // `status` marks discovered targets with their container and labels.
    let (code, out, err) = run_cli(
        &["status", "--url", &format!("http://{addr}")],
        ws.path(),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with(&good.name))
        .expect("row");
    assert!(row.contains(&format!("container {}", good.name)), "{out}");
    assert!(out.contains(&format!("{ns}.enable=true")), "{out}");

    // `check-config --discover` says the same without starting anything; exit 64 for the
    // skipped ones.
    let cfg = ws.config();
    let (code, out, _) = run_cli(
        &[
            "check-config",
            "--discover",
            "--config",
            cfg.to_str().unwrap(),
        ],
        ws.path(),
        &[("DISC_PW", &pw)],
    );
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains(&format!("{} (container {})", good.name, good.name)),
        "{out}"
    );
    assert!(
        out.contains(&format!("container {} skipped", bad_duration.name)),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{ns}.probe.interval: '5 parsecs' is not a duration"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{ns}.credentials: the operator defines no credential named 'nope'"
        )),
        "{out}"
    );
    assert!(out.contains("NOT WATCHED"), "the clash: {out}");
    assert!(!out.contains(&pw), "no password printed");
}

/// An image built at test time `FROM` the local postgres image, with labels of its own;
/// removed on drop.
struct LabelledImage(String);

impl LabelledImage {
    fn build(labels: &[(String, String)]) -> Self {
        let tag = format!("sr-test-labelled:{:08x}", rand::random::<u32>());
        let mut dockerfile = format!(
            "FROM {}\nLABEL org.sentinel-remedy.test=1",
            postgres_image()
        );
        for (k, v) in labels {
            dockerfile.push_str(&format!(" \"{k}\"=\"{v}\""));
        }
        dockerfile.push('\n');
        let mut child = std::process::Command::new("docker")
            .args(["build", "-q", "-t", &tag, "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("docker build");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dockerfile.as_bytes())
            .unwrap();
        let out = child.wait_with_output().expect("docker build");
        assert!(
            out.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(tag)
    }
}

impl Drop for LabelledImage {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

#[test]
fn labels_an_image_carries_opt_no_container_in_and_count_for_nothing() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    // The image's author opts every container of it in, names it, and asks for a login.
    let image = LabelledImage::build(&opt_in(
        &ns,
        &[("name", "from-the-image"), ("credentials", "default")],
    ));
    let (inherited, good) = std::thread::scope(|s| {
        let i = s.spawn(|| {
            Labelled::start_image("img", &pw, &[], &["log_directory=log"], None, &image.0)
        });
        let g = s.spawn(|| Labelled::run("own", &pw, &opt_in(&ns, &[])));
        (i.join().unwrap(), g.join().unwrap())
    });
    // Its labels did reach the container (Docker copies them): only the daemon ignores them.
    assert_eq!(
        docker(&[
            "inspect",
            "-f",
            &format!("{{{{index .Config.Labels \"{ns}.enable\"}}}}"),
            &inherited.name
        ]),
        "true"
    );
    inherited.wait_sql(&pw);
    good.wait_sql(&pw);
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, "  console: false\n");
    let d = daemon(&ws, &pw);
    // Both existed before the daemon started, so its first listing saw both.
    wait_for(LONG, "the labelled container's target answering", || {
        targets(&addr)
            .get(&good.name)
            .is_some_and(|s| s["up"] == true)
            .then_some(())
    });
    let t = targets(&addr);
    assert_eq!(
        t.len(),
        1,
        "only the container labelled itself: {:?}",
        t.keys()
    );
    assert!(!t.contains_key("from-the-image") && !t.contains_key(&inherited.name));
    // Not an error either: not opted in at all.
    assert_eq!(d.count("discovery_skipped", None), 0);
    let cfg = ws.config();
    let (code, out, _) = run_cli(
        &[
            "check-config",
            "--discover",
            "--config",
            cfg.to_str().unwrap(),
        ],
        ws.path(),
        &[("DISC_PW", &pw)],
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(&inherited.name), "{out}");
    drop(d);
    drop(inherited);
}

#[test]
fn a_later_container_claiming_a_watched_name_does_not_take_it_over() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    let first = Labelled::run("first", &pw, &opt_in(&ns, &[("name", "shared")]));
    first.wait_sql(&pw);
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, "  console: false\n");
    let d = daemon(&ws, &pw);
    let shared = |addr: &str| targets(addr).get("shared").cloned();
    wait_for(LONG, "the first container's target answering", || {
        shared(&addr).filter(|s| s["up"] == true).map(|_| ())
    });
    // A second container claims the name while the first is watched.
    let squatter = Labelled::run("squat", &pw, &opt_in(&ns, &[("name", "shared")]));
    squatter.wait_sql(&pw);
    let e = d.wait_event("discovery_skipped", None, LONG);
    assert_eq!(e["level"], "ERRO", "{e}");
    assert_eq!(e["container"], squatter.name.as_str(), "{e}");
    assert_eq!(e["other_container"], first.name.as_str(), "{e}");
    assert_eq!(e["label"], format!("{ns}.name"), "{e}");
    // The name stays where it was, and status says who else claims it.
    wait_for(LONG, "status to show the claim", || {
        shared(&addr).filter(|s| s["discovered"]["contested_by"][0] == squatter.name.as_str())
    });
    let s = shared(&addr).unwrap();
    assert_eq!(s["discovered"]["container"], first.name.as_str(), "{s}");
    assert_eq!(s["endpoint"], format!("{}:5432/postgres", first.ip()));
    assert_eq!(d.count("discovery_skipped", None), 1, "said once");
    let (code, out, err) = run_cli(
        &["status", "--url", &format!("http://{addr}")],
        ws.path(),
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "shared: also claimed by container {}: NOT WATCHED, the name stays with container {}",
            squatter.name, first.name
        )),
        "{out}"
    );
    // A fresh look (as at start-up): the older container keeps it.
    let cfg = ws.config();
    let (code, out, _) = run_cli(
        &[
            "check-config",
            "--discover",
            "--config",
            cfg.to_str().unwrap(),
        ],
        ws.path(),
        &[("DISC_PW", &pw)],
    );
    assert_eq!(code, 64, "{out}");
    assert!(
        out.contains(&format!("shared (container {})", first.name)),
        "{out}"
    );
    assert!(
        out.contains(&format!("container {} skipped", squatter.name)),
        "{out}"
    );
    assert!(
        out.contains(&format!("is held by container {}", first.name)),
        "{out}"
    );
    drop(d);
}

#[test]
fn a_container_removed_during_its_incident_is_retired_once_the_incident_is_over() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    // Its probe reads an unlogged table, which crash recovery empties: after the kill and our
    // restart it keeps failing, so the incident stays open until recovery_timeout escalates.
    let c = Labelled::run("retire", &pw, &opt_in(&ns, &[("recovery_timeout", "8s")]));
    c.wait_sql(&pw);
    c.psql(
        &pw,
        "CREATE UNLOGGED TABLE probe_ok(ok int); INSERT INTO probe_ok VALUES (1)",
    )
    .expect("probe table");
    let rx = Receiver::start();
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, &notify_all(&rx));
    // The probe's query is the operator's (no label may give one).
    let text = std::fs::read_to_string(ws.config()).unwrap().replace(
        "probe: { interval: 1s,",
        "probe: { query: SELECT ok FROM probe_ok, expect: '1', interval: 1s,",
    );
    std::fs::write(ws.config(), text).unwrap();
    let d = daemon(&ws, &pw);
    wait_for(LONG, "the target answering", || {
        targets(&addr)
            .get(&c.name)
            .is_some_and(|s| s["up"] == true)
            .then_some(())
    });
    docker(&["kill", &c.name]);
    d.wait_event("heal_issued", Some(&c.name), LONG);
    wait_for(LONG, "the restarted server", || {
        c.psql(&pw, "SELECT 1").ok().filter(|o| o == "1")
    });
    // Removed while the incident is open: the target stays until the incident is over.
    let removing = std::thread::spawn({
        let name = c.name.clone();
        move || remove(&name)
    });
    wait_for(LONG, "the container gone", || {
        (docker(&["ps", "-aq", "--filter", &format!("name=^{}$", c.name)]).is_empty()).then_some(())
    });
    let t = targets(&addr);
    let during = t.get(&c.name).expect("still a target during its incident");
    assert!(!during["open_incident"].is_null(), "{during}");
    wait_for(LONG, "the escalation", || {
        (!rx.hook_events("escalation").is_empty()).then_some(())
    });
    wait_for(LONG, "the target retired after its incident", || {
        (!targets(&addr).contains_key(&c.name)).then_some(())
    });
    removing.join().expect("docker rm");
    assert_eq!(d.count("heal_issued", Some(&c.name)), 1, "one restart");
    assert_eq!(
        d.count("incident_declared", Some(&c.name)),
        1,
        "one incident"
    );
}

#[test]
fn all_mode_takes_every_postgres_container_on_the_network_except_those_opted_out() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    let network = format!("sr-disc-net-{ns}");
    docker(&["network", "create", &network]);
    struct Net(String);
    impl Drop for Net {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &self.0])
                .output();
        }
    }
    let _net = Net(network.clone());
    // No label at all (the login is the operator's default credential); and one opted out.
    let plain = Labelled::run_on("all", &pw, &[], &network);
    let out = Labelled::run_on(
        "out",
        &pw,
        &[(format!("{ns}.enable"), "false".into())],
        &network,
    );
    plain.wait_sql(&pw);
    out.wait_sql(&pw);
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, "  console: false\n");
    let text = std::fs::read_to_string(ws.config()).unwrap().replace(
        &format!("docker: {{ namespace: {ns},"),
        &format!("docker: {{ namespace: {ns}, mode: all, network: {network},"),
    );
    std::fs::write(ws.config(), text).unwrap();
    let d = daemon(&ws, &pw);
    wait_for(LONG, "the container's target answering", || {
        targets(&addr)
            .get(&plain.name)
            .is_some_and(|s| s["up"] == true)
            .then_some(())
    });
    // Containers of other tests are not on this network: never targets.
    let t = targets(&addr);
    assert_eq!(t.len(), 1, "{:?}", t.keys());
    assert_eq!(
        t[&plain.name]["endpoint"],
        format!("{}:5432/postgres", plain.ip())
    );
    assert!(!t.contains_key(&out.name));
    // ...and not errors either: they are not this daemon's to watch.
    assert_eq!(d.count("discovery_skipped", None), 0);
    drop(d);
}

/// A unix-socket proxy in front of the Engine's socket, which the test cuts (every open
/// connection shut, the socket file gone) and restores, as an Engine restart would.
struct EngineProxy {
    path: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl EngineProxy {
    const ENGINE: &'static str = "/var/run/docker.sock";

    fn start(path: std::path::PathBuf) -> Self {
        let mut p = Self {
            path,
            stop: Default::default(),
            conns: Default::default(),
            accept: None,
        };
        p.up();
        p
    }

    /// `DOCKER_HOST` for the daemon.
    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn up(&mut self) {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let listener = UnixListener::bind(&self.path).expect("bind the proxy socket");
        listener.set_nonblocking(true).expect("nonblocking");
        self.stop.store(false, Ordering::SeqCst);
        let (stop, conns) = (self.stop.clone(), self.conns.clone());
        self.accept = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => return,
                };
                let _ = client.set_nonblocking(false);
                let Ok(engine) = UnixStream::connect(Self::ENGINE) else {
                    continue;
                };
                let mut all = conns.lock().unwrap();
                for s in [&client, &engine] {
                    if let Ok(c) = s.try_clone() {
                        all.push(c);
                    }
                }
                drop(all);
                for (mut from, mut to) in [
                    (client.try_clone(), engine.try_clone()),
                    (engine.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        }));
    }

    /// Cuts the Engine off: no new connections, every open one (the events streams too) shut.
    fn down(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.down();
    }
}

#[test]
fn discovery_follows_renames_and_resynchronises_after_the_engine_connection_drops() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    // Cut off from the Engine, the daemon cannot tell a removed container from a failed one:
    // a threshold longer than the outage leaves that to the resynchronisation.
    let labels = opt_in(&ns, &[("probe.failure_threshold", "30")]);
    let (keep, gone, moved) = std::thread::scope(|s| {
        let k = s.spawn(|| Labelled::run("keep", &pw, &labels));
        let g = s.spawn(|| Labelled::run("gone", &pw, &labels));
        let m = s.spawn(|| Labelled::run("moved", &pw, &labels));
        (k.join().unwrap(), g.join().unwrap(), m.join().unwrap())
    });
    for x in [&keep, &gone, &moved] {
        x.wait_sql(&pw);
    }
    let rx = Receiver::start();
    let ws = Workspace::new();
    let mut proxy = EngineProxy::start(ws.path().join("engine.sock"));
    let addr = write_registry(&ws, &ns, &notify_all(&rx));
    let d = Daemon::run(&ws, &[("DISC_PW", &pw), ("DOCKER_HOST", &proxy.host())]);
    d.wait_event("api_listening", None, LONG);
    wait_for(LONG, "three discovered targets that answer", || {
        let t = targets(&addr);
        (t.len() == 3 && t.values().all(|s| s["up"] == true)).then_some(())
    });

    // Renamed: the target follows the container's new name (and heals it by that name).
    let mut moved = moved;
    let new_name = moved.name.replace("-moved-", "-renamed-");
    let old_name = std::mem::replace(&mut moved.name, new_name);
    docker(&["rename", &old_name, &moved.name]);
    let started = Instant::now();
    wait_for(LONG, "the renamed container's target", || {
        let t = targets(&addr);
        (t.contains_key(&moved.name) && !t.contains_key(&old_name)).then_some(())
    });
    let renamed_in = started.elapsed();
    let t = targets(&addr);
    assert_eq!(
        t[&moved.name]["discovered"]["container"],
        moved.name.as_str()
    );
    assert_eq!(t.len(), 3, "{:?}", t.keys());

    // The Engine connection drops for 9 s (an Engine restart); meanwhile one container is
    // added, one removed, and the renamed one killed.
    let first_start = docker(&["inspect", "-f", "{{.State.StartedAt}}", &moved.name]);
    let id = docker(&["inspect", "-f", "{{.Id}}", &moved.name]);
    let since = chrono::Utc::now().timestamp();
    proxy.down();
    let cut = Instant::now();
    let added = Labelled::run("added", &pw, &labels);
    remove(&gone.name);
    // Killed last: the address it leaves is not handed to another container meanwhile.
    docker(&["kill", &moved.name]);
    added.wait_sql(&pw);
    // Cut off, the daemon keeps what it had (a connected one retires within a second).
    std::thread::sleep(Duration::from_millis(1500));
    let t = targets(&addr);
    assert!(
        t.contains_key(&gone.name) && !t.contains_key(&added.name),
        "the connection was really cut: {:?}",
        t.keys()
    );

    std::thread::sleep(Duration::from_secs(9).saturating_sub(cut.elapsed()));
    proxy.up();
    let started = Instant::now();
    let want: std::collections::BTreeSet<String> = [&keep.name, &moved.name, &added.name]
        .into_iter()
        .cloned()
        .collect();
    wait_for(LONG, "the targets to match the Engine's containers", || {
        let t = targets(&addr);
        (t.keys().cloned().collect::<std::collections::BTreeSet<_>>() == want).then_some(())
    });
    let resynced_in = started.elapsed();
    // The death Docker reported while the connection was down is heard after it: healed at
    // once, by its new name, not after 30 failed probes.
    wait_for(LONG, "the killed container started again", || {
        let now = docker(&["inspect", "-f", "{{.State.StartedAt}}", &moved.name]);
        (now != first_start && moved.state().starts_with("running")).then_some(())
    });
    let healed_in = started.elapsed();
    wait_for(LONG, "the added target to answer", || {
        (targets(&addr)[&added.name]["up"] == true).then_some(())
    });
    eprintln!(
        "discovery: renamed in {renamed_in:?}, resynchronised {resynced_in:?} and the killed one started {healed_in:?} after the reconnect"
    );
    assert!(
        renamed_in < Duration::from_secs(10),
        "rename followed on the Engine's event: {renamed_in:?}"
    );
    assert!(
        resynced_in < Duration::from_secs(4),
        "resynchronised within 4 s of the reconnect: {resynced_in:?}"
    );
    assert!(
        healed_in < Duration::from_secs(10),
        "the death during the outage heard after it: {healed_in:?}"
    );
    moved.wait_sql(&pw);
    std::thread::sleep(Duration::from_secs(3)); // what a late incident or restart would need
    for name in [&gone.name, &old_name] {
        assert_eq!(
            d.count("incident_declared", Some(name)),
            0,
            "no incident for {name}"
        );
        assert!(
            rx.hits()
                .iter()
                .all(|h| !h.body.to_string().contains(name.as_str())),
            "no alert for {name}"
        );
        assert!(bundles_of(&ws, name).is_empty(), "no archive for {name}");
    }
    assert_eq!(
        engine_events(&id, since, "start"),
        vec!["start".to_string()],
        "the killed one started once"
    );
    assert_eq!(d.count("heal_issued", None), 1, "one restart in all");
    drop(d);
}

/// `docker events` for one container between two times (unix seconds): the actions seen.
fn engine_events(container: &str, since: i64, action: &str) -> Vec<String> {
    let until = chrono::Utc::now().timestamp() + 1;
    docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        &format!("container={container}"),
        "--filter",
        &format!("event={action}"),
        "--format",
        "{{.Action}}",
    ])
    .lines()
    .map(String::from)
    .collect()
}

#[test]
fn a_maintenance_window_keeps_a_discovered_container_down_until_it_ends() {
    const TOKEN: &str = "disc-token-0123456789abcdef";
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    let c = Labelled::run(
        "maint",
        &pw,
        &opt_in(&ns, &[("probe.failure_threshold", "2")]),
    );
    c.wait_sql(&pw);
    let rx = Receiver::start();
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, &notify_all(&rx));
    let text = std::fs::read_to_string(ws.config()).unwrap().replace(
        &format!("listen: \"{addr}\""),
        &format!("listen: \"{addr}\", token: \"{TOKEN}\""),
    );
    std::fs::write(ws.config(), text).unwrap();
    let d = daemon(&ws, &pw);
    wait_for(LONG, "the target answering", || {
        targets(&addr)
            .get(&c.name)
            .is_some_and(|s| s["up"] == true)
            .then_some(())
    });
    let r = http::request(
        &addr,
        "POST",
        &format!("/targets/{}/maintenance", c.name),
        Some(TOKEN),
        Some(r#"{"duration": "1h"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(targets(&addr)[&c.name]["state"], "maintenance");

    // Stopped on purpose: seen down, and left down, with no notice.
    // Counted from the second after its first start (`docker events` counts whole seconds).
    let first_start = docker(&["inspect", "-f", "{{.State.StartedAt}}", &c.name]);
    let since = chrono::DateTime::parse_from_rfc3339(&first_start)
        .expect("StartedAt")
        .timestamp()
        + 1;
    wait_for(LONG, "the next second", || {
        (chrono::Utc::now().timestamp() >= since).then_some(())
    });
    docker(&["stop", "-t", "5", &c.name]);
    let stopped = c.state();
    assert!(stopped.starts_with("exited"), "{stopped}");
    wait_for(LONG, "the target reported down", || {
        (targets(&addr)[&c.name]["up"] == false).then_some(())
    });
    // Longer than its threshold of 2 probes at 1 s, and than a heal would take.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(c.state(), stopped, "still stopped, never started");
    assert!(
        engine_events(&c.name, since, "start").is_empty(),
        "no start from the Engine"
    );
    assert!(
        rx.hits().is_empty(),
        "no notice during maintenance: {:?}",
        rx.hits()
    );
    assert!(bundles_of(&ws, &c.name).is_empty(), "no archive");
    let t = targets(&addr);
    assert_eq!(t[&c.name]["state"], "maintenance", "{}", t[&c.name]);

    // Ended: healed, started once.
    let r = http::request(
        &addr,
        "POST",
        &format!("/targets/{}/resume", c.name),
        Some(TOKEN),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    c.wait_sql(&pw);
    wait_for(LONG, "the target answering again", || {
        (targets(&addr)[&c.name]["up"] == true).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3)); // what a second restart would need
    assert_eq!(
        engine_events(&c.name, since, "start"),
        vec!["start".to_string()],
        "started once"
    );
    assert!(c.state().starts_with("running"), "{}", c.state());
    drop(d);
}

/// A Docker network of the test's own, removed on drop (after the containers on it: declare
/// it before them).
struct Network {
    name: String,
    /// The first three octets of a `with_subnet` network's /24.
    prefix: Option<String>,
}

impl Network {
    /// A bridge network with `args` (e.g. `--internal`).
    fn create(tag: &str, args: &[&str]) -> Self {
        let name = format!(
            "sr-net-{tag}-{}-{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xffffff
        );
        let mut all = vec!["network", "create"];
        all.extend_from_slice(args);
        all.push(&name);
        docker(&all);
        Self { name, prefix: None }
    }

    /// A network with a subnet of its own (so that `--ip` may pick an address on it); tries
    /// a few random /24s under 10.0.0.0/8 until one is free.
    fn with_subnet(tag: &str) -> Self {
        for _ in 0..10 {
            let prefix = format!(
                "10.{}.{}",
                150 + rand::random::<u8>() % 100,
                rand::random::<u8>()
            );
            let subnet = format!("{prefix}.0/24");
            let name = format!(
                "sr-net-{tag}-{}-{:06x}",
                std::process::id(),
                rand::random::<u32>() & 0xffffff
            );
            let ok = std::process::Command::new("docker")
                .args(["network", "create", "--subnet", &subnet, &name])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return Self {
                    name,
                    prefix: Some(prefix),
                };
            }
        }
        panic!("no free subnet for a test network");
    }

    /// The address `.host` on a `with_subnet` network, for `--ip`.
    fn host(&self, host: u8) -> String {
        let prefix = self.prefix.as_deref().expect("a network made with_subnet");
        format!("{prefix}.{host}")
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

#[test]
fn a_container_moved_to_another_network_is_probed_there_and_healed_after_a_kill() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    let (old_net, new_net) = (Network::with_subnet("old"), Network::create("new", &[]));
    let a = Labelled::run_on("mover", &pw, &opt_in(&ns, &[]), &old_net.name);
    a.wait_sql(&pw);
    let rx = Receiver::start();
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, &notify_all(&rx));
    let d = daemon(&ws, &pw);
    let old_ip = a.ip();
    wait_for(LONG, "the container's target at its address", || {
        let t = targets(&addr);
        let s = t.get(&a.name)?;
        (s["up"] == true && s["endpoint"].as_str()?.starts_with(&format!("{old_ip}:")))
            .then_some(())
    });

    // Moved: on the new network, off the old one; an unlabelled server with the same login
    // then takes the old address, so a daemon probing there would see a healthy server.
    docker(&["network", "connect", &new_net.name, &a.name]);
    docker(&["network", "disconnect", &old_net.name, &a.name]);
    let new_ip = a.ip();
    assert_ne!(new_ip, old_ip);
    let squatter = Labelled::start_named(
        &format!("{}-squatter", a.name),
        &pw,
        &[],
        &["log_directory=log"],
        None,
        postgres_image(),
    );
    docker(&["network", "disconnect", "bridge", &squatter.name]);
    docker(&[
        "network",
        "connect",
        "--ip",
        &old_ip,
        &old_net.name,
        &squatter.name,
    ]);
    squatter.wait_sql(&pw);
    let moved = Instant::now();
    wait_for(
        LONG,
        "the target to follow the container to its new address",
        || {
            let t = targets(&addr);
            t.get(&a.name)?["endpoint"]
                .as_str()?
                .starts_with(&format!("{new_ip}:"))
                .then_some(())
        },
    );
    let followed_in = moved.elapsed();

    // Killed: started again by the daemon, with an alert.
    let id = docker(&["inspect", "-f", "{{.Id}}", &a.name]);
    let since = chrono::Utc::now().timestamp();
    docker(&["kill", &a.name]);
    wait_for(LONG, "the daemon to start the killed container", || {
        (!engine_events(&id, since, "start").is_empty() && a.state().starts_with("running"))
            .then_some(())
    });
    wait_for(LONG, "the failure alert", || {
        (rx.hook_count("failure", &a.name) > 0).then_some(())
    });
    d.wait_event("target_recovered", Some(&a.name), LONG);
    eprintln!("moved: the target followed the new address in {followed_in:?}");
    assert!(
        followed_in < Duration::from_secs(5),
        "followed within 5 s: {followed_in:?}"
    );
    drop(d);
    drop(squatter);
    drop(a);
}

#[test]
fn a_recreated_container_is_a_new_container_with_a_fresh_budget() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    let project = format!("srproj{:08x}", rand::random::<u32>());
    let mut labels = opt_in(&ns, &[("restart_budget.max_restarts", "1")]);
    labels.push(("com.docker.compose.project".into(), project.clone()));
    labels.push(("com.docker.compose.service".into(), "db".into()));
    let old = Labelled::run("recreated", &pw, &labels);
    old.wait_sql(&pw);
    let rx = Receiver::start();
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, &notify_all(&rx));
    let d = daemon(&ws, &pw);
    let name = old.name.clone();
    wait_for(LONG, "the target to answer", || {
        (targets(&addr).get(&name)?["up"] == true).then_some(())
    });

    // The budget (one restart) spent: killed, started, killed again and left down.
    docker(&["kill", &name]);
    d.wait_event("target_recovered", Some(&name), LONG);
    old.wait_sql(&pw);
    docker(&["kill", &name]);
    wait_for(LONG, "the restart_budget_exhausted escalation", || {
        rx.hook_events("escalation")
            .into_iter()
            .find(|h| h.body["target"] == name.as_str())
    });
    let incident = targets(&addr)[&name]["open_incident"]
        .as_str()
        .expect("an open incident")
        .to_string();

    // What `docker compose up -d` does after a label change: the old container renamed
    // `<id[..12]>_<name>`, a new one created under the name and started, the old one removed.
    let old_id = docker(&["inspect", "-f", "{{.Id}}", &name]);
    let leftover = format!("{}_{}", &old_id[..12], name);
    docker(&["rename", &name, &leftover]);
    let mut old = old;
    old.name = leftover.clone(); // removed by its guard if the test fails before `docker rm`
    let new = Labelled::start_named(
        &name,
        &pw,
        &labels,
        &["log_directory=log"],
        None,
        postgres_image(),
    );
    let new_id = docker(&["inspect", "-f", "{{.Id}}", &name]);
    new.wait_sql(&pw);
    assert!(
        !targets(&addr).contains_key(&leftover),
        "the leftover is never a target"
    );
    remove(&leftover);
    wait_for(LONG, "the new container as the target", || {
        let t = targets(&addr);
        let s = t.get(&name)?;
        (s["discovered"]["container_id"] == new_id.as_str() && s["up"] == true).then_some(())
    });
    let st = &targets(&addr)[&name];
    assert_eq!(st["restarts_in_window"], 0, "a fresh budget: {st}");
    assert!(st["open_incident"].is_null(), "{st}");

    // The old incident closed as replaced, not recovered.
    let replaced = wait_for(LONG, "the replaced notice", || {
        rx.hook_events("replaced")
            .into_iter()
            .find(|h| h.body["incident_id"] == incident.as_str())
    });
    assert!(
        replaced.body["downtime_seconds"].is_null(),
        "{}",
        replaced.body
    );
    assert!(
        rx.hook_events("recovery")
            .iter()
            .all(|h| h.body["incident_id"] != incident.as_str()),
        "no recovery notice for the old incident"
    );

    // The new container's first crash is healed.
    let since = chrono::Utc::now().timestamp();
    docker(&["kill", &name]);
    wait_for(
        LONG,
        "the new container started again by the daemon",
        || {
            (!engine_events(&new_id, since, "start").is_empty()
                && new.state().starts_with("running"))
            .then_some(())
        },
    );
    d.wait_event("target_recovered", Some(&name), LONG);
    // The leftover was never a target, at no moment.
    assert!(
        d.records()
            .iter()
            .all(|r| !(r["event"] == "discovery_applied"
                && r["added"].as_str().unwrap_or("").contains(&leftover))),
        "the leftover was never added"
    );
    assert_eq!(d.count("discovery_recreating", None), 1);
    drop(d);
}

#[test]
fn a_container_the_daemon_cannot_connect_to_is_one_error_and_unreachable_in_status() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    let net = Network::create("internal", &["--internal"]);
    // The daemon runs on the host, which routes to every bridge network here: a server that
    // listens inside its container only is, to the daemon, a container on a network it
    // cannot reach (no TCP connection ever).
    let c = Labelled::start(
        "unreachable",
        &pw,
        &opt_in(&ns, &[]),
        &["log_directory=log", "listen_addresses=127.0.0.1"],
        Some(&net.name),
    );
    let rx = Receiver::start();
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, &notify_all(&rx));
    // The deadline is defaults.recovery_timeout.
    let text = std::fs::read_to_string(ws.config()).expect("registry");
    std::fs::write(
        ws.config(),
        text.replace("recovery_timeout: 60s", "recovery_timeout: 4s"),
    )
    .expect("write registry");
    let d = daemon(&ws, &pw);
    let started = Instant::now();
    let st = wait_for(LONG, "the container listed as unreachable", || {
        targets(&addr)
            .remove(&c.name)
            .filter(|s| s["state"] == "unreachable")
    });
    let listed_in = started.elapsed();
    assert_eq!(st["discovered"]["container"], c.name.as_str(), "{st}");
    assert_eq!(st["discovered"]["networks"][0], net.name.as_str(), "{st}");
    assert_eq!(st["monitor_alive"], false, "{st}");
    let e = d.wait_event("discovery_unreachable", None, LONG);
    assert_eq!(e["level"], "ERRO", "{e}");
    assert_eq!(e["container"], c.name.as_str(), "{e}");
    assert!(
        e["networks"].as_str().unwrap_or("").contains(&net.name),
        "{e}"
    );
    assert!(
        e["fix"]
            .as_str()
            .unwrap_or("")
            .contains("discovery.docker.network"),
        "{e}"
    );
    // Said once, though discovery keeps looking every half second.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.count("discovery_unreachable", None), 1);
    assert_eq!(targets(&addr)[&c.name]["state"], "unreachable");
    eprintln!("unreachable: listed {listed_in:?} after start-up (deadline 4 s)");
    assert!(listed_in >= Duration::from_secs(4), "{listed_in:?}");
    drop(d);
    drop(c);
}

#[test]
fn a_stopped_container_is_never_healthy_through_the_container_that_took_its_address() {
    let ns = namespace();
    let pw = format!("pw-{:012x}", rand::random::<u64>());
    // A network of the test's own whose addresses the test picks: B gets A's old one.
    let net = Network::with_subnet("own");
    let (network, ip) = (net.name.clone(), net.host(10));
    let run = |tag: &str, labels: &[(String, String)]| -> Labelled {
        let name = format!(
            "sr-disc-{tag}-{}-{:06x}",
            std::process::id(),
            rand::random::<u32>() & 0xffffff
        );
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--restart=no",
            "--label",
            "org.sentinel-remedy.test=1",
        ];
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for l in &labels {
            args.extend(["--label", l]);
        }
        let (net, env) = (
            format!("--network={network}"),
            format!("POSTGRES_PASSWORD={pw}"),
        );
        args.extend([net.as_str(), "--ip", &ip, "-e", &env, postgres_image()]);
        args.extend(["postgres", "-c", "shared_buffers=16MB"]);
        docker(&args);
        Labelled { name }
    };
    let a = run("own", &opt_in(&ns, &[("heal", "false")]));
    a.wait_sql(&pw);
    let rx = Receiver::start();
    let ws = Workspace::new();
    let addr = write_registry(&ws, &ns, &notify_all(&rx));
    let d = daemon(&ws, &pw);
    wait_for(LONG, "A's target answering", || {
        targets(&addr)
            .get(&a.name)
            .is_some_and(|s| s["up"] == true)
            .then_some(())
    });
    let a_id = a
        .psql(&pw, "SELECT system_identifier FROM pg_control_system()")
        .unwrap();

    docker(&["stop", "-t", "5", &a.name]);
    wait_for(LONG, "the stopped container's notice", || {
        (rx.hook_count("escalation", &a.name) == 1).then_some(())
    });
    // B, not a target of the daemon, takes A's address (same image, same password).
    let b = run("other", &[]);
    b.wait_sql(&pw);
    assert_eq!(b.ip(), ip, "B has A's old address");
    let b_id = b
        .psql(&pw, "SELECT system_identifier FROM pg_control_system()")
        .unwrap();
    let alert = wait_for(LONG, "the wrong_server alert", || {
        rx.hook_events("escalation")
            .into_iter()
            .find(|h| h.body["reason"] == "wrong_server")
    });
    assert_eq!(alert.body["target"], a.name.as_str());
    let detail = alert.body["failure"]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains(&a_id) && detail.contains(&b_id), "{detail}");
    // B goes on answering A's probes: A stays down, with no recovery notice.
    let answered_by_b = || {
        d.records()
            .iter()
            .filter(|r| r["target"] == a.name.as_str() && r["class"] == "wrong_server")
            .count()
    };
    let seen = answered_by_b();
    wait_for(LONG, "five more probes answered by B", || {
        (answered_by_b() >= seen + 5).then_some(())
    });
    assert_eq!(targets(&addr)[&a.name]["up"], false);
    assert_eq!(
        rx.hook_count("recovery", &a.name),
        0,
        "no recovery through B"
    );
    assert_eq!(d.count("target_recovered", Some(&a.name)), 0);
    assert_eq!(d.count("heal_issued", None), 0, "nothing restarted");
    assert!(a.state().starts_with("exited"), "{}", a.state());
    let wrong: Vec<_> = rx
        .hook_events("escalation")
        .into_iter()
        .filter(|h| h.body["reason"] == "wrong_server")
        .collect();
    assert_eq!(wrong.len(), 1, "one alert");
    rx.assert_all_well_formed();
}

//! Cluster mode on the real Docker Engine: an etcd cluster, PostgreSQL containers and daemon
//! containers (the sentinel image with the binary under test) on two private networks, `coord`
//! (etcd and the daemons) and `data` (the daemons and the databases), so a daemon can be
//! killed, paused or cut off from etcd alone. A real webhook receiver listens on the data
//! network's gateway. Everything is counted from outside: owner keys with the host's etcdctl,
//! Engine `start` events of the database containers, receiver payloads, the databases' own
//! connection logs. Names are unique per bed; all of it is removed on drop.

use super::docker::{docker, postgres_image, remove};
use super::Receiver;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The key prefix the beds configure (the spec's default).
pub const PREFIX: &str = "sentinel-remedy";

/// Builds (or reuses) an image through scripts/build_images.sh.
fn build_image(what: &str, var: &str, tag: &str, extra: &[(&str, &str)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/build_images.sh"))
        .arg(what)
        .env(var, tag)
        .envs(extra.iter().copied())
        .output()
        .expect("run scripts/build_images.sh");
    assert!(
        out.status.success(),
        "scripts/build_images.sh {what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The etcd image (ETCD_IMAGE overrides), built from Debian's etcd-server when missing.
pub fn etcd_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let image =
            std::env::var("ETCD_IMAGE").unwrap_or_else(|_| "sentinel-remedy/etcd:3.4".into());
        build_image("etcd", "ETCD_IMAGE", &image, &[]);
        image
    })
}

/// The sentinel image holding the binary under test, tagged by the binary's hash, so test
/// runs of different checkouts side by side never swap each other's daemon.
pub fn sentinel_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        use sha2::Digest;
        let bin = super::bin();
        let bytes = std::fs::read(bin).expect("read the daemon binary");
        let hash = hex::encode(sha2::Sha256::digest(&bytes));
        let image = format!("sentinel-remedy:test-{}", &hash[..16]);
        build_image(
            "sentinel",
            "SENTINEL_IMAGE",
            &image,
            &[("SENTINEL_BINARY", bin)],
        );
        remove_stale_test_images(&image);
        image
    })
}

/// Test images of earlier builds, older than six hours (no run in progress still needs them),
/// are removed; one that a container still uses is kept by the Engine.
fn remove_stale_test_images(keep: &str) {
    let list = docker(&[
        "images",
        "--filter",
        "reference=sentinel-remedy:test-*",
        "--format",
        "{{.Repository}}:{{.Tag}}|{{.CreatedAt}}",
    ]);
    let cutoff = chrono::Utc::now() - chrono::Duration::hours(6);
    for line in list.lines() {
        let Some((tag, created)) = line.split_once('|') else {
            continue;
        };
        // "2026-11-26 00:40:37 +0000 UTC"
        let created = created.trim_end_matches(" UTC");
        let old = chrono::DateTime::parse_from_str(created, "%Y-%m-%d %H:%M:%S %z")
            .is_ok_and(|t| t < cutoff);
        if tag != keep && old {
            let _ = Command::new("docker").args(["rmi", tag]).output();
        }
    }
}

fn unique() -> String {
    format!(
        "{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xffffff
    )
}

/// The group of the Engine's socket, which the daemon's user needs.
fn docker_gid() -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/var/run/docker.sock")
        .map(|m| m.gid().to_string())
        .unwrap_or_else(|_| "0".into())
}

/// A private bridge network; removed on drop.
pub struct Net {
    pub name: String,
    /// The host's address on it (containers reach the host here).
    pub gateway: String,
}

impl Net {
    fn create(name: String) -> Self {
        docker(&[
            "network",
            "create",
            "--label",
            "org.sentinel-remedy.test=1",
            &name,
        ]);
        let gateway = docker(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            &name,
        ]);
        Self { name, gateway }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for _ in 0..10 {
            let ok = Command::new("docker")
                .args(["network", "rm", &self.name])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// What a bed is made of.
#[derive(Clone, Debug)]
pub struct Spec {
    /// etcd members (3 where a leader is killed).
    pub etcd_nodes: usize,
    pub databases: usize,
    /// Target names t00, t01, ...; target i watches database i % databases.
    pub targets: usize,
    pub daemons: usize,
    /// Membership lease TTL in seconds (2 is etcd's floor).
    pub ttl_secs: u64,
    /// Without a `cluster:` section: plain daemons, as before issue 15.
    pub cluster: bool,
    pub handoffs_per_second: u32,
    /// Every target's probe interval.
    pub probe_interval: &'static str,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            etcd_nodes: 1,
            databases: 3,
            targets: 3,
            daemons: 3,
            ttl_secs: 2,
            cluster: true,
            handoffs_per_second: 2,
            probe_interval: "500ms",
        }
    }
}

/// One daemon container.
pub struct Daemon {
    /// The member id (its host name).
    pub member: String,
    pub container: String,
}

/// One PostgreSQL container on the data network.
pub struct Db {
    pub container: String,
}

/// The scenario: built per test, torn down on drop (containers first, then the networks).
pub struct Bed {
    pub spec: Spec,
    /// When the bed was made (receiver hits are timed with `Instant`).
    pub created: Instant,
    pub tag: String,
    pub receiver: Receiver,
    pub etcd: Vec<String>,
    pub dbs: Vec<Db>,
    pub daemons: Vec<Daemon>,
    password: String,
    config: tempfile::TempDir,
    // Dropped last (after the containers in Drop).
    pub data: Net,
    pub coord: Net,
}

impl Bed {
    /// Networks, etcd (healthy, with a leader), databases (answering SQL) and the receiver;
    /// no daemon yet (`start_daemons`).
    pub fn new(spec: Spec) -> Self {
        let tag = unique();
        // Images first: a build must not eat into any wait below.
        let (pg_image, etcd_image) = (postgres_image(), etcd_image());
        let coord = Net::create(format!("sr-ha-{tag}-coord"));
        let data = Net::create(format!("sr-ha-{tag}-data"));
        let receiver = Receiver::start_on(&data.gateway);
        let config = tempfile::Builder::new()
            .prefix("sentinel-ha-")
            .tempdir()
            .expect("temp dir");
        let mut bed = Self {
            created: Instant::now(),
            password: format!("pw-{:016x}", rand::random::<u64>()),
            etcd: (1..=spec.etcd_nodes)
                .map(|i| format!("sr-ha-{tag}-etcd{i}"))
                .collect(),
            dbs: vec![],
            daemons: vec![],
            spec,
            tag,
            receiver,
            config,
            data,
            coord,
        };
        bed.start_etcd(etcd_image);
        for i in 1..=bed.spec.databases {
            bed.start_db(i, pg_image);
        }
        bed.wait_etcd_healthy(Duration::from_secs(60));
        for db in &bed.dbs {
            let c = db.container.clone();
            super::wait_for(Duration::from_secs(90), "a database to answer SQL", || {
                sql_ok(&c).then_some(())
            });
        }
        bed.write_config();
        bed
    }

    fn start_etcd(&self, image: &str) {
        let cluster: Vec<String> = self
            .etcd
            .iter()
            .map(|n| format!("{n}=http://{n}:2380"))
            .collect();
        for name in &self.etcd {
            docker(&[
                "run",
                "-d",
                "--name",
                name,
                "--hostname",
                name,
                "--network",
                &self.coord.name,
                "--label",
                "org.sentinel-remedy.test=1",
                "-e",
                &format!("ETCD_NAME={name}"),
                "-e",
                &format!("ETCD_ADVERTISE_CLIENT_URLS=http://{name}:2379"),
                "-e",
                &format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{name}:2380"),
                "-e",
                &format!("ETCD_INITIAL_CLUSTER={}", cluster.join(",")),
                "-e",
                "ETCD_INITIAL_CLUSTER_STATE=new",
                "-e",
                &format!("ETCD_INITIAL_CLUSTER_TOKEN=sr-ha-{}", self.tag),
                image,
            ]);
        }
    }

    fn start_db(&mut self, i: usize, image: &str) {
        let container = format!("sr-ha-{}-pg{i}", self.tag);
        docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--hostname",
            &container,
            "--network",
            &self.data.name,
            "--restart=no",
            "--label",
            "org.sentinel-remedy.test=1",
            "-e",
            &format!("POSTGRES_PASSWORD={}", self.password),
            image,
            "postgres",
            "-c",
            "logging_collector=on",
            "-c",
            "log_directory=log",
            "-c",
            "log_filename=postgresql.log",
            "-c",
            "log_line_prefix=%m [%p] %h ",
            "-c",
            "log_connections=on",
        ]);
        self.dbs.push(Db { container });
    }

    /// The database target `t` watches.
    pub fn db_of(&self, target: &str) -> &Db {
        let i: usize = target[1..].parse().expect("target tNN");
        &self.dbs[i % self.dbs.len()]
    }

    pub fn target_names(&self) -> Vec<String> {
        (0..self.spec.targets).map(|i| format!("t{i:02}")).collect()
    }

    /// The registry every daemon mounts (the spec's `cluster:` section when clustered).
    fn write_config(&self) {
        let mut y = String::new();
        if self.spec.cluster {
            let urls: Vec<String> = self
                .etcd
                .iter()
                .map(|n| format!("\"http://{n}:2379\""))
                .collect();
            y.push_str(&format!(
                "cluster:\n  etcd: [{}]\n  prefix: {PREFIX}\n  ttl: {}s\n  handoffs_per_second: {}\n  stagger: 250ms\n",
                urls.join(", "),
                self.spec.ttl_secs,
                self.spec.handoffs_per_second
            ));
        }
        y.push_str(&format!(
            "defaults:\n  probe: {{ query: SELECT 1, interval: {}, timeout: 1s, failure_threshold: 2 }}\n  \
             restart_budget: {{ max_restarts: 50, window: 1h, backoff: 0s }}\n  recovery_timeout: 60s\n\
             server:\n  listen: 0.0.0.0:9187\n\
             archive:\n  local: {{ dir: /var/lib/sentinel/incidents }}\n\
             docker:\n  events: true\n\
             notify:\n  console: false\n  max_backoff: 1s\n  webhooks:\n    - url: \"{}/hook\"\n\
             targets:\n",
            self.spec.probe_interval,
            self.receiver.base()
        ));
        for t in self.target_names() {
            let db = &self.db_of(&t).container;
            y.push_str(&format!(
                "  - name: {t}\n    dsn: \"postgres://postgres:{}@{db}:5432/postgres?application_name={t}&connect_timeout=1\"\n    \
                 heal:\n      docker: {{ container: {db}, stop_timeout: 5s }}\n",
                self.password
            ));
        }
        let path = self.config.path().join("targets.yaml");
        std::fs::write(&path, y).expect("write targets.yaml");
        // Readable by the daemon's user (10001), writable by no one else.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(self.config.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(self.config.path().join("targets.yaml")).unwrap()
    }

    /// Creates and starts daemon `member` on both networks (coord first).
    pub fn add_daemon(&mut self, member: &str) -> usize {
        let container = format!("sr-ha-{}-{member}", self.tag);
        let mount = format!(
            "{}:/etc/sentinel-remedy/targets.yaml:ro",
            self.config.path().join("targets.yaml").display()
        );
        docker(&[
            "create",
            "--name",
            &container,
            "--hostname",
            member,
            "--network",
            &self.coord.name,
            "--group-add",
            &docker_gid(),
            "--label",
            "org.sentinel-remedy.test=1",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            &mount,
            "-e",
            "SENTINEL_CONFIG=/etc/sentinel-remedy/targets.yaml",
            "-e",
            "SENTINEL_LOG_FORMAT=json",
            sentinel_image(),
        ]);
        docker(&["network", "connect", &self.data.name, &container]);
        docker(&["start", &container]);
        self.daemons.push(Daemon {
            member: member.into(),
            container,
        });
        self.daemons.len() - 1
    }

    /// Starts `spec.daemons` daemons (node-a, node-b, ...) and waits until each answers
    /// /healthz 200.
    pub fn start_daemons(&mut self) {
        for i in 0..self.spec.daemons {
            let member = format!("node-{}", (b'a' + i as u8) as char);
            self.add_daemon(&member);
        }
        for i in 0..self.daemons.len() {
            self.wait_healthy(i, Duration::from_secs(60));
        }
    }

    pub fn daemon(&self, member: &str) -> &Daemon {
        self.daemons
            .iter()
            .find(|d| d.member == member)
            .unwrap_or_else(|| panic!("no daemon {member}"))
    }

    /// A container's address on a network (empty when not attached).
    pub fn ip(&self, container: &str, net: &Net) -> String {
        docker(&[
            "inspect",
            "-f",
            &format!(
                "{{{{with index .NetworkSettings.Networks \"{}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}",
                net.name
            ),
            container,
        ])
    }

    /// GET on a daemon's API over the data network: (status, body), None if it cannot connect.
    pub fn api(&self, daemon: usize, path: &str) -> Option<(u16, String)> {
        let ip = self.ip(&self.daemons[daemon].container, &self.data);
        http_get(&format!("{ip}:9187"), path)
    }

    /// A daemon's status document: the spec's `/api/v1/status`, or `/status` where the API
    /// serves it today.
    pub fn status(&self, daemon: usize) -> Value {
        for path in ["/api/v1/status", "/status"] {
            if let Some((200, body)) = self.api(daemon, path) {
                return serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"));
            }
        }
        panic!(
            "{} answers neither /api/v1/status nor /status with 200",
            self.daemons[daemon].member
        )
    }

    /// Waits until daemon `i` answers /healthz 200; fails at once, with its log, if its
    /// container exits.
    pub fn wait_healthy(&self, i: usize, limit: Duration) {
        let d = &self.daemons[i];
        let end = Instant::now() + limit;
        loop {
            let state = docker(&["inspect", "-f", "{{.State.Status}}", &d.container]);
            if state == "exited" || state == "dead" {
                panic!(
                    "daemon {} exited before answering /healthz (status {}); its log:\n{}",
                    d.member,
                    docker(&["inspect", "-f", "{{.State.ExitCode}}", &d.container]),
                    self.log_tail(&d.container, 30)
                );
            }
            let last = self.api(i, "/healthz");
            if last.as_ref().is_some_and(|(s, _)| *s == 200) {
                return;
            }
            if Instant::now() > end {
                panic!(
                    "daemon {} did not answer /healthz 200 within {limit:?} (last answer: {last:?}); its log:\n{}",
                    d.member,
                    self.log_tail(&d.container, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_tail(&self, container: &str, lines: usize) -> String {
        let out = Command::new("docker")
            .args(["logs", "--tail", &lines.to_string(), container])
            .output()
            .expect("docker logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// What a failed wait shows: the owner keys, members and each daemon's last log lines.
    pub fn diagnose(&self) -> String {
        let mut s = format!(
            "owners: {:?}\nmembers: {:?}\n",
            self.owners(),
            self.members()
        );
        for d in &self.daemons {
            s.push_str(&format!(
                "--- {} ({}):\n{}",
                d.member,
                docker(&["inspect", "-f", "{{.State.Status}}", &d.container]),
                self.log_tail(&d.container, 15)
            ));
        }
        s
    }

    /// Polls `f` every 100 ms; on timeout panics with `what` and `diagnose()`.
    pub fn wait<T>(&self, limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let end = Instant::now() + limit;
        loop {
            if let Some(v) = f() {
                return v;
            }
            if Instant::now() > end {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n{}",
                    self.diagnose()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The etcd members' client URLs from the host (by address on the coord network; a
    /// stopped member is left out).
    fn endpoints(&self) -> String {
        self.etcd
            .iter()
            .map(|n| self.ip(n, &self.coord))
            .filter(|ip| !ip.is_empty())
            .map(|ip| format!("http://{ip}:2379"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `etcdctl` (v3 API, the host's) against this bed's cluster.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints()))
            .args(["--dial-timeout=1s", "--command-timeout=2s"])
            .args(args)
            .output()
            .map_err(|e| format!("run etcdctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// Keys under /{PREFIX}/{dir}/ with their values, the prefix cut off the key.
    pub fn keys(&self, dir: &str) -> Result<BTreeMap<String, String>, String> {
        let prefix = format!("/{PREFIX}/{dir}/");
        let out = self.etcdctl(&["get", "--prefix", &prefix])?;
        let lines: Vec<&str> = out.lines().collect();
        Ok(lines
            .chunks(2)
            .filter(|kv| kv.len() == 2)
            .map(|kv| {
                (
                    kv[0].strip_prefix(&prefix).unwrap_or(kv[0]).to_string(),
                    kv[1].to_string(),
                )
            })
            .collect())
    }

    /// target -> owning member (empty when etcd does not answer).
    pub fn owners(&self) -> BTreeMap<String, String> {
        self.keys("owner").unwrap_or_default()
    }

    /// Registered members.
    pub fn members(&self) -> Vec<String> {
        self.keys("members")
            .map(|m| m.into_keys().collect())
            .unwrap_or_default()
    }

    /// Waits until every target has an owner among `live` members; returns the owners.
    pub fn wait_all_owned(&self, live: &[&str], limit: Duration) -> BTreeMap<String, String> {
        let want = self.target_names();
        self.wait(
            limit,
            &format!("every target owned by one of {live:?}"),
            || {
                let o = self.owners();
                want.iter()
                    .all(|t| o.get(t).is_some_and(|m| live.contains(&m.as_str())))
                    .then_some(o)
            },
        )
    }

    /// Waits until every target is owned by one of `live` and no owner key has changed for
    /// 1.5 s (three hand-offs at 2 per second), so a scenario never starts mid-rebalance.
    /// With ten targets or more per member, each share must also be within ±30 % of even (a
    /// large fleet's rebalancing can pause longer than 1.5 s).
    pub fn wait_settled(&self, live: &[&str], limit: Duration) -> BTreeMap<String, String> {
        let want = self.target_names();
        let even = want.len() as f64 / live.len() as f64;
        let mut last: Option<(BTreeMap<String, String>, Instant)> = None;
        self.wait(
            limit,
            &format!("every target owned by one of {live:?}, unchanged for 1.5 s"),
            || {
                let o = self.owners();
                let balanced = even < 10.0
                    || live.iter().all(|m| {
                        let n = o.values().filter(|v| v.as_str() == *m).count() as f64;
                        (n - even).abs() <= 0.3 * even
                    });
                let all = balanced
                    && want
                        .iter()
                        .all(|t| o.get(t).is_some_and(|m| live.contains(&m.as_str())));
                match &last {
                    Some((prev, since)) if *prev == o => {
                        if all && since.elapsed() >= Duration::from_millis(1500) {
                            return Some(o);
                        }
                    }
                    _ => last = Some((o, Instant::now())),
                }
                None
            },
        )
    }

    fn wait_etcd_healthy(&self, limit: Duration) {
        // Every member answers and one of them leads.
        super::wait_for(limit, "etcd to elect a leader and answer", || {
            let out = self.etcdctl(&["endpoint", "status", "-w", "json"]).ok()?;
            let v: Value = serde_json::from_str(&out).ok()?;
            (v.as_array()?.len() == self.etcd.len() && self.leader().is_some()).then_some(())
        });
    }

    /// The etcd container that is the leader now.
    pub fn leader(&self) -> Option<String> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]).ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        let entry = v.as_array()?.iter().find(|e| {
            let s = &e["Status"];
            s["leader"].as_u64().is_some() && s["leader"] == s["header"]["member_id"]
        })?;
        let ep = entry["Endpoint"].as_str()?;
        self.etcd
            .iter()
            .find(|n| {
                let ip = self.ip(n, &self.coord);
                !ip.is_empty() && ep.contains(&format!("//{ip}:"))
            })
            .cloned()
    }

    /// The Engine's time now, for `docker events --since` (seconds since the epoch).
    pub fn now() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    /// Engine `start` events of a container since `since` (seconds since the epoch).
    pub fn starts_since(&self, container: &str, since: f64) -> usize {
        let out = docker(&[
            "events",
            "--since",
            &format!("{since:.3}"),
            "--until",
            &format!("{:.3}", Self::now()),
            "--filter",
            &format!("container={container}"),
            "--filter",
            "event=start",
            "--format",
            "{{.Time}}",
        ]);
        out.lines().filter(|l| !l.trim().is_empty()).count()
    }

    /// Whether the database answers SQL (through its own socket).
    pub fn db_answers(&self, db: &Db) -> bool {
        sql_ok(&db.container)
    }

    /// Accepted webhook payloads of `event` (failure, recovery, ...) for `target`.
    pub fn pages(&self, target: &str, event: &str) -> Vec<Value> {
        self.receiver
            .hook_events(event)
            .into_iter()
            .map(|h| h.body)
            .filter(|b| b["target"] == target)
            .collect()
    }

    /// "coordination lost" alerts the receiver accepted since `since`.
    pub fn coordination_alerts(&self, since: Instant) -> Vec<Value> {
        self.receiver
            .accepted("/hook")
            .into_iter()
            .filter(|h| h.at >= since && h.body["reason"] == "coordination_lost")
            .map(|h| h.body)
            .collect()
    }

    /// Kills a database container (SIGKILL, as the OOM killer would); returns the time.
    pub fn kill_db(&self, db: &Db) -> f64 {
        let t = Self::now();
        docker(&["kill", &db.container]);
        t
    }

    /// Waits until `target`'s database is back (SQL) and its failure and recovery were paged.
    pub fn wait_healed(&self, target: &str, limit: Duration) {
        let db = self.db_of(target);
        self.wait(
            limit,
            &format!("{target} healed and its recovery paged"),
            || (self.db_answers(db) && !self.pages(target, "recovery").is_empty()).then_some(()),
        );
    }

    /// Logins the database logged for `target` (its application_name): (time, client address).
    pub fn probe_logins(&self, target: &str) -> Vec<(chrono::NaiveDateTime, String)> {
        let db = self.db_of(target);
        let out = Command::new("docker")
            .args([
                "exec",
                &db.container,
                "sh",
                "-c",
                "cat /var/lib/postgresql/data/log/postgresql.log* 2>/dev/null",
            ])
            .output()
            .expect("docker exec");
        let needle = format!("application_name={target}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("connection authorized") && l.contains(&needle))
            .filter_map(|l| {
                // "2026-11-26 00:35:00.307 UTC [123] 172.20.0.5 LOG:  connection authorized: ..."
                let mut w = l.split_whitespace();
                let (d, t, tz, _pid, host) =
                    (w.next()?, w.next()?, w.next()?, w.next()?, w.next()?);
                assert!(
                    tz == "UTC" || tz == "GMT",
                    "the database logs in {tz}, the tests compare with UTC: {l}"
                );
                let at = chrono::NaiveDateTime::parse_from_str(
                    &format!("{d} {t}"),
                    "%Y-%m-%d %H:%M:%S%.3f",
                )
                .ok()?;
                Some((at, host.to_string()))
            })
            .collect()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let mut names: Vec<String> = self.daemons.iter().map(|d| d.container.clone()).collect();
        names.extend(self.dbs.iter().map(|d| d.container.clone()));
        names.extend(self.etcd.iter().cloned());
        for n in names {
            let _ = std::panic::catch_unwind(|| remove(&n));
        }
        // The networks go with `coord` and `data` after this.
    }
}

fn sql_ok(container: &str) -> bool {
    Command::new("docker")
        .args([
            "exec", container, "psql", "-XAtq", "-U", "postgres", "-c", "SELECT 1",
        ])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "1")
}

/// One GET with short timeouts: (status, body), or None when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let sock = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

//! A real etcd (Debian's etcd-server) on free loopback ports in a temp dir, and a TCP relay in
//! front of it that a test can cut, to take one daemon off etcd while the others still reach it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    pub url: String,
    /// etcdctl's TLS flags (CA, client certificate, key) when etcd serves https only.
    tls: Vec<String>,
    /// etcdctl's `--user root:PW` once authentication is on.
    root: Option<String>,
}

impl Etcd {
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// etcd serving https only with `pki`'s `server` certificate, and requiring a client
    /// certificate signed by `pki`'s `ca` (`--client-cert-auth`).
    pub fn start_mtls(pki: &super::tls::Pki) -> Self {
        Self::launch(Some(pki))
    }

    fn launch(pki: Option<&super::tls::Pki>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sentinel-etcd-")
            .tempdir()
            .expect("temp dir");
        let port = sentinel_remedy::pgcluster::free_port().expect("port");
        let peer = sentinel_remedy::pgcluster::free_port().expect("port");
        let scheme = if pki.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--name", "t", "--listen-client-urls", &url])
            .args(["--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")]);
        let mut tls = vec![];
        if let Some(pki) = pki {
            cmd.args(["--cert-file", &pki.file("server.crt")])
                .args(["--key-file", &pki.file("server.key")])
                .args(["--trusted-ca-file", &pki.file("ca.crt")])
                .arg("--client-cert-auth");
            tls = vec![
                format!("--cacert={}", pki.file("ca.crt")),
                format!("--cert={}", pki.file("client.crt")),
                format!("--key={}", pki.file("client.key")),
            ];
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (apt-get install etcd-server)");
        let e = Self {
            child,
            _dir: dir,
            url,
            tls,
            root: None,
        };
        super::wait_for(Duration::from_secs(20), "etcd answers", || {
            e.ctl(&["endpoint", "health"]).map(|_| ())
        });
        e
    }

    /// Turns authentication on: `root` with `root_pw`, and `user` with `pw`, whose role may
    /// read and write the daemons' keys (`/sentinel-remedy/`) and nothing else.
    pub fn enable_auth(&mut self, root_pw: &str, user: &str, pw: &str) {
        let role = format!("{user}-role");
        for args in [
            vec!["user", "add", &format!("root:{root_pw}")],
            vec!["role", "add", &role],
            vec![
                "role",
                "grant-permission",
                &role,
                "--prefix=true",
                "readwrite",
                "/sentinel-remedy/",
            ],
            vec!["user", "add", &format!("{user}:{pw}")],
            vec!["user", "grant-role", user, &role],
            vec!["auth", "enable"],
        ] {
            assert!(self.ctl(&args).is_some(), "etcdctl {args:?}");
        }
        self.root = Some(format!("root:{root_pw}"));
    }

    /// `etcdctl` against this server (as root once authentication is on); None when it
    /// failed.
    pub fn ctl(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url, "--command-timeout=2s"])
            .args(&self.tls);
        if let Some(root) = &self.root {
            cmd.arg(format!("--user={root}"));
        }
        let out = cmd.args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Keys under `/{prefix}/{what}/` and their values, as etcd holds them now.
    pub fn under(&self, prefix: &str, what: &str) -> BTreeMap<String, String> {
        let root = format!("/{prefix}/{what}/");
        let text = self.ctl(&["get", "--prefix", &root]).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((k.strip_prefix(&root)?.to_string(), v.to_string())),
                _ => None,
            })
            .collect()
    }

    /// target → owner member.
    pub fn owners(&self) -> BTreeMap<String, String> {
        self.under("sentinel-remedy", "owner")
    }

    /// Follows every owner-key change from now on, as an operator would (`etcdctl watch`).
    pub fn watch_owners(&self) -> OwnerWatch {
        OwnerWatch::start(&self.url, "/sentinel-remedy/owner/")
    }

    /// The sum of one metric's series whose labels contain `labels` (e.g. `grpc_method="Txn"`),
    /// from etcd's own `/metrics`.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let out = Command::new("curl")
            .args(["-s", "-m", "3", &format!("{}/metrics", self.url)])
            .output()
            .expect("curl etcd metrics");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']) && rest.contains(labels))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `etcdctl watch --prefix` on a key prefix as a child process: every change with when it was
/// seen, for counting owner changes from outside the daemons.
pub struct OwnerWatch {
    child: Child,
    prefix: String,
    seen: Arc<Mutex<Vec<(Instant, String, String)>>>,
}

impl OwnerWatch {
    fn start(url: &str, prefix: &str) -> Self {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", url, "watch", "--prefix", prefix])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl watch");
        let out = child.stdout.take().expect("stdout");
        let seen: Arc<Mutex<Vec<(Instant, String, String)>>> = Arc::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            // PUT|DELETE, the key, then the value (empty for a delete).
            let mut lines = std::io::BufReader::new(out).lines().map_while(Result::ok);
            while let Some(kind) = lines.next() {
                if kind != "PUT" && kind != "DELETE" {
                    continue;
                }
                let Some(key) = lines.next() else { break };
                let value = if kind == "PUT" {
                    lines.next().unwrap_or_default()
                } else {
                    String::new()
                };
                s.lock().unwrap().push((Instant::now(), key, value));
            }
        });
        // The watch is in place once etcdctl has connected: give it a moment.
        std::thread::sleep(Duration::from_millis(500));
        Self {
            child,
            prefix: prefix.into(),
            seen,
        }
    }

    /// Changes to `target`'s key seen since `since`: (when, new owner; empty when deleted).
    pub fn changes(&self, target: &str, since: Instant) -> Vec<(Instant, String)> {
        let key = format!("{}{target}", self.prefix);
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, k, _)| *t >= since && *k == key)
            .map(|(t, _, v)| (*t, v.clone()))
            .collect()
    }
}

impl Drop for OwnerWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay to `upstream` on a free loopback port; `cut()` drops every connection through
/// it and refuses new ones until `mend()`.
pub struct Relay {
    pub url: String,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub fn to(upstream_url: &str) -> Self {
        let upstream = upstream_url.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, k) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming().map_while(Result::ok) {
                if c.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for s in [&inbound, &outbound] {
                    if let Ok(s) = s.try_clone() {
                        k.lock().unwrap().push(s);
                    }
                }
                pipe(&inbound, &outbound);
                pipe(&outbound, &inbound);
            }
        });
        Self { url, cut, conns }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// Targets owned per member, from `Etcd::owners`.
pub fn shares(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for m in owners.values() {
        *c.entry(m.clone()).or_insert(0) += 1;
    }
    c
}

/// Writes `ws`'s registry for one daemon of a cluster: an API on a free port (returned), the
/// `cluster:` section (`extra` lines go after it) and no fleet guard (several targets of one
/// server failing together must not hold their restarts), on top of `specs`.
pub fn write_cluster_registry(
    ws: &super::Workspace,
    member: &str,
    etcd_url: &str,
    ttl_s: u64,
    extra: &str,
    notify: &str,
    specs: &[super::TargetSpec],
) -> String {
    let port = sentinel_remedy::pgcluster::free_port().expect("port");
    let api = format!("127.0.0.1:{port}");
    ws.write_registry(notify, specs);
    let body = std::fs::read_to_string(ws.config()).expect("registry");
    let head = format!(
        "server:\n  listen: {api}\ncluster:\n  etcd: [\"{etcd_url}\"]\n  member: {member}\n  ttl: {ttl_s}s\n{extra}fleet_guard:\n  min_failing: 1000\n"
    );
    std::fs::write(ws.config(), head + &body).expect("write registry");
    api
}

/// Waits until `f` holds, returning how long it took; None past `limit`.
pub fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

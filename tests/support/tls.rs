//! Certificates made at test time with the `openssl` CLI (never committed): a CA, another CA,
//! server certificates for 127.0.0.1/localhost (valid, expired, for another name), a client
//! certificate for the role `postgres`; and a cluster of `Pg` switched to `ssl = on` with a
//! pg_hba.conf that requires, allows or authenticates by TLS.

use super::Pg;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of keys and certificates, removed on drop.
pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sentinel-pki-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                    "-subj",
                    &format!("/CN=sentinel {ca}"),
                    "-days",
                    "2",
                ],
            );
        }
        let pki = Self { dir };
        pki.leaf(
            "server",
            "ca",
            "localhost",
            "DNS:localhost,IP:127.0.0.1",
            None,
        );
        pki.leaf(
            "other",
            "other-ca",
            "localhost",
            "DNS:localhost,IP:127.0.0.1",
            None,
        );
        pki.leaf(
            "wrongname",
            "ca",
            "elsewhere.example",
            "DNS:elsewhere.example",
            None,
        );
        pki.leaf(
            "expired",
            "ca",
            "localhost",
            "DNS:localhost,IP:127.0.0.1",
            Some(("20200101000000Z", "20200102000000Z")),
        );
        pki.leaf("client", "ca", "postgres", "", None);
        pki
    }

    /// A key and a certificate `name.crt` signed by `ca`; `dates` (start, end) back-dates it
    /// (`openssl ca` sets any dates, `x509 -req` only from now on).
    fn leaf(&self, name: &str, ca: &str, cn: &str, san: &str, dates: Option<(&str, &str)>) {
        let d = self.dir.path();
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            d,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        let ext = format!("{name}.ext");
        let lines = if san.is_empty() {
            "basicConstraints=CA:FALSE\n".to_string()
        } else {
            format!("basicConstraints=CA:FALSE\nsubjectAltName={san}\n")
        };
        std::fs::write(d.join(&ext), lines).expect("ext file");
        let (cacrt, cakey) = (format!("{ca}.crt"), format!("{ca}.key"));
        match dates {
            None => openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &cacrt,
                    "-CAkey",
                    &cakey,
                    "-set_serial",
                    &rand::random::<u32>().to_string(),
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &crt,
                ],
            ),
            Some((start, end)) => {
                std::fs::write(d.join("index.txt"), "").expect("index");
                std::fs::write(d.join("serial"), "1000\n").expect("serial");
                std::fs::write(
                    d.join("ca.cnf"),
                    "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n",
                )
                .expect("ca.cnf");
                openssl(
                    d,
                    &[
                        "ca",
                        "-batch",
                        "-config",
                        "ca.cnf",
                        "-cert",
                        &cacrt,
                        "-keyfile",
                        &cakey,
                        "-in",
                        &csr,
                        "-out",
                        &crt,
                        "-startdate",
                        start,
                        "-enddate",
                        end,
                        "-extfile",
                        &ext,
                        "-notext",
                    ],
                );
            }
        }
        set_mode(&d.join(&key), 0o600);
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `path(file)` as a string, for DSNs.
    pub fn file(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// What pg_hba.conf asks of TCP logins.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hba {
    /// `hostssl ... scram-sha-256` and `hostnossl ... reject`: TLS or nothing.
    RequireTls,
    /// `host ... scram-sha-256`: with or without TLS.
    AllowTls,
    /// `hostssl ... cert`: the client certificate is the login (CN = role).
    Cert,
    /// `hostssl ... trust`: no password asked over TLS.
    TrustTls,
}

/// Switches `pg` to `ssl = on` with the certificate `server` (`server`, `other`, `wrongname`,
/// `expired` of `pki`) and `hba`, then restarts it so every setting holds for the next login.
pub fn enable_tls(pg: &Pg, pki: &Pki, server: &str, hba: Hba) {
    let data = &pg.cluster.data;
    for (from, to) in [
        (format!("{server}.crt"), "server.crt"),
        (format!("{server}.key"), "server.key"),
        ("ca.crt".to_string(), "root.crt"),
    ] {
        let dest = data.join(to);
        std::fs::copy(pki.path(&from), &dest).expect("copy into the data directory");
        set_mode(&dest, 0o600);
        // The server runs as nobody when the tests run as root.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&dest, Some(65534), Some(65534)).expect("chown");
        }
    }
    let conf = data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
    if !text.contains("# tls fixture") {
        text.push_str("\n# tls fixture\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\nlog_connections = on\n");
        std::fs::write(&conf, text).expect("postgresql.conf");
    }
    let tcp = match hba {
        Hba::RequireTls => {
            "hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n"
        }
        Hba::AllowTls => "host all all 127.0.0.1/32 scram-sha-256\n",
        Hba::Cert => "hostssl all all 127.0.0.1/32 cert\nhostnossl all all 127.0.0.1/32 reject\n",
        Hba::TrustTls => {
            "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"
        }
    };
    std::fs::write(
        data.join("pg_hba.conf"),
        format!("local all all trust\n{tcp}"),
    )
    .expect("pg_hba.conf");
    pg.cluster.stop("fast").expect("stop");
    pg.cluster.start().expect("the server starts with TLS");
}

/// Turns on log_connections for a server without TLS (the fixture does it for TLS ones).
pub fn log_connections(pg: &Pg) {
    pg.psql("ALTER SYSTEM SET log_connections = on");
    pg.cluster.stop("fast").expect("stop");
    pg.cluster.start().expect("start");
}

/// Server log lines authorizing a session with this application_name, and how many of them
/// say the session runs over TLS.
pub fn sessions(pg: &Pg, application: &str) -> (usize, usize) {
    let who = format!("application_name={application}");
    let log = std::fs::read_to_string(&pg.cluster.log_file).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection authorized") && l.contains(&who))
        .filter(|l| {
            // application_name=case-1 must not count case-10's lines.
            l.split(&who)
                .nth(1)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        })
        .collect();
    let tls = lines.iter().filter(|l| l.contains("SSL enabled")).count();
    (lines.len(), tls)
}

//! TLS to PostgreSQL as libpq speaks it: each sslmode against servers that require, allow
//! and refuse TLS; certificates that do not verify, have expired or name another host, each
//! with its own class; a client certificate as the login; channel binding; the probe, the
//! SQL snapshot and the healer's check over TLS; and check-config refusing what this build
//! cannot honour. Certificates are made at test time (support/tls.rs).
//!
//! On the old code (no TLS at all) every case that needs TLS fails: a hostssl-only server
//! refuses the plain login (28000), and nothing is ever verified, so the certificate cases
//! log in where they must fail.

mod support;

use sentinel_remedy::config::Dsn;
use sentinel_remedy::failure::ProbeFailure;
use std::time::Duration;
use support::tls::{enable_tls, log_connections, sessions, Hba, Pki};
use support::*;

const LONG: Duration = Duration::from_secs(90);

/// One login as the healer's "accepting connections" check does it (the probe's login, then
/// Terminate), with `params` appended to the cluster's DSN.
fn login(pg: &Pg, params: &str) -> Result<(), ProbeFailure> {
    login_dsn(&format!("{}?{params}", pg.cluster.dsn()))
}

fn login_dsn(dsn: &str) -> Result<(), ProbeFailure> {
    let dsn = Dsn::parse(dsn).unwrap_or_else(|e| panic!("{e}"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(sentinel_remedy::probe::accepts_connections(
            &dsn,
            Duration::from_secs(10),
        ))
}

/// Logs in under a unique application_name and says whether it worked and over TLS.
fn outcome(pg: &Pg, case: &str, params: &str) -> String {
    let app = format!("tls-{case}-{:x}", rand::random::<u32>());
    match login(pg, &format!("{params}&application_name={app}")) {
        Ok(()) => {
            let (n, tls) = wait_for(LONG, "the server logs the session", || {
                let s = sessions(pg, &app);
                (s.0 > 0).then_some(s)
            });
            assert_eq!(n, 1, "{case}: one session");
            if tls == 1 { "tls" } else { "plain" }.into()
        }
        Err(f) => f.class.label().into(),
    }
}

#[test]
fn each_sslmode_against_servers_that_require_allow_and_refuse_tls() {
    let pki = Pki::new();
    let (required, allowed, off) = (Pg::start(), Pg::start(), Pg::start());
    enable_tls(&required, &pki, "server", Hba::RequireTls);
    enable_tls(&allowed, &pki, "server", Hba::AllowTls);
    log_connections(&off);
    let ca = pki.file("ca.crt");
    let verify_ca = format!("sslmode=verify-ca&sslrootcert={ca}");
    let verify_full = format!("sslmode=verify-full&sslrootcert={ca}");
    // (sslmode, against required, allowed, off), as libpq behaves.
    let table: [(&str, [&str; 3]); 6] = [
        ("sslmode=disable", ["authentication", "plain", "plain"]),
        ("sslmode=allow", ["tls", "plain", "plain"]),
        ("sslmode=prefer", ["tls", "tls", "plain"]),
        ("sslmode=require", ["tls", "tls", "tls_refused"]),
        (&verify_ca, ["tls", "tls", "tls_refused"]),
        (&verify_full, ["tls", "tls", "tls_refused"]),
    ];
    let mut wrong = Vec::new();
    for (i, (params, expect)) in table.iter().enumerate() {
        for (j, pg) in [&required, &allowed, &off].into_iter().enumerate() {
            let got = outcome(pg, &format!("{i}-{j}"), params);
            if got != expect[j] {
                wrong.push(format!(
                    "{params} against {}: {got}, expected {}",
                    ["required", "allowed", "off"][j],
                    expect[j]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // No sslmode at all is libpq's prefer.
    assert_eq!(outcome(&required, "default", "connect_timeout=5"), "tls");
}

#[test]
fn certificates_that_do_not_verify_expired_or_name_another_host_each_have_their_class() {
    let pki = Pki::new();
    let pg = Pg::start();
    let ca = pki.file("ca.crt");
    let full = format!("sslmode=verify-full&sslrootcert={ca}");
    let verify_ca = format!("sslmode=verify-ca&sslrootcert={ca}");

    enable_tls(&pg, &pki, "other", Hba::RequireTls);
    let e = login(&pg, &full).unwrap_err();
    assert_eq!(e.class.label(), "tls_untrusted", "{e}");
    assert!(e.detail.contains("sslrootcert"), "names the fix: {e}");
    assert_eq!(
        outcome(&pg, "require-other", "sslmode=require"),
        "tls",
        "require verifies nothing"
    );
    // libpq's quirk: require with a root file verifies the chain.
    let e = login(&pg, &format!("sslmode=require&sslrootcert={ca}")).unwrap_err();
    assert_eq!(e.class.label(), "tls_untrusted", "{e}");

    enable_tls(&pg, &pki, "expired", Hba::RequireTls);
    let e = login(&pg, &verify_ca).unwrap_err();
    assert_eq!(e.class.label(), "tls_expired", "{e}");
    assert!(e.detail.contains("renew"), "{e}");

    enable_tls(&pg, &pki, "wrongname", Hba::RequireTls);
    let e = login(&pg, &full).unwrap_err();
    assert_eq!(e.class.label(), "tls_name_mismatch", "{e}");
    assert!(e.detail.contains("127.0.0.1"), "{e}");
    assert_eq!(
        outcome(&pg, "ca-wrongname", &verify_ca),
        "tls",
        "verify-ca checks no name"
    );
    // hostaddr connects, host names what the certificate must hold (libpq's rule).
    let named = format!(
        "host=elsewhere.example hostaddr=127.0.0.1 port={} user=postgres password={} dbname=postgres sslmode=verify-full sslrootcert={ca}",
        pg.cluster.port,
        pg.password()
    );
    login_dsn(&named).expect("the certificate names the host");
}

#[test]
fn a_client_certificate_is_the_login_on_a_cert_line() {
    let pki = Pki::new();
    let pg = Pg::start();
    enable_tls(&pg, &pki, "server", Hba::Cert);
    let ca = pki.file("ca.crt");
    let (crt, key) = (pki.file("client.crt"), pki.file("client.key"));
    let base = format!("sslmode=verify-full&sslrootcert={ca}");
    // Without the certificate the server refuses (28000).
    let e = login(&pg, &base).unwrap_err();
    assert_eq!(e.class.label(), "authentication", "{e}");
    let with = format!("{base}&sslcert={crt}&sslkey={key}");
    assert_eq!(outcome(&pg, "cert", &with), "tls");
}

#[test]
fn channel_binding_require_logs_in_only_through_scram_sha_256_plus() {
    let pki = Pki::new();
    let (scram, trust, off) = (Pg::start(), Pg::start(), Pg::start());
    enable_tls(&scram, &pki, "server", Hba::RequireTls);
    enable_tls(&trust, &pki, "server", Hba::TrustTls);
    log_connections(&off);
    let ca = pki.file("ca.crt");
    let bound = format!("sslmode=verify-full&sslrootcert={ca}&channel_binding=require");
    assert_eq!(outcome(&scram, "plus", &bound), "tls");
    let e = login(&trust, &bound).unwrap_err();
    assert_eq!(e.class.label(), "insecure_auth", "trust binds nothing: {e}");
    let e = login(&off, "sslmode=require&channel_binding=require").unwrap_err();
    assert_eq!(e.class.label(), "tls_refused", "{e}");
    let e = login(&off, "sslmode=prefer&channel_binding=require").unwrap_err();
    assert_eq!(e.class.label(), "insecure_auth", "{e}");
    assert!(e.detail.contains("not TLS"), "{e}");
}

#[test]
fn the_probe_and_the_sql_snapshot_of_a_tls_only_server_run_over_tls() {
    let (pki, pg) = (Pki::new(), Pg::start());
    let dsn = tls_only(&pg, &pki);
    let ws = Workspace::new();
    ws.write_registry(
        "  console: false\n",
        &[TargetSpec {
            dsn: Some(&dsn),
            interval: "300ms",
            threshold: 2,
            pid_watch: false,
            heal: false,
            // Answers 1 where 2 is expected: an incident whose bundle holds a snapshot.
            probe_extra: ", expect: \"2\"",
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    let failed = d.wait_event("probe_failed", Some("orders"), LONG);
    assert_eq!(failed["class"], "unexpected_result", "{failed}");
    d.wait_event("archive_written", Some("orders"), LONG);
    let bundle = ws.bundles().pop().expect("bundle");
    let snap: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("sql-snapshot.json")).expect("sql-snapshot.json"),
    )
    .unwrap();
    assert_eq!(snap["answered"], true, "{snap}");
    let (probes, probes_tls) = sessions(&pg, "sentinel-remedy");
    assert!(
        probes >= 2 && probes == probes_tls,
        "{probes} probes, {probes_tls} over TLS"
    );
    let (snaps, snaps_tls) = sessions(&pg, "sentinel-remedy-forensics");
    assert!(
        snaps >= 1 && snaps == snaps_tls,
        "{snaps} snapshots, {snaps_tls} over TLS"
    );
}

#[test]
fn a_tls_only_server_killed_with_kill_9_is_healed_with_one_failure_and_one_recovery_notice() {
    let (pki, pg) = (Pki::new(), Pg::start());
    let dsn = tls_only(&pg, &pki);
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            dsn: Some(&dsn),
            interval: "1s",
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    d.wait_event("probe_ok", Some("orders"), LONG);
    let old = pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    assert_ne!(pg.pid(), old, "a new postmaster runs");
    assert_eq!(d.count("heal_issued", Some("orders")), 1);
    wait_for(LONG, "one recovery notice", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    assert_eq!(rx.hook_events("failure").len(), 1);
    d.wait_events("probe_ok", Some("orders"), 2, LONG);
    assert!(
        d.events("probe_failed", Some("orders"))
            .iter()
            .all(|e| !e["class"].as_str().unwrap_or("").starts_with("tls")),
        "no TLS failure while healing"
    );
    assert_secret_absent(pg.password(), &d, Some(&rx), &ws);
}

#[test]
fn a_server_refusing_tls_that_is_required_is_alerted_at_once_and_never_restarted() {
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    let dsn = format!("{}?sslmode=require", pg.cluster.dsn());
    ws.write_registry(
        &notify_all(&rx),
        &[TargetSpec {
            dsn: Some(&dsn),
            threshold: 5,
            ..TargetSpec::new("orders", &pg)
        }],
    );
    let d = Daemon::run(&ws, &[]);
    let declared = d.wait_event("incident_declared", Some("orders"), LONG);
    let failed = d.events("probe_failed", Some("orders"));
    assert_eq!(failed.len(), 1, "declared at the first failure: {failed:?}");
    assert_eq!(failed[0]["class"], "tls_refused", "{declared}");
    wait_for(LONG, "the alert", || {
        (rx.hook_events("failure").len() == 1).then_some(())
    });
    assert_eq!(d.count("heal_issued", Some("orders")), 0, "never restarted");
}

#[test]
fn check_config_refuses_tls_settings_it_cannot_honour_naming_the_key() {
    let pki = Pki::new();
    let ws = Workspace::new();
    let key = pki.path("client.key");
    let open_key = pki.path("open.key");
    std::fs::copy(&key, &open_key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (params, key, says) in [
        (
            "sslmode=verify-full".to_string(),
            "sslrootcert",
            "needs the roots",
        ),
        (
            "sslmode=require&sslcompression=1".into(),
            "sslcompression",
            "not supported",
        ),
        ("gssencmode=require".into(), "gssencmode", "GSSAPI"),
        ("sslnegotiation=direct".into(), "sslnegotiation", "direct"),
        (
            format!(
                "sslmode=require&sslcert={}&sslkey={}",
                pki.file("client.crt"),
                open_key.display()
            ),
            "sslkey",
            "chmod 600",
        ),
    ] {
        let registry = format!(
            "notify: {{ console: true }}\ntargets:\n  - name: db\n    dsn: \"postgres://u:s3cret@127.0.0.1:5/db?{params}\"\n"
        );
        std::fs::write(ws.config(), registry).unwrap();
        let path = ws.config().display().to_string();
        let (code, out, err) = run_cli(&["check-config", "-c", &path], ws.path(), &[]);
        let text = format!("{out}{err}");
        assert_eq!(code, 64, "{params}: {text}");
        assert!(
            text.contains(key) && text.contains(says),
            "{params}: {text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}

/// A server that takes TLS logins only, and a DSN that verifies it fully.
fn tls_only(pg: &Pg, pki: &Pki) -> String {
    enable_tls(pg, pki, "server", Hba::RequireTls);
    format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.cluster.dsn(),
        pki.file("ca.crt")
    )
}

//! Log-first forensics to a real S3-API server (moto on loopback): exact keys, identical bytes,
//! multipart for big logs, S3 down during an incident, a killed daemon's spool, bad credentials
//! and a missing bucket.

mod support;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;
use support::s3server::S3Server;
use support::*;

const LONG: Duration = Duration::from_secs(90);

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[test]
fn a_crash_puts_the_bundle_in_s3_with_exact_keys_and_identical_bytes() {
    let s3 = S3Server::start(false);
    s3.create_bucket("forensics");
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry_with(
        &format!("{}{}", ws.local_archive(), s3.yaml("forensics", "")),
        &notify_all(&rx),
        &[TargetSpec::new("orders", &pg)],
    );
    let env = s3.daemon_env();
    let d = Daemon::run(&ws, &as_env(&env));
    d.wait_event("probe_ok", Some("orders"), LONG);
    let marker = pg.log_marker();
    pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    let incident = d.wait_event("incident_declared", Some("orders"), LONG)["incident"]
        .as_str()
        .unwrap()
        .to_string();
    // The heal log and final manifest follow in the background.
    d.wait_events("archive_uploaded", Some("orders"), 2, LONG);

    let bundle = &ws.bundles()[0];
    let local: BTreeMap<String, Vec<u8>> = files_under(bundle)
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    let objects = s3.objects("forensics");
    let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
    let expected: Vec<String> = [
        "cause.json",
        "flight.json",
        "heal.log",
        "manifest.json",
        "pg_hba.conf",
        "postgresql.conf",
        "postgresql.log",
        "sql-snapshot.json",
    ]
    .iter()
    .map(|f| format!("incidents/{incident}/{f}"))
    .collect();
    assert_eq!(
        keys, expected,
        "exactly the bundle, under {{prefix}}/{{timestamp}}-{{db_name}}/"
    );
    for o in &objects {
        let name = o.key.rsplit('/').next().unwrap();
        assert_eq!(
            o.body, local[name],
            "{name} is byte-identical to the local bundle"
        );
        assert_eq!(
            o.sha256_meta.as_deref(),
            Some(sha(&o.body).as_str()),
            "{name} carries its SHA-256"
        );
    }
    let log = objects
        .iter()
        .find(|o| o.key.ends_with("postgresql.log"))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&log.body).contains(&marker),
        "the log lines from before the crash are in S3"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &objects
            .iter()
            .find(|o| o.key.ends_with("manifest.json"))
            .unwrap()
            .body,
    )
    .unwrap();
    assert!(
        manifest["heal"].is_object(),
        "the final manifest (with the heal) is the one in S3"
    );
    assert_eq!(
        manifest["sql_snapshot"]["answered"], false,
        "the postmaster was dead: the manifest says the server could not answer"
    );

    // The alert says where the bundle is.
    wait_for(LONG, "failure alert", || {
        (rx.hook_events("failure").len() == 1).then_some(())
    });
    let archive = rx.hook_events("failure")[0].body["archive"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        archive.starts_with(&format!("s3://forensics/incidents/{incident}/")),
        "{archive}"
    );
    assert_eq!(s3.open_multipart_uploads("forensics"), 0);
    for o in &objects {
        assert!(
            !String::from_utf8_lossy(&o.body).contains(pg.password()),
            "password in {}",
            o.key
        );
    }
    assert_secret_absent(pg.password(), &d, Some(&rx), &ws);
}

#[test]
fn a_log_larger_than_the_part_size_goes_up_in_parts_and_the_spool_is_cleaned() {
    let s3 = S3Server::start(false);
    s3.create_bucket("big");
    let pg = Pg::start();
    // 12 MiB of log: three parts of 5 MiB.
    let line = "x".repeat(1023) + "\n";
    let mut big = String::with_capacity(12 << 20);
    while big.len() < 12 << 20 {
        big.push_str(&line);
    }
    std::fs::write(pg.cluster.root.join("log").join("old.log"), &big).unwrap();
    let ws = Workspace::new();
    ws.write_registry_with(
        &s3.yaml(
            "big",
            ", part_size: 5MiB, sse: AES256, storage_class: STANDARD_IA",
        ),
        "  console: false\n",
        &[TargetSpec::new("orders", &pg)],
    );
    let env = s3.daemon_env();
    let d = Daemon::run(&ws, &as_env(&env));
    d.wait_event("probe_ok", Some("orders"), LONG);
    pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    d.wait_events("archive_uploaded", Some("orders"), 2, LONG);
    let objects = s3.objects("big");
    let old = objects
        .iter()
        .find(|o| o.key.ends_with("/old.log"))
        .expect("old.log uploaded");
    assert_eq!(old.body.len(), big.len());
    assert_eq!(
        sha(&old.body),
        sha(big.as_bytes()),
        "byte-identical after reassembly"
    );
    assert!(
        old.etag.trim_matches('"').ends_with("-3"),
        "a multipart upload of 3 parts (etag {})",
        old.etag
    );
    assert_eq!(s3.open_multipart_uploads("big"), 0);
    for o in &objects {
        assert_eq!(
            o.sse.as_deref(),
            Some("AES256"),
            "{} is encrypted as configured",
            o.key
        );
        assert_eq!(
            o.storage_class.as_deref(),
            Some("STANDARD_IA"),
            "{} has the configured storage class",
            o.key
        );
    }
    // S3 only: the staging copy in the spool is gone once everything is up.
    wait_for(LONG, "spool emptied", || {
        files_under(&ws.state().join("spool"))
            .is_empty()
            .then_some(())
    });
    assert!(!ws.incidents().exists(), "no local sink was configured");
}

#[test]
fn s3_hanging_during_an_incident_does_not_hold_the_restart_and_the_bundle_lands_later() {
    let s3 = S3Server::start(false);
    s3.create_bucket("slow");
    let pg = Pg::start();
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry_with(
        &format!("{}  timeout: 2s\n", s3.yaml("slow", "")),
        &notify_all(&rx),
        &[TargetSpec::new("orders", &pg)],
    );
    let env = s3.daemon_env();
    let d = Daemon::run(&ws, &as_env(&env));
    d.wait_event("probe_ok", Some("orders"), LONG);

    s3.pause();
    pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    let at = |e: &str| ts(&d.events(e, Some("orders"))[0]);
    let waited = (at("heal_issued") - at("incident_declared")).num_milliseconds();
    // S3 stays hung until resumed below: a heal at all proves it did not wait for S3, and the
    // gap shows it waited about archive.timeout (2 s), not the upload's own timeouts (60 s).
    assert!(
        waited < 2000 + 5000,
        "the heal waited {waited} ms for S3 (archive.timeout 2s)"
    );
    assert_eq!(d.count("archive_upload_pending", None), 1);
    wait_for(LONG, "alert", || {
        (rx.hook_events("failure").len() == 1).then_some(())
    });
    let archive = rx.hook_events("failure")[0].body["archive"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        archive.contains("pending") && archive.contains("spool"),
        "the alert says the bundle is spooled: {archive}"
    );
    assert!(pg.answers(), "healed while S3 was down");

    s3.resume();
    d.wait_events("archive_uploaded", Some("orders"), 1, LONG);
    wait_for(LONG, "all eight objects", || {
        (s3.objects("slow").len() == 8).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let keys: Vec<String> = s3.objects("slow").into_iter().map(|o| o.key).collect();
    assert_eq!(keys.len(), 8, "no duplicates or strays: {keys:?}");
    assert_eq!(s3.open_multipart_uploads("slow"), 0);
}

#[test]
fn a_daemon_killed_with_a_pending_upload_finishes_it_after_restart() {
    let s3 = S3Server::start(false);
    s3.create_bucket("spool");
    let pg = Pg::start();
    let ws = Workspace::new();
    ws.write_registry_with(
        &format!("{}  timeout: 1s\n", s3.yaml("spool", "")),
        "  console: false\n",
        &[TargetSpec::new("orders", &pg)],
    );
    let env = s3.daemon_env();
    let d = Daemon::run(&ws, &as_env(&env));
    d.wait_event("probe_ok", Some("orders"), LONG);
    s3.pause();
    pg.kill9();
    d.wait_event("target_recovered", Some("orders"), LONG);
    d.wait_event("heal_log_archived", None, LONG);
    std::thread::sleep(Duration::from_millis(300));
    d.signal(libc::SIGKILL);
    drop(d);
    let pending: Vec<_> = files_under(&ws.state().join("spool").join("pending"));
    assert_eq!(
        pending.len(),
        1,
        "the killed daemon left its upload in the spool"
    );
    s3.resume();
    assert!(
        s3.objects("spool")
            .iter()
            .all(|o| !o.key.ends_with("manifest.json")),
        "no complete bundle in S3 yet"
    );

    let d = Daemon::run(&ws, &as_env(&env));
    d.wait_event("archive_upload_resumed", None, LONG);
    d.wait_event("archive_uploaded", None, LONG);
    let objects = s3.objects("spool");
    let names: Vec<&str> = objects
        .iter()
        .map(|o| o.key.rsplit('/').next().unwrap())
        .collect();
    assert!(
        names.contains(&"manifest.json")
            && names.contains(&"heal.log")
            && names.contains(&"postgresql.log"),
        "{names:?}"
    );
    assert_eq!(objects.len(), 8, "{names:?}");
    wait_for(LONG, "spool emptied", || {
        files_under(&ws.state().join("spool"))
            .is_empty()
            .then_some(())
    });
}

#[test]
fn bad_credentials_and_a_missing_bucket_are_reported_once_each() {
    for (case, auth, bucket, kind) in [
        ("bad credentials", true, "exists", "invalid_credentials"),
        ("missing bucket", false, "does-not-exist", "no_such_bucket"),
    ] {
        let s3 = S3Server::start(auth);
        if !auth {
            s3.create_bucket("exists");
        }
        let pg = Pg::start();
        let ws = Workspace::new();
        ws.write_registry_with(
            &format!(
                "{}{}  timeout: 1s\n",
                ws.local_archive(),
                s3.yaml(bucket, "")
            ),
            "  console: false\n",
            &[TargetSpec::new("orders", &pg)],
        );
        let env = s3.daemon_env();
        let d = Daemon::run(&ws, &as_env(&env));
        d.wait_event("probe_ok", Some("orders"), LONG);
        pg.kill9();
        d.wait_event("target_recovered", Some("orders"), LONG);
        // Let it retry a few times (1 s, 2 s, ...).
        wait_for(LONG, "retries", || {
            (d.records()
                .iter()
                .filter(|r| r["msg"] == "upload retry failed")
                .count()
                >= 2)
                .then_some(())
        });
        let failed = d.events("archive_upload_failed", None);
        assert_eq!(
            failed.len(),
            1,
            "{case}: one clear error, not a storm: {failed:?}"
        );
        assert_eq!(failed[0]["error_kind"], kind, "{case}: {}", failed[0]);
        assert!(
            failed[0]["fix"].as_str().unwrap().len() > 10,
            "{case}: says what to do"
        );
        assert_eq!(failed[0]["level"], "ERRO");
        assert!(pg.answers(), "{case}: the heal did not wait for S3");
        assert_eq!(ws.bundles().len(), 1, "{case}: the local copy is there");
        assert!(
            !d.log_text().contains(support::s3server::SECRET_KEY),
            "{case}: the secret key is never logged"
        );
    }
}

#[test]
fn sidecar_variables_configure_the_s3_archive() {
    let s3 = S3Server::start(false);
    s3.create_bucket("sidecar-bundles");
    let pg = Pg::start();
    let ws = Workspace::new();
    let mut env = s3.daemon_env();
    env.extend(pg.sidecar_env());
    env.extend([
        ("HEALTH_CHECK_INTERVAL", "200ms".to_string()),
        ("S3_BUCKET_NAME", "sidecar-bundles".into()),
        ("S3_ENDPOINT_URL", s3.endpoint.clone()),
    ]);
    let d = Daemon::sidecar(&ws, &as_env(&env));
    d.wait_event("s3_configured", None, LONG);
    d.wait_event("probe_ok", Some("postgres"), LONG);
    pg.kill9();
    d.wait_event("target_recovered", Some("postgres"), LONG);
    d.wait_events("archive_uploaded", None, 2, LONG);
    let keys: Vec<String> = s3
        .objects("sidecar-bundles")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("incidents/") && k.contains("-postgres/")),
        "{keys:?}"
    );
    assert!(
        keys.iter().any(|k| k.ends_with("/postgresql.log"))
            && keys.iter().any(|k| k.ends_with("/manifest.json")),
        "{keys:?}"
    );
    assert!(!ws.incidents().exists(), "S3 only: no local incidents dir");
}

/// The program `name` as the tests start it: the first match on PATH.
fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `python` is a virtual environment's interpreter (sys.prefix != sys.base_prefix).
fn in_a_venv(python: &std::path::Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import sys; print(sys.prefix != sys.base_prefix)"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "True")
}

#[test]
fn the_python_test_tools_run_from_a_virtual_environment_not_the_system_interpreter() {
    let python = on_path("python3").expect("python3 on PATH (scripts/test.sh sets it up)");
    assert!(
        in_a_venv(&python),
        "{} is not a virtual environment's: run the tests through scripts/test.sh (or put /var/tmp/sentinel-remedy-venv/bin first on PATH)",
        python.display()
    );
    let moto = on_path("moto_server").expect("moto_server on PATH");
    let text = std::fs::read_to_string(&moto).unwrap_or_default();
    let interpreter = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    assert!(
        in_a_venv(std::path::Path::new(&interpreter)),
        "{} runs under '{interpreter}', not a virtual environment's python",
        moto.display()
    );
    // The machine's own interpreter was left alone: none of our tools went into it.
    let system = std::path::Path::new("/usr/bin/python3");
    if system.is_file() {
        let imports = std::process::Command::new(system)
            .args(["-c", "import moto"])
            .output()
            .expect("run the system python3");
        assert!(
            !imports.status.success(),
            "moto is installed into the system interpreter"
        );
    }
}

use super::*;

const READY: &str =
    "2026-12-07 05:00:00.000 UTC [100] LOG:  database system is ready to accept connections";

fn ev(log: &str) -> Evidence {
    Evidence {
        logs: vec![LogTail::of_text("postgresql.log", log)],
        postmaster_dead: true,
        ..Evidence::default()
    }
}

fn lines(v: &[&str]) -> String {
    v.join("\n")
}

#[test]
fn a_backend_crash_names_the_signal_the_query_and_the_reinitialization() {
    let log = lines(&[
        READY,
        "2026-12-07 05:01:00.000 UTC [100] LOG:  server process (PID 4242) was terminated by signal 11: Segmentation fault",
        "2026-12-07 05:01:00.000 UTC [100] DETAIL:  Failed process was running: SELECT pg_sleep(600)",
        "2026-12-07 05:01:00.000 UTC [100] LOG:  terminating any other active server processes",
        "2026-12-07 05:01:00.000 UTC [100] LOG:  all server processes terminated; reinitializing",
        READY,
    ]);
    let mut e = ev(&log);
    e.postmaster_alive = true;
    let c = classify(&e);
    assert_eq!(c.class, CauseClass::BackendCrash);
    assert!(
        c.sentence.contains("4242") && c.sentence.contains("signal 11"),
        "{}",
        c.sentence
    );
    assert!(
        c.sentence.contains("SELECT pg_sleep(600)"),
        "{}",
        c.sentence
    );
    assert_eq!(c.evidence[0].line, Some(2));
    assert_eq!(c.evidence.last().unwrap().line, Some(5));
    assert_eq!(c.class.judgment(), crate::cause::Judgment::SelfRecovered);
}

#[test]
fn a_backend_killed_under_a_memory_limit_is_named_an_oom_kill_with_a_password_masked() {
    let log = lines(&[
        READY,
        "LOG:  server process (PID 77) was terminated by signal 9: Killed",
        "DETAIL:  Failed process was running: ALTER ROLE app PASSWORD 'hunter2-secret'",
        "LOG:  all server processes terminated; reinitializing",
    ]);
    let mut e = ev(&log);
    e.postmaster_alive = true;
    e.cgroup_oom_kills = Some(1);
    let c = classify(&e);
    assert_eq!(c.class, CauseClass::BackendCrash);
    assert!(c.sentence.contains("OOM killer"), "{}", c.sentence);
    let all = serde_json::to_string(&c).unwrap();
    assert!(!all.contains("hunter2-secret"), "{all}");
}

#[test]
fn a_shutdown_request_of_this_run_counts_and_one_of_an_earlier_run_does_not() {
    let c = classify(&ev(&lines(&[
        READY,
        "2026-12-07 05:02:00.000 UTC [100] LOG:  received fast shutdown request",
        "2026-12-07 05:02:00.000 UTC [100] LOG:  aborting any active transactions",
        "2026-12-07 05:02:00.100 UTC [100] LOG:  database system is shut down",
    ])));
    assert_eq!(c.class, CauseClass::ShutdownRequest);
    assert!(
        c.sentence.contains("fast shutdown request"),
        "{}",
        c.sentence
    );
    assert_eq!(c.evidence[0].line, Some(2));
    let c = classify(&ev(&lines(&[
        "LOG:  received fast shutdown request",
        READY,
        "LOG:  checkpoint complete",
    ])));
    assert_eq!(c.class, CauseClass::Killed, "{c:?}");
    assert_eq!(c.evidence[0].line, Some(3));
}

#[test]
fn a_panic_or_fatal_before_death_is_quoted_with_its_detail_and_client_fatals_are_not() {
    let c = classify(&ev(&lines(&[
        READY,
        "LOG:  redo starts at 0/1000028",
        "PANIC:  could not locate a valid checkpoint record",
        "DETAIL:  the record was corrupted",
    ])));
    assert_eq!(c.class, CauseClass::Panic);
    assert!(c
        .sentence
        .contains("could not locate a valid checkpoint record"));
    assert_eq!(c.evidence.len(), 2);
    let c = classify(&ev(&lines(&[
        READY,
        "FATAL:  password authentication failed for user \"x\"",
    ])));
    assert_eq!(
        c.class,
        CauseClass::Killed,
        "a client's FATAL is no cause: {c:?}"
    );
}

#[test]
fn disk_full_gives_the_numbers_and_holds() {
    let mut e = ev(&lines(&[
        READY,
        "PANIC:  could not write to file \"pg_wal/xlogtemp.1\": No space left on device",
    ]));
    e.space = vec![Space {
        what: "data directory",
        path: "/d".into(),
        free_bytes: 0,
        total_bytes: 64 << 20,
    }];
    let c = classify(&e);
    assert_eq!(c.class, CauseClass::DiskFull);
    assert!(
        c.sentence.contains("0.0 MiB free of 64.0 MiB"),
        "{}",
        c.sentence
    );
    assert_eq!(c.class.judgment(), crate::cause::Judgment::WaitForSpace);
}

#[test]
fn exit_statuses_and_the_oom_killer_are_told_apart() {
    let mut e = ev(READY);
    e.exit = Some(Exit::Signal(9));
    e.exit_source = "exit status (waitpid)".into();
    assert!(classify(&e).sentence.contains("SIGKILL"));
    e.postmaster_pid = Some(321);
    e.kernel = vec!["Out of memory: Killed process 321 (postgres) total-vm:1kB".into()];
    assert_eq!(classify(&e).class, CauseClass::OomKilled);
    let mut e = ev(READY);
    e.engine_oom_killed = Some(true);
    e.exit = Some(Exit::Code(137));
    assert_eq!(classify(&e).class, CauseClass::OomKilled);
    assert_eq!(classify(&Evidence::default()).class, CauseClass::Unknown);
    assert!(classify(&Evidence::default())
        .sentence
        .starts_with("Cause unknown"));
}

#[test]
fn start_failures_name_the_file_and_line_the_port_holder_and_the_lock_file() {
    let mut e = ev(&lines(&[
        "LOG:  syntax error in file \"/d/postgresql.conf\" line 812, near token \"=\"",
        "FATAL:  configuration file \"/d/postgresql.conf\" contains errors",
    ]));
    let c = classify_start(&e);
    assert_eq!(c.class, CauseClass::ConfigError);
    assert!(
        c.sentence.contains("/d/postgresql.conf line 812"),
        "{}",
        c.sentence
    );
    assert_eq!(c.class.judgment(), crate::cause::Judgment::Escalate);
    e.logs = vec![LogTail::of_text("postgresql.log", &lines(&[
        "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use",
        "HINT:  Is another postmaster already running on port 5999? If not, wait a few seconds and retry.",
        "FATAL:  could not create any TCP/IP sockets",
    ]))];
    e.port_holder = Some("pid 55 (python3)".into());
    let c = classify_start(&e);
    assert_eq!(c.class, CauseClass::PortInUse);
    assert!(
        c.sentence.contains("port 5999") && c.sentence.contains("pid 55 (python3)"),
        "{}",
        c.sentence
    );
    e.logs = vec![LogTail::of_text(
        "postgresql.log",
        &lines(&[
            "FATAL:  lock file \"postmaster.pid\" already exists",
            "HINT:  Is another postmaster (PID 9) running in data directory \"/d\"?",
        ]),
    )];
    assert_eq!(classify_start(&e).class, CauseClass::StaleLockFile);
    e.logs = vec![LogTail::of_text(
        "postgresql.log",
        "FATAL:  data directory \"/d\" has invalid permissions",
    )];
    assert_eq!(classify_start(&e).class, CauseClass::DataDirPermissions);
    e.logs = vec![LogTail::of_text(
        "postgresql.log",
        "FATAL:  could not map anonymous shared memory: Cannot allocate memory",
    )];
    assert_eq!(classify_start(&e).class, CauseClass::SharedMemory);
    e.logs = vec![];
    assert_eq!(classify_start(&e).class, CauseClass::Unknown);
}

#[test]
fn a_backend_that_panicked_has_its_panic_quoted_in_the_sentence() {
    let mut e = ev(&lines(&[
        READY,
        "PANIC:  could not write to file \"pg_wal/xlogtemp.9\": Permission denied",
        "LOG:  server process (PID 9) was terminated by signal 6: Aborted",
        "DETAIL:  Failed process was running: SELECT pg_switch_wal()",
        "LOG:  all server processes terminated; reinitializing",
    ]));
    e.postmaster_alive = true;
    let c = classify(&e);
    assert_eq!(c.class, CauseClass::BackendCrash);
    assert!(c.sentence.contains("signal 6 (SIGABRT)"), "{}", c.sentence);
    assert!(
        c.sentence
            .contains("after a PANIC: \"could not write to file"),
        "{}",
        c.sentence
    );
    assert_eq!(c.evidence[0].line, Some(2));
}

#[test]
fn a_sentence_never_carries_a_control_character_from_the_log() {
    let c = classify(&ev(&lines(&[READY, "PANIC:  bad \u{1b}[2J\r thing"])));
    assert_eq!(c.class, CauseClass::Panic);
    assert!(
        !c.sentence.chars().any(char::is_control),
        "{:?}",
        c.sentence
    );
}

#[test]
fn a_start_is_judged_by_its_own_panic_not_by_the_one_the_dead_run_left() {
    let old = "2026-12-07 05:01:00.000 UTC [100] PANIC:  could not write to file \"pg_wal/xlogtemp.100\": Input/output error";
    let start =
        "2026-12-07 05:02:00.000 UTC [200] LOG:  starting PostgreSQL 15.18 on x86_64-pc-linux-gnu";
    let own = "2026-12-07 05:02:00.100 UTC [200] PANIC:  could not open file \"global/pg_control\": No such file or directory";
    let c = classify_start(&ev(&lines(&[READY, old, start])));
    assert_eq!(c.class, CauseClass::Unknown, "the dead run's PANIC: {c:?}");
    assert!(!c.class.start_is_futile());
    let c = classify_start(&ev(&lines(&[READY, old, start, own])));
    assert_eq!(c.class, CauseClass::Panic);
    assert!(c.sentence.contains("global/pg_control"), "{}", c.sentence);
    assert!(
        c.class.start_is_futile(),
        "another start meets the same PANIC"
    );
    assert!(!CauseClass::StaleLockFile.start_is_futile());
    assert!(CauseClass::ConfigError.start_is_futile());
}

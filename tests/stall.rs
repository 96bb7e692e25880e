//! One slow disk degrades one target, never the fleet: with every state write about one
//! target stalled for seconds (a fault hook in the store's writer), the other target keeps its
//! probe cadence, counted from outside the daemon in that server's own connection log, and the
//! slow target's incident still completes once, with its writes durable before the restart.

mod support;

use std::time::{Duration, Instant};
use support::*;

const LONG: Duration = Duration::from_secs(90);
/// Each write about the slow target waits this long in the writer.
const STALL_MS: u64 = 1500;

/// Timestamps (ms since the epoch) of the connections the server authorized, from its log.
fn connections(log: &std::path::Path) -> Vec<i64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("connection authorized"))
        .filter_map(|l| {
            // log_line_prefix '%m [%p] ': "2026-11-25 21:40:01.123 UTC [123] LOG: ..."
            let stamp = l.get(..23)?;
            let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.3f").ok()?;
            Some(t.and_utc().timestamp_millis())
        })
        .collect()
}

#[test]
fn a_target_whose_state_writes_stall_never_delays_another_targets_probes() {
    let slow = Pg::start();
    let steady = Pg::start();
    steady.psql("ALTER SYSTEM SET log_connections = on");
    steady.psql("SELECT pg_reload_conf()");
    let rx = Receiver::start();
    let ws = Workspace::new();
    ws.write_registry(
        &notify_all(&rx),
        &[
            TargetSpec::new("slow", &slow),
            TargetSpec::new("steady", &steady),
        ],
    );
    let stall = format!("slow:{STALL_MS}");
    let d = Daemon::run(&ws, &[("SENTINEL_FAULT_STORE_STALL", &stall)]);
    d.wait_event("probe_ok", Some("slow"), LONG);
    d.wait_event("probe_ok", Some("steady"), LONG);
    std::thread::sleep(Duration::from_secs(1));

    let killed_at = Instant::now();
    let from = chrono::Utc::now().timestamp_millis();
    let old_pid = slow.kill9();
    // The restart waits for the incident's writes (declared, archived, the restart record):
    // a new postmaster appears only after several stalled writes.
    let new_pid = wait_for(LONG, "the slow target restarted", || {
        slow.cluster
            .postmaster_pid()
            .filter(|p| *p != old_pid && slow.answers())
    });
    let restart_after = killed_at.elapsed();
    d.wait_event("target_recovered", Some("slow"), LONG);
    let to = chrono::Utc::now().timestamp_millis();

    let seen: Vec<i64> = connections(&steady.cluster.log_file)
        .into_iter()
        .filter(|t| (from..=to).contains(t))
        .collect();
    let mut gaps: Vec<i64> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let pct = |p: f64| gaps[((gaps.len() - 1) as f64 * p).round() as usize];
    println!(
        "slow target restarted {:.2} s after the kill (writes stalled {STALL_MS} ms each); steady target: {} probes, gap p50 {} ms, p95 {} ms, max {} ms (interval 200 ms)",
        restart_after.as_secs_f64(),
        seen.len(),
        pct(0.5),
        pct(0.95),
        pct(1.0)
    );

    assert!(
        restart_after >= Duration::from_millis(3 * STALL_MS),
        "the stall was real: the restart waited for the incident's writes ({restart_after:?})"
    );
    assert!(
        gaps.len() >= 20,
        "the steady target was probed throughout: {gaps:?}"
    );
    assert!(
        pct(1.0) < STALL_MS as i64 / 2,
        "no probe of the steady target waited behind a stalled write: {gaps:?}"
    );
    // The slow target's incident still completed once.
    assert_ne!(new_pid, old_pid);
    assert_eq!(d.count("incident_declared", Some("slow")), 1);
    assert_eq!(d.count("heal_issued", Some("slow")), 1);
    assert_eq!(d.count("incident_declared", Some("steady")), 0);
    wait_for(LONG, "the recovery notice", || {
        (rx.hook_events("recovery").len() == 1).then_some(())
    });
    assert_eq!(rx.hook_events("failure").len(), 1);
}

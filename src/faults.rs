//! Fault injection for the test suite. `SENTINEL_FAULT_PANIC=<target>:<point>` makes that
//! target's Monitor panic once at `<point>` (`archived` or `heal_issued`), to prove that the
//! Supervisor replaces it and the open incident is neither lost nor repeated. Unset in
//! production, where it costs one environment lookup per incident.

use std::sync::atomic::{AtomicBool, Ordering};

static FIRED: AtomicBool = AtomicBool::new(false);

/// Panics if the fault for `target` at `point` is requested and has not fired yet.
pub fn maybe_panic(target: &str, point: &str) {
    let Ok(spec) = std::env::var("SENTINEL_FAULT_PANIC") else {
        return;
    };
    if spec == format!("{target}:{point}") && !FIRED.swap(true, Ordering::SeqCst) {
        panic!("injected fault: monitor for {target} panics at {point}");
    }
}

/// How long a fenced cluster agent waits before it stands down, when
/// `SENTINEL_FAULT_STANDDOWN_DELAY=<seconds>` asks for it: a fence shorter than the agent's
/// reaction (its tick blocked on a slow etcd call), during which Monitors still run and
/// withhold their notices. Zero otherwise.
pub fn standdown_delay() -> std::time::Duration {
    std::env::var("SENTINEL_FAULT_STANDDOWN_DELAY")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or_default()
}

/// Kills the whole daemon with SIGKILL at `point` when `SENTINEL_FAULT_KILL=<target>:<point>`
/// asks for it: a crash between two steps of an incident, which the store must survive.
pub fn maybe_kill(target: &str, point: &str) {
    let Ok(spec) = std::env::var("SENTINEL_FAULT_KILL") else {
        return;
    };
    if spec == format!("{target}:{point}") {
        // SAFETY: signalling ourselves; SIGKILL cannot be caught, exactly like the OOM killer.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

//! The fleet guard: when more than a share of all targets fail at once (default more than
//! half, and at least 3), the likely cause is the network or this host, not the databases.
//! Restarts are then held until the share drops, and one alert says why.

use crate::config::FleetGuardConfig;
use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Default)]
struct State {
    failing: HashSet<String>,
    targets: usize,
    alerted: bool,
}

pub struct FleetGuard {
    cfg: Mutex<FleetGuardConfig>,
    state: Mutex<State>,
}

impl FleetGuard {
    pub fn new(cfg: FleetGuardConfig, targets: usize) -> Self {
        Self {
            cfg: Mutex::new(cfg),
            state: Mutex::new(State {
                targets,
                ..Default::default()
            }),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The registry changed (reload).
    pub fn reconfigure(&self, cfg: FleetGuardConfig, names: &[String]) {
        *self.cfg.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
        let mut st = self.st();
        st.targets = names.len();
        st.failing.retain(|t| names.contains(t));
    }

    /// A target's latest probe: failing or not.
    pub fn report(&self, target: &str, failing: bool) {
        let mut st = self.st();
        if failing {
            st.failing.insert(target.to_string());
        } else {
            st.failing.remove(target);
        }
        if !self.holding(&st) {
            st.alerted = false;
        }
    }

    fn holding(&self, st: &State) -> bool {
        let cfg = self.cfg.lock().unwrap_or_else(|e| e.into_inner());
        let n = st.failing.len();
        n >= cfg.min_failing
            && st.targets > 0
            && n as f64 > cfg.max_failing_share * st.targets as f64
    }

    /// `Some((failing, total))` while restarts are held.
    pub fn tripped(&self) -> Option<(usize, usize)> {
        let st = self.st();
        self.holding(&st).then(|| (st.failing.len(), st.targets))
    }

    /// True once per trip: the caller sends the fleet alert.
    pub fn take_alert(&self) -> bool {
        let mut st = self.st();
        self.holding(&st) && !std::mem::replace(&mut st.alerted, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_above_the_share_and_at_least_the_minimum() {
        let g = FleetGuard::new(FleetGuardConfig::default(), 4);
        g.report("a", true);
        g.report("b", true);
        assert_eq!(g.tripped(), None, "2 of 4 is not more than half");
        g.report("c", true);
        assert_eq!(g.tripped(), Some((3, 4)));
        assert!(g.take_alert());
        assert!(!g.take_alert(), "one alert per trip");
        g.report("c", false);
        assert_eq!(g.tripped(), None);
        g.report("c", true);
        assert!(g.take_alert(), "a new trip alerts again");
        let small = FleetGuard::new(FleetGuardConfig::default(), 2);
        small.report("a", true);
        small.report("b", true);
        assert_eq!(small.tripped(), None, "fewer than 3 targets never trip it");
    }
}

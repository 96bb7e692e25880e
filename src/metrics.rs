//! Prometheus metrics, kept in one process-wide `prometheus-client` registry and rendered in the
//! text exposition format (0.0.4) by `GET /metrics`. Labels are low-cardinality (target, class,
//! channel, result), never an error string.
//!
//! Call sites name a metric by its exposed name (`inc("sentinel_restarts_total", ...)`); the
//! table [`FAMILIES`] is the one list of what exists. An unknown name is a bug in the caller,
//! but a metric must never take the daemon down: it is logged once and ignored.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use slog::Logger;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

/// Probe latency buckets (seconds).
const PROBE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Probe lateness buckets (seconds): how long after its due time a probe started.
const LATENESS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0,
];
/// Time-to-recovery buckets (seconds).
const RECOVERY_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// What a family is, with how to build a histogram with its bucket bounds.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram(HistogramCtor),
}

fn probe_histogram() -> Histogram {
    Histogram::new(PROBE_BUCKETS.iter().copied())
}

fn lateness_histogram() -> Histogram {
    Histogram::new(LATENESS_BUCKETS.iter().copied())
}

fn recovery_histogram() -> Histogram {
    Histogram::new(RECOVERY_BUCKETS.iter().copied())
}

/// Every metric the daemon exposes: (name as exposed, kind, help).
const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "sentinel_probe_duration_seconds",
        Kind::Histogram(probe_histogram),
        "Latency of SQL probes, failed ones included.",
    ),
    (
        "sentinel_probe_lateness_seconds",
        Kind::Histogram(lateness_histogram),
        "How late probes of healthy targets started after their due time (the previous probe's end plus the interval), all targets together.",
    ),
    (
        "sentinel_probe_failures_total",
        Kind::Counter,
        "Failed probes by failure class.",
    ),
    (
        "sentinel_target_up",
        Kind::Gauge,
        "1 when the last probe passed, 0 when it failed.",
    ),
    (
        "sentinel_target_maintenance",
        Kind::Gauge,
        "1 while the target is in maintenance (no archive, restart or alert).",
    ),
    (
        "sentinel_incidents_total",
        Kind::Counter,
        "Incidents declared, by failure class.",
    ),
    (
        "sentinel_restarts_total",
        Kind::Counter,
        "Restarts issued by the healer.",
    ),
    (
        "sentinel_escalations_total",
        Kind::Counter,
        "Escalations sent (budget exhausted, heal failed, no recovery).",
    ),
    (
        "sentinel_archives_total",
        Kind::Counter,
        "Forensic bundles by result (written, failed, uploaded, upload_pending).",
    ),
    (
        "sentinel_notifications_total",
        Kind::Counter,
        "Notifications by channel and result (sent, failed, suppressed).",
    ),
    (
        "sentinel_notification_worker_restarts_total",
        Kind::Counter,
        "Notification channel workers started again after dying, by channel.",
    ),
    (
        "sentinel_incident_recovery_seconds",
        Kind::Histogram(recovery_histogram),
        "Time from detection to a passing probe after an incident.",
    ),
    (
        "sentinel_heartbeats_total",
        Kind::Counter,
        "Pings to the dead-man switch, by result.",
    ),
    (
        "sentinel_archive_spool_pending",
        Kind::Gauge,
        "Bundles waiting in the spool for their S3 upload.",
    ),
    (
        "sentinel_store_writes_dropped_total",
        Kind::Counter,
        "State store writes refused because the writer's queue was full (a disk too slow).",
    ),
    (
        "sentinel_cluster_owned_targets",
        Kind::Gauge,
        "Targets this daemon owns (cluster mode).",
    ),
    (
        "sentinel_cluster_members",
        Kind::Gauge,
        "Live daemons registered in etcd (cluster mode).",
    ),
    (
        "sentinel_cluster_lease_age_seconds",
        Kind::Gauge,
        "Time since this daemon's etcd lease was last renewed (-1 before the first).",
    ),
    (
        "sentinel_cluster_fenced",
        Kind::Gauge,
        "1 while this daemon may not restart anything (its lease is not known to be live).",
    ),
    (
        "sentinel_cluster_targets_disputed",
        Kind::Gauge,
        "Targets only some live members list (their registries differ); each is run only by a member that lists it.",
    ),
    (
        "sentinel_cluster_ghost_owners",
        Kind::Gauge,
        "Owner keys naming no live member: free, taken over by a member that lists the target.",
    ),
    (
        "sentinel_cluster_full_reads_total",
        Kind::Counter,
        "Full reads of the cluster's keys: one per session, then only after a watch fell behind a compaction.",
    ),
    (
        "sentinel_cluster_takeovers_total",
        Kind::Counter,
        "Targets this daemon took over after another daemon's lease ended.",
    ),
    (
        "sentinel_untrusted_state_rejected_total",
        Kind::Counter,
        "Values read back from etcd or the local store that no daemon writes (an id that is not one, another target's incident, a time out of range), refused; by source.",
    ),
];

/// One series' labels, in the order the call site gives them.
type Labels = Vec<(&'static str, String)>;
/// Builds a histogram with its family's buckets (a plain fn: `Family` clones its constructor).
type HistogramCtor = fn() -> Histogram;

/// One registered family, as the call sites reach it.
enum Series {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge<f64, AtomicU64>>),
    Histogram(Family<Labels, Histogram, HistogramCtor>),
}

impl Series {
    fn remove(&self, labels: &Labels) {
        match self {
            Series::Counter(f) => f.remove(labels),
            Series::Gauge(f) => f.remove(labels),
            Series::Histogram(f) => f.remove(labels),
        };
    }
}

/// The registry.
pub struct Metrics {
    registry: Registry,
    series: HashMap<&'static str, Series>,
    /// Label sets in use per family, so that a target's series can be forgotten
    /// (`Family` cannot be filtered).
    in_use: Mutex<HashMap<&'static str, HashSet<Labels>>>,
    /// Unknown names already logged.
    warned: Mutex<HashSet<String>>,
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

static LOG: OnceLock<Logger> = OnceLock::new();

/// Where an unknown metric name is reported (set once at startup; before that, nowhere).
pub fn set_logger(log: Logger) {
    let _ = LOG.set(log);
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let mut series = HashMap::new();
        for &(name, kind, help) in FAMILIES {
            // The registry appends the full stop to help texts, and `_total` to counters.
            let help = help.strip_suffix('.').unwrap_or(help);
            let s = match kind {
                Kind::Counter => {
                    let f = Family::<Labels, Counter>::default();
                    let base = name.strip_suffix("_total").unwrap_or(name);
                    registry.register(base, help, f.clone());
                    Series::Counter(f)
                }
                Kind::Gauge => {
                    let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
                    registry.register(name, help, f.clone());
                    Series::Gauge(f)
                }
                Kind::Histogram(ctor) => {
                    let f = Family::new_with_constructor(ctor);
                    registry.register(name, help, f.clone());
                    Series::Histogram(f)
                }
            };
            series.insert(name, s);
        }
        Self {
            registry,
            series,
            in_use: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// The family named `name` with the series for `l` noted as in use; None (logged once)
    /// when no such family exists.
    fn series(&self, name: &'static str, l: &Labels) -> Option<&Series> {
        let Some(s) = self.series.get(name) else {
            self.ignored(name, "not registered");
            return None;
        };
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        let sets = in_use.entry(name).or_default();
        if !sets.contains(l) {
            sets.insert(l.clone());
        }
        Some(s)
    }

    /// Logs, once per name, an update that names no metric of its kind (a bug in the caller).
    fn ignored(&self, name: &str, why: &'static str) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.insert(name.to_string()) {
            if let Some(log) = LOG.get() {
                slog::warn!(log, "a metric update was ignored: the metric is {why}";
                    "event" => "metric_unknown", "metric" => name);
            }
        }
    }

    /// Adds 1 to a counter.
    pub fn inc(&self, name: &'static str, l: &[(&'static str, &str)]) {
        let l = labels(l);
        match self.series(name, &l) {
            Some(Series::Counter(f)) => {
                f.get_or_create(&l).inc();
            }
            Some(_) => self.ignored(name, "of another kind"),
            None => {}
        }
    }

    /// Adds `n` to a counter.
    pub fn inc_by(&self, name: &'static str, l: &[(&'static str, &str)], n: u64) {
        let l = labels(l);
        match self.series(name, &l) {
            Some(Series::Counter(f)) => {
                f.get_or_create(&l).inc_by(n);
            }
            Some(_) => self.ignored(name, "of another kind"),
            None => {}
        }
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, l: &[(&'static str, &str)], v: f64) {
        let l = labels(l);
        match self.series(name, &l) {
            Some(Series::Gauge(f)) => {
                f.get_or_create(&l).set(v);
            }
            Some(_) => self.ignored(name, "of another kind"),
            None => {}
        }
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, name: &'static str, l: &[(&'static str, &str)], v: f64) {
        let l = labels(l);
        match self.series(name, &l) {
            Some(Series::Histogram(f)) => f.get_or_create(&l).observe(v),
            Some(_) => self.ignored(name, "of another kind"),
            None => {}
        }
    }

    /// Forgets a target's series (it left the registry).
    pub fn forget_target(&self, target: &str) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        for (name, sets) in in_use.iter_mut() {
            let Some(series) = self.series.get(name) else {
                continue;
            };
            sets.retain(|l| {
                let theirs = l.iter().any(|(k, v)| *k == "target" && v == target);
                if theirs {
                    series.remove(l);
                }
                !theirs
            });
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; the encoder only forwards the writer's errors.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let m = Metrics::new();
        m.observe(
            "sentinel_probe_duration_seconds",
            &[("target", "a\"b")],
            0.003,
        );
        m.observe(
            "sentinel_probe_duration_seconds",
            &[("target", "a\"b")],
            0.3,
        );
        m.inc("sentinel_restarts_total", &[("target", "x")]);
        let text = m.render();
        assert!(
            text.contains(
                "sentinel_probe_duration_seconds_bucket{target=\"a\\\"b\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("sentinel_probe_duration_seconds_bucket{target=\"a\\\"b\",le=\"0.5\"} 2")
        );
        assert!(text.contains("sentinel_probe_duration_seconds_count{target=\"a\\\"b\"} 2"));
        assert!(text.contains("sentinel_restarts_total{target=\"x\"} 1"));
        assert!(text.contains("# TYPE sentinel_restarts_total counter"));
    }

    #[test]
    fn unknown_names_and_wrong_kinds_are_ignored_not_fatal() {
        let m = Metrics::new();
        m.inc("sentinel_no_such_total", &[("target", "x")]);
        m.inc("sentinel_no_such_total", &[("target", "x")]);
        m.set("sentinel_restarts_total", &[("target", "x")], 3.0);
        m.observe("sentinel_target_up", &[], 1.0);
        let text = m.render();
        assert!(!text.contains("sentinel_no_such"), "{text}");
        assert!(!text.contains("sentinel_restarts_total{"), "{text}");
        assert_eq!(m.warned.lock().unwrap().len(), 3);
    }

    #[test]
    fn same_names_types_and_help_as_declared() {
        let m = Metrics::new();
        m.inc(
            "sentinel_archives_total",
            &[("target", "t"), ("result", "written")],
        );
        m.set("sentinel_target_up", &[("target", "t")], 1.0);
        m.observe(
            "sentinel_incident_recovery_seconds",
            &[("target", "t")],
            1.5,
        );
        let text = m.render();
        for want in [
            "# HELP sentinel_archives_total Forensic bundles by result (written, failed, uploaded, upload_pending).\n",
            "# TYPE sentinel_archives_total counter\n",
            "sentinel_archives_total{target=\"t\",result=\"written\"} 1\n",
            "# HELP sentinel_target_up 1 when the last probe passed, 0 when it failed.\n",
            "# TYPE sentinel_target_up gauge\n",
            "# TYPE sentinel_incident_recovery_seconds histogram\n",
            "sentinel_incident_recovery_seconds_bucket{target=\"t\",le=\"2\"} 1\n",
            "sentinel_incident_recovery_seconds_bucket{target=\"t\",le=\"+Inf\"} 1\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn forgetting_a_target_drops_only_its_series() {
        let m = Metrics::new();
        m.inc("sentinel_restarts_total", &[("target", "gone")]);
        m.inc("sentinel_restarts_total", &[("target", "kept")]);
        m.set("sentinel_target_up", &[("target", "gone")], 1.0);
        m.forget_target("gone");
        let text = m.render();
        assert!(!text.contains("\"gone\""), "{text}");
        assert!(text.contains("sentinel_restarts_total{target=\"kept\"} 1"));
    }
}

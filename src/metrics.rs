//! Prometheus metrics, kept in one process-wide registry and rendered in the text exposition
//! format by `GET /metrics`. Labels are low-cardinality (target, class, channel, result),
//! never an error string.

use std::collections::BTreeMap;
use std::fmt::Write;
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

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

struct Family {
    help: &'static str,
    kind: &'static str,
    counters: BTreeMap<Labels, f64>,
    histograms: BTreeMap<Labels, Histogram>,
    bounds: &'static [f64],
}

/// The registry.
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            families: Mutex::new(BTreeMap::new()),
        };
        {
            let mut f = m.families.lock().expect("fresh lock");
            let mut add = |name, kind, help, bounds: &'static [f64]| {
                f.insert(
                    name,
                    Family {
                        help,
                        kind,
                        counters: BTreeMap::new(),
                        histograms: BTreeMap::new(),
                        bounds,
                    },
                );
            };
            add(
                "sentinel_probe_duration_seconds",
                "histogram",
                "Latency of SQL probes, failed ones included.",
                PROBE_BUCKETS,
            );
            add(
                "sentinel_probe_lateness_seconds",
                "histogram",
                "How late probes of healthy targets started after their due time (the previous probe's end plus the interval), all targets together.",
                LATENESS_BUCKETS,
            );
            add(
                "sentinel_probe_failures_total",
                "counter",
                "Failed probes by failure class.",
                &[],
            );
            add(
                "sentinel_target_up",
                "gauge",
                "1 when the last probe passed, 0 when it failed.",
                &[],
            );
            add(
                "sentinel_target_maintenance",
                "gauge",
                "1 while the target is in maintenance (no archive, restart or alert).",
                &[],
            );
            add(
                "sentinel_incidents_total",
                "counter",
                "Incidents declared, by failure class.",
                &[],
            );
            add(
                "sentinel_restarts_total",
                "counter",
                "Restarts issued by the healer.",
                &[],
            );
            add(
                "sentinel_escalations_total",
                "counter",
                "Escalations sent (budget exhausted, heal failed, no recovery).",
                &[],
            );
            add(
                "sentinel_archives_total",
                "counter",
                "Forensic bundles by result (written, failed, uploaded, upload_pending).",
                &[],
            );
            add(
                "sentinel_notifications_total",
                "counter",
                "Notifications by channel and result (sent, failed, suppressed).",
                &[],
            );
            add(
                "sentinel_notification_worker_restarts_total",
                "counter",
                "Notification channel workers started again after dying, by channel.",
                &[],
            );
            add(
                "sentinel_incident_recovery_seconds",
                "histogram",
                "Time from detection to a passing probe after an incident.",
                RECOVERY_BUCKETS,
            );
            add(
                "sentinel_heartbeats_total",
                "counter",
                "Pings to the dead-man switch, by result.",
                &[],
            );
            add(
                "sentinel_store_writes_dropped_total",
                "counter",
                "State store writes refused because the writer's queue was full (a disk too slow).",
                &[],
            );
            add(
                "sentinel_archive_spool_pending",
                "gauge",
                "Bundles waiting in the spool for their S3 upload.",
                &[],
            );
        }
        m
    }

    fn with<R>(&self, name: &'static str, f: impl FnOnce(&mut Family) -> R) -> R {
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        f(fams
            .get_mut(name)
            .unwrap_or_else(|| panic!("metric {name} is registered in Metrics::new")))
    }

    /// Adds 1 to a counter.
    pub fn inc(&self, name: &'static str, l: &[(&'static str, &str)]) {
        self.with(name, |f| *f.counters.entry(labels(l)).or_default() += 1.0);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, l: &[(&'static str, &str)], v: f64) {
        self.with(name, |f| {
            f.counters.insert(labels(l), v);
        });
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, name: &'static str, l: &[(&'static str, &str)], v: f64) {
        self.with(name, |f| {
            let bounds = f.bounds;
            let h = f.histograms.entry(labels(l)).or_insert_with(|| Histogram {
                buckets: vec![0; bounds.len()],
                ..Default::default()
            });
            for (i, b) in bounds.iter().enumerate() {
                if v <= *b {
                    h.buckets[i] += 1;
                }
            }
            h.sum += v;
            h.count += 1;
        });
    }

    /// Forgets a target's series (it left the registry).
    pub fn forget_target(&self, target: &str) {
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        for f in fams.values_mut() {
            f.counters
                .retain(|l, _| !l.iter().any(|(k, v)| *k == "target" && v == target));
            f.histograms
                .retain(|l, _| !l.iter().any(|(k, v)| *k == "target" && v == target));
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, f) in fams.iter() {
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            for (l, v) in &f.counters {
                let _ = writeln!(out, "{name}{} {}", fmt_labels(l, None), fmt_value(*v));
            }
            for (l, h) in &f.histograms {
                for (i, b) in f.bounds.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        fmt_labels(l, Some(&fmt_value(*b))),
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    fmt_labels(l, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(
                    out,
                    "{name}_sum{} {}",
                    fmt_labels(l, None),
                    fmt_value(h.sum)
                );
                let _ = writeln!(out, "{name}_count{} {}", fmt_labels(l, None), h.count);
            }
        }
        out
    }
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn fmt_labels(l: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
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
}

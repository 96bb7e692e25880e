//! Which vitals moved most before a failure, as one line for the alert: the newest sample
//! against the oldest in the ring, each change weighed against the larger of the two values
//! (and a floor per vital, so 0 → 1 waiting lock is no headline), the one to three largest
//! named: "connections 100/100, up from 41 over the 10 minutes before". Pure: samples in,
//! text out.

use super::{wal_rate, Ring, Sample, Vital};

/// A change smaller than this share of the larger value is not named.
const MIN_SHARE: f64 = 0.25;

/// What one candidate compares: its name, the first and last values, the floor that a change
/// is weighed against at least, and how a value is shown.
struct Candidate {
    name: &'static str,
    first: f64,
    last: f64,
    floor: f64,
    show: fn(f64) -> String,
    /// Shown after the last value (e.g. "/100" for connections).
    of: Option<String>,
}

fn count(x: f64) -> String {
    format!("{x:.0}")
}

fn seconds(x: f64) -> String {
    if x >= 120.0 {
        format!("{:.0} min", x / 60.0)
    } else {
        format!("{x:.0} s")
    }
}

/// Bytes in KiB, MiB or GiB.
pub fn bytes(x: f64) -> String {
    const K: f64 = 1024.0;
    if x >= K * K * K {
        format!("{:.1} GiB", x / (K * K * K))
    } else if x >= K * K {
        format!("{:.0} MiB", x / (K * K))
    } else {
        format!("{:.0} KiB", x / K)
    }
}

fn rate(x: f64) -> String {
    format!("{}/s", bytes(x))
}

fn big(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.0} million", x / 1e6)
    } else {
        format!("{x:.0}")
    }
}

/// "10 minutes", "40 s": how long before the newest sample the oldest was taken.
fn span(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s >= 90.0 {
        format!("{:.0} minutes", s / 60.0)
    } else {
        format!("{s:.0} s")
    }
}

fn candidates(first: &Sample, last: &Sample, ring: &Ring) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut add = |v: Vital, name, floor, show: fn(f64) -> String, of: Option<String>| {
        if let (Some(a), Some(b)) = (first.get(v), last.get(v)) {
            out.push(Candidate {
                name,
                first: a,
                last: b,
                floor,
                show,
                of,
            });
        }
    };
    let max = last.get(Vital::MaxConnections).map(|m| format!("/{m:.0}"));
    add(Vital::Connections, "connections", 10.0, count, max);
    add(Vital::Active, "active sessions", 5.0, count, None);
    add(
        Vital::IdleInTransaction,
        "idle in transaction",
        5.0,
        count,
        None,
    );
    add(
        Vital::OldestTransaction,
        "oldest open transaction",
        60.0,
        seconds,
        None,
    );
    add(Vital::WaitingLocks, "waiting locks", 5.0, count, None);
    add(Vital::XidAge, "transaction ID age", 1e8, big, None);
    add(Vital::ReplayLag, "replay lag", 30.0, seconds, None);
    add(Vital::DataDiskFree, "data disk free", 1e9, bytes, None);
    add(Vital::WalDiskFree, "pg_wal disk free", 1e9, bytes, None);
    add(Vital::PostmasterRss, "postmaster memory", 64e6, bytes, None);
    let limit = last
        .get(Vital::ContainerMemoryLimit)
        .map(|l| format!("/{}", bytes(l)));
    add(
        Vital::ContainerMemory,
        "container memory",
        64e6,
        bytes,
        limit,
    );
    // The WAL rate over the first and the last pair of samples.
    let s = ring.samples();
    if s.len() >= 3 {
        if let (Some(a), Some(b)) = (wal_rate(&s[0], &s[1]), wal_rate(&s[s.len() - 2], last)) {
            out.push(Candidate {
                name: "WAL written",
                first: a,
                last: b,
                floor: 1e6,
                show: rate,
                of: None,
            });
        }
    }
    out
}

/// The line naming the one to three vitals that moved most over the ring, or None when none
/// moved enough (or fewer than two samples exist).
pub fn line(ring: &Ring) -> Option<String> {
    let s = ring.samples();
    let (first, last) = (s.front()?, s.back()?);
    if s.len() < 2 {
        return None;
    }
    let mut moved: Vec<(f64, Candidate)> = candidates(first, last, ring)
        .into_iter()
        .map(|c| {
            let share = (c.last - c.first).abs() / c.first.abs().max(c.last.abs()).max(c.floor);
            (share, c)
        })
        .filter(|(share, _)| *share >= MIN_SHARE)
        .collect();
    moved.sort_by(|a, b| b.0.total_cmp(&a.0));
    let when = span(last.at_ms - first.at_ms);
    let parts: Vec<String> = moved
        .into_iter()
        .take(3)
        .map(|(_, c)| {
            let dir = if c.last >= c.first { "up" } else { "down" };
            format!(
                "{} {}{}, {dir} from {} over the {when} before",
                c.name,
                (c.show)(c.last),
                c.of.unwrap_or_default(),
                (c.show)(c.first)
            )
        })
        .collect();
    (!parts.is_empty()).then(|| format!("Before the failure: {}.", parts.join("; ")))
}

/// A failure notice's summary with the line on what moved before it, after the rest.
pub fn with_line(summary: String, line: Option<&str>) -> String {
    match line {
        Some(l) => format!("{summary}\n{l}"),
        None => summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: i64, set: &[(Vital, f64)]) -> Sample {
        let mut values = [f64::NAN; Vital::COUNT];
        for (v, x) in set {
            values[*v as usize] = *x;
        }
        Sample {
            at_ms: at_s * 1000,
            values,
        }
    }

    #[test]
    fn the_largest_moves_are_named_and_small_ones_left_out() {
        let mut r = Ring::default();
        let base = [
            (Vital::MaxConnections, 100.0),
            (Vital::WaitingLocks, 0.0),
            (Vital::XidAge, 1000.0),
        ];
        r.push(
            sample(0, &[&base[..], &[(Vital::Connections, 41.0)]].concat()),
            10,
        );
        r.push(
            sample(300, &[&base[..], &[(Vital::Connections, 60.0)]].concat()),
            10,
        );
        r.push(
            sample(
                600,
                &[
                    (Vital::MaxConnections, 100.0),
                    (Vital::Connections, 100.0),
                    (Vital::WaitingLocks, 1.0),
                    (Vital::XidAge, 1100.0),
                ],
            ),
            10,
        );
        let l = line(&r).unwrap();
        assert_eq!(
            l,
            "Before the failure: connections 100/100, up from 41 over the 10 minutes before."
        );
        let mut quiet = Ring::default();
        quiet.push(sample(0, &base), 10);
        quiet.push(sample(10, &base), 10);
        assert_eq!(line(&quiet), None);
    }
}

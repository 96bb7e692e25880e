//! Human durations for the registry and the CLI: `250ms`, `5s`, `2m`, `1h`, `7d`, or a bare
//! integer of seconds.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// The hint appended to every duration error, so the user learns the syntax from the message.
pub const DURATION_HINT: &str = "use 250ms, 5s, 2m or 1h";

/// Parses `250ms`, `5s`, `2m`, `1h`, `1d` or a bare integer (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let bad = || format!("'{text}' is not a duration ({DURATION_HINT})");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = match unit.trim() {
        "" | "s" | "sec" | "secs" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" | "mins" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(bad)?),
        "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    Ok(d)
}

/// Formats a duration the way the registry writes it (for logs and messages).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A duration as written in YAML: kept as text until validation, so that a bad value becomes
/// one entry in the list of problems (with its key path) instead of aborting the parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDuration(pub String);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a duration ({DURATION_HINT})")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Longest duration the registry takes: timers and wall-clock arithmetic stay far from
/// overflowing (an `Instant` plus 10^15 s panics).
const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Judges a registry duration, recording a problem at `at` when it does not parse or is longer
/// than a year.
pub(crate) fn checked(
    raw: &RawDuration,
    at: &str,
    problems: &mut super::error::Problems,
) -> Option<Duration> {
    match parse_duration(&raw.0) {
        Ok(d) if d > MAX_DURATION => {
            problems.push(
                at,
                format!("'{}' is longer than a year", raw.0),
                "use a duration of at most 366d",
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(at, e, DURATION_HINT);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_documented_form() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
    }

    #[test]
    fn rejects_nonsense_with_the_syntax_hint() {
        for bad in ["5 parsecs", "", "s", "-1s", "1.5s", "5x"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(DURATION_HINT), "{bad}: {e}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["250ms", "5s", "2m", "1h"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}

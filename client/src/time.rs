//! Times and durations as people write them: when a task may start (`run_at`) and how long
//! to wait (`delay`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use prost_types::Timestamp;

/// A time: RFC 3339 (`2026-12-02T15:00:00Z`, `2026-12-02T16:00:00+01:00`) or unix seconds
/// (`1796223600`, fractions allowed).
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map(|d| UNIX_EPOCH + d)
            .map_err(|_| format!("{s:?} is not a time (unix seconds must be 0 or more)"));
    }
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("{s:?} is not a time (RFC 3339 such as 2026-12-02T15:00:00Z, or unix seconds): {e}"))?;
    let ms = u64::try_from(t.timestamp_millis()).map_err(|_| format!("{s:?} is before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_millis(ms))
}

/// A duration: a number with a unit, `ms`, `s`, `m`, `h` or `d` (`90s`, `5m`, `1.5h`), or
/// plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let bad = || format!("{s:?} is not a duration (a number and ms, s, m, h or d, e.g. 90s or 5m)");
    let n: f64 = n.parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3_600.0,
        "d" => 86_400.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(n * per).map_err(|_| bad())
}

/// Unix milliseconds as RFC 3339 in UTC, to the second (`2026-12-02T15:00:00Z`).
pub fn format_ms(ms: i64) -> String {
    match chrono::DateTime::from_timestamp(ms.div_euclid(1_000), 0) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => format!("{ms} ms"),
    }
}

/// A time as the proto's timestamp.
pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_from_rfc3339_and_unix_seconds() {
        let t = parse_time("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_767_225_600));
        assert_eq!(parse_time("2026-01-01T01:00:00+01:00").unwrap(), t);
        assert_eq!(parse_time("1767225600.5").unwrap(), t + Duration::from_millis(500));
        assert!(parse_time("tomorrow").unwrap_err().contains("RFC 3339"));
        assert!(parse_time("-5").is_err());
        assert_eq!(
            timestamp(t + Duration::from_millis(250)),
            prost_types::Timestamp { seconds: 1_767_225_600, nanos: 250_000_000 }
        );
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "5 minutes", "m", "1e99d", "-3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

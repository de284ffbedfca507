//! Recurring jobs' timing, pure: cron patterns (UTC) and the catch-up rule.
//!
//! A pattern has five fields (minute hour day-of-month month day-of-week) or six (seconds
//! first), with the usual ranges, lists, steps and names (`*/15`, `1-5`, `MON`), plus `L`,
//! `#` and `W` as croner reads them. A schedule keeps its next tick. When that tick has come,
//! it fires once, however many ticks passed meanwhile (a coordinator that was down for an
//! hour runs an every-minute schedule once on restart, not sixty times), and the next tick
//! is the first one after now.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Year};

/// A parsed cron pattern.
#[derive(Clone, Debug)]
pub struct Pattern(Cron);

impl FromStr for Pattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Pattern, String> {
        let fields = s.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "{s:?} has {fields} fields; a cron pattern has 5 (minute hour day month weekday) or 6 (seconds first)"
            ));
        }
        let cron = CronParser::builder().year(Year::Disallowed).build().parse(s).map_err(|e| format!("{s:?}: {e}"))?;
        let p = Pattern(cron);
        // A pattern that never matches (30 February) is an error, not a silent schedule.
        p.next_after(0).ok_or_else(|| format!("{s:?} never matches"))?;
        Ok(p)
    }
}

impl Pattern {
    /// The first tick strictly after `ms` (unix ms), if any.
    pub fn next_after(&self, ms: u64) -> Option<u64> {
        // Ticks are whole seconds: the first after the second `ms` falls in.
        let t: DateTime<Utc> = DateTime::from_timestamp((ms / 1_000) as i64, 0)?;
        let next = self.0.find_next_occurrence(&t, false).ok()?;
        u64::try_from(next.timestamp()).ok()?.checked_mul(1_000)
    }

    /// Whether a schedule whose next tick is `next_run_ms` fires at `now`, and if so its
    /// following tick (the first after `now`: missed ticks fire once, see the module).
    pub fn fire(&self, next_run_ms: u64, now: u64) -> Option<u64> {
        if next_run_ms > now {
            return None;
        }
        // A pattern with no tick left (a past year) keeps a tick far away instead of firing
        // again at every batch.
        Some(self.next_after(now).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        s.parse().unwrap()
    }

    const MIN: u64 = 60_000;

    #[test]
    fn five_fields_tick_on_minutes_and_six_on_seconds() {
        // 2026-01-01T00:00:00Z
        let t0 = 1_767_225_600_000;
        assert_eq!(p("* * * * *").next_after(t0), Some(t0 + MIN));
        assert_eq!(p("*/15 * * * *").next_after(t0 + 1), Some(t0 + 15 * MIN));
        assert_eq!(p("* * * * * *").next_after(t0), Some(t0 + 1_000));
        assert_eq!(p("30 0 * * * *").next_after(t0), Some(t0 + 30_000));
        // Friday 2026-01-02 09:00.
        assert_eq!(p("0 9 * * FRI").next_after(t0), Some(t0 + (24 + 9) * 60 * MIN));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        for bad in ["", "* * * *", "* * * * * * *", "61 * * * *", "* * 30 2 *", "nonsense here x y z"] {
            let e = bad.parse::<Pattern>().unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn a_missed_run_of_ticks_fires_once_and_resumes_after_now() {
        let every_minute = p("* * * * *");
        let t0 = 1_767_225_600_000;
        assert_eq!(every_minute.fire(t0 + MIN, t0 + 30_000), None, "not due yet");
        assert_eq!(every_minute.fire(t0 + MIN, t0 + MIN), Some(t0 + 2 * MIN), "due at its tick");
        // Down for an hour: one firing, and the next tick is after now, not the next missed one.
        assert_eq!(every_minute.fire(t0 + MIN, t0 + 61 * MIN + 5), Some(t0 + 62 * MIN));
    }
}

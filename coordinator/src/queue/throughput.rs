//! Tasks finished per interval over the last minutes, for GetStats and the dashboards: a ring
//! of fixed buckets fed with each batch's completions and failures. Pure; time comes in.

use std::collections::VecDeque;

/// Width of one bucket.
pub const BUCKET_MS: u64 = 10_000;
/// Buckets kept: ten minutes.
pub const BUCKETS: usize = 60;

/// Tasks that reached a final state in one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub start_ms: u64,
    pub completed: u64,
    pub failed: u64,
}

#[derive(Debug, Default)]
pub struct Throughput {
    /// Oldest first; only buckets that saw something.
    buckets: VecDeque<Bucket>,
}

fn start_of(ms: u64) -> u64 {
    ms - ms % BUCKET_MS
}

impl Throughput {
    /// Counts tasks that completed or failed at `now`.
    pub fn record(&mut self, now: u64, completed: u64, failed: u64) {
        if completed == 0 && failed == 0 {
            return;
        }
        let start = start_of(now);
        match self.buckets.back_mut() {
            Some(b) if b.start_ms == start => {
                b.completed += completed;
                b.failed += failed;
            }
            _ => self.buckets.push_back(Bucket { start_ms: start, completed, failed }),
        }
        self.forget(now);
    }

    fn forget(&mut self, now: u64) {
        let oldest = start_of(now).saturating_sub((BUCKETS as u64 - 1) * BUCKET_MS);
        while self.buckets.front().is_some_and(|b| b.start_ms < oldest) {
            self.buckets.pop_front();
        }
    }

    /// The last [`BUCKETS`] buckets up to the one holding `now`, oldest first, empty ones
    /// included.
    pub fn series(&self, now: u64) -> Vec<Bucket> {
        let last = start_of(now);
        let first = last.saturating_sub((BUCKETS as u64 - 1) * BUCKET_MS);
        let mut out = Vec::with_capacity(BUCKETS);
        let mut have = self.buckets.iter().peekable();
        let mut at = first;
        while at <= last {
            while have.peek().is_some_and(|b| b.start_ms < at) {
                have.next();
            }
            match have.peek() {
                Some(b) if b.start_ms == at => out.push(**b),
                _ => out.push(Bucket { start_ms: at, ..Bucket::default() }),
            }
            at += BUCKET_MS;
        }
        out
    }

    /// Completed tasks per second over the last minute (the buckets that started within it).
    pub fn per_second(&self, now: u64) -> f64 {
        let since = start_of(now).saturating_sub(60_000 - BUCKET_MS);
        let n: u64 = self.buckets.iter().filter(|b| b.start_ms >= since).map(|b| b.completed).sum();
        n as f64 / 60.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_add_up_and_old_ones_fall_out() {
        let mut t = Throughput::default();
        let t0 = 1_000_000_000;
        t.record(t0, 3, 1);
        t.record(t0 + 1, 2, 0);
        t.record(t0 + BUCKET_MS, 6, 0);
        let s = t.series(t0 + BUCKET_MS);
        assert_eq!(s.len(), BUCKETS);
        assert_eq!(s[BUCKETS - 2], Bucket { start_ms: start_of(t0), completed: 5, failed: 1 });
        assert_eq!(s[BUCKETS - 1].completed, 6);
        assert!(s.windows(2).all(|w| w[1].start_ms == w[0].start_ms + BUCKET_MS));
        assert_eq!(t.per_second(t0 + BUCKET_MS), 11.0 / 60.0);
        // Ten minutes on, the first bucket is gone.
        let later = t0 + BUCKETS as u64 * BUCKET_MS;
        t.record(later, 1, 0);
        assert!(t.series(later).iter().all(|b| b.start_ms > t0));
        assert_eq!(t.series(later).iter().map(|b| b.completed).sum::<u64>(), 7);
        assert_eq!(t.per_second(later), 1.0 / 60.0);
    }

    #[test]
    fn nothing_recorded_is_a_flat_series() {
        let t = Throughput::default();
        assert!(t.series(5 * BUCKET_MS).iter().all(|b| b.completed == 0 && b.failed == 0));
        assert_eq!(t.per_second(0), 0.0);
    }
}

//! The job event feeds behind WatchJob: one broadcast channel per watched job, and a history
//! of its recent events so that a watcher that reconnects resumes without a snapshot.
//!
//! What stays true here: the history is bounded in bytes, per job
//! ([`MAX_FEED_HISTORY_BYTES`]) and over all jobs ([`MAX_HISTORY_BYTES`]); past the global
//! bound the least recently used feeds nobody watches are forgotten first, then the oldest
//! events of the largest histories. A resume that finds its events gone gets a snapshot,
//! never a gap. Events are shared (`Arc`), never copied per watcher here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use orca_proto::pb;
use prost::Message;
use tokio::sync::broadcast;

use crate::queue::JobId;

/// Events a watcher may fall behind before it gets a fresh snapshot (the broadcast buffer).
pub const WATCH_BUFFER: usize = 1_024;
/// Bytes of events kept per job for resumes.
pub const MAX_FEED_HISTORY_BYTES: usize = 4 << 20;
/// Bytes of events kept for resumes over all jobs.
pub const MAX_HISTORY_BYTES: usize = 64 << 20;

struct Feed {
    tx: broadcast::Sender<Arc<pb::JobEvent>>,
    /// Events with their encoded sizes, oldest first.
    history: VecDeque<(Arc<pb::JobEvent>, usize)>,
    bytes: usize,
    /// Last event or subscription (ms), to forget the least recently used feeds first.
    used_ms: u64,
}

impl Feed {
    fn new() -> Feed {
        Feed { tx: broadcast::channel(WATCH_BUFFER).0, history: VecDeque::new(), bytes: 0, used_ms: 0 }
    }

    fn push(&mut self, ev: Arc<pb::JobEvent>) {
        let n = ev.encoded_len();
        self.history.push_back((ev, n));
        self.bytes += n;
        while self.history.len() > WATCH_BUFFER || self.bytes > MAX_FEED_HISTORY_BYTES {
            self.pop();
        }
    }

    fn pop(&mut self) -> usize {
        let n = self.history.pop_front().map_or(0, |(_, n)| n);
        self.bytes -= n;
        n
    }
}

/// Every feed, and the bytes their histories hold.
#[derive(Default)]
pub(super) struct Feeds {
    feeds: HashMap<JobId, Feed>,
    bytes: usize,
}

/// What a new subscriber gets.
pub(super) struct Subscribed {
    pub rx: broadcast::Receiver<Arc<pb::JobEvent>>,
    /// The events after the requested sequence number, when they are all still kept.
    pub missed: Option<Vec<Arc<pb::JobEvent>>>,
}

impl Feeds {
    /// The jobs somebody watches or watched recently (their events are built at all).
    pub fn jobs(&self) -> impl Iterator<Item = &JobId> {
        self.feeds.keys()
    }

    #[cfg(test)]
    fn is_fed(&self, job: &JobId) -> bool {
        self.feeds.contains_key(job)
    }

    /// Subscribes to a job whose last event is `last_seq`; the events after `after_seq` come
    /// from the history when it still holds them all.
    pub fn subscribe(&mut self, job: JobId, after_seq: u64, last_seq: u64, now: u64) -> Subscribed {
        let feed = self.feeds.entry(job).or_insert_with(Feed::new);
        feed.used_ms = now;
        let kept_from = feed.history.front().map(|(e, _)| e.seq);
        let missed = if after_seq == last_seq {
            Some(Vec::new())
        } else if after_seq < last_seq && kept_from.is_some_and(|first| first <= after_seq + 1) {
            Some(feed.history.iter().filter(|(e, _)| e.seq > after_seq).map(|(e, _)| e.clone()).collect())
        } else {
            None
        };
        Subscribed { rx: feed.tx.subscribe(), missed }
    }

    /// Sends the events to their watchers and keeps them for resumes, within the budgets.
    /// `idle(job)`: the job has nothing left to run, so its feed may be forgotten.
    pub fn publish(&mut self, events: Vec<(JobId, Arc<pb::JobEvent>)>, now: u64, idle: impl Fn(&JobId) -> bool) {
        for (job, ev) in events {
            if let Some(feed) = self.feeds.get_mut(&job) {
                let before = feed.bytes;
                feed.push(ev.clone());
                self.bytes = self.bytes + feed.bytes - before;
                feed.used_ms = now;
                // No receiver is fine: the history serves later resumes.
                let _ = feed.tx.send(ev);
            }
        }
        if self.bytes > MAX_HISTORY_BYTES {
            self.shrink(idle);
        }
    }

    /// Forgets the least recently used unwatched feeds of idle jobs, then trims the largest
    /// histories, until the histories fit [`MAX_HISTORY_BYTES`].
    fn shrink(&mut self, idle: impl Fn(&JobId) -> bool) {
        let mut forgettable: Vec<(u64, JobId)> = self
            .feeds
            .iter()
            .filter(|(job, f)| f.tx.receiver_count() == 0 && idle(job))
            .map(|(job, f)| (f.used_ms, job.clone()))
            .collect();
        forgettable.sort();
        for (_, job) in forgettable {
            if self.bytes <= MAX_HISTORY_BYTES {
                return;
            }
            if let Some(f) = self.feeds.remove(&job) {
                self.bytes -= f.bytes;
            }
        }
        let mut largest: Vec<(usize, JobId)> = self.feeds.iter().map(|(j, f)| (f.bytes, j.clone())).collect();
        largest.sort_unstable_by(|a, b| b.cmp(a));
        for (_, job) in largest {
            let Some(f) = self.feeds.get_mut(&job) else { continue };
            while self.bytes > MAX_HISTORY_BYTES / 2 && !f.history.is_empty() {
                self.bytes -= f.pop();
            }
            if self.bytes <= MAX_HISTORY_BYTES / 2 {
                return;
            }
        }
    }

    /// Forgets a deleted job's feed: its watchers' streams end.
    pub fn remove(&mut self, job: &JobId) {
        if let Some(f) = self.feeds.remove(job) {
            self.bytes -= f.bytes;
        }
    }

    pub fn clear(&mut self) {
        self.feeds.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, bytes: usize) -> Arc<pb::JobEvent> {
        Arc::new(pb::JobEvent { seq, message: "m".repeat(bytes), ..Default::default() })
    }

    #[test]
    fn history_is_bounded_per_job_in_bytes_and_resumes_fall_back_to_a_snapshot() {
        let mut f = Feeds::default();
        let job = JobId::from("j");
        f.subscribe(job.clone(), 0, 0, 0);
        let big = 64 << 10;
        let n = MAX_FEED_HISTORY_BYTES / big + 10;
        let events = (1..=n as u64).map(|s| (job.clone(), event(s, big))).collect();
        f.publish(events, 1, |_| false);
        assert!(f.bytes <= MAX_FEED_HISTORY_BYTES, "{}", f.bytes);
        // The newest events are kept; a resume from before them gets a snapshot (None).
        let s = f.subscribe(job.clone(), n as u64 - 3, n as u64, 2);
        assert_eq!(
            s.missed.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![n as u64 - 2, n as u64 - 1, n as u64]
        );
        assert!(f.subscribe(job, 1, n as u64, 3).missed.is_none());
    }

    #[test]
    fn the_global_budget_forgets_idle_unwatched_feeds_first_then_trims() {
        let mut f = Feeds::default();
        let jobs: Vec<JobId> = (0..40).map(|i| JobId::from(format!("j{i}").as_str())).collect();
        for (i, j) in jobs.iter().enumerate() {
            drop(f.subscribe(j.clone(), 0, 0, i as u64));
        }
        // Each job's history near its own cap: 40 x ~4 MiB is far over the global budget.
        let big = 64 << 10;
        for (i, j) in jobs.iter().enumerate() {
            let events = (1..=60u64).map(|s| (j.clone(), event(s, big))).collect();
            f.publish(events, 100 + i as u64, |job| job != &jobs[39]);
            assert!(f.bytes <= MAX_HISTORY_BYTES, "{} after job {i}", f.bytes);
        }
        assert!(f.is_fed(&jobs[39]), "a job that is not idle keeps its feed");
        assert!(!f.is_fed(&jobs[0]), "the least recently used idle feed went first");
        let total: usize = f.feeds.values().map(|x| x.bytes).sum();
        assert_eq!(total, f.bytes);
    }
}

//! The fleet's read side: workers as ListWorkers shows them, the queue's stats for GetStats
//! and WatchFleet, and DrainWorker. Answered by the dispatcher from memory, never from the
//! database.

use std::collections::VecDeque;

use orca_proto::pb;

use super::{Dispatcher, Error};
use crate::convert;
use crate::queue::throughput::Throughput;
use crate::queue::{Effect, State, Worker, WorkerId};

/// What a worker said about itself when it registered.
#[derive(Clone, Debug, Default)]
pub struct Described {
    pub name: String,
    pub hostname: String,
    pub version: String,
}

/// The workers and the stats at one moment.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    pub workers: Vec<pb::WorkerInfo>,
    pub stats: pb::Stats,
}

/// Tasks that completed and failed in a batch's effects.
pub(super) fn finished(effects: &[Effect]) -> (u64, u64) {
    let (mut completed, mut failed) = (0, 0);
    for e in effects {
        match e {
            Effect::Changed { to: State::Completed, .. } => completed += 1,
            Effect::Changed { to: State::Failed, .. } => failed += 1,
            _ => {}
        }
    }
    (completed, failed)
}

/// Recent failures kept for the stats.
pub(super) const RECENT_FAILURES: usize = 20;

/// Adds the batch's failures to `recent` (newest at the back), keeping the last
/// [`RECENT_FAILURES`].
pub(super) fn record_failures(recent: &mut VecDeque<pb::RecentFailure>, effects: &[Effect], now: u64) {
    for e in effects {
        if let Effect::Changed { id, job, to: State::Failed, reason, worker, .. } = e {
            if recent.len() == RECENT_FAILURES {
                recent.pop_front();
            }
            recent.push_back(pb::RecentFailure {
                task_id: id.0,
                job_id: job.to_string(),
                reason: orca_proto::contract::head_str(reason, 512).to_string(),
                worker_id: worker.as_ref().map(ToString::to_string).unwrap_or_default(),
                time_ms: now as i64,
            });
        }
    }
}

fn info(id: &WorkerId, w: &Worker, d: Option<&Described>) -> pb::WorkerInfo {
    let d = d.cloned().unwrap_or_default();
    let mut running: Vec<i64> = w.held.iter().map(|(t, _)| t.0).collect();
    running.sort_unstable();
    pb::WorkerInfo {
        worker_id: id.to_string(),
        name: d.name,
        hostname: d.hostname,
        labels: w.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        slots: w.slots,
        running_tasks: running,
        last_seen_ms: w.seen_ms as i64,
        version: if d.version.is_empty() { "0.1.0".into() } else { d.version },
        draining: w.draining,
        connected: w.session.is_some(),
    }
}

impl Dispatcher {
    /// Every worker the scheduler knows (sorted by id) and the stats. (Descriptions of
    /// forgotten workers are dropped at the next registration, not here, on every read.)
    pub(super) fn fleet(&self, now: u64) -> Fleet {
        let mut workers: Vec<pb::WorkerInfo> =
            self.sched.workers().map(|(id, w)| info(id, w, self.described.get(id))).collect();
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Fleet { workers, stats: self.pb_stats(now) }
    }

    fn pb_stats(&self, now: u64) -> pb::Stats {
        let s = self.stats();
        let t: &Throughput = &self.throughput;
        pb::Stats {
            tasks: Some(convert::status(&s.counts)),
            queue: self
                .sched
                .pending_by_priority()
                .into_iter()
                .map(|(priority, pending)| pb::PriorityDepth { priority, pending })
                .collect(),
            throughput: t
                .series(now)
                .into_iter()
                .map(|b| pb::ThroughputBucket { start_ms: b.start_ms as i64, completed: b.completed, failed: b.failed })
                .collect(),
            tasks_per_second: t.per_second(now),
            workers_connected: s.workers_connected as u32,
            slots: s.slots,
            slots_free: s.slots_free,
            jobs: s.jobs as u64,
            time_ms: now as i64,
            recent_failures: self.recent_failures.iter().rev().cloned().collect(),
        }
    }

    /// Drains or resumes a worker; its description afterwards.
    pub(super) fn drain(&mut self, worker: &str, on: bool) -> Result<pb::WorkerInfo, Error> {
        let id = WorkerId::from(worker);
        self.sched.set_draining(&id, on).map_err(|r| Error::NotFound(r.to_string()))?;
        let w = self.sched.worker(&id).expect("just drained");
        tracing::info!(worker = %id, draining = on, "worker {}", if on { "drained" } else { "resumed" });
        Ok(info(&id, w, self.described.get(&id)))
    }
}

/// Bytes of an attempt's output kept in its history row (its tail).
pub const OUTPUT_TAIL_BYTES: usize = 4 << 10;

/// What a report said about the attempt it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Ended {
    pub outcome: &'static str,
    pub exit_code: Option<i32>,
    pub cost_usd: Option<f64>,
    pub duration_ms: Option<i64>,
    pub output_tail: String,
}

impl Ended {
    /// For a report that ends its attempt without completing the task (failed, handed back);
    /// `None` otherwise: a completed attempt gets no history row (GetTask tells it from the
    /// task), so nothing is copied for it.
    pub fn of(outcome: &crate::queue::Outcome, result: Option<&pb::TaskResult>) -> Option<Ended> {
        use crate::queue::Outcome;
        let outcome = match outcome {
            Outcome::Failed { .. } => "failed",
            Outcome::HandedBack { .. } => "handed_back",
            _ => return None,
        };
        Some(Ended {
            outcome,
            exit_code: result.map(|r| r.exit_code),
            cost_usd: result.map(|r| r.cost_usd),
            duration_ms: result.map(|r| r.duration_ms as i64),
            output_tail: result.map(|r| output_tail(&r.output).to_string()).unwrap_or_default(),
        })
    }
}

/// The last [`OUTPUT_TAIL_BYTES`] of an output, from a character boundary.
pub fn output_tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(OUTPUT_TAIL_BYTES);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// An attempt leaving `in_progress`, as the batch saw it.
pub struct AttemptEnd {
    pub task: crate::queue::TaskId,
    pub attempt: u32,
    pub worker: Option<String>,
    pub now: u64,
    /// How long it was in progress.
    pub held_ms: u64,
}

/// The history row of an attempt that ended with its task going to `to`: what its report
/// said, or (no report) lost with its lease or cancelled while it ran.
pub fn attempt_record(at: AttemptEnd, to: State, reason: &str, ended: Option<Ended>) -> crate::store::AttemptRecord {
    let ended = ended.unwrap_or(Ended {
        outcome: if to == State::Cancelled { "cancelled" } else { "lost" },
        exit_code: None,
        cost_usd: None,
        duration_ms: None,
        output_tail: String::new(),
    });
    crate::store::AttemptRecord {
        task_id: at.task.0,
        attempt: at.attempt,
        worker_id: at.worker,
        started_ms: at.now.saturating_sub(at.held_ms) as i64,
        ended_ms: at.now as i64,
        outcome: ended.outcome,
        reason: reason.to_string(),
        exit_code: ended.exit_code,
        cost_usd: ended.cost_usd,
        duration_ms: ended.duration_ms,
        output_tail: ended.output_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Outcome, TaskId};

    fn at() -> AttemptEnd {
        AttemptEnd { task: TaskId(7), attempt: 2, worker: Some("w".into()), now: 10_000, held_ms: 2_500 }
    }

    #[test]
    fn a_reported_attempt_keeps_its_result_and_the_tail_of_its_output() {
        let result = pb::TaskResult { output: "é".repeat(3_000), exit_code: 3, cost_usd: 0.5, ..Default::default() };
        let failed = Outcome::Failed { reason: "boom".into(), retryable: true };
        let ended = Ended::of(&failed, Some(&result)).unwrap();
        let r = attempt_record(at(), State::Waiting, "attempt 2 failed: boom", Some(ended));
        assert_eq!((r.outcome, r.exit_code, r.cost_usd), ("failed", Some(3), Some(0.5)));
        assert_eq!((r.started_ms, r.ended_ms, r.worker_id.as_deref()), (7_500, 10_000, Some("w")));
        assert!(r.output_tail.len() <= OUTPUT_TAIL_BYTES && r.output_tail.len() > OUTPUT_TAIL_BYTES - 2);
        assert!(Ended::of(&Outcome::Started, None).is_none());
        assert!(Ended::of(&Outcome::Completed, Some(&result)).is_none(), "a completed attempt has no row");
    }

    #[test]
    fn an_attempt_without_a_report_was_lost_or_cancelled() {
        assert_eq!(attempt_record(at(), State::Pending, "lease expired", None).outcome, "lost");
        assert_eq!(attempt_record(at(), State::Cancelled, "stop", None).outcome, "cancelled");
    }
}

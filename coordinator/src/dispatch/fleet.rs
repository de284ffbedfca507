//! The fleet's read side: workers as ListWorkers shows them, the queue's stats for GetStats
//! and WatchFleet, and DrainWorker. Answered by the dispatcher from memory, never from the
//! database.

use std::collections::HashMap;

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
    /// Every worker the scheduler knows (sorted by id) and the stats; descriptions of
    /// workers it forgot are dropped on the way.
    pub(super) fn fleet(&mut self, now: u64) -> Fleet {
        let known: HashMap<&WorkerId, &Worker> = self.sched.workers().collect();
        self.described.retain(|id, _| known.contains_key(id));
        let mut workers: Vec<pb::WorkerInfo> =
            known.iter().map(|(id, w)| info(id, w, self.described.get(*id))).collect();
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

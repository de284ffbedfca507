//! One WatchJob stream kept open for the whole run, resumed after its last sequence number
//! whenever it breaks (each coordinator kill). It records what the fencing and final-state
//! checks need: every task's last known state, the completions per task, and the job's
//! counts as of the last event; sequence numbers must never go back and a final state must
//! never change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use orca_proto::pb;
use tokio::sync::Mutex;

use super::submit::{Shared, client};

#[derive(Default)]
pub struct WatchState {
    /// Last known state of each task (proto numbers).
    pub state: HashMap<i64, i32>,
    /// Completion events per task and the attempt of the last one.
    pub completions: HashMap<i64, (u32, u32)>,
    /// The job's counts carried by the last event.
    pub last_status: Option<pb::JobStatus>,
    pub last_seq: u64,
    pub events: u64,
    pub snapshots: u64,
    pub streams: u64,
    pub violations: Vec<(&'static str, String)>,
}

pub fn is_final(state: i32) -> bool {
    (4..=6).contains(&state)
}

impl WatchState {
    pub fn on_event(&mut self, ev: pb::JobEvent) {
        self.events += 1;
        if ev.status.is_some() {
            self.last_status.clone_from(&ev.status);
        }
        match pb::JobEventKind::try_from(ev.kind).unwrap_or(pb::JobEventKind::Unspecified) {
            pb::JobEventKind::Snapshot => self.on_snapshot(&ev),
            pb::JobEventKind::TaskState => self.on_task_state(&ev),
            _ => self.last_seq = self.last_seq.max(ev.seq),
        }
    }

    fn on_snapshot(&mut self, ev: &pb::JobEvent) {
        self.snapshots += 1;
        if ev.seq < self.last_seq {
            let msg = format!("snapshot at seq {} after event seq {}", ev.seq, self.last_seq);
            self.violations.push(("watch: sequence went back", msg));
        }
        for t in &ev.tasks {
            if let Some(&prev) = self.state.get(&t.task_id)
                && is_final(prev)
                && prev != t.state
            {
                let msg = format!("task {} was final ({prev}), snapshot says {}", t.task_id, t.state);
                self.violations.push(("watch: final state changed", msg));
            }
            self.state.insert(t.task_id, t.state);
        }
        self.last_seq = self.last_seq.max(ev.seq);
    }

    fn on_task_state(&mut self, ev: &pb::JobEvent) {
        if ev.seq <= self.last_seq {
            let msg = format!("event seq {} after seq {} (task {})", ev.seq, self.last_seq, ev.task_id);
            self.violations.push(("watch: sequence went back", msg));
        }
        self.last_seq = self.last_seq.max(ev.seq);
        if let Some(&prev) = self.state.get(&ev.task_id)
            && is_final(prev)
        {
            let msg =
                format!("task {} was final ({prev}), then became {} (attempt {})", ev.task_id, ev.state, ev.attempt);
            self.violations.push(("watch: final state changed", msg));
        }
        self.state.insert(ev.task_id, ev.state);
        if ev.state == pb::TaskState::Completed as i32 {
            let e = self.completions.entry(ev.task_id).or_insert((0, 0));
            e.0 += 1;
            e.1 = ev.attempt;
        }
    }

    /// Whether the stream has seen the job reach `status` with every task final: the event
    /// that made the last task final is the job's last state change, so nothing is missing.
    pub fn caught_up(&self, status: &pb::JobStatus) -> bool {
        self.last_status.as_ref().is_some_and(|s| {
            s.total_tasks == status.total_tasks && s.completed + s.failed + s.cancelled == status.total_tasks
        })
    }
}

/// Follows the job's events until the run stops, resuming after the last sequence number.
pub async fn watcher(url: String, job: String, sh: Arc<Shared>, ws: Arc<Mutex<WatchState>>) {
    // No call timeout: it would end a stream that is meant to last the whole run.
    let Ok(mut c) = client(&url, None) else { return };
    while !sh.stopped() {
        let after_seq = ws.lock().await.last_seq;
        let req = pb::WatchJobRequest { job_id: job.clone(), after_seq, follow: true };
        if let Ok(resp) = c.watch_job(tonic::Request::new(req)).await {
            ws.lock().await.streams += 1;
            let mut stream = resp.into_inner();
            loop {
                tokio::select! {
                    m = stream.message() => match m {
                        Ok(Some(ev)) => ws.lock().await.on_event(ev),
                        _ => break,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if sh.stopped() { return; }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(nc) = client(&url, None) {
            c = nc;
        }
    }
}

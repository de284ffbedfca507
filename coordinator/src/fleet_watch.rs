//! WatchFleet: a snapshot of the workers and the stats, then workers joining, changing and
//! leaving, and the stats every interval. One [`Hub`] task asks the dispatcher for the fleet
//! (from memory) twice a second while any stream is open and shares it; each stream diffs the
//! shared snapshot against what it sent. So a thousand dashboards cost the dispatcher what one
//! does, and the database is never read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orca_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::dispatch::{Fleet, Handle, now_ms};

/// Default interval of stats events.
pub const DEFAULT_INTERVAL_MS: u32 = 2_000;
/// Shortest interval a caller may ask for.
pub const MIN_INTERVAL_MS: u32 = 500;
/// Longest: an hour.
pub const MAX_INTERVAL_MS: u32 = 3_600_000;
/// How often worker changes are looked for (at most; a shorter stats interval is used).
const WORKER_POLL: Duration = Duration::from_secs(1);
/// Events buffered for a slow reader before the stream is ended.
const BUFFER: usize = 64;

/// The stats interval a request asks for (0: the default).
pub fn interval(ms: u32) -> Result<Duration, Status> {
    match ms {
        0 => Ok(Duration::from_millis(DEFAULT_INTERVAL_MS as u64)),
        MIN_INTERVAL_MS..=MAX_INTERVAL_MS => Ok(Duration::from_millis(ms as u64)),
        _ => Err(Status::invalid_argument(format!(
            "stats_interval_ms: must be 0 (the default, {DEFAULT_INTERVAL_MS}) or {MIN_INTERVAL_MS}-{MAX_INTERVAL_MS}"
        ))),
    }
}

fn event(kind: pb::FleetEventKind, workers: Vec<pb::WorkerInfo>, stats: Option<pb::Stats>) -> pb::FleetEvent {
    pb::FleetEvent { kind: kind as i32, workers, stats, time_ms: now_ms() as i64 }
}

/// Whether two descriptions of a worker differ in what a dashboard shows (the heartbeat
/// time alone is no change).
fn changed(a: &pb::WorkerInfo, b: &pb::WorkerInfo) -> bool {
    let mut a = a.clone();
    a.last_seen_ms = b.last_seen_ms;
    a != *b
}

/// The events that take `old` to `new` (both sorted by id): at most one each of joined,
/// changed and left, each with every worker of its kind (a busy fleet changes many workers a
/// second; one event per worker would flood a dashboard).
pub fn diff(old: &[pb::WorkerInfo], new: &[pb::WorkerInfo]) -> Vec<pb::FleetEvent> {
    use pb::FleetEventKind::*;
    let before: HashMap<&str, &pb::WorkerInfo> = old.iter().map(|w| (w.worker_id.as_str(), w)).collect();
    let after: HashMap<&str, &pb::WorkerInfo> = new.iter().map(|w| (w.worker_id.as_str(), w)).collect();
    let (mut joined, mut moved) = (Vec::new(), Vec::new());
    for w in new {
        match before.get(w.worker_id.as_str()) {
            None => joined.push(w.clone()),
            Some(o) if changed(o, w) => moved.push(w.clone()),
            Some(_) => {}
        }
    }
    let left: Vec<pb::WorkerInfo> = old.iter().filter(|w| !after.contains_key(w.worker_id.as_str())).cloned().collect();
    [(WorkerJoined, joined), (WorkerChanged, moved), (WorkerLeft, left)]
        .into_iter()
        .filter(|(_, ws)| !ws.is_empty())
        .map(|(kind, ws)| event(kind, ws, None))
        .collect()
}

/// How often the hub reads the fleet while streams are open.
const HUB_POLL: Duration = Duration::from_millis(MIN_INTERVAL_MS as u64);

/// The fleet shared by every WatchFleet stream: one refresher task, running while anyone
/// watches.
#[derive(Clone, Debug, Default)]
pub struct Hub {
    shared: Arc<Mutex<Option<tokio::sync::watch::Sender<Arc<Fleet>>>>>,
}

impl Hub {
    /// A receiver of the shared fleet, starting the refresher when it is not running.
    fn subscribe(&self, handle: &Handle, first: Fleet) -> tokio::sync::watch::Receiver<Arc<Fleet>> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = shared.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(first));
        *shared = Some(tx.clone());
        let (hub, handle) = (self.clone(), handle.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HUB_POLL);
            loop {
                tick.tick().await;
                // Stop with the last stream (under the lock: a new one then starts a new task).
                {
                    let mut shared = hub.shared.lock().unwrap_or_else(|e| e.into_inner());
                    if tx.receiver_count() == 0 {
                        *shared = None;
                        return;
                    }
                }
                match handle.fleet().await {
                    Ok(f) => {
                        let _ = tx.send(Arc::new(f));
                    }
                    // The dispatcher is gone: the streams end on the shutdown token.
                    Err(_) => {
                        *hub.shared.lock().unwrap_or_else(|e| e.into_inner()) = None;
                        return;
                    }
                }
            }
        });
        rx
    }
}

/// Starts the stream with `first` as its snapshot.
pub fn start(
    hub: &Hub,
    handle: Handle,
    shutdown: CancellationToken,
    first: Fleet,
    every: Duration,
) -> impl Stream<Item = Result<pb::FleetEvent, Status>> + use<> {
    let (tx, rx) = mpsc::channel(BUFFER);
    let mut shared = hub.subscribe(&handle, first.clone());
    tokio::spawn(async move {
        let snapshot = event(pb::FleetEventKind::Snapshot, first.workers.clone(), Some(first.stats));
        if tx.send(Ok(snapshot)).await.is_err() {
            return;
        }
        let mut workers = first.workers;
        let mut tick = tokio::time::interval(every.min(WORKER_POLL));
        tick.tick().await;
        let mut stats_due = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = tx.try_send(Err(Status::unavailable("the coordinator is shutting down; reconnect")));
                    return;
                }
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            if shared.has_changed().is_err() {
                let _ = tx.try_send(Err(Status::unavailable("the coordinator is shutting down; reconnect")));
                return;
            }
            let now: Arc<Fleet> = shared.borrow_and_update().clone();
            let mut events = diff(&workers, &now.workers);
            workers = now.workers.clone();
            if tokio::time::Instant::now() >= stats_due {
                stats_due += every;
                events.push(event(pb::FleetEventKind::Stats, Vec::new(), Some(now.stats.clone())));
            }
            for ev in events {
                // A reader that fell this far behind is ended (with a status saying why, in the
                // room kept for it), never waited on.
                if tx.capacity() <= 1 {
                    let _ = tx.try_send(Err(Status::resource_exhausted(
                        "the reader fell behind; the fleet stream ends: call WatchFleet again",
                    )));
                    return;
                }
                if tx.try_send(Ok(ev)).is_err() {
                    return;
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: &str, running: &[i64], seen: i64) -> pb::WorkerInfo {
        pb::WorkerInfo {
            worker_id: id.into(),
            running_tasks: running.to_vec(),
            last_seen_ms: seen,
            ..Default::default()
        }
    }

    fn kinds(evs: &[pb::FleetEvent]) -> Vec<(i32, String)> {
        evs.iter().map(|e| (e.kind, e.workers[0].worker_id.clone())).collect()
    }

    #[test]
    fn joins_changes_and_leaves_but_not_heartbeats() {
        use pb::FleetEventKind::*;
        let old = vec![w("a", &[], 1), w("b", &[1], 1), w("c", &[], 1)];
        let new = vec![w("a", &[], 2), w("b", &[1, 2], 2), w("d", &[], 2)];
        assert_eq!(
            kinds(&diff(&old, &new)),
            vec![
                (WorkerJoined as i32, "d".into()),
                (WorkerChanged as i32, "b".into()),
                (WorkerLeft as i32, "c".into())
            ]
        );
        assert!(diff(&new, &new).is_empty());
        // Many workers changing at once are one event.
        let before: Vec<_> = (0..100).map(|i| w(&format!("w{i:03}"), &[], 1)).collect();
        let after: Vec<_> = (0..100).map(|i| w(&format!("w{i:03}"), &[i], 1)).collect();
        let evs = diff(&before, &after);
        assert_eq!((evs.len(), evs[0].workers.len()), (1, 100));
    }

    #[test]
    fn the_interval_is_bounded() {
        assert_eq!(interval(0).unwrap(), Duration::from_secs(2));
        assert_eq!(interval(500).unwrap(), Duration::from_millis(500));
        let e = interval(10).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("stats_interval_ms: "));
    }
}

//! WatchJob: a snapshot of the job, then its events in commit order, resumable by sequence
//! number. A watcher runs in its own task with its own bounded output; the dispatcher only
//! ever does one non-blocking broadcast send per event, so watchers cost it nothing and a
//! slow one cannot slow the queue. A watcher that falls behind the broadcast buffer gets a
//! fresh snapshot and continues from there: never a silent gap.
//!
//! Memory per watcher is bounded: its output buffer holds [`WATCH_OUT_BUFFER`] messages;
//! snapshots (the only part whose size grows with the job) are built by at most
//! [`SNAPSHOTS_AT_ONCE`] watchers at a time, and a watcher that does not take a snapshot
//! message within [`SLOW_WATCHER`] is ended (it may resume with `after_seq`).

use std::sync::Arc;
use std::time::Duration;

use orca_proto::pb;
use prost::Message;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use tokio_util::sync::CancellationToken;

use crate::dispatch::{Handle, Subscription};
use crate::store::Store;
use crate::{Error, convert};

/// Messages buffered towards one watcher's connection.
pub const WATCH_OUT_BUFFER: usize = 4;
/// Snapshots being read or sent at once, over all watchers.
pub const SNAPSHOTS_AT_ONCE: usize = 8;
/// How long a watcher may leave a snapshot message untaken before it is ended.
pub const SLOW_WATCHER: Duration = Duration::from_secs(10);
/// Tasks per snapshot message at most.
pub const SNAPSHOT_CHUNK: usize = 2_000;
/// Bytes of one snapshot message at most (a message of one task may pass it).
pub const SNAPSHOT_CHUNK_BYTES: usize = 256 << 10;

/// Whether a watcher that does not follow stops after this event: every task is final (a
/// cancelled job with no task at all also counts as final).
fn ends(ev: &pb::JobEvent) -> bool {
    ev.status
        .as_ref()
        .is_some_and(|s| s.all_final() || (s.total_tasks == 0 && ev.job_state == pb::JobState::Cancelled as i32))
}

/// Subscribes (so a job that does not exist is an error of the call) and starts the task
/// that feeds the stream.
/// What every watcher shares: the read side of the store, the shutdown token, and the
/// permits to build snapshots.
#[derive(Clone, Debug)]
pub struct Watchers {
    pub store: Store,
    pub shutdown: CancellationToken,
    snapshots: Arc<Semaphore>,
}

impl Watchers {
    pub fn new(store: Store, shutdown: CancellationToken) -> Watchers {
        Watchers { store, shutdown, snapshots: Arc::new(Semaphore::new(SNAPSHOTS_AT_ONCE)) }
    }
}

pub async fn start(
    handle: Handle,
    watchers: Watchers,
    req: pb::WatchJobRequest,
) -> Result<impl Stream<Item = Result<pb::JobEvent, Status>>, Error> {
    let sub = handle.subscribe(req.job_id.clone(), req.after_seq).await?;
    let (out, rx) = mpsc::channel(WATCH_OUT_BUFFER);
    tokio::spawn(async move {
        let job = req.job_id.clone();
        if let Err(e) = feed(&watchers, req, sub, out.clone()).await {
            tracing::debug!(job = %job, error = %e, "watch ended with an error");
            // Never wait on a watcher that does not read: the stream just ends.
            let _ = out.try_send(Err(e.into()));
        }
    });
    Ok(ReceiverStream::new(rx))
}

type Out = mpsc::Sender<Result<pb::JobEvent, Status>>;

/// Splits a snapshot's summaries into messages of at most [`SNAPSHOT_CHUNK`] tasks and
/// [`SNAPSHOT_CHUNK_BYTES`]; an empty job is one empty message.
fn chunked(summaries: Vec<pb::TaskSummary>) -> Vec<Vec<pb::TaskSummary>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for t in summaries {
        let n = t.encoded_len();
        let last = chunks.last().expect("one chunk at least");
        if !last.is_empty() && (last.len() == SNAPSHOT_CHUNK || bytes + n > SNAPSHOT_CHUNK_BYTES) {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += n;
        chunks.last_mut().expect("one chunk at least").push(t);
    }
    chunks
}

/// Sends a fresh snapshot; returns its sequence number and whether the stream should end.
async fn snapshot(w: &Watchers, job: &str, follow: bool, out: &Out) -> Result<Option<(u64, bool)>, Error> {
    let _permit = w.snapshots.acquire().await.map_err(|_| Error::Unavailable("shutting down".into()))?;
    let Some((rec, tasks)) = w.store.snapshot(job).await? else {
        return Err(Error::NotFound(format!("job {job} not found")));
    };
    let status = convert::status(&rec.counts);
    let job_state = convert::job_state(&rec.counts, rec.cancelled) as i32;
    let chunks = chunked(tasks.into_iter().map(convert::summary).collect());
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let ev = pb::JobEvent {
            seq: rec.last_seq,
            job_id: job.to_string(),
            kind: pb::JobEventKind::Snapshot as i32,
            status: Some(status),
            job_state,
            tasks: chunk,
            snapshot_more: i + 1 < n,
            time_ms: crate::dispatch::now_ms() as i64,
            ..Default::default()
        };
        match tokio::time::timeout(SLOW_WATCHER, out.send(Ok(ev))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ok(None),
            Err(_) => {
                let secs = SLOW_WATCHER.as_secs();
                let msg = format!("the watcher took no snapshot message for {secs} s; resume with after_seq");
                return Err(Error::ResourceExhausted(msg));
            }
        }
    }
    let end = !follow && (status.all_final() || rec.cancelled);
    Ok(Some((rec.last_seq, end)))
}

async fn feed(w: &Watchers, req: pb::WatchJobRequest, sub: Subscription, out: Out) -> Result<(), Error> {
    let job = req.job_id.as_str();
    let mut rx = sub.rx;
    let mut last = match sub.missed {
        Some(events) if req.after_seq > 0 => {
            for ev in events {
                if out.send(Ok((*ev).clone())).await.is_err() {
                    return Ok(());
                }
            }
            if !req.follow && (sub.counts.all_final() || sub.cancelled) {
                return Ok(());
            }
            sub.last_seq
        }
        _ => match snapshot(w, job, req.follow, &out).await? {
            None => return Ok(()),
            Some((_, true)) => return Ok(()),
            Some((seq, false)) => seq,
        },
    };
    loop {
        let r = tokio::select! {
            _ = w.shutdown.cancelled() => return Ok(()),
            _ = out.closed() => return Ok(()),
            r = rx.recv() => r,
        };
        match r {
            Ok(ev) => {
                if ev.seq <= last {
                    continue;
                }
                last = ev.seq;
                let end = !req.follow && ends(&ev);
                if out.send(Ok((*ev).clone())).await.is_err() || end {
                    return Ok(());
                }
            }
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(job = %job, missed = n, "watcher fell behind; sending a fresh snapshot");
                match snapshot(w, job, req.follow, &out).await? {
                    None | Some((_, true)) => return Ok(()),
                    Some((seq, false)) => last = last.max(seq),
                }
            }
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

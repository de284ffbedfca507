//! WatchJob: a snapshot of the job, then its events in commit order, resumable by sequence
//! number. A watcher runs in its own task with its own bounded output; the dispatcher only
//! ever does one non-blocking broadcast send per event, so watchers cost it nothing and a
//! slow one cannot slow the queue. A watcher that falls behind the broadcast buffer gets a
//! fresh snapshot and continues from there: never a silent gap.

use orca_proto::pb;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use tokio_util::sync::CancellationToken;

use crate::dispatch::{Handle, Subscription};
use crate::store::Store;
use crate::{Error, convert};

/// Messages buffered towards one watcher's connection.
pub const WATCH_OUT_BUFFER: usize = 256;
/// Tasks per snapshot message.
pub const SNAPSHOT_CHUNK: usize = 2_000;

/// Whether a watcher that does not follow stops after this event: every task is final (a
/// cancelled job with no task at all also counts as final).
fn ends(ev: &pb::JobEvent) -> bool {
    ev.status
        .as_ref()
        .is_some_and(|s| s.all_final() || (s.total_tasks == 0 && ev.job_state == pb::JobState::Cancelled as i32))
}

/// Subscribes (so a job that does not exist is an error of the call) and starts the task
/// that feeds the stream.
pub async fn start(
    handle: Handle,
    store: Store,
    shutdown: CancellationToken,
    req: pb::WatchJobRequest,
) -> Result<impl Stream<Item = Result<pb::JobEvent, Status>>, Error> {
    let sub = handle.subscribe(req.job_id.clone(), req.after_seq).await?;
    let (out, rx) = mpsc::channel(WATCH_OUT_BUFFER);
    tokio::spawn(async move {
        let job = req.job_id.clone();
        if let Err(e) = feed(&store, &shutdown, req, sub, out.clone()).await {
            tracing::debug!(job = %job, error = %e, "watch ended with an error");
            let _ = out.send(Err(e.into())).await;
        }
    });
    Ok(ReceiverStream::new(rx))
}

type Out = mpsc::Sender<Result<pb::JobEvent, Status>>;

/// Sends a fresh snapshot; returns its sequence number and whether the stream should end.
async fn snapshot(store: &Store, job: &str, follow: bool, out: &Out) -> Result<Option<(u64, bool)>, Error> {
    let Some((rec, tasks)) = store.snapshot(job).await? else {
        return Err(Error::NotFound(format!("job {job} not found")));
    };
    let status = convert::status(&rec.counts);
    let job_state = convert::job_state(&rec.counts, rec.cancelled) as i32;
    let summaries: Vec<pb::TaskSummary> = tasks.into_iter().map(convert::summary).collect();
    let chunks: Vec<&[pb::TaskSummary]> =
        if summaries.is_empty() { vec![&[]] } else { summaries.chunks(SNAPSHOT_CHUNK).collect() };
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let ev = pb::JobEvent {
            seq: rec.last_seq,
            job_id: job.to_string(),
            kind: pb::JobEventKind::Snapshot as i32,
            status: Some(status),
            job_state,
            tasks: chunk.to_vec(),
            snapshot_more: i + 1 < n,
            time_ms: crate::dispatch::now_ms() as i64,
            ..Default::default()
        };
        if out.send(Ok(ev)).await.is_err() {
            return Ok(None);
        }
    }
    let end = !follow && (status.all_final() || rec.cancelled);
    Ok(Some((rec.last_seq, end)))
}

async fn feed(
    store: &Store,
    shutdown: &CancellationToken,
    req: pb::WatchJobRequest,
    sub: Subscription,
    out: Out,
) -> Result<(), Error> {
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
        _ => match snapshot(store, job, req.follow, &out).await? {
            None => return Ok(()),
            Some((_, true)) => return Ok(()),
            Some((seq, false)) => seq,
        },
    };
    loop {
        let r = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
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
                match snapshot(store, job, req.follow, &out).await? {
                    None | Some((_, true)) => return Ok(()),
                    Some((seq, false)) => last = last.max(seq),
                }
            }
            Err(RecvError::Closed) => return Ok(()),
        }
    }
}

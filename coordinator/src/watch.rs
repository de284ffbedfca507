//! WatchJob: a snapshot of the job, then its events in commit order, resumable by sequence
//! number. A watcher runs in its own task with its own bounded output; the dispatcher only
//! ever does one non-blocking broadcast send per event, so watchers cost it nothing and a
//! slow one cannot slow the queue. A watcher that falls behind the broadcast buffer gets a
//! fresh snapshot and continues from there: never a silent gap.
//!
//! Memory per watcher is bounded: its output buffer holds [`WATCH_OUT_BUFFER`] messages, and
//! a snapshot (the only part whose size grows with the job) is read and sent one page of
//! [`SNAPSHOT_CHUNK`] tasks at a time, each page in its own short read, so a slow watcher
//! holds one page and no connection. A watcher that does not take a snapshot message within
//! [`SLOW_WATCHER`] is ended (it may resume with `after_seq`). Pages read at different
//! moments stay exact: an event is sent after the snapshot unless the page holding its task
//! was read after it (see [`Pages`]).

use std::time::Duration;

use orca_proto::pb;
use prost::Message;
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
pub const WATCH_OUT_BUFFER: usize = 4;
/// How long a watcher may leave a snapshot message untaken before it is ended.
pub const SLOW_WATCHER: Duration = Duration::from_secs(10);
/// Tasks per snapshot message at most.
pub const SNAPSHOT_CHUNK: usize = 2_000;
/// Bytes of one snapshot message at most (a message of one task may pass it).
pub const SNAPSHOT_CHUNK_BYTES: usize = 64 << 10;

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
    watching: Option<crate::auth::Watching>,
) -> Result<impl Stream<Item = Result<pb::JobEvent, Status>>, Error> {
    let sub = handle.subscribe(req.job_id.clone(), req.after_seq).await?;
    let (out, rx) = mpsc::channel(WATCH_OUT_BUFFER);
    tokio::spawn(async move {
        // Both count this stream until its feed ends.
        let _open = (crate::metrics::WatchStream::open(), watching);
        let job = req.job_id.clone();
        if let Err(e) = feed(&store, &shutdown, req, sub, out.clone()).await {
            tracing::debug!(job = %job, error = %e, "watch ended with an error");
            // Never wait on a watcher that does not read: the stream just ends.
            let _ = out.try_send(Err(e.into()));
        }
    });
    Ok(ReceiverStream::new(rx))
}

type Out = mpsc::Sender<Result<pb::JobEvent, Status>>;

/// What a snapshot sent: the sequence number of each page's read and the last task id it
/// covered. A page shows its tasks as of its own read, so an event is already reflected when
/// its sequence number is at most that of the page holding its task (or, for job events and
/// tasks past the last page, of the last read).
#[derive(Debug, Default)]
struct Pages {
    /// (last task id, seq), in id order.
    bounds: Vec<(i64, u64)>,
    /// The first page's seq: what the snapshot messages carry.
    first_seq: u64,
    /// The last page's seq.
    last_seq: u64,
}

impl Pages {
    fn reflects(&self, ev: &pb::JobEvent) -> bool {
        if ev.seq <= self.first_seq {
            return true;
        }
        let page = self.bounds.partition_point(|(last_id, _)| *last_id < ev.task_id);
        match self.bounds.get(page) {
            Some((_, seq)) if ev.task_id != 0 => ev.seq <= *seq,
            _ => ev.seq <= self.last_seq,
        }
    }

    /// Once events pass the last read, no page needs looking up.
    fn done(&self, seq: u64) -> bool {
        seq > self.last_seq
    }
}

/// Sends a fresh snapshot, page by page (each page one short read, sent before the next is
/// read, so a watcher costs one page of memory and holds no connection while it is slow).
/// Returns what it covered and whether the stream should end.
async fn snapshot(store: &Store, job: &str, follow: bool, out: &Out) -> Result<Option<(Pages, bool)>, Error> {
    let mut pages = Pages::default();
    let mut after = 0;
    loop {
        let Some((rec, tasks)) = store.snapshot_page(job, after, SNAPSHOT_CHUNK).await? else {
            return Err(Error::NotFound(format!("job {job} not found")));
        };
        if pages.bounds.is_empty() {
            pages.first_seq = rec.last_seq;
        }
        pages.last_seq = rec.last_seq;
        let more = tasks.len() == SNAPSHOT_CHUNK;
        after = tasks.last().map_or(after, |t| t.row.task_id);
        pages.bounds.push((if more { after } else { i64::MAX }, rec.last_seq));
        let status = convert::job_status(&rec.counts, &rec.controls, &rec.spend);
        let job_state = convert::job_state(&rec.counts, rec.cancelled) as i32;
        let chunks = chunked(tasks.into_iter().map(convert::summary).collect());
        let n = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let ev = pb::JobEvent {
                seq: pages.first_seq,
                job_id: job.to_string(),
                kind: pb::JobEventKind::Snapshot as i32,
                status: Some(status.clone()),
                job_state,
                tasks: chunk,
                snapshot_more: more || i + 1 < n,
                time_ms: crate::dispatch::now_ms() as i64,
                ..Default::default()
            };
            if !send_within(out, ev).await? {
                return Ok(None);
            }
        }
        if !more {
            let end = !follow && (status.all_final() || rec.cancelled);
            return Ok(Some((pages, end)));
        }
    }
}

/// Splits a page's summaries into messages of at most [`SNAPSHOT_CHUNK_BYTES`] (a page has
/// at most [`SNAPSHOT_CHUNK`] tasks); an empty page is one empty message.
fn chunked(summaries: Vec<pb::TaskSummary>) -> Vec<Vec<pb::TaskSummary>> {
    let mut chunks = vec![Vec::new()];
    let mut bytes = 0;
    for t in summaries {
        let n = t.encoded_len();
        let last = chunks.last().expect("one chunk at least");
        if !last.is_empty() && bytes + n > SNAPSHOT_CHUNK_BYTES {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += n;
        chunks.last_mut().expect("one chunk at least").push(t);
    }
    chunks
}

/// Sends one snapshot message; false when the watcher is gone, an error when it took
/// nothing for [`SLOW_WATCHER`].
async fn send_within(out: &Out, ev: pb::JobEvent) -> Result<bool, Error> {
    match tokio::time::timeout(SLOW_WATCHER, out.send(Ok(ev))).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(_)) => Ok(false),
        Err(_) => {
            let secs = SLOW_WATCHER.as_secs();
            let msg = format!("the watcher took no snapshot message for {secs} s; resume with after_seq");
            Err(Error::ResourceExhausted(msg))
        }
    }
}

/// Where a watcher stands: the last event sent, the pages of its last snapshot, and (for a
/// watcher that does not follow) the sequence number at which it ends.
#[derive(Debug, Default)]
struct Cursor {
    last: u64,
    pages: Option<Pages>,
    end_at: Option<u64>,
}

impl Cursor {
    /// After a snapshot: events up to its first read are in it; a finished job still gets the
    /// events its earlier pages missed, then ends.
    fn snapshot(&mut self, pages: Pages, end: bool) {
        self.last = self.last.max(pages.first_seq);
        self.end_at = end.then_some(pages.last_seq);
        self.pages = Some(pages);
    }

    /// Whether the event goes to the watcher.
    fn wants(&self, ev: &pb::JobEvent) -> bool {
        ev.seq > self.last && !self.pages.as_ref().is_some_and(|p| p.reflects(ev))
    }

    /// Whether the stream is over once this event (sent or not) is behind.
    fn passed(&mut self, seq: u64) -> bool {
        if self.pages.as_ref().is_some_and(|p| p.done(seq)) {
            self.pages = None;
        }
        self.end_at.is_some_and(|at| seq >= at)
    }

    /// A snapshot read all at one moment leaves nothing to catch up on.
    fn finished(&self) -> bool {
        self.end_at.is_some() && self.pages.as_ref().is_some_and(|p| p.first_seq == p.last_seq)
    }
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
    let mut at = Cursor::default();
    match sub.missed {
        Some(events) if req.after_seq > 0 => {
            for ev in events {
                if out.send(Ok((*ev).clone())).await.is_err() {
                    return Ok(());
                }
            }
            if !req.follow && (sub.counts.all_final() || sub.cancelled) {
                return Ok(());
            }
            at.last = sub.last_seq;
        }
        _ => match snapshot(store, job, req.follow, &out).await? {
            None => return Ok(()),
            Some((pages, end)) => at.snapshot(pages, end),
        },
    }
    while !at.finished() {
        let r = tokio::select! {
            // UNAVAILABLE, not a normal end: the client reconnects and resumes instead of
            // taking the end for an idle job.
            _ = shutdown.cancelled() => return Err(stopping()),
            _ = out.closed() => return Ok(()),
            r = rx.recv() => r,
        };
        match r {
            Ok(ev) => {
                if at.wants(&ev) {
                    at.last = ev.seq;
                    let end = !req.follow && ends(&ev);
                    if out.send(Ok((*ev).clone())).await.is_err() || end {
                        return Ok(());
                    }
                }
                if at.passed(ev.seq) {
                    return Ok(());
                }
            }
            Err(RecvError::Lagged(n)) => {
                tracing::debug!(job = %job, missed = n, "watcher fell behind; sending a fresh snapshot");
                match snapshot(store, job, req.follow, &out).await? {
                    None => return Ok(()),
                    Some((pages, end)) => at.snapshot(pages, end),
                }
            }
            Err(RecvError::Closed) if shutdown.is_cancelled() => return Err(stopping()),
            Err(RecvError::Closed) => return Ok(()),
        }
    }
    Ok(())
}

fn stopping() -> Error {
    Error::Unavailable("the coordinator is shutting down; reconnect and resume after the last seq".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, task_id: i64) -> pb::JobEvent {
        pb::JobEvent { seq, task_id, ..Default::default() }
    }

    #[test]
    fn an_event_is_reflected_when_the_page_of_its_task_was_read_after_it() {
        // Pages: tasks ..=100 read at seq 10, ..=200 at seq 15, the rest at seq 20.
        let p = Pages { bounds: vec![(100, 10), (200, 15), (i64::MAX, 20)], first_seq: 10, last_seq: 20 };
        assert!(p.reflects(&ev(9, 150)), "before the first read");
        assert!(!p.reflects(&ev(12, 50)), "page 1 was read before it");
        assert!(p.reflects(&ev(12, 150)), "page 2 was read after it");
        assert!(!p.reflects(&ev(16, 200)));
        assert!(p.reflects(&ev(18, 5_000)), "a task past the pages, read at the last read");
        assert!(!p.reflects(&ev(21, 5_000)));
        assert!(p.reflects(&ev(19, 0)) && !p.reflects(&ev(21, 0)), "job events go by the last read");
        assert!(!p.done(20) && p.done(21));
    }

    #[test]
    fn pages_are_cut_into_messages_by_bytes() {
        let summary = |id| pb::TaskSummary { task_id: id, reason: "r".repeat(200), ..Default::default() };
        let chunks = chunked((0..SNAPSHOT_CHUNK as i64).map(summary).collect());
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| c.iter().map(Message::encoded_len).sum::<usize>() <= SNAPSHOT_CHUNK_BYTES));
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), SNAPSHOT_CHUNK);
        assert_eq!(chunked(vec![]), vec![Vec::<pb::TaskSummary>::new()]);
    }
}

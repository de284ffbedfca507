//! The resumable watch stream: WatchJob, reconnected with jittered backoff after transport
//! errors, resumed after the last sequence number delivered. A snapshot cut short by a
//! disconnect is not counted as delivered, so the server sends the missed events or a fresh
//! snapshot.

use orca_proto::pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

use crate::Error;

/// Events buffered between the connection and the consumer.
const BUFFER: usize = 256;

/// Options of [`crate::Client::watch`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WatchOptions {
    /// Resume after this sequence number (0: start with a snapshot).
    pub after_seq: u64,
    /// Keep watching after every task is final.
    pub follow: bool,
    /// Give up after this many reconnects in a row without an event (0: never).
    pub max_reconnects: u32,
}

pub(crate) fn start(
    client: crate::Client,
    job: String,
    options: WatchOptions,
) -> impl Stream<Item = Result<pb::JobEvent, Error>> {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(run(client, job, options, tx));
    ReceiverStream::new(rx)
}

async fn run(
    mut client: crate::Client,
    job: String,
    options: WatchOptions,
    tx: mpsc::Sender<Result<pb::JobEvent, Error>>,
) {
    let mut delivered = options.after_seq;
    let mut backoff = orca_proto::contract::Backoff::default();
    let mut failures = 0u32;
    // Whether the last status seen had every task final (or the job cancelled): only then is
    // a normal end of the stream the job going idle rather than a coordinator stopping.
    let mut idle = false;
    loop {
        let req = pb::WatchJobRequest { job_id: job.clone(), after_seq: delivered, follow: options.follow };
        let err = match client.raw().watch_job(client.request(req)).await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                let mut got = 0u64;
                loop {
                    // Nobody reads any more: stop watching (and let the server forget us).
                    let next = tokio::select! {
                        m = stream.message() => m,
                        _ = tx.closed() => return,
                    };
                    match next {
                        Ok(Some(ev)) => {
                            got += 1;
                            failures = 0;
                            backoff.reset();
                            // While a snapshot spans several messages, the resume point
                            // stays before it.
                            let partial = ev.kind == pb::JobEventKind::Snapshot as i32 && ev.snapshot_more;
                            let seq = ev.seq;
                            if let Some(s) = &ev.status {
                                idle = s.finished() == s.total_tasks || ev.job_state == pb::JobState::Cancelled as i32;
                            }
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                            if !partial {
                                delivered = delivered.max(seq);
                            }
                        }
                        // The server ended the stream because the job is idle. A coordinator
                        // older than 0.2 also ended it this way when it stopped: reconnect,
                        // unless this stream said nothing at all (the server had nothing more).
                        Ok(None) if idle || got == 0 => return,
                        Ok(None) => break tonic::Status::unavailable("the watch ended before the job was idle"),
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        let transient = reconnectable(&err);
        let err = Error::from(err);
        if !transient {
            let _ = tx.send(Err(err)).await;
            return;
        }
        failures += 1;
        if options.max_reconnects > 0 && failures > options.max_reconnects {
            let _ = tx.send(Err(err)).await;
            return;
        }
        let delay = backoff.next(draw());
        tracing::debug!(job = %job, error = %err, delay_ms = delay.as_millis() as u64, "watch reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tx.closed() => return,
        }
        // With standby coordinators, the next stream goes to whichever leads now.
        if let Ok(c) = client.follow_leader().await {
            client = c;
        }
    }
}

/// Whether a watch that failed with this status is worth reopening: a broken connection or a
/// restarting coordinator is, a refused request is not.
fn reconnectable(s: &tonic::Status) -> bool {
    use tonic::Code::*;
    !matches!(
        s.code(),
        InvalidArgument
            | NotFound
            | FailedPrecondition
            | PermissionDenied
            | Unauthenticated
            | Unimplemented
            | OutOfRange
    )
}

/// A cheap jitter draw in `[0, 1)` (no rand dependency): the clock's sub-second noise.
fn draw() -> f64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    f64::from(nanos) / 1e9
}

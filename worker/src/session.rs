//! The worker's session with the coordinator: one actor that owns the connection, the
//! attempts this worker holds and the queue of reports, and reacts to events (stream
//! messages, finished attempts, RPC results, signals). RPCs run in spawned tasks that send
//! their result back as an event, so the actor never waits on the network.
//!
//! What stays true:
//! - the worker id is chosen once per process and kept across reconnects, and every
//!   (re)connection registers with the attempts still held, so the coordinator keeps their
//!   leases; attempts it calls stale are stopped and their reports dropped;
//! - liveness is the Listen stream: when it breaks the worker reconnects with jittered
//!   exponential backoff while its agents keep running, and heartbeats (which only work while
//!   the stream is open) name every held attempt;
//! - an attempt is held from its assignment until its final report was answered (accepted or
//!   fenced off); reports queue while disconnected and go out in batches, one request in
//!   flight at a time, in order;
//! - never more agents run than slots: an assignment beyond them, or any assignment while
//!   draining, is handed back at once;
//! - on SIGTERM or SIGINT the worker drains: no new work, running attempts get the grace
//!   period, then their groups are killed and they are handed back; before reports go out it
//!   lowers its registered slots to what still runs, and it closes its stream (and waits for
//!   the coordinator to notice) before the last reports, so that no new task is leased to a
//!   worker on its way out. A second signal kills at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orca_proto::pb;
use pb::worker_gateway_client::WorkerGatewayClient;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::Ctx;
use crate::agent::{self, Stop, StopReason};
use crate::config::AgentKind;
use crate::task::{self, Final};

/// Events waiting for the actor.
pub const EVENT_BUFFER: usize = 4_096;
/// Reports queued beyond which new progress reports are dropped.
pub const MAX_PENDING_PROGRESS: usize = 1_000;
/// Bytes of one progress message.
pub const MAX_PROGRESS_BYTES: usize = 16 << 10;
/// Reports in one request at most.
pub const MAX_BATCH_REPORTS: usize = 1_000;
/// Encoded bytes of one report request at most (the coordinator takes 256 MiB messages).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Largest gRPC message sent or received.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Bound on one unary call.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on connecting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff: first and largest delay (jittered).
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Pause before sending reports again after a failed report call.
pub const REPORT_RETRY: Duration = Duration::from_millis(500);
/// Bound on delivering the last reports at shutdown.
pub const FLUSH_BOUND: Duration = Duration::from_secs(15);

type Client = WorkerGatewayClient<Channel>;
type Key = (i64, u32);

/// A signal the worker reacts to.
#[derive(Clone, Copy, Debug)]
pub enum Signal {
    Terminate,
    Interrupt,
}

enum Event {
    /// `resp` is None for a connection made only to deliver the last reports.
    Connected {
        epoch: u64,
        client: Client,
        resp: Option<pb::RegisterResponse>,
        stream: CancellationToken,
    },
    ConnectFailed {
        epoch: u64,
        error: String,
    },
    Listen {
        msg: pb::ListenResponse,
    },
    StreamEnded {
        epoch: u64,
        error: String,
    },
    Progress {
        key: Key,
        message: String,
    },
    Finished {
        key: Key,
        fin: Final,
    },
    ReportDone {
        batch: Vec<pb::Report>,
        result: Result<pb::ReportResponse, tonic::Status>,
    },
    HeartbeatDone {
        result: Result<pb::HeartbeatResponse, tonic::Status>,
    },
    Closed,
}

/// Jittered exponential backoff.
struct Backoff {
    n: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = BACKOFF_MIN.saturating_mul(1 << self.n.min(10)).min(BACKOFF_MAX);
        self.n = self.n.saturating_add(1);
        // Between half and all of it, so that a fleet does not reconnect in lockstep.
        base.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    fn reset(&mut self) {
        self.n = 0;
    }
}

enum Link {
    Down {
        retry_at: Instant,
    },
    Connecting,
    /// `stream` ends the Listen stream's task.
    Up {
        stream: CancellationToken,
    },
}

/// An attempt this worker holds.
struct Held {
    /// Present while its agent runs.
    stop: Option<watch::Sender<Option<Stop>>>,
    /// Being stopped because the coordinator cancelled it or fenced it off: its slot is
    /// already free on the coordinator's side.
    revoked: bool,
}

struct Closing {
    deadline: Instant,
    /// The coordinator noticed the stream is closed (or there was none).
    closed: bool,
}

struct Session {
    ctx: Arc<Ctx>,
    tx: mpsc::Sender<Event>,
    held: HashMap<Key, Held>,
    outbox: VecDeque<pb::Report>,
    epoch: u64,
    link: Link,
    client: Option<Client>,
    backoff: Backoff,
    heartbeat_every: Duration,
    next_heartbeat: Option<Instant>,
    heartbeat_in_flight: bool,
    report_in_flight: bool,
    report_retry_at: Option<Instant>,
    dropped_progress: u64,
    /// Set on the first signal: when the grace period ends.
    drain_until: Option<Instant>,
    grace_over: bool,
    closing: Option<Closing>,
}

fn far(at: Option<Instant>) -> tokio::time::Instant {
    match at {
        Some(t) => t.into(),
        None => tokio::time::Instant::now() + Duration::from_secs(86_400 * 365),
    }
}

fn task_ref(k: &Key) -> pb::TaskRef {
    pb::TaskRef { task_id: k.0, attempt: k.1 }
}

fn is_final(r: &pb::Report) -> bool {
    use pb::report::Body;
    matches!(r.body, Some(Body::Completed(_) | Body::Failed(_) | Body::HandedBack(_)))
}

async fn unary<T>(fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, tonic::Status> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer from the coordinator")),
    }
}

async fn channel(url: &str) -> Result<Client, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let ch = endpoint.connect().await.map_err(|e| format!("cannot connect to {url}: {e}"))?;
    Ok(WorkerGatewayClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Connects, registers, opens the Listen stream, then forwards its messages until it ends or
/// `stream` is cancelled.
async fn connect(
    url: String,
    reg: pb::RegisterRequest,
    epoch: u64,
    tx: mpsc::Sender<Event>,
    stream_token: CancellationToken,
) {
    let worker_id = reg.worker_id.clone();
    let opened = async {
        let mut client = channel(&url).await?;
        let resp = unary(client.register(reg)).await.map_err(|s| format!("register: {}", s.message()))?;
        let stream = tokio::time::timeout(RPC_TIMEOUT, client.listen(pb::ListenRequest { worker_id }))
            .await
            .map_err(|_| "listen: no answer".to_string())?
            .map_err(|s| format!("listen: {}", s.message()))?
            .into_inner();
        Ok::<_, String>((client, resp, stream))
    }
    .await;
    let (client, resp, mut stream) = match opened {
        Ok(x) => x,
        Err(error) => {
            let _ = tx.send(Event::ConnectFailed { epoch, error }).await;
            return;
        }
    };
    if tx.send(Event::Connected { epoch, client, resp: Some(resp), stream: stream_token.clone() }).await.is_err() {
        return;
    }
    let error = loop {
        tokio::select! {
            _ = stream_token.cancelled() => return,
            m = stream.message() => match m {
                Ok(Some(msg)) => {
                    if tx.send(Event::Listen { msg }).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break "the coordinator closed the stream".to_string(),
                Err(s) => break s.message().to_string(),
            },
        }
    };
    let _ = tx.send(Event::StreamEnded { epoch, error }).await;
}

/// Runs the worker until it has drained after a signal.
pub async fn run(ctx: Arc<Ctx>, mut signals: mpsc::Receiver<Signal>) {
    let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
    let mut s = Session {
        ctx,
        tx,
        held: HashMap::new(),
        outbox: VecDeque::new(),
        epoch: 0,
        link: Link::Down { retry_at: Instant::now() },
        client: None,
        backoff: Backoff { n: 0 },
        heartbeat_every: Duration::from_secs(10),
        next_heartbeat: None,
        heartbeat_in_flight: false,
        report_in_flight: false,
        report_retry_at: None,
        dropped_progress: 0,
        drain_until: None,
        grace_over: false,
        closing: None,
    };
    let mut signals_open = true;
    loop {
        s.step();
        if s.done() {
            break;
        }
        let retry_at = match &s.link {
            Link::Down { retry_at } if s.closing.is_none() || !s.outbox.is_empty() => Some(*retry_at),
            _ => None,
        };
        let heartbeat_at = if s.heartbeat_in_flight { None } else { s.next_heartbeat };
        let grace_at = if s.grace_over { None } else { s.drain_until };
        let closing_at = s.closing.as_ref().map(|c| c.deadline);
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => s.handle(ev),
                None => break,
            },
            sig = signals.recv(), if signals_open => match sig {
                Some(sig) => s.on_signal(sig),
                None => signals_open = false,
            },
            _ = tokio::time::sleep_until(far(retry_at)), if retry_at.is_some() => s.connect(),
            _ = tokio::time::sleep_until(far(heartbeat_at)), if heartbeat_at.is_some() => s.heartbeat(),
            _ = tokio::time::sleep_until(far(s.report_retry_at)), if s.report_retry_at.is_some() => {
                s.report_retry_at = None;
            }
            _ = tokio::time::sleep_until(far(grace_at)), if grace_at.is_some() => {
                tracing::warn!(running = s.running(), "grace period over: stopping the remaining agents");
                s.grace_over = true;
                s.stop_all(false);
            }
            _ = tokio::time::sleep_until(far(closing_at)), if closing_at.is_some() => {
                tracing::warn!(undelivered = s.outbox.len(), "could not deliver every report before exiting");
                break;
            }
        }
    }
    tracing::info!("worker stopped");
}

impl Session {
    /// Agents running, including those being stopped.
    fn running(&self) -> usize {
        self.held.values().filter(|h| h.stop.is_some()).count()
    }

    /// Agents running that occupy a slot (not revoked).
    fn busy(&self) -> usize {
        self.held.values().filter(|h| h.stop.is_some() && !h.revoked).count()
    }

    fn draining(&self) -> bool {
        self.drain_until.is_some()
    }

    fn done(&self) -> bool {
        self.closing.as_ref().is_some_and(|c| c.closed) && self.outbox.is_empty() && !self.report_in_flight
    }

    fn register_request(&self, slots: u32, running: Vec<pb::TaskRef>) -> pb::RegisterRequest {
        let c = &self.ctx.config;
        pb::RegisterRequest {
            worker_id: self.ctx.worker_id.clone(),
            name: c.name.clone(),
            hostname: c.hostname.clone(),
            labels: c.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            slots,
            agent_kinds: vec![c.agent.name().to_string()],
            running,
        }
    }

    /// Work that follows from the state: start closing, send reports.
    fn step(&mut self) {
        if self.draining() && self.closing.is_none() && self.running() == 0 {
            self.start_closing();
        }
        self.send_reports();
    }

    fn connect(&mut self) {
        self.epoch += 1;
        let epoch = self.epoch;
        self.link = Link::Connecting;
        let url = self.ctx.config.coordinator.clone();
        let tx = self.tx.clone();
        if self.closing.is_some() {
            // Only to deliver the last reports: no registration, no stream.
            tokio::spawn(async move {
                let ev = match channel(&url).await {
                    Ok(client) => Event::Connected { epoch, client, resp: None, stream: CancellationToken::new() },
                    Err(error) => Event::ConnectFailed { epoch, error },
                };
                let _ = tx.send(ev).await;
            });
            return;
        }
        let held: Vec<pb::TaskRef> = self.held.keys().map(task_ref).collect();
        let slots = if self.draining() { (held.len() as u32).max(1) } else { self.ctx.config.slots };
        let reg = self.register_request(slots, held);
        tokio::spawn(connect(url, reg, epoch, tx, CancellationToken::new()));
    }

    fn lost_link(&mut self, error: &str) {
        self.client = None;
        self.next_heartbeat = None;
        let delay = self.backoff.next();
        tracing::warn!(error, retry_in_ms = delay.as_millis() as u64, "no link to the coordinator; reconnecting");
        self.link = Link::Down { retry_at: Instant::now() + delay };
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Connected { epoch, client, resp, stream } => {
                if epoch != self.epoch {
                    stream.cancel();
                    return;
                }
                self.client = Some(client);
                self.report_retry_at = None;
                self.link = Link::Up { stream };
                let Some(resp) = resp else { return };
                self.backoff.reset();
                self.heartbeat_every = Duration::from_secs(resp.heartbeat_interval_seconds.max(1) as u64);
                self.next_heartbeat = Some(Instant::now() + self.heartbeat_every);
                tracing::info!(
                    worker = %resp.worker_id,
                    slots = self.ctx.config.slots,
                    held = self.held.len(),
                    lease_seconds = resp.lease_seconds,
                    "connected to the coordinator"
                );
                for r in resp.stale {
                    self.drop_attempt((r.task_id, r.attempt), StopReason::Stale);
                }
            }
            Event::ConnectFailed { epoch, error } => {
                if epoch == self.epoch {
                    self.lost_link(&error);
                }
            }
            Event::StreamEnded { epoch, error } => {
                if epoch == self.epoch && self.closing.is_none() {
                    self.lost_link(&error);
                }
            }
            Event::Listen { msg } => self.on_listen(msg),
            Event::Progress { key, message } => {
                if self.held.get(&key).is_some_and(|h| h.stop.is_some()) {
                    // Progress is best effort; final reports are never dropped.
                    if self.outbox.len() >= MAX_PENDING_PROGRESS {
                        self.dropped_progress += 1;
                        return;
                    }
                    let message = agent::head_str(&message, MAX_PROGRESS_BYTES).to_string();
                    self.outbox.push_back(pb::Report {
                        task_id: key.0,
                        attempt: key.1,
                        body: Some(pb::report::Body::Progress(pb::Progress { message })),
                    });
                }
            }
            Event::Finished { key, fin } => {
                let Some(h) = self.held.get_mut(&key) else { return };
                h.stop = None;
                match fin {
                    Final::Report(body) => {
                        self.outbox.push_back(pb::Report { task_id: key.0, attempt: key.1, body: Some(body) })
                    }
                    Final::Silent => {
                        self.held.remove(&key);
                    }
                }
            }
            Event::ReportDone { batch, result } => {
                self.report_in_flight = false;
                match result {
                    Ok(resp) => {
                        for (rep, ack) in batch.iter().zip(resp.acks.iter()) {
                            if !ack.accepted {
                                if is_final(rep) {
                                    tracing::warn!(task = rep.task_id, attempt = rep.attempt, reason = %ack.reason, "report rejected (fenced off)");
                                } else {
                                    tracing::debug!(task = rep.task_id, attempt = rep.attempt, reason = %ack.reason, "progress rejected");
                                }
                            }
                        }
                        for rep in batch.iter().filter(|r| is_final(r)) {
                            self.held.remove(&(rep.task_id, rep.attempt));
                        }
                    }
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        // A retry would be refused the same way; the leases of these attempts
                        // expire and their tasks run again.
                        tracing::error!(error = %status.message(), reports = batch.len(), "reports refused; dropping them");
                        for rep in batch.iter().filter(|r| is_final(r)) {
                            self.held.remove(&(rep.task_id, rep.attempt));
                        }
                    }
                    Err(status) => {
                        tracing::warn!(error = %status.message(), reports = batch.len(), "report failed; will retry");
                        for rep in batch.into_iter().rev() {
                            self.outbox.push_front(rep);
                        }
                        self.report_retry_at = Some(Instant::now() + REPORT_RETRY);
                    }
                }
            }
            Event::HeartbeatDone { result } => {
                self.heartbeat_in_flight = false;
                match result {
                    Ok(resp) => {
                        for r in resp.stale {
                            self.drop_attempt((r.task_id, r.attempt), StopReason::Stale);
                        }
                    }
                    Err(status) => tracing::debug!(error = %status.message(), "heartbeat refused"),
                }
            }
            Event::Closed => {
                if let Some(c) = self.closing.as_mut() {
                    c.closed = true;
                }
            }
        }
    }

    fn on_listen(&mut self, msg: pb::ListenResponse) {
        for c in msg.cancellations {
            let key = (c.task_id, c.attempt);
            if self.held.contains_key(&key) {
                tracing::info!(task = c.task_id, attempt = c.attempt, reason = %c.reason, "attempt cancelled");
                self.drop_attempt(key, StopReason::Cancelled);
            }
        }
        for a in msg.assignments {
            let key = (a.task_id, a.attempt);
            if self.held.contains_key(&key) {
                continue;
            }
            if self.draining() {
                self.hand_back(key, "worker is shutting down");
            } else if self.busy() >= self.ctx.config.slots as usize {
                tracing::warn!(
                    task = a.task_id,
                    attempt = a.attempt,
                    "assignment beyond the free slots; handing it back"
                );
                self.hand_back(key, "worker has no free slot");
            } else {
                self.start(a);
            }
        }
    }

    fn hand_back(&mut self, key: Key, reason: &str) {
        self.held.insert(key, Held { stop: None, revoked: false });
        self.outbox.push_back(pb::Report {
            task_id: key.0,
            attempt: key.1,
            body: Some(pb::report::Body::HandedBack(pb::HandedBack { reason: reason.into() })),
        });
    }

    fn start(&mut self, a: pb::Assignment) {
        let key = (a.task_id, a.attempt);
        if self.ctx.config.agent == AgentKind::Noop {
            // No process, no workspace: complete in place (benchmarks of the queue).
            self.held.insert(key, Held { stop: None, revoked: false });
            let result = Some(pb::TaskResult::default());
            let body = pb::report::Body::Completed(pb::Completed { result });
            self.outbox.push_back(pb::Report { task_id: key.0, attempt: key.1, body: Some(body) });
            return;
        }
        let (stop_tx, stop_rx) = watch::channel(None);
        self.held.insert(key, Held { stop: Some(stop_tx), revoked: false });
        tracing::debug!(task = a.task_id, attempt = a.attempt, job = %a.job_id, "attempt started");
        let ctx = self.ctx.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            let inner = tokio::spawn(async move {
                let mut progress = move |message: String| {
                    // Progress is best effort: dropped when the actor is behind.
                    let _ = progress_tx.try_send(Event::Progress { key, message });
                };
                task::run(&ctx, a, stop_rx, &mut progress).await
            });
            let fin = match inner.await {
                Ok(fin) => fin,
                Err(e) => {
                    tracing::error!(task = key.0, attempt = key.1, error = %e, "attempt panicked");
                    Final::Report(pb::report::Body::Failed(pb::Failed {
                        result: Some(pb::TaskResult { error: format!("worker error: {e}"), ..Default::default() }),
                        retryable: true,
                    }))
                }
            };
            let _ = tx.send(Event::Finished { key, fin }).await;
        });
    }

    /// Forgets an attempt the coordinator no longer counts as ours: stops its agent (no report
    /// follows) or drops its pending reports.
    fn drop_attempt(&mut self, key: Key, reason: StopReason) {
        let Some(h) = self.held.get_mut(&key) else { return };
        match &h.stop {
            Some(stop) => {
                tracing::info!(task = key.0, attempt = key.1, ?reason, "stopping attempt");
                let _ = stop.send(Some(Stop { reason, immediate: false }));
                h.revoked = true;
            }
            None => {
                self.held.remove(&key);
            }
        }
        self.outbox.retain(|r| (r.task_id, r.attempt) != key);
    }

    fn stop_all(&mut self, immediate: bool) {
        for h in self.held.values() {
            if let Some(stop) = &h.stop {
                let _ = stop.send(Some(Stop { reason: StopReason::Shutdown, immediate }));
            }
        }
    }

    fn on_signal(&mut self, sig: Signal) {
        if self.draining() {
            tracing::warn!(?sig, running = self.running(), "second signal: killing the agents now");
            self.grace_over = true;
            self.stop_all(true);
            return;
        }
        let grace = Duration::from_secs(self.ctx.config.grace_seconds);
        tracing::info!(?sig, running = self.running(), grace_seconds = grace.as_secs(), "draining: taking no new work");
        self.drain_until = Some(Instant::now() + grace);
        // Free slots would keep drawing assignments that are only handed back: register
        // again with no more slots than attempts held (closing ends the stream when none is).
        if let (Link::Up { .. }, Some(client)) = (&self.link, self.client.clone())
            && !self.held.is_empty()
        {
            let held: Vec<pb::TaskRef> = self.held.keys().map(task_ref).collect();
            let reg = self.register_request(held.len() as u32, held);
            tokio::spawn(async move {
                let mut client = client;
                if let Err(s) = unary(client.register(reg)).await {
                    tracing::debug!(error = %s.message(), "lowering slots failed");
                }
            });
        }
    }

    /// Nothing runs any more: close the stream, wait until the coordinator noticed, then
    /// deliver the last reports.
    fn start_closing(&mut self) {
        let deadline = Instant::now() + FLUSH_BOUND;
        self.next_heartbeat = None;
        // A connection still being made is abandoned.
        self.epoch += 1;
        let link = std::mem::replace(&mut self.link, Link::Down { retry_at: Instant::now() });
        let closed = match (link, self.client.clone()) {
            (Link::Up { stream }, Some(client)) => {
                stream.cancel();
                self.link = Link::Up { stream };
                let tx = self.tx.clone();
                let worker_id = self.ctx.worker_id.clone();
                tokio::spawn(confirm_closed(client, worker_id, deadline, tx));
                false
            }
            _ => {
                self.client = None;
                true
            }
        };
        tracing::info!(reports = self.outbox.len(), "nothing runs; delivering the last reports");
        self.closing = Some(Closing { deadline, closed });
    }

    fn heartbeat(&mut self) {
        let Some(client) = self.client.clone() else {
            self.next_heartbeat = None;
            return;
        };
        self.next_heartbeat = Some(Instant::now() + self.heartbeat_every);
        self.heartbeat_in_flight = true;
        let req = pb::HeartbeatRequest {
            worker_id: self.ctx.worker_id.clone(),
            running: self.held.keys().map(task_ref).collect(),
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut client = client;
            let result = unary(client.heartbeat(req)).await;
            let _ = tx.send(Event::HeartbeatDone { result }).await;
        });
    }

    fn send_reports(&mut self) {
        if self.report_in_flight || self.outbox.is_empty() || self.report_retry_at.is_some() {
            return;
        }
        let Some(client) = self.client.clone() else { return };
        if self.closing.as_ref().is_some_and(|c| !c.closed) {
            return;
        }
        if self.closing.is_none() && !matches!(self.link, Link::Up { .. }) {
            return;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(r) = self.outbox.front() {
            let n = r.encoded_len();
            if !batch.is_empty() && (batch.len() >= MAX_BATCH_REPORTS || bytes + n > MAX_BATCH_BYTES) {
                break;
            }
            bytes += n;
            batch.push(self.outbox.pop_front().expect("front exists"));
        }
        // While draining with agents still running, first lower the registered slots to what
        // remains, so that the slots these reports free are not filled again.
        let reregister = if self.draining() && self.closing.is_none() {
            let finals: HashSet<Key> = batch.iter().filter(|r| is_final(r)).map(|r| (r.task_id, r.attempt)).collect();
            let remaining = self.held.keys().filter(|k| !finals.contains(k)).count();
            // Name every attempt still held, those reported in this batch too (their reports
            // follow; an attempt left out would be re-queued at once), with the slots that
            // will remain.
            let all: Vec<pb::TaskRef> = self.held.keys().map(task_ref).collect();
            Some(self.register_request((remaining as u32).max(1), all))
        } else {
            None
        };
        if self.dropped_progress > 0 {
            tracing::warn!(dropped = self.dropped_progress, "progress reports dropped while the queue was full");
            self.dropped_progress = 0;
        }
        self.report_in_flight = true;
        let req = pb::ReportRequest { worker_id: self.ctx.worker_id.clone(), reports: batch.clone() };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut client = client;
            if let Some(reg) = reregister
                && let Err(s) = unary(client.register(reg)).await
            {
                tracing::debug!(error = %s.message(), "lowering slots failed");
            }
            let result = unary(client.report(req)).await;
            let _ = tx.send(Event::ReportDone { batch, result }).await;
        });
    }
}

/// Polls until the coordinator refuses a heartbeat for want of a stream (it processed the
/// disconnect), or the deadline passes.
async fn confirm_closed(mut client: Client, worker_id: String, deadline: Instant, tx: mpsc::Sender<Event>) {
    loop {
        let req = pb::HeartbeatRequest { worker_id: worker_id.clone(), running: vec![] };
        match unary(client.heartbeat(req)).await {
            Ok(_) => {}
            Err(_) => break,
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tx.send(Event::Closed).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_and_capped() {
        let mut b = Backoff { n: 0 };
        let first = b.next();
        assert!(first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN, "{first:?}");
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = b.next();
            assert!(last <= BACKOFF_MAX);
        }
        assert!(last >= BACKOFF_MAX / 2, "{last:?}");
        b.reset();
        assert!(b.next() <= BACKOFF_MIN);
    }
}

//! The worker's session with the coordinator: a thin shell around [`state::State`], which
//! decides everything (what is held, what to report, when to connect, heartbeat, drain). The
//! shell owns what the state must not: the gRPC client, the Listen stream, the agents' stop
//! channels and the spawned calls. Every call runs in a spawned task that sends its answer
//! back as an [`Event`], so the loop never waits on the network; each event becomes a
//! [`state::Input`], each [`state::Effect`] a call, a spawned attempt or a stop request.
//!
//! What stays true here:
//! - the worker id is chosen once per process and kept across reconnects;
//! - liveness is the Listen stream: its task forwards assignments and cancellations until the
//!   stream ends or the state closes it;
//! - each connection has an epoch; answers about an older one (a connection abandoned while
//!   being made, a stream that ended before) never reach the state;
//! - an attempt's agent runs in its own task and always ends in one `Finished` event, even
//!   when it panics.

mod context;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orca_proto::contract::limits;
use orca_proto::pb;
use orca_proto::systemd;
use pb::worker_gateway_client::WorkerGatewayClient;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::Ctx;
use crate::agent::Stop;
use crate::config::AgentKind;
use crate::task::{self, Final};
use crate::upkeep;
pub use state::Signal;
use state::{CallError, Effect, Input, Key, Registration, Settings, State};

/// Events waiting for the loop.
pub const EVENT_BUFFER: usize = 4_096;
/// Notices of the upkeep waiting for the loop.
pub const UPKEEP_BUFFER: usize = 16;
/// Bound on one unary call.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on connecting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Client = WorkerGatewayClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call when the worker has a token.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// From the worker's token (`--token-file`, `ORCA_TOKEN_FILE` or `ORCA_TOKEN`).
    pub fn new(token: Option<&str>) -> Result<Bearer, String> {
        match token {
            None => Ok(Bearer(None)),
            Some(t) => orca_proto::contract::bearer(t).map(|v| Bearer(Some(v))),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// What the spawned tasks tell the loop.
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
        /// The attempt span's traceparent, for its final report.
        traceparent: Option<String>,
    },
    ReportDone {
        result: Result<pb::ReportResponse, tonic::Status>,
    },
    HeartbeatDone {
        result: Result<pb::HeartbeatResponse, tonic::Status>,
    },
    ProbeDone {
        refused: bool,
    },
}

/// The open connection: `stream` ends the Listen stream's task.
struct Conn {
    client: Client,
    stream: CancellationToken,
}

fn call_error(s: tonic::Status) -> CallError {
    if s.code() == tonic::Code::InvalidArgument {
        CallError::Invalid(s.message().to_string())
    } else {
        CallError::Other(s.message().to_string())
    }
}

async fn unary<T>(fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, tonic::Status> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer from the coordinator")),
    }
}

async fn channel(url: &str, tls: &orca_proto::tls::ClientTls, bearer: Bearer) -> Result<Client, String> {
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| e.to_string())?;
    let endpoint = tls
        .apply(url, endpoint)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let ch =
        endpoint.connect().await.map_err(|e| format!("cannot connect to {url}: {}", orca_proto::tls::chain(&e)))?;
    Ok(WorkerGatewayClient::with_interceptor(ch, bearer)
        .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(limits::MAX_MESSAGE_BYTES))
}

/// Connects, registers, opens the Listen stream, then forwards its messages until it ends or
/// `stream` is cancelled.
async fn connect(
    url: String,
    tls: orca_proto::tls::ClientTls,
    bearer: Bearer,
    reg: pb::RegisterRequest,
    epoch: u64,
    tx: mpsc::Sender<Event>,
    stream_token: CancellationToken,
) {
    let worker_id = reg.worker_id.clone();
    let opened = async {
        let mut client = channel(&url, &tls, bearer).await?;
        let resp = unary(client.register(reg)).await.map_err(|s| format!("register: {}", s.message()))?;
        let listen = pb::ListenRequest { worker_id, context_by_stream: true };
        let stream = tokio::time::timeout(RPC_TIMEOUT, client.listen(listen))
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
    // The shared context arrives once per stream; this stream's cache fills the assignments.
    let mut context = context::StreamContext::default();
    let error = loop {
        tokio::select! {
            _ = stream_token.cancelled() => return,
            m = stream.message() => match m {
                Ok(Some(mut msg)) => {
                    context.apply(&mut msg);
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

/// Registers again while draining; a failure only means more assignments to hand back.
async fn lower_slots(client: &mut Client, reg: pb::RegisterRequest) {
    if let Err(s) = unary(client.register(reg)).await {
        tracing::debug!(error = %s.message(), "lowering slots failed");
    }
}

/// Runs the worker until it has drained after a signal.
pub async fn run(ctx: Arc<Ctx>, mut signals: mpsc::Receiver<Signal>) {
    let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
    let settings = Settings {
        slots: ctx.config.slots,
        grace: Duration::from_secs(ctx.config.grace_seconds),
        noop: ctx.config.agent == AgentKind::Noop,
        max_start_failures: state::MAX_START_FAILURES,
    };
    let mut state = State::new(settings, Instant::now(), fastrand::u64(..));
    // A worker low on disk at start does not connect for work at all.
    let low_disk = upkeep::check_disk(&ctx.config, false);
    let (upkeep_tx, mut upkeep_rx) = mpsc::channel(UPKEEP_BUFFER);
    tokio::spawn(upkeep::run(ctx.clone(), upkeep_tx, low_disk.is_some()));
    let mut shell =
        Shell { ctx, tx, epoch: 0, url_index: 0, conn: None, stops: HashMap::new(), traces: HashMap::new() };
    let (mut signals_open, mut upkeep_open) = (true, true);
    let mut effects = match low_disk {
        Some(_) => state.apply(Input::Disk(low_disk), Instant::now()),
        None => state.step(Instant::now()),
    };
    // Ready once configured: the link comes later (STATUS says so), so a worker started
    // while the coordinator is down is not killed by a start timeout.
    systemd::ready("connecting");
    // The status line is built only for a service manager that listens.
    let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
    let mut status = String::new();
    let watchdog = systemd::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3_600)));
    loop {
        shell.perform(effects);
        if state.done() {
            break;
        }
        if notify {
            let now_status = state.status();
            if now_status != status {
                systemd::status(&now_status);
                status = now_status;
            }
        }
        let timer = state.next_timer();
        let input = tokio::select! {
            // Fed from this loop: if it hangs, systemd restarts the worker.
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                systemd::watchdog();
                None
            }
            ev = rx.recv() => match ev {
                Some(ev) => shell.input(ev),
                None => break,
            },
            input = upkeep_rx.recv(), if upkeep_open => {
                upkeep_open = input.is_some();
                input
            }
            sig = signals.recv(), if signals_open => match sig {
                Some(sig) => {
                    systemd::stopping();
                    Some(Input::Signal(sig))
                }
                None => {
                    signals_open = false;
                    None
                }
            },
            _ = tokio::time::sleep_until(crate::far(timer.map(|t| t.0))), if timer.is_some() => {
                timer.map(|t| Input::Timer(t.1))
            }
        };
        effects = match input {
            Some(input) => state.apply(input, Instant::now()),
            None => state.step(Instant::now()),
        };
    }
    tracing::info!("worker stopped");
}

/// Traceparents kept for final reports at most.
const MAX_TRACES: usize = 10_000;

/// What the state must not own.
struct Shell {
    ctx: Arc<Ctx>,
    tx: mpsc::Sender<Event>,
    /// Of the latest connection asked for.
    epoch: u64,
    /// Which of the coordinator URLs the next connection goes to.
    url_index: usize,
    conn: Option<Conn>,
    /// Of the attempts whose agents run.
    stops: HashMap<Key, watch::Sender<Option<Stop>>>,
    /// Traceparents of finished attempts until their final report is first sent (a resent
    /// report goes without: its span is best effort).
    traces: HashMap<Key, String>,
}

impl Shell {
    /// The event as an input of the state; `None` for answers about an older connection.
    fn input(&mut self, ev: Event) -> Option<Input> {
        if matches!(&ev, Event::ConnectFailed { epoch, .. } | Event::StreamEnded { epoch, .. } if *epoch == self.epoch)
        {
            self.url_index += 1;
        }
        Some(match ev {
            Event::Connected { epoch, client, resp, stream } => {
                if epoch != self.epoch {
                    stream.cancel();
                    return None;
                }
                self.conn = Some(Conn { client, stream });
                Input::Connected(resp)
            }
            Event::ConnectFailed { epoch, error } if epoch == self.epoch => Input::ConnectFailed(error),
            Event::StreamEnded { epoch, error } if epoch == self.epoch => Input::StreamEnded(error),
            Event::ConnectFailed { .. } | Event::StreamEnded { .. } => return None,
            Event::Listen { msg } => Input::Listen(msg),
            Event::Progress { key, message } => Input::Progress { key, message },
            Event::Finished { key, fin, traceparent } => {
                if let Some(tp) = traceparent.filter(|_| !matches!(fin, Final::Silent)) {
                    // Reports the state drops (stale attempts) leave theirs: bound the map.
                    if self.traces.len() >= MAX_TRACES {
                        self.traces.clear();
                    }
                    self.traces.insert(key, tp);
                }
                self.stops.remove(&key);
                Input::Finished { key, fin }
            }
            Event::ReportDone { result } => Input::ReportDone(result.map_err(call_error)),
            Event::HeartbeatDone { result } => Input::HeartbeatDone(result.map_err(call_error)),
            Event::ProbeDone { refused } => Input::ProbeDone { refused },
        })
    }

    fn perform(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Connect { register } => self.connect(register),
                Effect::Disconnect => self.conn = None,
                Effect::CloseStream => {
                    // A connection still being made is abandoned.
                    self.epoch += 1;
                    if let Some(conn) = &self.conn {
                        conn.stream.cancel();
                    }
                }
                Effect::Register(reg) => self.register(reg),
                Effect::Report { register, mut reports } => {
                    for r in reports.iter_mut().filter(|r| state::is_final(r)) {
                        if let Some(tp) = self.traces.remove(&(r.task_id, r.attempt)) {
                            r.trace_parent = tp;
                        }
                    }
                    self.report(register, reports)
                }
                Effect::Heartbeat { running } => self.heartbeat(running),
                Effect::Probe => self.probe(),
                Effect::Start(a) => self.start(*a),
                Effect::Stop { key, stop } => {
                    if let Some(tx) = self.stops.get(&key) {
                        let _ = tx.send(Some(stop));
                    }
                }
            }
        }
    }

    fn register_request(&self, reg: Registration) -> pb::RegisterRequest {
        let c = &self.ctx.config;
        pb::RegisterRequest {
            worker_id: self.ctx.worker_id.clone(),
            name: c.name.clone(),
            hostname: c.hostname.clone(),
            labels: c.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            slots: reg.slots,
            agent_kinds: vec![c.agent.name().to_string()],
            running: reg.running,
            version: orca_proto::contract::VERSION.to_string(),
        }
    }

    /// The client for a call; the state asks for calls only while its link is up.
    fn client(&self) -> Option<Client> {
        self.conn.as_ref().map(|c| c.client.clone())
    }

    fn connect(&mut self, register: Option<Registration>) {
        self.epoch += 1;
        let epoch = self.epoch;
        // Each new connection after a failed one goes to the next URL (a standby refuses
        // Register; the leader, wherever it is, accepts it).
        let urls = &self.ctx.config.coordinators;
        let url = urls[self.url_index % urls.len()].clone();
        let bearer = self.ctx.bearer.clone();
        let tls = self.ctx.config.tls.clone();
        let tx = self.tx.clone();
        match register {
            Some(reg) => {
                let reg = self.register_request(reg);
                tokio::spawn(connect(url, tls, bearer, reg, epoch, tx, CancellationToken::new()));
            }
            None => {
                tokio::spawn(async move {
                    let ev = match channel(&url, &tls, bearer).await {
                        Ok(client) => Event::Connected { epoch, client, resp: None, stream: CancellationToken::new() },
                        Err(error) => Event::ConnectFailed { epoch, error },
                    };
                    let _ = tx.send(ev).await;
                });
            }
        }
    }

    fn register(&self, reg: Registration) {
        let Some(mut client) = self.client() else { return };
        let reg = self.register_request(reg);
        tokio::spawn(async move { lower_slots(&mut client, reg).await });
    }

    fn report(&self, register: Option<Registration>, reports: Vec<pb::Report>) {
        let client = self.client();
        let reg = register.map(|r| self.register_request(r));
        let req = pb::ReportRequest { worker_id: self.ctx.worker_id.clone(), reports };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let Some(mut client) = client else {
                let result = Err(tonic::Status::unavailable("no connection"));
                let _ = tx.send(Event::ReportDone { result }).await;
                return;
            };
            if let Some(reg) = reg {
                lower_slots(&mut client, reg).await;
            }
            let result = unary(client.report(req)).await;
            let _ = tx.send(Event::ReportDone { result }).await;
        });
    }

    fn heartbeat(&self, running: Vec<pb::TaskRef>) {
        let client = self.client();
        let req = pb::HeartbeatRequest { worker_id: self.ctx.worker_id.clone(), running };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = match client {
                Some(mut client) => unary(client.heartbeat(req)).await,
                None => Err(tonic::Status::unavailable("no connection")),
            };
            let _ = tx.send(Event::HeartbeatDone { result }).await;
        });
    }

    /// A heartbeat naming nothing: the coordinator refuses it once it processed the closed
    /// stream.
    fn probe(&self) {
        let client = self.client();
        let req = pb::HeartbeatRequest { worker_id: self.ctx.worker_id.clone(), running: vec![] };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let refused = match client {
                Some(mut client) => unary(client.heartbeat(req)).await.is_err(),
                None => true,
            };
            let _ = tx.send(Event::ProbeDone { refused }).await;
        });
    }

    /// Runs the attempt in its own task; a panic in it becomes a retryable failure.
    fn start(&mut self, a: pb::Assignment) {
        let key = (a.task_id, a.attempt);
        let (stop_tx, stop_rx) = watch::channel(None);
        self.stops.insert(key, stop_tx);
        tracing::debug!(task = a.task_id, attempt = a.attempt, job = %a.job_id, "attempt started");
        let ctx = self.ctx.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            let inner = tokio::spawn(async move {
                let mut progress = move |message: String| {
                    // Progress is best effort: dropped when the loop is behind.
                    let _ = progress_tx.try_send(Event::Progress { key, message });
                };
                task::run(&ctx, a, stop_rx, &mut progress).await
            });
            let (fin, traceparent) = match inner.await {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!(task = key.0, attempt = key.1, error = %e, "attempt panicked");
                    (task::failed(pb::TaskResult::default(), format!("worker error: {e}"), true), None)
                }
            };
            let _ = tx.send(Event::Finished { key, fin, traceparent }).await;
        });
    }
}

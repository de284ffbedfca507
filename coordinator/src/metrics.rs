//! Prometheus metrics of the coordinator, served by [`crate::web`] at `/metrics`.
//!
//! Every metric is named `orca_*`, described, and present (at zero) from start-up. Labels are
//! bounded sets (task states, gRPC methods and codes): never a task, job or worker id.
//! Counters and histograms are recorded where things happen (the dispatcher after a commit,
//! the RPC layer, watch streams); gauges of the queue's state are read from the dispatcher
//! at each scrape ([`crate::dispatch::Stats`]), so nothing has to keep them in step.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use prost::Message;

use crate::dispatch::Stats;
use crate::queue::{Effect, State};

pub const TASKS: &str = "orca_tasks";
pub const TRANSITIONS: &str = "orca_task_transitions_total";
pub const SUBMIT_TO_START: &str = "orca_task_submit_to_start_seconds";
pub const QUEUE_WAIT: &str = "orca_task_queue_wait_seconds";
pub const RUN_DURATION: &str = "orca_task_run_seconds";
pub const ATTEMPTS: &str = "orca_task_attempts_total";
pub const RETRIES: &str = "orca_task_retries_total";
pub const LEASE_EXPIRIES: &str = "orca_lease_expiries_total";
pub const DEAD_LETTERED: &str = "orca_tasks_dead_lettered_total";
pub const WORKERS_CONNECTED: &str = "orca_workers_connected";
pub const SLOTS: &str = "orca_worker_slots";
pub const SLOTS_FREE: &str = "orca_worker_slots_free";
pub const WATCH_STREAMS: &str = "orca_watch_streams";
pub const BATCH_COMMANDS: &str = "orca_writer_batch_commands";
pub const COMMIT_SECONDS: &str = "orca_writer_commit_seconds";
pub const STAGE_SECONDS: &str = "orca_dispatcher_stage_seconds";
/// The stages of [`STAGE_SECONDS`].
pub const STAGES: [&str; 4] = ["queued", "apply", "commit", "send"];
pub const RPC_REQUESTS: &str = "orca_rpc_requests_total";
pub const RPC_SECONDS: &str = "orca_rpc_duration_seconds";
pub const DB_BYTES: &str = "orca_database_size_bytes";
pub const JOBS: &str = "orca_jobs";
pub const PURGED_JOBS: &str = "orca_jobs_purged_total";
pub const UP: &str = "orca_up";

/// Every metric with its help text, as README lists them.
pub const DESCRIBED: &[(&str, &str)] = &[
    (TASKS, "Tasks by state (final ones until retention purges their job)."),
    (TRANSITIONS, "Task state changes, by the state entered."),
    (SUBMIT_TO_START, "Time from AddTasks to a task's first attempt starting."),
    (QUEUE_WAIT, "Time a task spent pending (runnable) before each attempt was dispatched."),
    (RUN_DURATION, "Time an attempt held its task, from dispatch to its end."),
    (ATTEMPTS, "Attempts dispatched to workers."),
    (RETRIES, "Failed attempts retried after a backoff."),
    (LEASE_EXPIRIES, "Attempts lost because their lease expired or their worker came back without them."),
    (DEAD_LETTERED, "Tasks failed for good (retries used up, too many lost leases, or not retryable)."),
    (WORKERS_CONNECTED, "Workers with an open assignment stream."),
    (SLOTS, "Task slots of the connected workers."),
    (SLOTS_FREE, "Free task slots of the connected workers."),
    (WATCH_STREAMS, "Open WatchJob streams."),
    (BATCH_COMMANDS, "Commands applied per dispatcher batch (one commit each)."),
    (COMMIT_SECONDS, "Time to commit one batch to the database."),
    (
        STAGE_SECONDS,
        "Where a write's time goes in the dispatcher, by stage: queued (a command waiting for its batch), \
         apply (a batch's commands, timers and dispatch, in memory), commit (its transaction), send (replies, \
         assignments and events after the commit).",
    ),
    (RPC_REQUESTS, "gRPC calls finished, by service, method and status code."),
    (RPC_SECONDS, "gRPC call duration (a stream: until it ended), by service and method."),
    (DB_BYTES, "Size of the database files (main file and write-ahead log)."),
    (JOBS, "Jobs in the database."),
    (PURGED_JOBS, "Finished jobs removed by retention or DeleteJob."),
    (UP, "1 while the coordinator serves."),
];

/// Histogram buckets for durations, in seconds (1 ms to 6 h).
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3_600.0, 21_600.0];
/// Histogram buckets for the dispatcher's stages, in seconds (50 us to 5 s).
const STAGE_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0];
/// Histogram buckets for commands per batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 2_048.0];

/// gRPC status codes by number, as Prometheus label values.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle), describes
/// every metric and registers each at zero.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_COMMANDS.into()), BATCH_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(STAGE_SECONDS.into()), STAGE_BUCKETS))
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    for (name, help) in DESCRIBED {
        let help = *help;
        if name.ends_with("_total") {
            describe_counter!(*name, help);
        } else if name.ends_with("_seconds") {
            describe_histogram!(*name, Unit::Seconds, help);
        } else if *name == BATCH_COMMANDS {
            describe_histogram!(*name, Unit::Count, help);
        } else {
            describe_gauge!(*name, help);
        }
    }
    for s in State::ALL {
        gauge!(TASKS, "state" => s.name()).set(0.0);
        counter!(TRANSITIONS, "state" => s.name()).absolute(0);
    }
    for name in [ATTEMPTS, RETRIES, LEASE_EXPIRIES, DEAD_LETTERED, PURGED_JOBS] {
        counter!(name).absolute(0);
    }
    for name in [WORKERS_CONNECTED, SLOTS, SLOTS_FREE, WATCH_STREAMS, DB_BYTES, JOBS, UP] {
        gauge!(name).set(0.0);
    }
    for name in [SUBMIT_TO_START, QUEUE_WAIT, RUN_DURATION, COMMIT_SECONDS, BATCH_COMMANDS] {
        let _ = histogram!(name);
    }
    for stage in STAGES {
        let _ = histogram!(STAGE_SECONDS, "stage" => stage);
    }
    for (service, method) in methods().values() {
        counter!(RPC_REQUESTS, "service" => *service, "method" => *method, "code" => "OK").absolute(0);
        let _ = histogram!(RPC_SECONDS, "service" => *service, "method" => *method);
    }
}

/// Sets the gauges read at a scrape.
pub fn set_stats(s: &Stats, db_bytes: u64) {
    for st in State::ALL {
        gauge!(TASKS, "state" => st.name()).set(s.counts.get(st) as f64);
    }
    gauge!(WORKERS_CONNECTED).set(s.workers_connected as f64);
    gauge!(SLOTS).set(s.slots as f64);
    gauge!(SLOTS_FREE).set(s.slots_free as f64);
    gauge!(JOBS).set(s.jobs as f64);
    gauge!(DB_BYTES).set(db_bytes as f64);
    counter!(LEASE_EXPIRIES).absolute(s.totals.lease_losses);
    counter!(RETRIES).absolute(s.totals.retries);
    counter!(DEAD_LETTERED).absolute(s.totals.dead_lettered);
}

/// Handles of the metrics every batch records, looked up once (a lookup hashes the name and
/// labels; a batch records one per state change).
struct BatchHandles {
    transitions: [metrics::Counter; 6],
    attempts: metrics::Counter,
    batch: metrics::Histogram,
    commit: metrics::Histogram,
    queue_wait: metrics::Histogram,
    submit_to_start: metrics::Histogram,
    run: metrics::Histogram,
    /// [`STAGE_SECONDS`] by stage, in the order of [`STAGES`].
    stages: [metrics::Histogram; 4],
}

fn batch_handles() -> &'static BatchHandles {
    static H: OnceLock<BatchHandles> = OnceLock::new();
    H.get_or_init(|| BatchHandles {
        transitions: State::ALL.map(|s| counter!(TRANSITIONS, "state" => s.name())),
        attempts: counter!(ATTEMPTS),
        batch: histogram!(BATCH_COMMANDS),
        commit: histogram!(COMMIT_SECONDS),
        queue_wait: histogram!(QUEUE_WAIT),
        submit_to_start: histogram!(SUBMIT_TO_START),
        stages: STAGES.map(|stage| histogram!(STAGE_SECONDS, "stage" => stage)),
        run: histogram!(RUN_DURATION),
    })
}

/// Records what a committed batch did (a batch without commands, a timer's, only its
/// effects).
/// How long a command waited for its batch.
pub fn record_queued(seconds: f64) {
    batch_handles().stages[0].record(seconds);
}

/// The stages of one batch after its commands' waits: apply, commit (`None` when it wrote
/// nothing) and send.
pub fn record_stages(apply: f64, commit: Option<f64>, send: f64) {
    let [_, a, c, s] = &batch_handles().stages;
    a.record(apply);
    if let Some(t) = commit {
        c.record(t);
    }
    s.record(send);
}

pub fn record_batch(commands: usize, commit_seconds: Option<f64>, effects: &[Effect]) {
    let h = batch_handles();
    if commands > 0 {
        h.batch.record(commands as f64);
    }
    if let Some(s) = commit_seconds {
        h.commit.record(s);
    }
    let mut attempts = 0u64;
    for e in effects {
        match e {
            Effect::Changed { from, to, held_ms, age_ms, attempt, .. } => {
                h.transitions[*to as usize].increment(1);
                match (from, to) {
                    (Some(State::Pending), State::InProgress) => {
                        h.queue_wait.record(*held_ms as f64 / 1e3);
                        if *attempt == 1 {
                            h.submit_to_start.record(*age_ms as f64 / 1e3);
                        }
                    }
                    (Some(State::InProgress), _) => h.run.record(*held_ms as f64 / 1e3),
                    _ => {}
                }
            }
            Effect::Assign { .. } => attempts += 1,
            _ => {}
        }
    }
    if attempts > 0 {
        h.attempts.increment(attempts);
    }
}

/// Counts a purged job.
pub fn record_purged(jobs: u64) {
    counter!(PURGED_JOBS).increment(jobs);
}

/// Marks the coordinator serving (1) or stopping (0).
pub fn set_up(up: bool) {
    gauge!(UP).set(if up { 1.0 } else { 0.0 });
}

/// Counts an open WatchJob stream while it lives.
pub struct WatchStream(());

impl WatchStream {
    pub fn open() -> WatchStream {
        gauge!(WATCH_STREAMS).increment(1.0);
        WatchStream(())
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        gauge!(WATCH_STREAMS).decrement(1.0);
    }
}

/// The (service, method) labels of each path served: Orca's, health and reflection. Other
/// paths are counted as ("unknown", "unknown") so a caller cannot make up label values.
fn methods() -> &'static HashMap<String, (&'static str, &'static str)> {
    static METHODS: OnceLock<HashMap<String, (&'static str, &'static str)>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for bytes in [orca_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
            let files = prost_types::FileDescriptorSet::decode(bytes).expect("the built-in descriptor set decodes");
            for f in files.file {
                for s in &f.service {
                    for m in &s.method {
                        pairs.push((format!("{}.{}", f.package(), s.name()), m.name().to_string()));
                    }
                }
            }
        }
        for service in ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"] {
            pairs.push((service.to_string(), "ServerReflectionInfo".to_string()));
        }
        // Leaked once per method of the binary: label values live as long as the process.
        pairs.into_iter().map(|(s, m)| (format!("/{s}/{m}"), (&*s.leak(), &*m.leak()))).collect()
    })
}

/// The (service, method) labels of a request path.
fn labels_of(path: &str) -> (&'static str, &'static str) {
    methods().get(path).copied().unwrap_or(("unknown", "unknown"))
}

fn code_name(v: &[u8]) -> &'static str {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .and_then(|n| CODES.get(n).copied())
        .unwrap_or("UNKNOWN")
}

/// A tower layer counting gRPC calls and timing them, by method and final status code (read
/// from the trailers, or from the headers of a trailers-only answer).
#[derive(Clone, Copy, Debug, Default)]
pub struct RpcLayer;

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;
    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = labels_of(req.uri().path());
        // Without export, `Span::none()`: instrumenting with it costs next to nothing.
        let span = match orca_telemetry::enabled() {
            true => rpc_span(service, method, req.headers()),
            false => tracing::Span::none(),
        };
        let call = tracing::Instrument::instrument(self.inner.call(req), span);
        Box::pin(async move {
            let mut rec = Recording { service, method, start: Instant::now(), code: None };
            let res = call.await?;
            if let Some(code) = res.headers().get("grpc-status") {
                rec.code = Some(code_name(code.as_bytes()));
            }
            Ok(res.map(|inner| Observed { inner, rec: Some(Arc::new(rec)) }))
        })
    }
}

/// The span of one call, child of the caller's `traceparent` when it sent one. The workers'
/// calls (heartbeats, reports, streams), health checks and reflection get none unless their
/// caller traces: they would each start a trace of their own. Final reports get their own
/// spans in their task's trace (see `service::report_spans`).
fn rpc_span(service: &str, method: &str, headers: &http::HeaderMap) -> tracing::Span {
    let parent = headers.get(orca_telemetry::TRACEPARENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if parent.is_empty() && service != "orca.v1.Orchestrator" {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "rpc",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        trace_id = tracing::field::Empty
    );
    orca_telemetry::set_parent(&span, parent);
    span
}

struct Recording {
    service: &'static str,
    method: &'static str,
    start: Instant,
    code: Option<&'static str>,
}

impl Recording {
    fn finish(&self, code: &'static str) {
        counter!(RPC_REQUESTS, "service" => self.service, "method" => self.method, "code" => code).increment(1);
        histogram!(RPC_SECONDS, "service" => self.service, "method" => self.method)
            .record(self.start.elapsed().as_secs_f64());
    }
}

/// A response body that records its call when it ends (or is dropped: the caller went away).
pub struct Observed<B> {
    inner: B,
    rec: Option<Arc<Recording>>,
}

impl<B> Observed<B> {
    /// Records the call once: with the trailers' code, else the headers' (a trailers-only
    /// answer, whose body may never be polled), else `otherwise`.
    fn finish(&mut self, trailers: Option<&'static str>, otherwise: &'static str) {
        if let Some(rec) = self.rec.take() {
            rec.finish(trailers.or(rec.code).unwrap_or(otherwise));
        }
    }
}

impl<B> Drop for Observed<B> {
    fn drop(&mut self) {
        // Dropped before its end without a status: the caller went away.
        self.finish(None, "CANCELLED");
    }
}

impl<B: Body + Unpin> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    this.finish(Some(code_name(code.as_bytes())), "UNKNOWN");
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(Some("INTERNAL"), "INTERNAL"),
            Poll::Ready(None) => this.finish(None, "UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_known_methods_only() {
        assert_eq!(labels_of("/orca.v1.Orchestrator/AddTasks"), ("orca.v1.Orchestrator", "AddTasks"));
        assert_eq!(labels_of("/orca.v1.WorkerGateway/Listen"), ("orca.v1.WorkerGateway", "Listen"));
        assert_eq!(labels_of("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check"));
        assert_eq!(labels_of("/orca.v1.Orchestrator/Nope"), ("unknown", "unknown"));
        assert_eq!(labels_of("/made.up/path"), ("unknown", "unknown"));
    }

    #[test]
    fn status_codes_are_named() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"3"), "INVALID_ARGUMENT");
        assert_eq!(code_name(b"16"), "UNAUTHENTICATED");
        assert_eq!(code_name(b"99"), "UNKNOWN");
        assert_eq!(code_name(b"x"), "UNKNOWN");
    }
}

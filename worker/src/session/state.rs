//! The session's state as pure data: the attempts this worker holds, the queue of reports,
//! the link to the coordinator, its timers, and the drain. No tokio, no tonic: the shell
//! (`session.rs`) feeds every event in as an [`Input`] with the current time, performs the
//! [`Effect`]s that come out (calls, spawned attempts, stop requests) and feeds their answers
//! back in. Time and the jitter seed come from the caller, so tests need no clock and no
//! network.
//!
//! What stays true here:
//! - an attempt is held from its assignment until its final report was answered (accepted,
//!   fenced off or refused as invalid) or the coordinator dropped it (cancelled, stale); a
//!   held attempt that no longer runs has its final report queued or in flight;
//! - never more attempts occupy a slot than `slots`: an assignment beyond them, or any
//!   assignment while draining, is handed back at once (an attempt being stopped after a
//!   cancellation or as stale no longer occupies one: the coordinator freed it already);
//! - every registration and heartbeat names every held attempt, so the coordinator keeps
//!   their leases and re-queues at once only what the worker no longer has;
//! - reports go out in order, in batches, one request at a time, only on an open link; while
//!   closing, only once the coordinator noticed the closed stream;
//! - draining takes no new work: every registration made while draining advertises no more
//!   slots than attempts still held (at least one), the first signal gives the agents the
//!   grace period, the second or the end of the grace period stops them; when nothing runs
//!   any more the stream is closed, and the session is done when the last reports are
//!   delivered or [`FLUSH_BOUND`] passed;
//! - a paused worker (low on disk, or its agent failed to start [`Settings::max_start_failures`]
//!   times in a row) drains the same way but does not exit: with nothing running its stream
//!   stays closed (no stream, no work) until the reason is gone, then it registers again with
//!   all its slots. An attempt whose agent could not be started is handed back: the worker's
//!   fault does not count against the task's retries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use orca_proto::contract::{self, limits};
use orca_proto::pb;
use prost::Message;

use crate::agent::{self, Stop, StopReason};
use crate::task::{self, Final};

#[cfg(test)]
mod tests;

/// Reports queued beyond which new progress reports are dropped.
pub const MAX_PENDING_PROGRESS: usize = 1_000;
/// Bytes of one progress message (the coordinator refuses longer ones).
pub const MAX_PROGRESS_BYTES: usize = limits::MAX_PROGRESS_BYTES;
/// Reports in one request at most.
pub const MAX_BATCH_REPORTS: usize = 1_000;
const _: () = assert!(MAX_BATCH_REPORTS <= limits::MAX_REPORTS);
/// Encoded bytes of the reports of one request at most: the contract's bound, which leaves
/// room for the envelope below the message limit (a larger request would be refused, and
/// retried forever).
pub const MAX_BATCH_BYTES: usize = limits::MAX_REPORT_BATCH_BYTES;
/// Pause before sending reports again after a failed report call.
pub const REPORT_RETRY: Duration = Duration::from_millis(500);
/// Bound on delivering the last reports at shutdown.
pub const FLUSH_BOUND: Duration = Duration::from_secs(15);
/// Pause between two probes of whether the coordinator noticed the closed stream.
pub const PROBE_EVERY: Duration = Duration::from_millis(20);
/// Agent start failures in a row after which a worker takes no work.
pub const MAX_START_FAILURES: u32 = 3;
/// Heartbeat interval until the coordinator names one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// An attempt: (task id, attempt number), the fencing token of every report.
pub type Key = (i64, u32);

/// A signal the worker reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
}

/// What the state needs to know about this worker.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub slots: u32,
    /// How long running attempts may finish after the first signal.
    pub grace: Duration,
    /// Complete every assignment at once, without an agent (the `noop` agent).
    pub noop: bool,
    /// Agent start failures in a row after which the worker takes no work.
    pub max_start_failures: u32,
}

/// Why a call to the coordinator failed, as far as the state cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// Refused as invalid: a retry would be refused the same way.
    Invalid(String),
    /// Anything else (unreachable, no answer, unavailable): worth retrying.
    Other(String),
}

/// A timer of the state; [`State::next_timer`] says which is due next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    Reconnect,
    Heartbeat,
    ReportRetry,
    Probe,
    GraceOver,
    FlushBound,
}

/// What happened.
#[derive(Debug)]
pub enum Input {
    /// The connection asked for by [`Effect::Connect`] is open; `None` when it was made only
    /// for the last reports (no registration).
    Connected(Option<pb::RegisterResponse>),
    ConnectFailed(String),
    /// The Listen stream of the current connection ended.
    StreamEnded(String),
    Listen(pb::ListenResponse),
    Progress {
        key: Key,
        message: String,
    },
    /// An attempt's agent is done.
    Finished {
        key: Key,
        fin: Final,
    },
    /// The answer to [`Effect::Report`].
    ReportDone(Result<pb::ReportResponse, CallError>),
    /// The answer to [`Effect::Heartbeat`].
    HeartbeatDone(Result<pb::HeartbeatResponse, CallError>),
    /// The answer to [`Effect::Probe`]: `refused` once the coordinator processed the close.
    ProbeDone {
        refused: bool,
    },
    Signal(Signal),
    Timer(Timer),
    /// The work dir's filesystem is low on free space (why), or no longer (`None`).
    Disk(Option<String>),
    /// The agent's program is there (again): start failures are forgiven.
    AgentFound,
}

/// What the state asks of this worker; the shell adds who the worker is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub slots: u32,
    pub running: Vec<pb::TaskRef>,
}

/// What to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Open a connection (a new epoch: answers from older ones are not fed back). With a
    /// registration: register and open the Listen stream; without: a channel only, for the
    /// last reports. Answered by `Connected` or `ConnectFailed`, then maybe `StreamEnded`.
    Connect { register: Option<Registration> },
    /// The link is lost: forget the client.
    Disconnect,
    /// Abandon any connection being made and end the Listen stream; an open client stays,
    /// for the last reports.
    CloseStream,
    /// Register again to lower the slots while draining, or to raise them again after a pause;
    /// the answer does not matter.
    Register(Registration),
    /// Register first when `register` is set (the slots these reports free must not be
    /// filled again), then send the reports. Answered by `ReportDone`.
    Report { register: Option<Registration>, reports: Vec<pb::Report> },
    /// Answered by `HeartbeatDone`.
    Heartbeat { running: Vec<pb::TaskRef> },
    /// A heartbeat naming nothing, refused once the coordinator processed the closed stream.
    /// Answered by `ProbeDone`.
    Probe,
    /// Run this attempt's agent; answered by `Progress` and one `Finished`.
    Start(Box<pb::Assignment>),
    /// Stop this running attempt.
    Stop { key: Key, stop: Stop },
}

/// The contract's reconnect backoff, with this session's seeded jitter.
#[derive(Debug)]
struct Backoff {
    steps: contract::Backoff,
    rng: fastrand::Rng,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.steps.next(self.rng.f64())
    }

    fn reset(&mut self) {
        self.steps.reset();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Down {
        retry_at: Instant,
    },
    Connecting,
    /// The shell holds a client (and, until closing, a Listen stream).
    Up,
}

/// An attempt this worker holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    /// Its agent runs (possibly being stopped).
    running: bool,
    /// Being stopped because the coordinator cancelled it or fenced it off: its slot is
    /// already free on the coordinator's side.
    revoked: bool,
}

#[derive(Debug)]
struct Closing {
    deadline: Instant,
    /// The coordinator noticed the stream is closed (or there was none).
    closed: bool,
    /// When to probe again whether it noticed.
    probe_at: Option<Instant>,
}

/// The session's state. See the module documentation.
#[derive(Debug)]
pub struct State {
    settings: Settings,
    held: BTreeMap<Key, Held>,
    outbox: VecDeque<pb::Report>,
    /// The batch of the report call in flight.
    in_flight: Option<Vec<pb::Report>>,
    link: Link,
    backoff: Backoff,
    heartbeat_every: Duration,
    next_heartbeat: Option<Instant>,
    heartbeat_in_flight: bool,
    report_retry_at: Option<Instant>,
    dropped_progress: u64,
    /// Set on the first signal: when the grace period ends.
    drain_until: Option<Instant>,
    grace_over: bool,
    closing: Option<Closing>,
    /// The flush bound passed before every report was delivered.
    gave_up: bool,
    /// Why the work dir's filesystem is too full for new work.
    low_disk: Option<String>,
    /// Attempts in a row whose agent could not be started.
    start_failures: u32,
    /// Why the agent is taken for broken (too many start failures in a row).
    agent_broken: Option<String>,
    effects: Vec<Effect>,
}

fn task_ref(k: &Key) -> pb::TaskRef {
    pb::TaskRef { task_id: k.0, attempt: k.1 }
}

fn key_of(r: &pb::Report) -> Key {
    (r.task_id, r.attempt)
}

fn report(key: Key, body: pb::report::Body) -> pb::Report {
    pb::Report { task_id: key.0, attempt: key.1, body: Some(body), trace_parent: String::new() }
}

/// Completed, failed and handed back end an attempt; progress does not.
pub fn is_final(r: &pb::Report) -> bool {
    use pb::report::Body;
    matches!(r.body, Some(Body::Completed(_) | Body::Failed(_) | Body::HandedBack(_)))
}

impl State {
    /// A session that connects at once. `seed` feeds the reconnect jitter.
    pub fn new(settings: Settings, now: Instant, seed: u64) -> State {
        State {
            settings,
            held: BTreeMap::new(),
            outbox: VecDeque::new(),
            in_flight: None,
            link: Link::Down { retry_at: now },
            backoff: Backoff { steps: contract::Backoff::default(), rng: fastrand::Rng::with_seed(seed) },
            heartbeat_every: DEFAULT_HEARTBEAT,
            next_heartbeat: None,
            heartbeat_in_flight: false,
            report_retry_at: None,
            dropped_progress: 0,
            drain_until: None,
            grace_over: false,
            closing: None,
            gave_up: false,
            low_disk: None,
            start_failures: 0,
            agent_broken: None,
            effects: Vec::new(),
        }
    }

    /// Takes one input, then does the work that follows from the state.
    pub fn apply(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        match input {
            Input::Connected(resp) => self.on_connected(resp, now),
            Input::ConnectFailed(error) => self.lost_link(&error, now),
            Input::StreamEnded(error) => {
                if self.closing.is_none() {
                    self.lost_link(&error, now);
                }
            }
            Input::Listen(msg) => self.on_listen(msg),
            Input::Progress { key, message } => self.on_progress(key, message),
            Input::Finished { key, fin } => self.on_finished(key, fin, now),
            Input::ReportDone(result) => self.on_report_done(result, now),
            Input::HeartbeatDone(result) => self.on_heartbeat_done(result),
            Input::ProbeDone { refused } => self.on_probe_done(refused, now),
            Input::Signal(sig) => self.on_signal(sig, now),
            Input::Timer(timer) => self.on_timer(timer, now),
            Input::Disk(low) => self.change_health(now, |s| s.low_disk = low),
            Input::AgentFound => {
                if self.agent_broken.is_some() {
                    self.change_health(now, |s| {
                        s.agent_broken = None;
                        s.start_failures = 0;
                    });
                }
            }
        }
        self.step(now)
    }

    /// The work that follows from the state alone: start closing once a drain has nothing
    /// left running, send reports. Called by [`State::apply`]; the shell calls it once at
    /// the start.
    pub fn step(&mut self, now: Instant) -> Vec<Effect> {
        if !self.gave_up {
            if self.draining() && self.closing.is_none() && self.running() == 0 {
                self.start_closing(now);
            }
            self.send_reports();
        }
        std::mem::take(&mut self.effects)
    }

    /// The session is over: drained, stream closed, last reports delivered (or given up on).
    pub fn done(&self) -> bool {
        self.gave_up
            || (self.exiting()
                && self.closing.as_ref().is_some_and(|c| c.closed)
                && self.outbox.is_empty()
                && self.in_flight.is_none())
    }

    /// Why this worker takes no new work, besides a shutdown.
    pub fn paused(&self) -> Option<&str> {
        self.low_disk.as_deref().or(self.agent_broken.as_deref())
    }

    /// The timer due first, if any.
    pub fn next_timer(&self) -> Option<(Instant, Timer)> {
        let reconnect = match self.link {
            // While closing, reconnect only to deliver reports.
            Link::Down { retry_at } if self.closing.is_none() || !self.outbox.is_empty() => Some(retry_at),
            _ => None,
        };
        let heartbeat = if self.heartbeat_in_flight { None } else { self.next_heartbeat };
        let grace = if self.grace_over { None } else { self.drain_until };
        let probe = self.closing.as_ref().and_then(|c| c.probe_at);
        // Only an exit is bounded; a paused worker keeps trying to deliver.
        let flush = self.closing.as_ref().filter(|_| self.exiting()).map(|c| c.deadline);
        [
            (reconnect, Timer::Reconnect),
            (heartbeat, Timer::Heartbeat),
            (self.report_retry_at, Timer::ReportRetry),
            (probe, Timer::Probe),
            (grace, Timer::GraceOver),
            (flush, Timer::FlushBound),
        ]
        .into_iter()
        .filter_map(|(at, timer)| Some((at?, timer)))
        .min_by_key(|(at, _)| *at)
    }

    /// One line for the service manager (`systemctl status`): what the worker is doing.
    pub fn status(&self) -> String {
        let running = self.running();
        if self.exiting() {
            return format!("draining: {running} running");
        }
        if let Some(why) = self.paused() {
            return format!("paused ({why}): {running} running");
        }
        match self.link {
            Link::Up if self.closing.is_none() => {
                format!("connected: {} of {} slots busy", self.busy(), self.settings.slots)
            }
            _ => format!("connecting: {running} running"),
        }
    }

    /// Agents running, including those being stopped.
    pub fn running(&self) -> usize {
        self.held.values().filter(|h| h.running).count()
    }

    /// Agents running that occupy a slot (not revoked).
    fn busy(&self) -> usize {
        self.held.values().filter(|h| h.running && !h.revoked).count()
    }

    /// Takes no new work: shutting down, or paused.
    fn draining(&self) -> bool {
        self.exiting() || self.paused().is_some()
    }

    /// Shutting down after a signal.
    fn exiting(&self) -> bool {
        self.drain_until.is_some()
    }

    /// Applies a change of the pause reasons; pausing lowers the registered slots (the stream
    /// closes once nothing runs, see [`State::step`]), resuming raises them again.
    fn change_health(&mut self, now: Instant, change: impl FnOnce(&mut Self)) {
        let was = self.paused().is_some();
        change(self);
        match (was, self.paused().map(str::to_string)) {
            (false, Some(why)) => {
                tracing::warn!(running = self.running(), "taking no work: {why}");
                if self.link == Link::Up && self.closing.is_none() && !self.held.is_empty() {
                    self.effects.push(Effect::Register(self.registration(&[])));
                }
            }
            (true, None) => {
                tracing::info!("taking work again");
                self.resume(now);
            }
            _ => {}
        }
    }

    /// The pause is over: open a stream again if it was closed, or raise the slots.
    fn resume(&mut self, now: Instant) {
        if self.exiting() {
            return;
        }
        if self.closing.take().is_some() {
            self.effects.push(Effect::CloseStream);
            self.effects.push(Effect::Disconnect);
            self.backoff.reset();
            self.link = Link::Down { retry_at: now };
        } else if self.link == Link::Up {
            self.effects.push(Effect::Register(self.registration(&[])));
        }
    }

    /// Every held attempt, as registrations and heartbeats name them.
    fn held_refs(&self) -> Vec<pb::TaskRef> {
        self.held.keys().map(task_ref).collect()
    }

    /// What to register with: every attempt held, and all the slots, or while draining no
    /// more than will remain once the final reports in `sending` are answered. Zero slots
    /// would be refused, hence at least one.
    fn registration(&self, sending: &[pb::Report]) -> Registration {
        let slots = if self.draining() {
            let finals: BTreeSet<Key> = sending.iter().filter(|r| is_final(r)).map(key_of).collect();
            let remaining = self.held.keys().filter(|k| !finals.contains(k)).count();
            (remaining as u32).max(1)
        } else {
            self.settings.slots
        };
        Registration { slots, running: self.held_refs() }
    }

    fn on_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Reconnect => self.connect(),
            Timer::Heartbeat => self.heartbeat(now),
            Timer::ReportRetry => self.report_retry_at = None,
            Timer::Probe => {
                if let Some(c) = self.closing.as_mut() {
                    c.probe_at = None;
                    self.effects.push(Effect::Probe);
                }
            }
            Timer::GraceOver => {
                tracing::warn!(running = self.running(), "grace period over: stopping the remaining agents");
                self.grace_over = true;
                self.stop_all(false);
            }
            Timer::FlushBound => {
                let undelivered = self.outbox.len() + self.in_flight.as_ref().map_or(0, Vec::len);
                tracing::warn!(undelivered, "could not deliver every report before exiting");
                self.gave_up = true;
            }
        }
    }

    fn connect(&mut self) {
        self.link = Link::Connecting;
        // While closing, only to deliver the last reports: no registration, no stream.
        let register = self.closing.is_none().then(|| self.registration(&[]));
        self.effects.push(Effect::Connect { register });
    }

    fn on_connected(&mut self, resp: Option<pb::RegisterResponse>, now: Instant) {
        self.report_retry_at = None;
        self.link = Link::Up;
        let Some(resp) = resp else { return };
        self.backoff.reset();
        self.heartbeat_every = Duration::from_secs(resp.heartbeat_interval_seconds.max(1) as u64);
        self.next_heartbeat = Some(now + self.heartbeat_every);
        tracing::info!(
            worker = %resp.worker_id,
            slots = self.settings.slots,
            held = self.held.len(),
            lease_seconds = resp.lease_seconds,
            "connected to the coordinator"
        );
        for r in resp.stale {
            self.drop_attempt((r.task_id, r.attempt), StopReason::Stale);
        }
    }

    fn lost_link(&mut self, error: &str, now: Instant) {
        self.effects.push(Effect::Disconnect);
        self.next_heartbeat = None;
        let delay = self.backoff.next();
        tracing::warn!(error, retry_in_ms = delay.as_millis() as u64, "no link to the coordinator; reconnecting");
        self.link = Link::Down { retry_at: now + delay };
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
            self.on_assignment(a);
        }
    }

    fn on_assignment(&mut self, a: pb::Assignment) {
        let key = (a.task_id, a.attempt);
        if self.held.contains_key(&key) {
            return;
        }
        if self.draining() {
            self.hand_back(key, "worker is shutting down");
        } else if self.busy() >= self.settings.slots as usize {
            tracing::warn!(task = a.task_id, attempt = a.attempt, "assignment beyond the free slots; handing it back");
            self.hand_back(key, "worker has no free slot");
        } else if self.settings.noop {
            // No process, no workspace: complete in place (benchmarks of the queue).
            self.held.insert(key, Held { running: false, revoked: false });
            if let Final::Report(body) = task::noop() {
                self.outbox.push_back(report(key, body));
            }
        } else {
            self.held.insert(key, Held { running: true, revoked: false });
            self.effects.push(Effect::Start(Box::new(a)));
        }
    }

    fn hand_back(&mut self, key: Key, reason: &str) {
        self.held.insert(key, Held { running: false, revoked: false });
        // While paused (not shutting down), the pause says why.
        let reason = match self.paused() {
            Some(why) if !self.exiting() => format!("worker takes no work: {why}"),
            _ => reason.to_string(),
        };
        let reason = agent::head_str(&reason, limits::MAX_REASON_BYTES).to_string();
        let body = pb::report::Body::HandedBack(pb::HandedBack { reason });
        self.outbox.push_back(report(key, body));
    }

    fn on_progress(&mut self, key: Key, message: String) {
        if !self.held.get(&key).is_some_and(|h| h.running) {
            return;
        }
        // Lines of a chatty agent waiting to be sent join the attempt's last pending progress
        // message (up to the size limit), so a burst is a few reports, not one per line.
        if let Some(pb::Report { task_id, attempt, body: Some(pb::report::Body::Progress(p)), .. }) =
            self.outbox.back_mut()
            && (*task_id, *attempt) == key
            && p.message.len() + 1 + message.len() <= MAX_PROGRESS_BYTES
        {
            p.message.push('\n');
            p.message.push_str(&message);
            return;
        }
        // Progress is best effort; final reports are never dropped.
        if self.outbox.len() >= MAX_PENDING_PROGRESS {
            self.dropped_progress += 1;
            return;
        }
        let message = agent::head_str(&message, MAX_PROGRESS_BYTES).to_string();
        self.outbox.push_back(report(key, pb::report::Body::Progress(pb::Progress { message })));
    }

    fn on_finished(&mut self, key: Key, fin: Final, now: Instant) {
        let Some(h) = self.held.get_mut(&key) else { return };
        h.running = false;
        match fin {
            Final::Report(body) => {
                if matches!(body, pb::report::Body::Completed(_) | pb::report::Body::Failed(_)) {
                    self.start_failures = 0;
                }
                self.outbox.push_back(report(key, body));
            }
            Final::Silent => {
                self.held.remove(&key);
            }
            Final::NotStarted(why) => self.not_started(key, &why, now),
        }
    }

    /// The agent could not be started: the attempt goes back to the queue; too many in a row
    /// and the worker takes no more work until the agent is found again.
    fn not_started(&mut self, key: Key, why: &str, now: Instant) {
        self.start_failures += 1;
        tracing::error!(task = key.0, attempt = key.1, failures = self.start_failures, "cannot start the agent: {why}");
        let reason = format!("worker cannot start its agent: {why}");
        let reason = agent::head_str(&reason, limits::MAX_REASON_BYTES).to_string();
        self.outbox.push_back(report(key, pb::report::Body::HandedBack(pb::HandedBack { reason })));
        if self.start_failures >= self.settings.max_start_failures && self.agent_broken.is_none() {
            let n = self.start_failures;
            let broken = format!("the agent could not be started {n} times in a row (last: {why})");
            self.change_health(now, |s| s.agent_broken = Some(broken));
        }
    }

    /// Forgets an attempt the coordinator no longer counts as ours: stops its agent (no
    /// report follows) or drops its pending reports.
    fn drop_attempt(&mut self, key: Key, reason: StopReason) {
        let Some(h) = self.held.get_mut(&key) else { return };
        if h.running {
            tracing::info!(task = key.0, attempt = key.1, ?reason, "stopping attempt");
            self.effects.push(Effect::Stop { key, stop: Stop { reason, immediate: false } });
            h.revoked = true;
        } else {
            self.held.remove(&key);
        }
        self.outbox.retain(|r| key_of(r) != key);
    }

    fn stop_all(&mut self, immediate: bool) {
        let stop = Stop { reason: StopReason::Shutdown, immediate };
        let running: Vec<Key> = self.held.iter().filter(|(_, h)| h.running).map(|(k, _)| *k).collect();
        self.effects.extend(running.into_iter().map(|key| Effect::Stop { key, stop }));
    }

    fn on_signal(&mut self, sig: Signal, now: Instant) {
        if self.exiting() {
            tracing::warn!(?sig, running = self.running(), "second signal: killing the agents now");
            self.grace_over = true;
            self.stop_all(true);
            return;
        }
        let grace = self.settings.grace;
        tracing::info!(?sig, running = self.running(), grace_seconds = grace.as_secs(), "draining: taking no new work");
        self.drain_until = Some(now + grace);
        // A paused worker whose stream is closed already: its last reports get the bound.
        if let Some(c) = self.closing.as_mut() {
            c.deadline = now + FLUSH_BOUND;
        }
        // Free slots would keep drawing assignments that are only handed back: register
        // again with no more slots than attempts held (closing ends the stream when none is).
        if self.link == Link::Up && !self.held.is_empty() {
            self.effects.push(Effect::Register(self.registration(&[])));
        }
    }

    /// Nothing runs any more: close the stream, wait until the coordinator noticed, then
    /// deliver the last reports.
    fn start_closing(&mut self, now: Instant) {
        let deadline = now + FLUSH_BOUND;
        self.next_heartbeat = None;
        self.effects.push(Effect::CloseStream);
        let closed = if self.link == Link::Up {
            self.effects.push(Effect::Probe);
            false
        } else {
            self.link = Link::Down { retry_at: now };
            true
        };
        if self.exiting() {
            tracing::info!(reports = self.outbox.len(), "nothing runs; delivering the last reports");
        } else {
            tracing::info!(reports = self.outbox.len(), "nothing runs; stream closed while taking no work");
        }
        self.closing = Some(Closing { deadline, closed, probe_at: None });
    }

    fn on_probe_done(&mut self, refused: bool, now: Instant) {
        let Some(c) = self.closing.as_mut() else { return };
        if refused || now >= c.deadline {
            c.closed = true;
        } else {
            c.probe_at = Some(now + PROBE_EVERY);
        }
    }

    fn heartbeat(&mut self, now: Instant) {
        if self.link != Link::Up {
            self.next_heartbeat = None;
            return;
        }
        self.next_heartbeat = Some(now + self.heartbeat_every);
        self.heartbeat_in_flight = true;
        self.effects.push(Effect::Heartbeat { running: self.held_refs() });
    }

    fn on_heartbeat_done(&mut self, result: Result<pb::HeartbeatResponse, CallError>) {
        self.heartbeat_in_flight = false;
        match result {
            Ok(resp) => {
                for r in resp.stale {
                    self.drop_attempt((r.task_id, r.attempt), StopReason::Stale);
                }
            }
            Err(CallError::Invalid(e) | CallError::Other(e)) => tracing::debug!(error = %e, "heartbeat refused"),
        }
    }

    /// Sends the head of the queue when the link allows: up, and while closing, closed on the
    /// coordinator's side.
    fn send_reports(&mut self) {
        if self.in_flight.is_some() || self.outbox.is_empty() || self.report_retry_at.is_some() {
            return;
        }
        if self.link != Link::Up || self.closing.as_ref().is_some_and(|c| !c.closed) {
            return;
        }
        let batch = self.next_batch();
        // While draining with agents still running, first lower the registered slots to what
        // remains. Every attempt still held is named, those reported in this batch too (their
        // reports follow; an attempt left out would be re-queued at once).
        let register = (self.draining() && self.closing.is_none()).then(|| self.registration(&batch));
        if self.dropped_progress > 0 {
            tracing::warn!(dropped = self.dropped_progress, "progress reports dropped while the queue was full");
            self.dropped_progress = 0;
        }
        self.effects.push(Effect::Report { register, reports: batch.clone() });
        self.in_flight = Some(batch);
    }

    /// Takes the longest head of the queue within the count and size bounds (at least one).
    fn next_batch(&mut self) -> Vec<pb::Report> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(r) = self.outbox.front() {
            let n = r.encoded_len();
            if !batch.is_empty() && (batch.len() >= MAX_BATCH_REPORTS || bytes + n > MAX_BATCH_BYTES) {
                break;
            }
            bytes += n;
            batch.extend(self.outbox.pop_front());
        }
        batch
    }

    fn on_report_done(&mut self, result: Result<pb::ReportResponse, CallError>, now: Instant) {
        let Some(batch) = self.in_flight.take() else { return };
        match result {
            Ok(resp) => {
                for (rep, ack) in batch.iter().zip(resp.acks.iter()).filter(|(_, ack)| !ack.accepted) {
                    if is_final(rep) {
                        tracing::warn!(task = rep.task_id, attempt = rep.attempt, reason = %ack.reason, "report rejected (fenced off)");
                    } else {
                        tracing::debug!(task = rep.task_id, attempt = rep.attempt, reason = %ack.reason, "progress rejected");
                    }
                }
                self.release(&batch);
            }
            Err(CallError::Invalid(error)) => {
                // A retry would be refused the same way; the leases of these attempts expire
                // and their tasks run again.
                tracing::error!(%error, reports = batch.len(), "reports refused; dropping them");
                self.release(&batch);
            }
            Err(CallError::Other(error)) => {
                tracing::warn!(%error, reports = batch.len(), "report failed; will retry");
                for rep in batch.into_iter().rev() {
                    self.outbox.push_front(rep);
                }
                self.report_retry_at = Some(now + REPORT_RETRY);
            }
        }
    }

    /// The attempts whose final reports were answered are no longer held.
    fn release(&mut self, batch: &[pb::Report]) {
        for rep in batch.iter().filter(|r| is_final(r)) {
            self.held.remove(&key_of(rep));
        }
    }
}

#[cfg(test)]
impl State {
    /// Panics when a promise of the module documentation does not hold.
    fn check_invariants(&self) {
        assert!(self.busy() <= self.settings.slots as usize, "{} busy with {} slots", self.busy(), self.settings.slots);
        let queued: BTreeSet<Key> =
            self.outbox.iter().chain(self.in_flight.iter().flatten()).filter(|r| is_final(r)).map(key_of).collect();
        for (key, h) in &self.held {
            assert!(h.running || queued.contains(key), "attempt {key:?} held with no agent and no final report");
        }
        if self.closing.is_some() {
            assert!(self.draining() && self.running() == 0, "closing while agents run");
        }
        if self.next_heartbeat.is_some() {
            assert_eq!(self.link, Link::Up, "heartbeats planned without a link");
        }
    }
}

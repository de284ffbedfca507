//! Table-driven tests of the session state, and a property test of its promises under random
//! interleavings of assignments, agents finishing, answers, lost links and signals.

use super::*;
use proptest::prelude::*;

const GRACE: Duration = Duration::from_secs(30);

fn settings(slots: u32) -> Settings {
    Settings { slots, grace: GRACE, noop: false, max_start_failures: MAX_START_FAILURES }
}

fn register_response(stale: &[Key]) -> pb::RegisterResponse {
    pb::RegisterResponse {
        worker_id: "w-1".into(),
        lease_seconds: 30,
        heartbeat_interval_seconds: 10,
        stale: stale.iter().map(task_ref).collect(),
        coordinator_version: "0.2.0".into(),
    }
}

fn assignment(key: Key) -> pb::Assignment {
    pb::Assignment { task_id: key.0, attempt: key.1, job_id: "job".into(), ..Default::default() }
}

fn assign(keys: &[Key]) -> Input {
    Input::Listen(pb::ListenResponse {
        assignments: keys.iter().copied().map(assignment).collect(),
        ..Default::default()
    })
}

fn cancel(key: Key) -> Input {
    let c = pb::Cancellation { task_id: key.0, attempt: key.1, reason: "job cancelled".into() };
    Input::Listen(pb::ListenResponse { cancellations: vec![c], ..Default::default() })
}

fn completed() -> Final {
    Final::Report(pb::report::Body::Completed(pb::Completed { result: None }))
}

fn acks(reports: &[pb::Report], accepted: bool) -> pb::ReportResponse {
    let ack = |r: &pb::Report| pb::ReportAck {
        task_id: r.task_id,
        attempt: r.attempt,
        accepted,
        reason: if accepted { String::new() } else { "stale attempt".into() },
    };
    pb::ReportResponse { acks: reports.iter().map(ack).collect() }
}

fn refs(keys: &[Key]) -> Vec<pb::TaskRef> {
    keys.iter().map(task_ref).collect()
}

fn handed_back(reason: &str) -> Option<pb::report::Body> {
    Some(pb::report::Body::HandedBack(pb::HandedBack { reason: reason.into() }))
}

/// A state with a clock, checked after every input.
struct Harness {
    s: State,
    now: Instant,
    fx: Vec<Effect>,
}

impl Harness {
    fn new(settings: Settings) -> Harness {
        let now = Instant::now();
        let mut s = State::new(settings, now, 7);
        let fx = s.step(now);
        Harness { s, now, fx }
    }

    /// Registered, with the Listen stream open.
    fn up(slots: u32) -> Harness {
        let mut h = Harness::new(settings(slots));
        assert_eq!(h.fire(), Timer::Reconnect);
        assert_eq!(h.fx, vec![Effect::Connect { register: Some(Registration { slots, running: vec![] }) }]);
        h.apply(Input::Connected(Some(register_response(&[]))));
        h
    }

    fn apply(&mut self, input: Input) -> &[Effect] {
        self.fx = self.s.apply(input, self.now);
        self.s.check_invariants();
        &self.fx
    }

    /// Moves the clock to the next timer and fires it.
    fn fire(&mut self) -> Timer {
        let (at, timer) = self.s.next_timer().expect("a timer");
        self.now = self.now.max(at);
        self.apply(Input::Timer(timer));
        timer
    }

    /// The reports of the report call just asked for.
    fn sent(&self) -> Vec<pb::Report> {
        self.fx
            .iter()
            .find_map(|e| match e {
                Effect::Report { reports, .. } => Some(reports.clone()),
                _ => None,
            })
            .expect("a report call")
    }

    fn started(&self) -> Vec<Key> {
        self.fx
            .iter()
            .filter_map(|e| match e {
                Effect::Start(a) => Some((a.task_id, a.attempt)),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn assignments_follow_the_table() {
    // (slots, attempts already running, draining, noop agent, what the new assignment gets)
    let start = || None;
    let back = |reason: &'static str| Some(handed_back(reason));
    let done = || Some(Some(pb::report::Body::Completed(pb::Completed { result: Some(pb::TaskResult::default()) })));
    let cases = [
        (2, 0, false, false, start()),
        (2, 1, false, false, start()),
        (2, 2, false, false, back("worker has no free slot")),
        (2, 1, true, false, back("worker is shutting down")),
        (2, 0, false, true, done()),
        (1, 1, false, true, back("worker has no free slot")),
    ];
    for (slots, running, draining, noop, expected) in cases {
        let mut h = Harness::up(slots);
        h.s.settings.noop = noop;
        for i in 0..running {
            h.s.held.insert((100 + i, 1), Held { running: true, revoked: false });
        }
        if draining {
            h.apply(Input::Signal(Signal::Terminate));
        }
        h.apply(assign(&[(1, 1)]));
        let case = format!("{slots} slots, {running} running, draining {draining}, noop {noop}");
        match expected {
            None => assert_eq!(h.started(), vec![(1, 1)], "{case}"),
            Some(body) => {
                assert!(h.started().is_empty(), "{case}");
                assert_eq!(h.sent()[0].body, body, "{case}");
            }
        }
        // The same assignment again (a duplicate delivery) changes nothing.
        let held = h.s.held.len();
        assert!(h.apply(assign(&[(1, 1)])).is_empty(), "{case}");
        assert_eq!(h.s.held.len(), held, "{case}");
    }
}

#[test]
fn report_answers_follow_the_table() {
    // (answer, still held afterwards, reports queued again, retry timer set)
    let cases = [
        (Ok(true), false, 0, false),
        (Ok(false), false, 0, false),
        (Err(CallError::Invalid("bad report".into())), false, 0, false),
        (Err(CallError::Other("unavailable".into())), true, 1, true),
    ];
    for (answer, held, queued, retry) in cases {
        let mut h = Harness::up(1);
        h.apply(assign(&[(1, 1)]));
        h.apply(Input::Progress { key: (1, 1), message: "half way".into() });
        let first = h.sent();
        assert_eq!(first.len(), 1);
        // The final report waits for the progress report's answer: one call at a time.
        assert!(h.apply(Input::Finished { key: (1, 1), fin: completed() }).is_empty());
        h.apply(Input::ReportDone(Ok(acks(&first, true))));
        let batch = h.sent();
        let answer = answer.map(|accepted| acks(&batch, accepted));
        let case = format!("{answer:?}");
        h.apply(Input::ReportDone(answer));
        assert_eq!(h.s.held.contains_key(&(1, 1)), held, "{case}");
        assert_eq!(h.s.outbox.len(), queued, "{case}");
        assert_eq!(h.s.report_retry_at.is_some(), retry, "{case}");
        if retry {
            // Sent again, in order, once the pause is over.
            assert!(h.fx.is_empty());
            assert_eq!(h.fire(), Timer::ReportRetry);
            assert_eq!(h.sent(), batch);
        }
    }
}

#[test]
fn a_cancelled_attempt_is_stopped_and_reports_nothing() {
    let mut h = Harness::up(1);
    h.apply(assign(&[(1, 1)]));
    h.s.report_retry_at = Some(h.now + REPORT_RETRY);
    h.apply(Input::Progress { key: (1, 1), message: "working".into() });
    let fx = h.apply(cancel((1, 1))).to_vec();
    assert_eq!(fx, vec![Effect::Stop { key: (1, 1), stop: Stop { reason: StopReason::Cancelled, immediate: false } }]);
    assert!(h.s.outbox.is_empty(), "its queued progress is dropped");
    // Its slot is free at once: the coordinator freed it.
    h.apply(assign(&[(2, 1)]));
    assert_eq!(h.started(), vec![(2, 1)]);
    h.apply(Input::Finished { key: (1, 1), fin: Final::Silent });
    assert!(!h.s.held.contains_key(&(1, 1)));
    // A cancellation of an attempt not held is ignored.
    assert!(h.apply(cancel((9, 1))).is_empty());
}

#[test]
fn stale_attempts_are_dropped_whether_running_or_reported() {
    let mut h = Harness::up(2);
    h.apply(assign(&[(1, 1), (2, 1)]));
    // Hold the queue: a call is in flight.
    h.s.in_flight = Some(vec![]);
    h.apply(Input::Finished { key: (2, 1), fin: completed() });
    // A heartbeat names both: the running one is stopped, the finished one forgotten.
    h.s.heartbeat_in_flight = true;
    let stale = pb::HeartbeatResponse { stale: refs(&[(1, 1), (2, 1)]), lease_expires_ms: 0 };
    let fx = h.apply(Input::HeartbeatDone(Ok(stale))).to_vec();
    assert_eq!(fx, vec![Effect::Stop { key: (1, 1), stop: Stop { reason: StopReason::Stale, immediate: false } }]);
    assert_eq!(h.s.held.keys().copied().collect::<Vec<_>>(), vec![(1, 1)]);
    assert!(h.s.outbox.is_empty());
}

#[test]
fn progress_is_cut_and_capped_but_final_reports_never_are() {
    let mut h = Harness::up(1);
    h.apply(assign(&[(1, 1)]));
    // Hold the queue: a call is in flight.
    assert!(h.s.in_flight.is_none());
    h.s.in_flight = Some(vec![]);
    h.apply(Input::Progress { key: (1, 1), message: "é".repeat(MAX_PROGRESS_BYTES) });
    let Some(pb::report::Body::Progress(p)) = &h.s.outbox[0].body else { panic!("progress expected") };
    assert!(p.message.len() <= MAX_PROGRESS_BYTES && p.message.len() > MAX_PROGRESS_BYTES - 2);
    // Messages too large to join each other's report.
    let big = "t".repeat(MAX_PROGRESS_BYTES / 2 + 1);
    for _ in 0..MAX_PENDING_PROGRESS + 5 {
        h.apply(Input::Progress { key: (1, 1), message: big.clone() });
    }
    assert_eq!(h.s.outbox.len(), MAX_PENDING_PROGRESS);
    assert_eq!(h.s.dropped_progress, 6);
    h.apply(Input::Finished { key: (1, 1), fin: completed() });
    assert!(is_final(h.s.outbox.back().unwrap()));
    // Progress of an attempt that no longer runs is ignored.
    h.apply(Input::Progress { key: (1, 1), message: "late".into() });
    assert_eq!(h.s.outbox.len(), MAX_PENDING_PROGRESS + 1);
    // Batches are bounded in count.
    h.apply(Input::ReportDone(Ok(pb::ReportResponse::default())));
    assert_eq!(h.sent().len(), MAX_BATCH_REPORTS);
    assert_eq!(h.s.dropped_progress, 0);
}

#[test]
fn lines_waiting_to_be_sent_join_one_progress_report() {
    let mut h = Harness::up(2);
    h.apply(assign(&[(1, 1), (2, 1)]));
    h.s.in_flight = Some(vec![]);
    for i in 0..3 {
        h.apply(Input::Progress { key: (1, 1), message: format!("line {i}") });
    }
    // Another attempt's line starts a report of its own; the next line of task 1 then too.
    h.apply(Input::Progress { key: (2, 1), message: "other".into() });
    h.apply(Input::Progress { key: (1, 1), message: "line 3".into() });
    let msgs: Vec<(i64, String)> =
        h.s.outbox
            .iter()
            .filter_map(|r| match &r.body {
                Some(pb::report::Body::Progress(p)) => Some((r.task_id, p.message.clone())),
                _ => None,
            })
            .collect();
    assert_eq!(
        msgs,
        vec![(1, "line 0\nline 1\nline 2".to_string()), (2, "other".to_string()), (1, "line 3".to_string())]
    );
}

#[test]
fn a_lost_stream_reconnects_with_backoff_and_names_the_attempts_held() {
    let mut h = Harness::up(2);
    h.apply(assign(&[(1, 1)]));
    let fx = h.apply(Input::StreamEnded("reset".into())).to_vec();
    assert_eq!(fx, vec![Effect::Disconnect]);
    // Reports wait for the link.
    assert!(h.apply(Input::Finished { key: (1, 1), fin: completed() }).is_empty());
    let before = h.now;
    assert_eq!(h.fire(), Timer::Reconnect);
    let waited = h.now - before;
    assert!(
        waited >= contract::defaults::RECONNECT_MIN / 2 && waited <= contract::defaults::RECONNECT_MIN,
        "{waited:?}"
    );
    assert_eq!(h.fx, vec![Effect::Connect { register: Some(Registration { slots: 2, running: refs(&[(1, 1)]) }) }]);
    h.apply(Input::ConnectFailed("refused".into()));
    let before = h.now;
    assert_eq!(h.fire(), Timer::Reconnect);
    assert!(h.now - before >= contract::defaults::RECONNECT_MIN, "the second wait is longer");
    // The coordinator says the attempt is no longer ours: its report is dropped.
    h.apply(Input::Connected(Some(register_response(&[(1, 1)]))));
    assert!(h.fx.is_empty() && h.s.held.is_empty() && h.s.outbox.is_empty());
    assert_eq!(h.s.backoff.steps.next(1.0), contract::defaults::RECONNECT_MIN, "the backoff was reset");
}

#[test]
fn backoff_grows_jittered_and_capped() {
    let mut b = Backoff { steps: contract::Backoff::default(), rng: fastrand::Rng::with_seed(1) };
    let first = b.next();
    assert!(first >= contract::defaults::RECONNECT_MIN / 2 && first <= contract::defaults::RECONNECT_MIN, "{first:?}");
    let mut last = Duration::ZERO;
    for _ in 0..20 {
        last = b.next();
        assert!(last <= contract::defaults::RECONNECT_MAX);
    }
    assert!(last >= contract::defaults::RECONNECT_MAX / 2, "{last:?}");
    b.reset();
    assert!(b.next() <= contract::defaults::RECONNECT_MIN);
}

#[test]
fn heartbeats_name_every_attempt_held_and_only_run_on_a_link() {
    let mut h = Harness::up(2);
    h.apply(assign(&[(1, 1), (2, 1)]));
    assert_eq!(h.fire(), Timer::Heartbeat);
    assert_eq!(h.fx, vec![Effect::Heartbeat { running: refs(&[(1, 1), (2, 1)]) }]);
    // No second heartbeat while one is in flight.
    assert_ne!(h.s.next_timer().map(|t| t.1), Some(Timer::Heartbeat));
    h.apply(Input::HeartbeatDone(Err(CallError::Other("no stream".into()))));
    h.apply(Input::StreamEnded("gone".into()));
    assert_ne!(h.s.next_timer().map(|t| t.1), Some(Timer::Heartbeat));
}

#[test]
fn the_first_signal_lowers_the_slots_then_every_registration_keeps_them_low() {
    let mut h = Harness::up(4);
    h.apply(assign(&[(1, 1), (2, 1)]));
    let fx = h.apply(Input::Signal(Signal::Terminate)).to_vec();
    assert_eq!(fx, vec![Effect::Register(Registration { slots: 2, running: refs(&[(1, 1), (2, 1)]) })]);
    // A report while agents still run registers first with what will remain, naming the
    // reported attempt too (its report follows).
    h.apply(Input::Finished { key: (1, 1), fin: completed() });
    let fx = h.fx.clone();
    let [Effect::Report { register, .. }] = fx.as_slice() else { panic!("{fx:?}") };
    assert_eq!(register, &Some(Registration { slots: 1, running: refs(&[(1, 1), (2, 1)]) }));
    h.apply(Input::ReportDone(Ok(acks(&h.sent(), true))));
    // A reconnection while draining registers with no more slots than held (at least one).
    h.apply(Input::StreamEnded("reset".into()));
    h.fire();
    assert_eq!(h.fx, vec![Effect::Connect { register: Some(Registration { slots: 1, running: refs(&[(2, 1)]) }) }]);
}

#[test]
fn a_drain_waits_for_the_agents_closes_the_stream_then_delivers_the_last_reports() {
    let mut h = Harness::up(2);
    h.apply(assign(&[(1, 1)]));
    h.apply(Input::Signal(Signal::Interrupt));
    assert!(!h.fx.contains(&Effect::CloseStream), "an agent still runs");
    // The last agent is done: close the stream and ask whether the coordinator noticed;
    // no report before it did.
    h.apply(Input::Finished { key: (1, 1), fin: completed() });
    assert_eq!(h.fx, vec![Effect::CloseStream, Effect::Probe]);
    // The coordinator still answers: probe again a little later.
    h.apply(Input::ProbeDone { refused: false });
    assert_eq!(h.fire(), Timer::Probe);
    assert_eq!(h.fx, vec![Effect::Probe]);
    h.apply(Input::ProbeDone { refused: true });
    let batch = h.sent();
    assert!(matches!(h.fx[0], Effect::Report { register: None, .. }));
    assert!(!h.s.done());
    h.apply(Input::ReportDone(Ok(acks(&batch, true))));
    assert!(h.s.done());
}

#[test]
fn closing_without_a_link_reconnects_only_to_deliver_reports() {
    let mut h = Harness::new(settings(1));
    // Signalled before ever connecting, with nothing held: done at once.
    h.apply(Input::Signal(Signal::Terminate));
    assert_eq!(h.fx, vec![Effect::CloseStream]);
    assert!(h.s.done());

    let mut h = Harness::up(1);
    h.apply(assign(&[(1, 1)]));
    h.apply(Input::StreamEnded("reset".into()));
    h.apply(Input::Signal(Signal::Terminate));
    h.apply(Input::Finished { key: (1, 1), fin: completed() });
    assert_eq!(h.fx, vec![Effect::CloseStream]);
    assert_eq!(h.fire(), Timer::Reconnect);
    assert_eq!(h.fx, vec![Effect::Connect { register: None }]);
    h.apply(Input::Connected(None));
    let batch = h.sent();
    h.apply(Input::ReportDone(Ok(acks(&batch, true))));
    assert!(h.s.done());
}

#[test]
fn grace_over_stops_the_agents_and_a_second_signal_kills_them() {
    for second_signal in [false, true] {
        let mut h = Harness::up(2);
        h.apply(assign(&[(1, 1)]));
        h.apply(Input::Signal(Signal::Terminate));
        if second_signal {
            h.apply(Input::Signal(Signal::Terminate));
        } else {
            // Heartbeats go on during the grace period.
            while h.fire() == Timer::Heartbeat {
                h.apply(Input::HeartbeatDone(Ok(pb::HeartbeatResponse::default())));
            }
            assert!(h.now >= h.s.drain_until.unwrap());
        }
        let stop = Stop { reason: StopReason::Shutdown, immediate: second_signal };
        assert_eq!(h.fx, vec![Effect::Stop { key: (1, 1), stop }]);
        assert_ne!(h.s.next_timer().map(|t| t.1), Some(Timer::GraceOver));
    }
}

#[test]
fn the_flush_bound_ends_the_session_with_reports_undelivered() {
    let mut h = Harness::up(1);
    h.apply(assign(&[(1, 1)]));
    h.apply(Input::Signal(Signal::Terminate));
    h.apply(Input::Finished { key: (1, 1), fin: completed() });
    assert!(h.fx.contains(&Effect::CloseStream));
    // The probe is never answered.
    assert_eq!(h.fire(), Timer::FlushBound);
    assert!(h.s.done());
    assert!(h.s.step(h.now).is_empty(), "nothing more once given up");
}

#[test]
fn an_agent_that_cannot_start_is_handed_back_and_three_in_a_row_pause_the_worker() {
    let mut h = Harness::up(2);
    for n in 1..=3 {
        let key = (n, 1);
        h.apply(assign(&[key]));
        assert_eq!(h.started(), vec![key]);
        h.apply(Input::Finished { key, fin: Final::NotStarted("cannot run /gone: No such file".into()) });
        if n < 3 {
            let sent = h.sent();
            assert_eq!(sent[0].body, handed_back("worker cannot start its agent: cannot run /gone: No such file"));
            assert!(h.s.paused().is_none());
            h.apply(Input::ReportDone(Ok(acks(&sent, true))));
        }
    }
    // Paused with nothing running: the stream closes first, then the last report goes.
    assert!(h.s.paused().unwrap().contains("could not be started 3 times in a row"));
    assert!(h.fx.contains(&Effect::CloseStream) && h.fx.contains(&Effect::Probe), "{:?}", h.fx);
    h.apply(Input::ProbeDone { refused: true });
    let sent = h.sent();
    assert_eq!(sent[0].body, handed_back("worker cannot start its agent: cannot run /gone: No such file"));
    h.apply(Input::ReportDone(Ok(acks(&sent, true))));
    assert!(!h.s.done(), "a paused worker does not exit");
    assert_eq!(h.s.next_timer(), None, "no reconnect while paused with nothing to say");
    // An assignment that was on its way is handed back, saying why.
    h.apply(assign(&[(9, 1)]));
    assert!(h.started().is_empty());
    let reason = match &h.sent()[0].body {
        Some(pb::report::Body::HandedBack(b)) => b.reason.clone(),
        other => panic!("{other:?}"),
    };
    assert!(reason.starts_with("worker takes no work: the agent could not be started"), "{reason}");
    // The program is back: a new stream with every slot.
    h.apply(Input::AgentFound);
    assert!(h.s.paused().is_none());
    assert_eq!(h.fx, vec![Effect::CloseStream, Effect::Disconnect]);
    assert_eq!(h.fire(), Timer::Reconnect);
    assert_eq!(h.fx, vec![Effect::Connect { register: Some(Registration { slots: 2, running: refs(&[(9, 1)]) }) }]);
}

#[test]
fn a_success_resets_the_count_of_start_failures() {
    let mut h = Harness::up(1);
    for (n, fin) in [
        (1, Final::NotStarted("gone".into())),
        (2, Final::NotStarted("gone".into())),
        (3, completed()),
        (4, Final::NotStarted("gone".into())),
        (5, Final::NotStarted("gone".into())),
    ] {
        h.apply(assign(&[(n, 1)]));
        h.apply(Input::Finished { key: (n, 1), fin });
        let sent = h.sent();
        h.apply(Input::ReportDone(Ok(acks(&sent, true))));
    }
    assert!(h.s.paused().is_none(), "never three in a row");
}

#[test]
fn low_disk_lowers_the_slots_parks_once_idle_and_resumes_when_space_is_back() {
    let mut h = Harness::up(3);
    h.apply(assign(&[(1, 1)]));
    let fx = h.apply(Input::Disk(Some("low on disk: 10 MiB free".into()))).to_vec();
    assert_eq!(fx, vec![Effect::Register(Registration { slots: 1, running: refs(&[(1, 1)]) })]);
    // Running work goes on (and keeps its lease); new work goes back.
    assert!(h.apply(assign(&[(2, 1)])).iter().all(|e| !matches!(e, Effect::Start(_))));
    let sent = h.sent();
    assert_eq!(sent[0].body, handed_back("worker takes no work: low on disk: 10 MiB free"));
    h.apply(Input::ReportDone(Ok(acks(&sent, true))));
    h.apply(Input::Finished { key: (1, 1), fin: completed() });
    assert!(h.fx.contains(&Effect::CloseStream), "idle and paused: the stream closes {:?}", h.fx);
    h.apply(Input::ProbeDone { refused: true });
    let sent = h.sent();
    h.apply(Input::ReportDone(Ok(acks(&sent, true))));
    assert!(!h.s.done());
    // Space is back.
    h.apply(Input::Disk(None));
    assert_eq!(h.fire(), Timer::Reconnect);
    assert_eq!(h.fx, vec![Effect::Connect { register: Some(Registration { slots: 3, running: vec![] }) }]);
    // A signal while paused and parked ends the worker.
    h.apply(Input::Disk(Some("low".into())));
    h.apply(Input::Signal(Signal::Terminate));
    assert!(h.s.done());
}

#[test]
fn a_pause_lifted_while_agents_run_raises_the_slots_again() {
    let mut h = Harness::up(2);
    h.apply(assign(&[(1, 1)]));
    h.apply(Input::Disk(Some("low".into())));
    let fx = h.apply(Input::Disk(None)).to_vec();
    assert_eq!(fx, vec![Effect::Register(Registration { slots: 2, running: refs(&[(1, 1)]) })]);
    h.apply(assign(&[(2, 1)]));
    assert_eq!(h.started(), vec![(2, 1)]);
}

// The property test drives the state like the shell would, with a model of the calls in
// flight and of the agents.

#[derive(Clone, Debug)]
enum Op {
    Assign(u8),
    Cancel(u8),
    Progress(u8),
    Finish(u8, bool),
    ConnectOk,
    ConnectFail,
    StreamEnd,
    ReportOk(bool),
    ReportInvalid,
    ReportFail,
    HeartbeatOk(Option<u8>),
    HeartbeatFail,
    Probe(bool),
    Signal,
    Timer,
    NotStarted(u8),
    Disk(bool),
    AgentFound,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..4).prop_map(Op::Assign),
        1 => any::<u8>().prop_map(Op::Cancel),
        1 => any::<u8>().prop_map(Op::Progress),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(i, ok)| Op::Finish(i, ok)),
        2 => Just(Op::ConnectOk),
        1 => Just(Op::ConnectFail),
        1 => Just(Op::StreamEnd),
        3 => any::<bool>().prop_map(Op::ReportOk),
        1 => Just(Op::ReportInvalid),
        1 => Just(Op::ReportFail),
        1 => proptest::option::of(any::<u8>()).prop_map(Op::HeartbeatOk),
        1 => Just(Op::HeartbeatFail),
        1 => any::<bool>().prop_map(Op::Probe),
        1 => Just(Op::Signal),
        2 => Just(Op::Timer),
        1 => any::<u8>().prop_map(Op::NotStarted),
        1 => any::<bool>().prop_map(Op::Disk),
        1 => Just(Op::AgentFound),
    ]
}

/// What the shell would know: calls in flight, the agents, and what became of each attempt.
#[derive(Default)]
struct Model {
    slots: u32,
    connecting: bool,
    /// The pending connection registers and opens a stream.
    connecting_stream: bool,
    stream_open: bool,
    report: Option<Vec<pb::Report>>,
    heartbeat: bool,
    probe: bool,
    signalled: bool,
    /// The state was paused at some point.
    paused_once: bool,
    /// Running agents and the last stop asked of each.
    agents: BTreeMap<Key, Option<Stop>>,
    revoked: BTreeSet<Key>,
    assigned: BTreeSet<Key>,
    acked: BTreeSet<Key>,
    dropped: BTreeSet<Key>,
    next_task: i64,
}

impl Model {
    /// Checks the effects against the promises, then records the calls they make.
    fn observe(&mut self, s: &State, fx: Vec<Effect>) {
        s.check_invariants();
        let (held, slots) = (s.held_refs(), self.slots);
        let check_registration = |r: &Registration| {
            assert_eq!(r.running, held, "a registration names every attempt held");
            if s.draining() {
                assert!(r.slots as usize <= held.len().max(1), "{r:?} while draining");
            } else {
                assert_eq!(r.slots, slots);
            }
        };
        for e in fx {
            match e {
                Effect::Connect { register } => {
                    register.iter().for_each(check_registration);
                    (self.connecting, self.connecting_stream) = (true, register.is_some());
                }
                Effect::Disconnect => self.stream_open = false,
                Effect::CloseStream => (self.connecting, self.stream_open) = (false, false),
                Effect::Register(r) => {
                    assert!(self.signalled || self.paused_once, "slots change only to drain or pause");
                    check_registration(&r);
                }
                Effect::Report { register, reports } => {
                    register.iter().for_each(check_registration);
                    assert!(self.report.replace(reports).is_none(), "two report calls at once");
                }
                Effect::Heartbeat { running } => {
                    assert_eq!(running, held, "a heartbeat names every attempt held");
                    self.heartbeat = true;
                }
                Effect::Probe => self.probe = true,
                Effect::Start(a) => {
                    assert!(!self.signalled && s.paused().is_none(), "new work while draining or paused");
                    assert!(self.agents.insert((a.task_id, a.attempt), None).is_none());
                }
                Effect::Stop { key, stop } => {
                    if matches!(stop.reason, StopReason::Cancelled | StopReason::Stale) {
                        self.revoked.insert(key);
                    }
                    *self.agents.get_mut(&key).expect("stop of a running agent") = Some(stop);
                }
            }
        }
        let busy = self.agents.keys().filter(|k| !self.revoked.contains(k)).count();
        assert!(busy <= self.slots as usize, "{busy} agents occupy slots, {} slots", self.slots);
    }

    fn pick<T: Copy>(items: impl Iterator<Item = T>, i: u8) -> Option<T> {
        let v: Vec<T> = items.collect();
        (!v.is_empty()).then(|| v[i as usize % v.len()])
    }

    /// The input this op stands for, if it can happen now.
    fn input(&mut self, s: &State, op: Op) -> Option<Input> {
        Some(match op {
            Op::Assign(n) if self.stream_open => {
                let keys: Vec<Key> = (0..n).map(|i| (self.next_task + i as i64, 1)).collect();
                self.next_task += n as i64;
                self.assigned.extend(&keys);
                assign(&keys)
            }
            Op::Cancel(i) if self.stream_open => {
                let key = Model::pick(s.held.keys().copied(), i)?;
                self.dropped.insert(key);
                cancel(key)
            }
            Op::Progress(i) => {
                let key = Model::pick(self.agents.keys().copied(), i)?;
                Input::Progress { key, message: "step".into() }
            }
            Op::Finish(i, ok) => self.finish(Model::pick(self.agents.keys().copied(), i)?, ok),
            Op::ConnectOk if self.connecting => {
                (self.connecting, self.stream_open) = (false, self.connecting_stream);
                Input::Connected(self.connecting_stream.then(|| register_response(&[])))
            }
            Op::ConnectFail if self.connecting => {
                self.connecting = false;
                Input::ConnectFailed("refused".into())
            }
            Op::StreamEnd if self.stream_open => {
                self.stream_open = false;
                Input::StreamEnded("reset".into())
            }
            Op::ReportOk(accepted) => {
                let batch = self.report.take()?;
                let finals = batch.iter().filter(|r| is_final(r)).map(key_of);
                if accepted {
                    self.acked.extend(finals)
                } else {
                    self.dropped.extend(finals)
                }
                Input::ReportDone(Ok(acks(&batch, accepted)))
            }
            Op::ReportInvalid => {
                self.dropped.extend(self.report.take()?.iter().filter(|r| is_final(r)).map(key_of));
                Input::ReportDone(Err(CallError::Invalid("bad".into())))
            }
            Op::ReportFail => {
                self.report.take()?;
                Input::ReportDone(Err(CallError::Other("unavailable".into())))
            }
            Op::HeartbeatOk(stale) if self.heartbeat => {
                self.heartbeat = false;
                let stale: Vec<Key> = stale.and_then(|i| Model::pick(s.held.keys().copied(), i)).into_iter().collect();
                self.dropped.extend(&stale);
                Input::HeartbeatDone(Ok(pb::HeartbeatResponse { stale: refs(&stale), lease_expires_ms: 0 }))
            }
            Op::HeartbeatFail if self.heartbeat => {
                self.heartbeat = false;
                Input::HeartbeatDone(Err(CallError::Other("no stream".into())))
            }
            Op::Probe(refused) if self.probe => {
                self.probe = false;
                Input::ProbeDone { refused }
            }
            Op::Signal => {
                self.signalled = true;
                Input::Signal(Signal::Terminate)
            }
            Op::NotStarted(i) => {
                let key = Model::pick(self.agents.keys().copied(), i)?;
                self.agents.remove(&key);
                self.paused_once = true;
                Input::Finished { key, fin: Final::NotStarted("no such file".into()) }
            }
            Op::Disk(low) => {
                self.paused_once |= low;
                Input::Disk(low.then(|| "low on disk".to_string()))
            }
            Op::AgentFound => Input::AgentFound,
            _ => return None,
        })
    }

    /// An agent ends: silently when stopped as cancelled or stale, handed back when stopped
    /// for the shutdown, otherwise completed or failed.
    fn finish(&mut self, key: Key, ok: bool) -> Input {
        use pb::report::Body;
        let fin = match self.agents.remove(&key).flatten() {
            Some(Stop { reason: StopReason::Cancelled | StopReason::Stale, .. }) => Final::Silent,
            Some(Stop { reason: StopReason::Shutdown, .. }) => {
                Final::Report(Body::HandedBack(pb::HandedBack { reason: "worker shutting down".into() }))
            }
            None if ok => completed(),
            None => Final::Report(Body::Failed(pb::Failed { result: None, retryable: true })),
        };
        if matches!(fin, Final::Silent) {
            self.dropped.insert(key);
        }
        Input::Finished { key, fin }
    }

    /// What a cooperative coordinator and fast agents do next: answer, finish, or let time
    /// pass to the next timer.
    fn settle_op(&self) -> Op {
        if !self.signalled {
            Op::Signal
        } else if self.connecting {
            Op::ConnectOk
        } else if self.report.is_some() {
            Op::ReportOk(true)
        } else if self.heartbeat {
            Op::HeartbeatOk(None)
        } else if self.probe {
            Op::Probe(true)
        } else if !self.agents.is_empty() {
            Op::Finish(0, true)
        } else {
            Op::Timer
        }
    }
}

fn run_op(s: &mut State, m: &mut Model, now: &mut Instant, op: Op) {
    let input = match op {
        Op::Timer => match s.next_timer() {
            Some((at, timer)) => {
                *now = (*now).max(at);
                Some(Input::Timer(timer))
            }
            None => None,
        },
        op => m.input(s, op),
    };
    if let Some(input) = input {
        let fx = s.apply(input, *now);
        m.observe(s, fx);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Under any interleaving: never more attempts occupy a slot than there are slots, no
    /// new work once draining, registrations and heartbeats name every attempt held, one
    /// report call at a time. Then, with a cooperative coordinator, the drain ends and every
    /// attempt ever assigned was either reported and acknowledged or dropped by the
    /// coordinator (cancelled, stale, fenced off, refused).
    #[test]
    fn random_histories_keep_the_promises(
        slots in 1u32..4,
        noop in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        let mut now = Instant::now();
        let mut s = State::new(Settings { noop, ..settings(slots) }, now, 3);
        let mut m = Model { slots, next_task: 1, ..Model::default() };
        let fx = s.step(now);
        m.observe(&s, fx);
        for op in ops {
            if s.done() {
                break;
            }
            run_op(&mut s, &mut m, &mut now, op);
        }
        for _ in 0..10_000 {
            if s.done() {
                break;
            }
            let op = m.settle_op();
            run_op(&mut s, &mut m, &mut now, op);
        }
        prop_assert!(s.done(), "the drain never ended");
        if !s.gave_up {
            prop_assert!(s.held.is_empty() && s.outbox.is_empty(), "done with attempts held");
            for key in &m.assigned {
                prop_assert!(m.acked.contains(key) || m.dropped.contains(key), "attempt {key:?} neither acknowledged nor dropped");
            }
        }
    }
}

#[test]
fn the_status_line_follows_the_link_the_slots_and_the_drain() {
    let mut h = Harness::new(settings(2));
    assert_eq!(h.s.status(), "connecting: 0 running");
    h.fire();
    assert_eq!(h.s.status(), "connecting: 0 running", "connecting until the stream is open");
    h.apply(Input::Connected(Some(register_response(&[]))));
    assert_eq!(h.s.status(), "connected: 0 of 2 slots busy");
    h.apply(assign(&[(1, 1)]));
    assert_eq!(h.s.status(), "connected: 1 of 2 slots busy");
    h.apply(Input::StreamEnded("reset".into()));
    assert_eq!(h.s.status(), "connecting: 1 running");
    h.apply(Input::Signal(Signal::Terminate));
    assert_eq!(h.s.status(), "draining: 1 running");
}

"""The watch's resume rules against a scripted in-process server (what a real coordinator
cannot be made to do on cue: cut a split snapshot, resend an event, end a stream early),
for the sync and the async client."""

from __future__ import annotations

import asyncio
from concurrent import futures
from typing import Any, List, Optional, Sequence, Tuple

import grpc
import pytest

import orca
from orca._watch import BACKOFF_MAX, BACKOFF_MIN, Backoff
from orca.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

SNAP = orchestrator_pb2.JOB_EVENT_KIND_SNAPSHOT
STATE = orchestrator_pb2.JOB_EVENT_KIND_TASK_STATE

Connection = Tuple[Sequence[orchestrator_pb2.JobEvent], Optional[grpc.StatusCode]]


def status(total: int, completed: int) -> types_pb2.JobStatus:
    return types_pb2.JobStatus(total_tasks=total, completed=completed, pending=total - completed)


def snap(seq: int, more: bool, total: int = 2, completed: int = 0) -> orchestrator_pb2.JobEvent:
    return orchestrator_pb2.JobEvent(
        seq=seq, job_id="j", kind=SNAP, snapshot_more=more, status=status(total, completed), job_state=types_pb2.JOB_STATE_ACTIVE
    )


def change(seq: int, task_id: int, total: int = 2, completed: int = 0) -> orchestrator_pb2.JobEvent:
    return orchestrator_pb2.JobEvent(
        seq=seq, job_id="j", kind=STATE, task_id=task_id, state=types_pb2.TASK_STATE_COMPLETED, status=status(total, completed)
    )


class Scripted(orchestrator_pb2_grpc.OrchestratorServicer):
    """Each WatchJob call plays the next connection of the script: its events, then an error
    status (or a normal end for None)."""

    def __init__(self, script: Sequence[Connection]) -> None:
        self.script = list(script)
        self.requests: List[Tuple[int, bool, Optional[str]]] = []

    def WatchJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        auth = dict(context.invocation_metadata()).get("authorization")
        self.requests.append((request.after_seq, request.follow, auth))
        if not self.script:
            context.abort(grpc.StatusCode.UNAVAILABLE, "script over")
        events, end = self.script.pop(0)
        for ev in events:
            yield ev
        if end is not None:
            context.abort(end, f"scripted {end.name.lower()}")


@pytest.fixture
def serve():  # type: ignore[no-untyped-def]
    servers = []

    def start(script: Sequence[Connection]) -> Tuple[Scripted, str]:
        servicer = Scripted(script)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return servicer, f"http://127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(0)


def watch(url: str, mode: str, **kw: Any) -> List[orchestrator_pb2.JobEvent]:
    """All events of watch_job("j", **kw) through the sync or the async client."""
    if mode == "sync":
        with orca.Client(url, token="tok") as c:
            return list(c.watch_job("j", **kw))

    async def main() -> List[orchestrator_pb2.JobEvent]:
        async with orca.AsyncClient(url, token="tok") as c:
            return [e async for e in c.watch_job("j", **kw)]

    return asyncio.run(main())


MODES = ["sync", "async"]


@pytest.mark.parametrize("mode", MODES)
def test_a_cut_snapshot_does_not_move_the_resume_point_and_nothing_is_delivered_twice(serve, mode: str) -> None:  # type: ignore[no-untyped-def]
    server, url = serve(
        [
            ([snap(5, True)], grpc.StatusCode.UNAVAILABLE),
            ([snap(5, True), snap(5, False), change(6, 1, completed=1)], grpc.StatusCode.UNAVAILABLE),
            # The server repeats seq 6; the client drops it.
            ([change(6, 1, completed=1), change(7, 2, completed=2)], None),
        ]
    )
    events = watch(url, mode)
    assert [(e.seq, e.kind, e.snapshot_more) for e in events] == [
        (5, SNAP, True),
        (5, SNAP, True),
        (5, SNAP, False),
        (6, STATE, False),
        (7, STATE, False),
    ]
    assert [r[0] for r in server.requests] == [0, 0, 6], "resumed before the cut snapshot, then after seq 6"
    assert all(r[2] == "Bearer tok" for r in server.requests), "the token goes with every call"


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_that_ends_before_the_job_is_idle_is_resumed(serve, mode: str) -> None:  # type: ignore[no-untyped-def]
    # A coordinator that shuts down ends its watch streams normally.
    server, url = serve([([snap(3, False, total=1)], None), ([change(4, 1, total=1, completed=1)], None)])
    events = watch(url, mode)
    assert [e.seq for e in events] == [3, 4]
    assert [r[0] for r in server.requests] == [0, 3]


@pytest.mark.parametrize("mode", MODES)
def test_a_followed_stream_is_resumed_after_a_normal_end(serve, mode: str) -> None:  # type: ignore[no-untyped-def]
    server, url = serve(
        [([snap(3, False, total=1, completed=1)], None), ([change(4, 2, total=2, completed=2)], grpc.StatusCode.NOT_FOUND)]
    )
    with pytest.raises(orca.NotFound):
        watch(url, mode, follow=True, after_seq=1)
    assert server.requests[0][:2] == (1, True) and server.requests[1][:2] == (3, True)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "code,error",
    [
        (grpc.StatusCode.PERMISSION_DENIED, orca.PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, orca.Unauthenticated),
        (grpc.StatusCode.INVALID_ARGUMENT, orca.InvalidArgument),
        (grpc.StatusCode.FAILED_PRECONDITION, orca.FailedPrecondition),
        (grpc.StatusCode.UNIMPLEMENTED, orca.Unimplemented),
        (grpc.StatusCode.OUT_OF_RANGE, orca.OutOfRange),
    ],
)
def test_refusals_are_raised_without_reconnecting(serve, mode: str, code: grpc.StatusCode, error: type) -> None:  # type: ignore[no-untyped-def]
    server, url = serve([([snap(2, False)], code)])
    with pytest.raises(error, match=f"scripted {code.name.lower()}"):
        watch(url, mode)
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_transient_errors_are_retried_until_max_reconnects(serve, mode: str) -> None:  # type: ignore[no-untyped-def]
    server, url = serve(
        [
            ([], grpc.StatusCode.UNAVAILABLE),
            ([], grpc.StatusCode.RESOURCE_EXHAUSTED),
            ([], grpc.StatusCode.INTERNAL),
            ([], grpc.StatusCode.UNAVAILABLE),
        ]
    )
    with pytest.raises(orca.Unavailable):
        watch(url, mode, max_reconnects=3)
    assert len(server.requests) == 4, "the first try and three reconnects"


def test_an_event_resets_the_reconnect_count(serve) -> None:  # type: ignore[no-untyped-def]
    server, url = serve(
        [
            ([], grpc.StatusCode.UNAVAILABLE),
            ([snap(1, False)], grpc.StatusCode.UNAVAILABLE),
            ([], grpc.StatusCode.UNAVAILABLE),
            ([change(2, 1, completed=2)], None),
        ]
    )
    events = watch(url, "sync", max_reconnects=2)  # three failures in all, never three in a row
    assert [e.seq for e in events] == [1, 2]
    assert [r[0] for r in server.requests] == [0, 0, 1, 1]


def test_backoff_doubles_from_100_ms_to_5_s_with_jitter() -> None:
    low = Backoff(draw=lambda: 0.0)
    assert [round(low.next(), 3) for _ in range(8)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.5, 2.5]
    high = Backoff(draw=lambda: 0.999999)
    delays = [high.next() for _ in range(8)]
    assert delays[0] == pytest.approx(BACKOFF_MIN, rel=1e-3) and delays[-1] == pytest.approx(BACKOFF_MAX, rel=1e-3)
    high.reset()
    assert high.next() == pytest.approx(BACKOFF_MIN, rel=1e-3)

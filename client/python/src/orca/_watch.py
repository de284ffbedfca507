"""The resumable watch, as a state machine shared by the sync and the async client (they only
run the loop around it).

What stays true: an event is delivered at most once; the resume point (``after_seq`` of the
next WatchJob call) is the last sequence number delivered, except that a snapshot split over
several messages (``snapshot_more``) moves it only with its last part, so a cut snapshot is
sent again rather than half-seen; a refused request (a code in `NON_TRANSIENT`) is raised,
anything else (a dropped connection, UNAVAILABLE while the coordinator restarts, a server
that ends the stream before the job is idle, as it does when it shuts down) is retried with
jittered backoff.
"""

from __future__ import annotations

import random
from typing import Callable, Optional

import grpc

from orca.errors import OrcaError, Unavailable
from orca.v1 import orchestrator_pb2, types_pb2

#: Codes that no reconnect can fix: raised at once.
NON_TRANSIENT = frozenset(
    (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.OUT_OF_RANGE,
    )
)

BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0


class Backoff:
    """Reconnect delays doubling from 100 ms to 5 s, each drawn between half and all of its
    step (the same rule as the Rust workers and client), so clients do not reconnect in
    lockstep."""

    def __init__(self, draw: Callable[[], float] = random.random) -> None:
        self.failures = 0
        self._draw = draw

    def next(self) -> float:
        step = min(BACKOFF_MIN * (1 << min(self.failures, 10)), BACKOFF_MAX)
        self.failures += 1
        return step * (0.5 + 0.5 * min(max(self._draw(), 0.0), 1.0))

    def reset(self) -> None:
        self.failures = 0


def job_idle(status: Optional[types_pb2.JobStatus], job_state: int) -> bool:
    """Whether the server ends a watch that does not follow: every task final (a job with no
    task is not idle), or the job cancelled."""
    if job_state == types_pb2.JOB_STATE_CANCELLED:
        return True
    if status is None or status.total_tasks == 0:
        return False
    return status.completed + status.failed + status.cancelled == status.total_tasks


class WatchState:
    """Where one watch stands between connections."""

    def __init__(self, job_id: str, after_seq: int, follow: bool, max_reconnects: int) -> None:
        if not isinstance(job_id, str) or not job_id:
            raise ValueError("job_id: must be a non-empty string")
        if after_seq < 0:
            raise ValueError(f"after_seq: must not be negative, got {after_seq}")
        if max_reconnects < 0:
            raise ValueError(f"max_reconnects: must not be negative, got {max_reconnects}")
        self.job_id = job_id
        self.delivered = after_seq
        self.follow = follow
        self.max_reconnects = max_reconnects
        #: Reconnects in a row without an event.
        self.failures = 0
        self.backoff = Backoff()
        #: The job's counts after the last event that carried them.
        self.status: Optional[types_pb2.JobStatus] = None
        self.job_state = types_pb2.JOB_STATE_UNSPECIFIED

    def request(self) -> orchestrator_pb2.WatchJobRequest:
        return orchestrator_pb2.WatchJobRequest(job_id=self.job_id, after_seq=self.delivered, follow=self.follow)

    def accept(self, ev: orchestrator_pb2.JobEvent) -> bool:
        """Records an event; False when it was already delivered (then it is dropped)."""
        self.failures = 0
        self.backoff.reset()
        snapshot = ev.kind == orchestrator_pb2.JOB_EVENT_KIND_SNAPSHOT
        if not snapshot and ev.seq <= self.delivered:
            return False
        if ev.HasField("status"):
            self.status = types_pb2.JobStatus()
            self.status.CopyFrom(ev.status)
        if ev.job_state != types_pb2.JOB_STATE_UNSPECIFIED:
            self.job_state = ev.job_state
        if not (snapshot and ev.snapshot_more):
            self.delivered = max(self.delivered, ev.seq)
        return True

    def ended_normally(self) -> bool:
        """The server closed the stream with OK: True when that is the end of the watch (the
        job is idle and we do not follow); False when it must be resumed (a coordinator
        that shuts down ends its streams the same way)."""
        return not self.follow and job_idle(self.status, self.job_state)

    def retry_delay(self, err: Optional[OrcaError]) -> float:
        """The delay before reconnecting after ``err`` (None: the stream ended early), or
        raises it when it is not transient or reconnects are used up."""
        if err is not None and err.code in NON_TRANSIENT:
            raise err
        self.failures += 1
        if self.max_reconnects and self.failures > self.max_reconnects:
            if err is None:
                err = Unavailable(
                    grpc.StatusCode.UNAVAILABLE,
                    f"watch of job {self.job_id}: the stream ended before the job was idle",
                )
            raise err
        return self.backoff.next()

"""Standby coordinators: which URL of a coordinator list is the leader.

Several coordinators may share one database; one of them leads. A standby answers every
``orca.v1`` call with UNAVAILABLE (``this coordinator is a standby; the leader is at ...``)
and reports NOT_SERVING for ``orca.v1.Orchestrator`` on its gRPC health service, which stays
open; the leader reports SERVING. Given several URLs, a client probes them in order with
``grpc.health.v1.Health/Check`` (`PROBE_SECONDS` each) and uses:

1. the first that answers SERVING;
2. else the first that answered at all (no leader right now: its calls fail UNAVAILABLE);
3. else the first URL (nothing answered: the call fails UNAVAILABLE, as with one URL).

The rule is `LeaderChoice`, fed one answer at a time; `pick` and `pick_async` run it around
the probes of the sync and the asyncio client. A call that fails UNAVAILABLE makes the client
pick again before its next call (`fails_over`); only the reads in `RETRIED_READS` are sent
again at once. The two health messages are encoded here by hand (a string, an enum), so the
package needs no grpcio-health-checking.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Optional, Sequence, Tuple

import grpc
import grpc.aio

from orca.errors import OrcaError, error_from_rpc

#: The health method and the service whose status tells the leader.
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_SERVICE = "orca.v1.Orchestrator"
#: Deadline of one health probe, in seconds.
PROBE_SECONDS = 2.0

#: ``grpc.health.v1.HealthCheckResponse.ServingStatus`` values.
UNKNOWN = 0
SERVING = 1
NOT_SERVING = 2

#: Failures of a probe that mean nothing answered (no connection, no reply in time). Any
#: other status (UNIMPLEMENTED, NOT_FOUND for a service not registered yet) came from a
#: server: it counts as an answer, not SERVING.
NO_ANSWER = frozenset((grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED))

#: Calls that change nothing, sent once more (to the leader picked again) after UNAVAILABLE.
#: Writes are not: the first one may have been applied before the connection broke.
RETRIED_READS = frozenset(
    ("GetJob", "ListJobs", "GetTask", "ListTasks", "GetContext", "ListSchedules", "ListWorkers", "GetStats")
)

Metadata = Tuple[Tuple[str, str], ...]
#: A probe's result: the serving status answered, or None when nothing answered.
Answer = Optional[int]


def encode_request(service: str = HEALTH_SERVICE) -> bytes:
    """A serialized ``HealthCheckRequest {string service = 1}``."""
    data = service.encode("utf-8")
    return b"\x0a" + _varint(len(data)) + data if data else b""


def decode_response(data: bytes) -> int:
    """The ``status`` (field 1, an enum) of a serialized ``HealthCheckResponse``; UNKNOWN when
    absent. Other fields are skipped; a truncated message is a ValueError."""
    status = UNKNOWN
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            if field == 1:
                status = value
        elif wire == 1:
            pos += 8
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            pos += size
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"HealthCheckResponse: unsupported wire type {wire}")
    if pos > len(data):
        raise ValueError("HealthCheckResponse: truncated")
    return status


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("HealthCheckResponse: truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def answer_of_error(e: grpc.RpcError) -> Answer:
    """What a failed probe says: None when nothing answered, else UNKNOWN."""
    return None if error_from_rpc(e).code in NO_ANSWER else UNKNOWN


def probe(channel: grpc.Channel, metadata: Metadata = ()) -> Answer:
    """The health of ``orca.v1.Orchestrator`` behind ``channel``, or None (no answer)."""
    check = channel.unary_unary(HEALTH_CHECK)
    try:
        reply = check(encode_request(), metadata=metadata, timeout=PROBE_SECONDS)
    except grpc.RpcError as e:
        return answer_of_error(e)
    return _status(reply)


async def probe_async(channel: grpc.aio.Channel, metadata: Metadata = ()) -> Answer:
    """`probe` on an asyncio channel."""
    check = channel.unary_unary(HEALTH_CHECK)
    try:
        reply = await check(encode_request(), metadata=metadata, timeout=PROBE_SECONDS)
    except grpc.RpcError as e:
        return answer_of_error(e)
    return _status(reply)


def _status(reply: bytes) -> int:
    """The status of a health reply; a reply that does not parse is an answer, UNKNOWN."""
    try:
        return decode_response(reply)
    except ValueError:
        return UNKNOWN


class LeaderChoice:
    """The rule, fed the answers of the URLs in order: the first SERVING, else the first that
    answered, else the first URL (index 0)."""

    def __init__(self) -> None:
        self.serving: Optional[int] = None
        self.answered: Optional[int] = None

    def offer(self, index: int, answer: Answer) -> bool:
        """Records URL ``index``'s answer; True once the choice is made (it serves)."""
        if answer is not None and self.answered is None:
            self.answered = index
        if answer == SERVING:
            self.serving = index
        return self.serving is not None

    @property
    def index(self) -> int:
        for chosen in (self.serving, self.answered):
            if chosen is not None:
                return chosen
        return 0


def pick(count: int, probe_url: Callable[[int], Answer]) -> int:
    """The index of the leader among ``count`` URLs, probing them in order with
    ``probe_url(index)`` and stopping at the first SERVING."""
    choice = LeaderChoice()
    for index in range(count):
        if choice.offer(index, probe_url(index)):
            break
    return choice.index


async def pick_async(count: int, probe_url: Callable[[int], Awaitable[Answer]]) -> int:
    """`pick` with asyncio probes."""
    choice = LeaderChoice()
    for index in range(count):
        if choice.offer(index, await probe_url(index)):
            break
    return choice.index


def fails_over(err: Optional[OrcaError], urls: Sequence[str]) -> bool:
    """Whether a failed call means the leader must be picked again: UNAVAILABLE (a standby,
    a coordinator gone) with several URLs to choose from."""
    return len(urls) > 1 and err is not None and err.code == grpc.StatusCode.UNAVAILABLE

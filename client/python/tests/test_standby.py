"""Several coordinator URLs (a leader and its standbys): the health messages, the picking rule
with fake answers, and real calls through a list whose first URL is a closed port, a
standby, or a leader that steps down.

The standbys here are in-process servers that act as the coordinator's standby does: health
NOT_SERVING for ``orca.v1.Orchestrator`` and UNAVAILABLE for every call. Switched to
leading, one forwards every call to the shared cluster's real coordinator, so two of them in
front of it play a leader and a standby over one database, and a failover is one switch.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent import futures
from typing import Any, Callable, Iterator, List, Optional, Set, Tuple

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import orca
from orca import _leader
from orca._leader import NOT_SERVING, SERVING, UNKNOWN
from orca.v1 import orchestrator_pb2, types_pb2

from conftest import Cluster

SNAP = orchestrator_pb2.JOB_EVENT_KIND_SNAPSHOT
STREAMS = ("/orca.v1.Orchestrator/WatchJob", "/orca.v1.Orchestrator/WatchFleet")


# The health messages and the rule, without a network.


def health_classes() -> Tuple[Any, Any]:
    """grpc.health.v1's two messages built by protobuf from their description, in a pool
    of their own, to check the hand-written encoding against."""
    f = descriptor_pb2.FileDescriptorProto(name="orca_test_health.proto", package="grpc.health.v1", syntax="proto3")
    req = f.message_type.add(name="HealthCheckRequest")
    req.field.add(name="service", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    resp = f.message_type.add(name="HealthCheckResponse")
    status = resp.enum_type.add(name="ServingStatus")
    for name, number in (("UNKNOWN", 0), ("SERVING", 1), ("NOT_SERVING", 2), ("SERVICE_UNKNOWN", 3)):
        status.value.add(name=name, number=number)
    resp.field.add(
        name="status",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_ENUM,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
        label=1,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
        get(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")),
    )


def test_the_health_messages_match_protobufs_encoding() -> None:
    Request, Response = health_classes()
    assert Request.FromString(_leader.encode_request()).service == "orca.v1.Orchestrator"
    assert _leader.encode_request() == Request(service="orca.v1.Orchestrator").SerializeToString()
    assert _leader.encode_request("x" * 200) == Request(service="x" * 200).SerializeToString(), "a 2-byte length"
    for status in (UNKNOWN, SERVING, NOT_SERVING, 3):
        assert _leader.decode_response(Response(status=status).SerializeToString()) == status
    extra = b"\x12\x03abc" + b"\x19" + bytes(8) + b"\x25" + bytes(4) + b"\x08\x02"
    assert _leader.decode_response(extra) == NOT_SERVING, "unknown fields are skipped"
    with pytest.raises(ValueError):
        _leader.decode_response(b"\x08")
    with pytest.raises(ValueError):
        _leader.decode_response(b"\x12\x05ab")


RULE = [
    # the answers of the URLs in order (None: no answer), the URL used, how many were asked
    ([SERVING, SERVING], 0, 1),
    ([None, SERVING, NOT_SERVING], 1, 2),
    ([NOT_SERVING, None, SERVING, SERVING], 2, 3),
    ([None, NOT_SERVING, UNKNOWN], 1, 3),
    ([UNKNOWN, NOT_SERVING], 0, 2),
    ([None, None, None], 0, 3),
]


@pytest.mark.parametrize("answers,chosen,asked", RULE)
def test_the_leader_is_the_first_serving_else_the_first_answering_else_the_first(
    answers: List[Optional[int]], chosen: int, asked: int
) -> None:
    probed: List[int] = []

    def probe(i: int) -> Optional[int]:
        probed.append(i)
        return answers[i]

    assert _leader.pick(len(answers), probe) == chosen
    assert probed == list(range(asked)), "in order, stopping at the first SERVING"

    probed.clear()

    async def probe_async(i: int) -> Optional[int]:
        return probe(i)

    assert asyncio.run(_leader.pick_async(len(answers), probe_async)) == chosen
    assert probed == list(range(asked))


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name


def test_a_failed_probe_is_no_answer_only_when_nothing_answered() -> None:
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        assert _leader.answer_of_error(FakeRpcError(code)) is None
    for code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED):
        assert _leader.answer_of_error(FakeRpcError(code)) == UNKNOWN


def test_only_unavailable_with_several_urls_picks_again() -> None:
    unavailable = orca.Unavailable(grpc.StatusCode.UNAVAILABLE, "this coordinator is a standby")
    assert _leader.fails_over(unavailable, ["http://a:1", "http://b:1"])
    assert not _leader.fails_over(unavailable, ["http://a:1"])
    assert not _leader.fails_over(None, ["http://a:1", "http://b:1"])
    assert not _leader.fails_over(orca.NotFound(grpc.StatusCode.NOT_FOUND, "x"), ["http://a:1", "http://b:1"])


# Real coordinators.


def closed_port_url() -> str:
    """A URL nothing listens on (a port the kernel gave and took back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class FakeCoordinator(grpc.GenericRpcHandler):
    """A coordinator that is a standby (health NOT_SERVING, every call UNAVAILABLE) or, once
    `lead` is called, forwards every orca.v1 call to ``upstream`` (health SERVING)."""

    def __init__(self, upstream: Optional[str] = None) -> None:
        self._upstream = grpc.insecure_channel(upstream) if upstream else None
        self._lock = threading.Lock()
        self._streams: Set[Any] = set()
        self.leading = False
        self.health_checks: List[bytes] = []
        #: Every orca.v1 call received (method name), refused or forwarded.
        self.calls: List[str] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[self])
        self.url = f"http://127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        self._server.start()

    def lead(self) -> None:
        assert self._upstream is not None
        self.leading = True

    def step_down(self) -> None:
        """Becomes a standby; the streams it forwards end with UNAVAILABLE."""
        with self._lock:
            self.leading = False
            streams = list(self._streams)
        for call in streams:
            call.cancel()

    def stop(self) -> None:
        self._server.stop(0)
        if self._upstream is not None:
            self._upstream.close()

    def service(self, details: grpc.HandlerCallDetails) -> Optional[grpc.RpcMethodHandler]:
        method = details.method  # type: ignore[attr-defined]
        if method == _leader.HEALTH_CHECK:
            return grpc.unary_unary_rpc_method_handler(self._health)
        if not method.startswith("/orca.v1.Orchestrator/"):
            return None
        if method in STREAMS:
            return grpc.unary_stream_rpc_method_handler(lambda req, ctx: self._stream(method, req, ctx))
        return grpc.unary_unary_rpc_method_handler(lambda req, ctx: self._unary(method, req, ctx))

    def _health(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.health_checks.append(request)
        return bytes([0x08, SERVING if self.leading else NOT_SERVING])

    def _admit(self, method: str, context: grpc.ServicerContext) -> grpc.Channel:
        self.calls.append(method.rsplit("/", 1)[1])
        if not self.leading:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this coordinator is a standby; the leader is at elsewhere")
        assert self._upstream is not None
        return self._upstream

    def _unary(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        upstream = self._admit(method, context)
        try:
            return upstream.unary_unary(method)(request)
        except grpc.RpcError as e:
            context.abort(e.code(), e.details())  # type: ignore[attr-defined]
            raise

    def _stream(self, method: str, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        upstream = self._admit(method, context)
        call = upstream.unary_stream(method)(request)
        with self._lock:
            self._streams.add(call)
        try:
            yield from call
        except grpc.RpcError as e:
            if not self.leading:
                context.abort(grpc.StatusCode.UNAVAILABLE, "this coordinator is a standby now")
            context.abort(e.code(), e.details())  # type: ignore[attr-defined]
        finally:
            with self._lock:
                self._streams.discard(call)


@pytest.fixture
def fakes() -> Iterator[Callable[..., FakeCoordinator]]:
    made: List[FakeCoordinator] = []

    def make(upstream: Optional[str] = None) -> FakeCoordinator:
        f = FakeCoordinator(upstream)
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


def test_the_real_coordinator_reports_serving(cluster: Cluster) -> None:
    channel = grpc.insecure_channel(cluster.addr)
    try:
        assert _leader.probe(channel) == SERVING
    finally:
        channel.close()


def test_a_closed_port_first_in_the_list_is_passed_over(cluster: Cluster) -> None:
    urls = f"{closed_port_url()},{cluster.url}"
    with orca.Client(urls) as c:
        job = c.create_job("behind a closed port")
        task = c.add_task(job.job_id, "through the second URL")
        assert c.coordinator == cluster.url
        assert c.get_task(task).job_id == job.job_id
        assert c.wait(job.job_id, timeout=60).completed == 1


def test_the_async_client_passes_a_closed_port_over(cluster: Cluster) -> None:
    urls = f"{closed_port_url()},{cluster.url}"

    async def main() -> None:
        async with orca.AsyncClient(urls) as c:
            job = await c.create_job("async, behind a closed port")
            ids = await c.add_tasks(job.job_id, ["one"])
            assert c.coordinator == cluster.url
            assert (await c.get_task(ids[0])).job_id == job.job_id
            assert (await c.wait(job.job_id, timeout=60)).completed == 1

    asyncio.run(asyncio.wait_for(main(), 90))


def test_a_standby_first_in_the_list_is_asked_for_health_only(cluster: Cluster, fakes) -> None:  # type: ignore[no-untyped-def]
    standby = fakes()
    with orca.Client(f"{standby.url}, {cluster.url}") as c:
        job = c.create_job("past a standby")
        c.add_task(job.job_id, "one")
        assert c.coordinator == cluster.url
    assert standby.health_checks == [_leader.encode_request()], "one probe, for orca.v1.Orchestrator"
    assert standby.calls == []
    with orca.Client(f"{closed_port_url()},{standby.url}") as c:
        with pytest.raises(orca.Unavailable, match="is a standby"):
            c.create_job("no leader")
    assert standby.calls == ["CreateJob"], "no leader: the first that answered, once"


def test_a_failover_moves_the_client_to_the_new_leader(cluster: Cluster, fakes) -> None:  # type: ignore[no-untyped-def]
    a, b = fakes(cluster.addr), fakes(cluster.addr)
    a.lead()
    with orca.Client(f"{a.url},{b.url}") as c:
        job = c.create_job("fails over").job_id
        ids = c.add_tasks(job, ["SLEEP=2 one", "SLEEP=2 two"])
        assert c.coordinator == a.url and b.calls == []

        # A watch resumes on the new leader after the last event it delivered.
        events = []
        started = time.monotonic()
        for ev in c.watch_job(job):
            events.append(ev)
            if len(events) == 1:
                a.step_down()
                b.lead()
            assert time.monotonic() - started < 60, "the watch is stuck"
        assert c.coordinator == b.url
        assert events[-1].status.completed == 2 and "WatchJob" in b.calls
        seqs = [e.seq for e in events if e.kind != SNAP]
        assert seqs == sorted(set(seqs)), "nothing delivered twice"
        assert all(c.get_task(t).state == types_pb2.TASK_STATE_COMPLETED for t in ids)

        # A write that meets a standby is not sent again; the next call finds the leader.
        b.step_down()
        a.lead()
        a_calls, b_calls = len(a.calls), len(b.calls)
        with pytest.raises(orca.Unavailable, match="is a standby"):
            c.create_job("refused once")
        assert b.calls[b_calls:] == ["CreateJob"] and len(a.calls) == a_calls
        assert c.create_job("sent to the new leader").job_id
        assert c.coordinator == a.url and a.calls[a_calls:] == ["CreateJob"]

        # A read is sent once more, to the leader picked again.
        a.step_down()
        b.lead()
        assert c.get_job(job).status.completed == 2
        assert a.calls[-1] == "GetJob" and b.calls[-1] == "GetJob" and c.coordinator == b.url


def test_the_async_client_follows_a_failover(cluster: Cluster, fakes) -> None:  # type: ignore[no-untyped-def]
    a, b = fakes(cluster.addr), fakes(cluster.addr)
    b.lead()

    async def main() -> None:
        async with orca.AsyncClient(f"{a.url},{b.url}") as c:
            job = (await c.create_job("async failover")).job_id
            await c.add_tasks(job, ["SLEEP=1 one"])
            assert c.coordinator == b.url and a.calls == []
            b.step_down()
            a.lead()
            assert (await c.wait(job, timeout=60)).completed == 1
            assert c.coordinator == a.url and "WatchJob" in a.calls
            a.step_down()
            b.lead()
            with pytest.raises(orca.Unavailable):
                await c.add_task(job, "refused once")
            assert [t async for t in c.list_tasks(job)][0].job_id == job, "a read after it finds the leader"
            assert c.coordinator == b.url

    asyncio.run(asyncio.wait_for(main(), 90))

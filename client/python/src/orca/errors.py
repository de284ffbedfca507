"""Errors of the Orca client.

A call the coordinator refuses raises an `OrcaError` subclass chosen by the gRPC status code,
carrying the coordinator's message unchanged (it names the field or id:
``tasks[0].prompt: must not be empty``, ``task 7 not found``). Settings that cannot be used
(a malformed coordinator URL, an unreadable token or TLS file) raise `ConfigError`, a
`ValueError`, before anything is sent. `WaitTimeout` is a `TimeoutError` raised by ``wait``.
`GitError` (a `RuntimeError`) is a git command on the caller's checkout that failed, or a
checkout that cannot be used as it is (`orca.git`).
"""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc

from orca.v1 import types_pb2

__all__ = [
    "OrcaError",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "ConfigError",
    "WaitTimeout",
    "GitError",
    "error_from_rpc",
]


class OrcaError(Exception):
    """A gRPC call that failed: ``code`` is the `grpc.StatusCode`, ``message`` the
    coordinator's message (for UNAVAILABLE, the transport's reason)."""

    #: The status code this class stands for (None on the base class).
    grpc_code: Optional[grpc.StatusCode] = None

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @property
    def transient(self) -> bool:
        """True when the same call may succeed later (the coordinator is restarting or the
        connection broke)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class Cancelled(OrcaError):
    grpc_code = grpc.StatusCode.CANCELLED


class Unknown(OrcaError):
    grpc_code = grpc.StatusCode.UNKNOWN


class InvalidArgument(OrcaError):
    """Malformed input; the message names the field (``tasks[1].prompt: ...``)."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(OrcaError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(OrcaError):
    """A job or task id that names nothing."""

    grpc_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(OrcaError):
    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(OrcaError):
    """The token's role, or another owner's job."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(OrcaError):
    """A message or holding past its limit, or a per-token rate limit."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(OrcaError):
    """A transition the state does not allow (cancelling a completed task, deleting an
    active job)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(OrcaError):
    grpc_code = grpc.StatusCode.ABORTED


class OutOfRange(OrcaError):
    grpc_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(OrcaError):
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(OrcaError):
    grpc_code = grpc.StatusCode.INTERNAL


class Unavailable(OrcaError):
    """The coordinator cannot be reached, is restarting, or refused the TLS handshake."""

    grpc_code = grpc.StatusCode.UNAVAILABLE


class DataLoss(OrcaError):
    grpc_code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(OrcaError):
    """No token, or one the coordinator does not know (set ORCA_TOKEN_FILE or ORCA_TOKEN)."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: Dict[grpc.StatusCode, Type[OrcaError]] = {
    cls.grpc_code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
    if cls.grpc_code is not None
}


def error_from_rpc(e: grpc.RpcError) -> OrcaError:
    """The `OrcaError` subclass for a failed call (`grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    code_fn = getattr(e, "code", None)
    details_fn = getattr(e, "details", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    message = details_fn() if callable(details_fn) else str(e)
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    return _BY_CODE.get(code, OrcaError)(code, message or "")


class ConfigError(ValueError):
    """A client setting that cannot be used; the message names the argument or variable."""


class WaitTimeout(TimeoutError):
    """``wait`` ran out of time before every task of the job was final. ``status`` holds the
    job's last known counts (None when no event arrived). Nothing was changed on the
    coordinator: the tasks keep running."""

    def __init__(self, job_id: str, timeout: float, status: Optional[types_pb2.JobStatus]) -> None:
        super().__init__(f"job {job_id} was not finished after {timeout:g} s")
        self.job_id = job_id
        self.timeout = timeout
        self.status = status


class GitError(RuntimeError):
    """A git command on the caller's checkout failed (``git am ... failed: <git's error>``),
    or the checkout cannot be used as it is (uncommitted changes, a HEAD the remote does not
    have, no remote); the message starts with what failed. Nothing is sent to the
    coordinator."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

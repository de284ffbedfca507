"""Building request messages from plain Python values: task specs, metadata, states.

Every conversion names the argument it refused (``retry_policy: unknown key 'x'``); inside a
batch, `task_specs` prefixes the task's index (``tasks[2].priority: ...``), as the
coordinator does. What only the coordinator can judge (an empty prompt, a limit) is left to
it, so its message is the one the caller sees.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from orca.v1 import types_pb2

__all__ = [
    "task_spec",
    "task_specs",
    "TaskLike",
    "TimeLike",
    "to_timestamp",
    "TASK_STATES",
    "JOB_STATES",
    "FINAL_STATES",
    "state_name",
    "job_state_name",
    "task_state",
    "is_final",
    "to_struct",
    "from_struct",
]

TaskLike = Union[types_pb2.TaskSpec, Mapping[str, Any], str]
#: A point in time: a `datetime.datetime` (naive means local time), a unix time in seconds
#: (int or float) or a protobuf `Timestamp`.
TimeLike = Union[datetime.datetime, float, int, timestamp_pb2.Timestamp]

#: Short lowercase task state names (the contract's) to their enum values.
TASK_STATES: Dict[str, int] = {
    "waiting": types_pb2.TASK_STATE_WAITING,
    "pending": types_pb2.TASK_STATE_PENDING,
    "in_progress": types_pb2.TASK_STATE_IN_PROGRESS,
    "completed": types_pb2.TASK_STATE_COMPLETED,
    "failed": types_pb2.TASK_STATE_FAILED,
    "cancelled": types_pb2.TASK_STATE_CANCELLED,
}
JOB_STATES: Dict[str, int] = {
    "active": types_pb2.JOB_STATE_ACTIVE,
    "completed": types_pb2.JOB_STATE_COMPLETED,
    "failed": types_pb2.JOB_STATE_FAILED,
    "cancelled": types_pb2.JOB_STATE_CANCELLED,
}
FINAL_STATES = frozenset(
    (types_pb2.TASK_STATE_COMPLETED, types_pb2.TASK_STATE_FAILED, types_pb2.TASK_STATE_CANCELLED)
)
_TASK_NAMES = {v: k for k, v in TASK_STATES.items()}
_JOB_NAMES = {v: k for k, v in JOB_STATES.items()}


def state_name(state: int) -> str:
    """``completed`` for TASK_STATE_COMPLETED, and so on (``unspecified`` for 0)."""
    return _TASK_NAMES.get(state, "unspecified")


def job_state_name(state: int) -> str:
    """``active``, ``completed``, ``failed`` or ``cancelled`` (``unspecified`` for 0)."""
    return _JOB_NAMES.get(state, "unspecified")


def is_final(state: int) -> bool:
    """Completed, failed or cancelled."""
    return state in FINAL_STATES


def task_state(value: Union[int, str], source: str = "states") -> int:
    """A task state from its enum value, its short name or its proto name."""
    if isinstance(value, bool):
        raise TypeError(f"{source}: {value!r} is not a task state")
    if isinstance(value, int):
        if value not in _TASK_NAMES:
            raise ValueError(f"{source}: {value} is not a task state")
        return value
    if isinstance(value, str):
        name = value.strip().lower()
        if name.startswith("task_state_"):
            name = name[len("task_state_") :]
        if name in TASK_STATES:
            return TASK_STATES[name]
        raise ValueError(f"{source}: {value!r} is not a task state (one of {', '.join(TASK_STATES)})")
    raise TypeError(f"{source}: {value!r} is not a task state")


def to_struct(value: Optional[Mapping[str, Any]], source: str = "metadata") -> Optional[struct_pb2.Struct]:
    """A JSON-like mapping as a protobuf Struct (None stays None)."""
    if value is None:
        return None
    if isinstance(value, struct_pb2.Struct):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{source}: expected a dict of JSON values, got {type(value).__name__}")
    s = struct_pb2.Struct()
    try:
        s.update(dict(value))
    except (ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{source}: not a JSON object: {e}") from None
    return s


def from_struct(s: struct_pb2.Struct) -> Dict[str, Any]:
    """A Struct as a dict (numbers come back as floats, as JSON has only one number type)."""
    return json_format.MessageToDict(s)


def _ints(value: Any, source: str) -> List[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{source}: expected a list of task ids, got {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{source}[{i}]: expected a task id (int), got {v!r}")
        out.append(v)
    return out


def _strs(value: Any, source: str) -> List[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{source}: expected a list of strings, got {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise TypeError(f"{source}[{i}]: expected a string, got {v!r}")
        out.append(v)
    return out


def _opt_int(value: Any, source: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{source}: expected an int, got {value!r}")
    return value


def _message(value: Any, cls: Any, source: str, aliases: Optional[Mapping[str, str]] = None) -> Any:
    """A message of type ``cls`` from itself or a mapping of its field names."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"{source}: expected a {cls.__name__} or a dict, got {type(value).__name__}")
    fields = {f.name for f in cls.DESCRIPTOR.fields}
    kwargs = {}
    for k, v in value.items():
        name = (aliases or {}).get(k, k)
        if name not in fields:
            raise ValueError(f"{source}: unknown key {k!r} (known: {', '.join(sorted(fields))})")
        kwargs[name] = v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {e}") from None


def _context_file(value: Any, source: str) -> types_pb2.ContextFile:
    if isinstance(value, types_pb2.ContextFile):
        return value
    if isinstance(value, Mapping):
        path, contents = value.get("path"), value.get("contents")
        extra = set(value) - {"path", "contents"}
        if extra:
            raise ValueError(f"{source}: unknown key {sorted(extra)[0]!r} (known: path, contents)")
    elif isinstance(value, tuple) and len(value) == 2:
        path, contents = value
    else:
        raise TypeError(f"{source}: expected a ContextFile, a (path, contents) pair or a dict, got {value!r}")
    if not isinstance(path, str):
        raise TypeError(f"{source}.path: expected a string, got {path!r}")
    if isinstance(contents, str):
        contents = contents.encode("utf-8")
    if not isinstance(contents, (bytes, bytearray)):
        raise TypeError(f"{source}.contents: expected bytes or str, got {type(contents).__name__}")
    return types_pb2.ContextFile(path=path, contents=bytes(contents))


_FIELD_PATH = re.compile(r"^[a-z_]+(\[\d+\])?(\.[a-z_]+)?$")

_HOOK_ALIASES = {"timeout": "timeout_seconds"}

#: The keyword arguments of `task_spec` (a dict given to ``add_tasks`` may use exactly these).
SPEC_FIELDS: Tuple[str, ...] = (
    "prompt",
    "priority",
    "parent_task_id",
    "depends_on",
    "context_files",
    "expected_outputs",
    "working_dir",
    "metadata",
    "max_retries",
    "retry_policy",
    "timeout_seconds",
    "required_labels",
    "verification",
    "auto_verify",
    "agent",
    "name",
    "git",
    "push_to",
    "run_at",
    "delay",
)


def task_spec(
    prompt: str,
    *,
    priority: Optional[int] = None,
    parent_task_id: Optional[int] = None,
    depends_on: Sequence[int] = (),
    context_files: Sequence[Union[types_pb2.ContextFile, Tuple[str, Union[bytes, str]], Mapping[str, Any]]] = (),
    expected_outputs: Sequence[str] = (),
    working_dir: str = "",
    metadata: Optional[Mapping[str, Any]] = None,
    max_retries: Optional[int] = None,
    retry_policy: Union[types_pb2.RetryPolicy, Mapping[str, Any], None] = None,
    timeout_seconds: int = 0,
    required_labels: Optional[Mapping[str, str]] = None,
    verification: Sequence[Union[types_pb2.VerificationHook, Mapping[str, Any]]] = (),
    auto_verify: bool = False,
    agent: Union[types_pb2.AgentOptions, Mapping[str, Any], None] = None,
    name: str = "",
    git: Union[types_pb2.GitSource, Mapping[str, Any], None] = None,
    push_to: Optional[str] = None,
    run_at: Optional[TimeLike] = None,
    delay: Optional[float] = None,
) -> types_pb2.TaskSpec:
    """A `TaskSpec` from keyword arguments. Unset optional fields take the coordinator's
    defaults (priority 5, no retries). ``depends_on`` and ``parent_task_id`` may be negative
    inside one ``add_tasks`` batch (``-N``: the N-th task of the batch). ``retry_policy``,
    ``agent`` and each ``verification`` hook may be dicts of the message's field names (a
    hook's ``timeout`` is accepted for ``timeout_seconds``). ``git`` is the task's
    repository (a `GitSource`, a dict of its fields, or an `orca.GitCheckout`; see
    `orca.from_git_checkout`): the task runs in a worktree of its own and its change comes
    back as a patch. ``push_to`` (needs ``git``) also pushes the task's commit to that branch
    (``""``: the default ``orca/<job>/<task>``). ``run_at`` (a `datetime`, a unix time in
    seconds, or a `Timestamp`; see `to_timestamp`) or ``delay`` (seconds from now; not both)
    keeps the task waiting until then (and for its dependencies)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt: expected a string, got {type(prompt).__name__}")
    if not isinstance(working_dir, str):
        raise TypeError(f"working_dir: expected a string, got {type(working_dir).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {type(name).__name__}")
    spec = types_pb2.TaskSpec(prompt=prompt, working_dir=working_dir, name=name, auto_verify=bool(auto_verify))
    p = _opt_int(priority, "priority")
    if p is not None:
        spec.priority = p
    parent = _opt_int(parent_task_id, "parent_task_id")
    if parent is not None:
        spec.parent_task_id = parent
    spec.depends_on.extend(_ints(depends_on, "depends_on"))
    if isinstance(context_files, (str, bytes)) or not isinstance(context_files, Iterable):
        raise TypeError(f"context_files: expected a list, got {type(context_files).__name__}")
    spec.context_files.extend(_context_file(f, f"context_files[{i}]") for i, f in enumerate(context_files))
    spec.expected_outputs.extend(_strs(expected_outputs, "expected_outputs"))
    m = to_struct(metadata, "metadata")
    if m is not None:
        spec.metadata.CopyFrom(m)
    r = _opt_int(max_retries, "max_retries")
    if r is not None:
        if r < 0:
            raise ValueError(f"max_retries: must not be negative, got {r}")
        spec.max_retries = r
    if retry_policy is not None:
        spec.retry_policy.CopyFrom(_message(retry_policy, types_pb2.RetryPolicy, "retry_policy"))
    t = _opt_int(timeout_seconds, "timeout_seconds")
    if t is not None:
        if t < 0:
            raise ValueError(f"timeout_seconds: must not be negative, got {t}")
        spec.timeout_seconds = t
    if required_labels is not None:
        if not isinstance(required_labels, Mapping):
            raise TypeError(f"required_labels: expected a dict, got {type(required_labels).__name__}")
        for k, v in required_labels.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"required_labels: keys and values must be strings, got {k!r}: {v!r}")
            spec.required_labels[k] = v
    if isinstance(verification, (str, bytes, Mapping)) or not isinstance(verification, Iterable):
        raise TypeError(f"verification: expected a list of hooks, got {type(verification).__name__}")
    spec.verification.extend(
        _message(h, types_pb2.VerificationHook, f"verification[{i}]", _HOOK_ALIASES) for i, h in enumerate(verification)
    )
    if agent is not None:
        spec.agent.CopyFrom(_message(agent, types_pb2.AgentOptions, "agent"))
    _set_git(spec, git, push_to)
    _set_run_at(spec, run_at, delay)
    return spec


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
#: 9999-12-31T23:59:59Z, the last second a `Timestamp` may hold.
_MAX_SECONDS = 253_402_300_799


def _seconds(value: Any, source: str) -> float:
    """A finite, non-negative number of seconds (int or float, not bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{source}: expected a number of seconds (int or float), got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{source}: must be a finite number of seconds >= 0, got {value!r}")
    return value


def to_timestamp(value: TimeLike, source: str = "run_at") -> timestamp_pb2.Timestamp:
    """A protobuf `Timestamp` from a point in time:

    - a `datetime.datetime`: an aware one as it is; a **naive one is local time**, the
      convention of ``datetime.timestamp()`` (so ``datetime.now()`` and
      ``datetime.now(timezone.utc)`` name the same instant). Exact to the microsecond;
    - an int or float: a unix time in seconds (``time.time()``'s scale), from 0 to the end
      of year 9999;
    - a `Timestamp`: a copy.

    Anything else raises TypeError, a time out of that range ValueError, both naming
    ``source``."""
    ts = timestamp_pb2.Timestamp()
    if isinstance(value, timestamp_pb2.Timestamp):
        ts.CopyFrom(value)
        return ts
    if isinstance(value, datetime.datetime):
        # astimezone() on a naive datetime takes it as local time, as timestamp() does.
        aware = value if value.tzinfo is not None and value.utcoffset() is not None else value.astimezone()
        delta = aware - _EPOCH
        if delta < datetime.timedelta(0):
            raise ValueError(f"{source}: must not be before 1970-01-01 UTC, got {value.isoformat()}")
        ts.seconds = delta.days * 86400 + delta.seconds
        ts.nanos = delta.microseconds * 1000
        return ts
    if isinstance(value, datetime.date):
        raise TypeError(f"{source}: expected a datetime (with a time of day), got a date: {value.isoformat()}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{source}: expected a datetime, a unix time in seconds or a Timestamp, got {type(value).__name__}"
        )
    if not math.isfinite(value) or not 0 <= value <= _MAX_SECONDS:
        raise ValueError(f"{source}: must be a unix time in seconds from 0 to {_MAX_SECONDS}, got {value!r}")
    if isinstance(value, int):
        ts.seconds = value
        return ts
    seconds = math.floor(value)
    nanos = round((value - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    ts.seconds = seconds
    ts.nanos = nanos
    return ts


def _set_run_at(spec: types_pb2.TaskSpec, run_at: Optional[TimeLike], delay: Optional[float]) -> None:
    """``spec.run_at`` from `task_spec`'s ``run_at`` or ``delay``."""
    if run_at is not None and delay is not None:
        raise ValueError("run_at: give run_at or delay, not both")
    if run_at is not None:
        spec.run_at.CopyFrom(to_timestamp(run_at, "run_at"))
    elif delay is not None:
        spec.run_at.CopyFrom(to_timestamp(time.time() + _seconds(delay, "delay"), "delay"))


def _set_git(spec: types_pb2.TaskSpec, git: Any, push_to: Optional[str]) -> None:
    """``spec.git`` from `task_spec`'s ``git`` and ``push_to``."""
    if git is not None:
        # Imported here: orca.git builds specs with task_spec.
        from orca.git import GitCheckout

        source = git.source() if isinstance(git, GitCheckout) else _message(git, types_pb2.GitSource, "git")
        spec.git.CopyFrom(source)
    if push_to is None:
        return
    if not isinstance(push_to, str):
        raise TypeError(f"push_to: expected a branch name (str), got {type(push_to).__name__}")
    if not spec.HasField("git"):
        raise ValueError("push_to: the task has no git source (give git= as well)")
    spec.git.push = True
    spec.git.branch = push_to


def _one(task: TaskLike) -> types_pb2.TaskSpec:
    if isinstance(task, types_pb2.TaskSpec):
        return task
    if isinstance(task, str):
        return task_spec(task)
    if isinstance(task, Mapping):
        unknown = [k for k in task if k not in SPEC_FIELDS]
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r} (known: {', '.join(SPEC_FIELDS)})")
        if "prompt" not in task:
            raise ValueError("prompt: missing")
        kwargs = dict(task)
        prompt = kwargs.pop("prompt")
        return task_spec(prompt, **kwargs)
    raise TypeError(f"expected a TaskSpec, a dict of its fields or a prompt string, got {type(task).__name__}")


def task_specs(tasks: Iterable[TaskLike]) -> List[types_pb2.TaskSpec]:
    """Specs for ``add_tasks``; an error names the task's index (``tasks[2].priority: ...``)."""
    if isinstance(tasks, (str, bytes, Mapping, types_pb2.TaskSpec)):
        raise TypeError("tasks: expected a list of tasks (TaskSpec, dict or prompt string), got one task")
    out = []
    for i, t in enumerate(tasks):
        try:
            out.append(_one(t))
        except (TypeError, ValueError) as e:
            msg = str(e)
            # "priority: ..." becomes "tasks[2].priority: ...", anything else "tasks[2]: ...".
            sep = "." if _FIELD_PATH.match(msg.split(":", 1)[0]) else ": "
            raise type(e)(f"tasks[{i}]{sep}{msg}") from None
    return out

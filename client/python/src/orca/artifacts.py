"""Writing a task's artifacts (the files its agent produced, shipped back with the result)
into a directory on the caller's machine.

The rules, in order:

- nothing is written when ``task.result.in_place`` is true: the worker ran in that very
  directory (an ``--allow-dir`` root on a shared filesystem), so the files are already there;
- the destination (``dest``, else ``task.spec.working_dir``) must be an existing directory;
- every artifact path must be relative, ``/``-separated, without empty, ``.`` or ``..``
  components, and its parent must resolve (symlinks followed) inside the destination; one
  bad path refuses the whole task with a `ValueError` before anything is written;
- each file is written to a temporary file in its directory, then renamed over the target;
- only the task's declared ``spec.expected_outputs`` are written: an artifact under any
  other name (whatever the worker sent, e.g. ``.git/hooks/pre-commit``) is skipped with an
  `ArtifactSkipped` warning, and so is a directory in the way; a declared file that exists
  is replaced.
"""

from __future__ import annotations

import os
import secrets
import warnings
from typing import List, Optional, Tuple, Union

from orca.v1 import types_pb2

__all__ = ["write_artifacts", "ArtifactSkipped", "check_relative_path"]


class ArtifactSkipped(UserWarning):
    """An artifact was not written because something the task did not promise to produce is
    already at its path."""


def check_relative_path(path: str) -> List[str]:
    """The components of a relative artifact path, or a ValueError saying what is wrong."""
    if not isinstance(path, str) or not path:
        raise ValueError("the path is empty")
    if path.startswith("/") or os.path.isabs(path):
        raise ValueError("the path is absolute")
    if "\\" in path:
        raise ValueError("the path contains a backslash")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise ValueError("the path contains a control character")
    parts = path.split("/")
    for part in parts:
        if part == "..":
            raise ValueError("the path contains '..'")
        if part in ("", "."):
            raise ValueError("the path has an empty or '.' component")
    return parts


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _resolve_parent(root: str, parts: List[str]) -> str:
    """The directory an artifact goes into, checked: every existing ancestor resolves inside
    ``root`` and is a directory. Directories that do not exist yet are not created here."""
    current = root
    missing = False
    for part in parts[:-1]:
        current = os.path.join(current, part)
        if missing:
            # Below a directory that does not exist yet nothing exists either.
            continue
        if os.path.lexists(current):
            real = os.path.realpath(current)
            if not _inside(root, real):
                raise ValueError(f"{current} leads outside {root} (to {real})")
            if not os.path.isdir(real):
                raise ValueError(f"{current} is not a directory")
            current = real
        else:
            missing = True
    return current


def _write_atomically(directory: str, name: str, contents: bytes, mode: Optional[int]) -> None:
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.orca-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(contents)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_artifacts(task: types_pb2.Task, dest: Union[str, "os.PathLike[str]", None] = None) -> List[str]:
    """Writes ``task.result.artifacts`` into ``dest`` (default: ``task.spec.working_dir``)
    following the rules of this module; returns the paths written (under ``dest`` as given,
    made absolute). Files skipped because they exist are reported with `ArtifactSkipped`."""
    if not task.HasField("result") or not task.result.artifacts:
        return []
    if task.result.in_place:
        return []
    target = os.fspath(dest) if dest is not None else task.spec.working_dir
    if not target:
        raise ValueError(f"task {task.task_id}: no destination for its artifacts (no dest given and no spec.working_dir)")
    shown = os.path.abspath(target)
    if not os.path.isdir(shown):
        raise FileNotFoundError(f"task {task.task_id}: artifact destination {shown} is not an existing directory")
    root = os.path.realpath(shown)
    expected = set(task.spec.expected_outputs)

    plans: List[Tuple[types_pb2.Artifact, List[str]]] = []
    for a in task.result.artifacts:
        try:
            parts = check_relative_path(a.path)
            _resolve_parent(root, parts)
        except ValueError as e:
            raise ValueError(f"task {task.task_id}: artifact {a.path!r} refused: {e}; nothing was written") from None
        plans.append((a, parts))

    written: List[str] = []
    for a, parts in plans:
        if a.path not in expected:
            warnings.warn(
                ArtifactSkipped(
                    f"task {task.task_id}: artifact {a.path} not written: it is not among the task's expected_outputs"
                ),
                stacklevel=2,
            )
            continue
        parent = _resolve_parent(root, parts)
        if not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
            # A directory made concurrently through a symlink would show up here.
            if not _inside(root, os.path.realpath(parent)):
                raise ValueError(f"task {task.task_id}: artifact {a.path!r} refused: {parent} leads outside {root}")
        parent = os.path.realpath(parent)
        name = parts[-1]
        full = os.path.join(parent, name)
        mode: Optional[int] = None
        if os.path.lexists(full):
            if os.path.isdir(full) and not os.path.islink(full):
                warnings.warn(
                    ArtifactSkipped(f"task {task.task_id}: artifact {a.path} not written: {full} is a directory"),
                    stacklevel=2,
                )
                continue
            if not os.path.islink(full):
                mode = os.stat(full).st_mode & 0o7777
        _write_atomically(parent, name, bytes(a.contents), mode)
        written.append(os.path.join(shown, *parts))
    return written

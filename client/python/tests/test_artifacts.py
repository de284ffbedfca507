"""write_artifacts with hand-built Task messages: where files may go and when they are
left alone."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

import pytest

import orca
from orca.v1 import types_pb2


def task(
    files: Dict[str, bytes], working_dir: str = "", expected: Optional[Sequence[str]] = None, in_place: bool = False
) -> types_pb2.Task:
    """A completed task with these artifacts; every one of them declared unless ``expected`` says."""
    t = types_pb2.Task(task_id=42, state=types_pb2.TASK_STATE_COMPLETED)
    t.spec.prompt = "p"
    t.spec.working_dir = working_dir
    t.spec.expected_outputs.extend(list(files) if expected is None else expected)
    t.result.in_place = in_place
    for path, contents in files.items():
        t.result.artifacts.add(path=path, contents=contents)
    return t


def test_files_are_written_into_the_working_dir_creating_directories(tmp_path: Path) -> None:
    t = task({"a.txt": b"A", "src/routes/auth.js": b"js"}, str(tmp_path))
    written = orca.write_artifacts(t)
    assert written == [str(tmp_path / "a.txt"), str(tmp_path / "src/routes/auth.js")]
    assert (tmp_path / "a.txt").read_bytes() == b"A"
    assert (tmp_path / "src/routes/auth.js").read_bytes() == b"js"
    assert not [p for p in tmp_path.rglob("*") if "orca-tmp" in p.name], "no temporary file left"


def test_dest_overrides_the_working_dir(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    assert orca.write_artifacts(task({"x": b"1"}, str(tmp_path / "absent")), other) == [str(other / "x")]
    assert (other / "x").read_bytes() == b"1"


def test_in_place_results_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "out.txt").write_text("the worker's own")
    before = os.stat(tmp_path / "out.txt").st_ino
    t = task({"out.txt": b"shipped copy", "new.txt": b"n"}, str(tmp_path), expected=["out.txt", "new.txt"], in_place=True)
    assert orca.write_artifacts(t) == []
    assert os.stat(tmp_path / "out.txt").st_ino == before
    assert (tmp_path / "out.txt").read_text() == "the worker's own" and not (tmp_path / "new.txt").exists()


def test_the_destination_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an existing directory"):
        orca.write_artifacts(task({"x": b"1"}, str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="no destination"):
        orca.write_artifacts(task({"x": b"1"}, ""))
    assert orca.write_artifacts(task({}, str(tmp_path / "missing"))) == [], "nothing to write, nothing checked"


@pytest.mark.parametrize(
    "path,why",
    [
        ("../escape.txt", "'..'"),
        ("a/../../escape.txt", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty or '.'"),
        ("./a", "empty or '.'"),
        ("a/", "empty or '.'"),
        ("", "empty"),
        ("a\\b", "backslash"),
        ("a\nb", "control character"),
    ],
)
def test_bad_paths_refuse_the_whole_task_before_writing(tmp_path: Path, path: str, why: str) -> None:
    t = task({"good.txt": b"g", path: b"evil"}, str(tmp_path))
    with pytest.raises(ValueError, match=f"task 42: artifact .* refused: .*{why}") as e:
        orca.write_artifacts(t)
    assert "nothing was written" in str(e.value)
    assert not (tmp_path / "good.txt").exists()
    assert not (tmp_path.parent / "escape.txt").exists()


def test_a_symlink_leading_outside_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="leads outside"):
        orca.write_artifacts(task({"link/pwned.txt": b"x"}, str(dest)))
    assert not (outside / "pwned.txt").exists()
    # A symlink that stays inside is followed.
    (dest / "real").mkdir()
    (dest / "inner").symlink_to(dest / "real")
    assert orca.write_artifacts(task({"inner/ok.txt": b"ok"}, str(dest))) == [str(dest / "inner/ok.txt")]
    assert (dest / "real/ok.txt").read_bytes() == b"ok"


def test_a_file_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    target = tmp_path / "victim.txt"
    target.write_text("safe")
    (dest / "out.txt").symlink_to(target)
    orca.write_artifacts(task({"out.txt": b"new"}, str(dest), expected=["out.txt"]))
    assert target.read_text() == "safe"
    assert not (dest / "out.txt").is_symlink() and (dest / "out.txt").read_bytes() == b"new"


def test_only_expected_outputs_are_written(tmp_path: Path) -> None:
    (tmp_path / "expected.txt").write_text("old")
    (tmp_path / "mine.txt").write_text("keep me")
    os.chmod(tmp_path / "expected.txt", 0o640)
    arts = {"expected.txt": b"new", "mine.txt": b"clobber", ".git/hooks/pre-commit": b"evil"}
    t = task(arts, str(tmp_path), expected=["expected.txt"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = orca.write_artifacts(t)
    skipped = [str(w.message) for w in caught if issubclass(w.category, orca.ArtifactSkipped)]
    assert len(skipped) == 2 and all("is not among the task's expected_outputs" in m for m in skipped), skipped
    assert written == [str(tmp_path / "expected.txt")]
    assert (tmp_path / "expected.txt").read_text() == "new"
    assert os.stat(tmp_path / "expected.txt").st_mode & 0o777 == 0o640, "the replaced file keeps its mode"
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert not (tmp_path / ".git").exists()


def test_a_directory_in_the_way_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert orca.write_artifacts(task({"out": b"x"}, str(tmp_path), expected=["out"])) == []
    assert any("is a directory" in str(w.message) for w in caught)
    with pytest.raises(ValueError, match="is not a directory"):
        (tmp_path / "file").write_text("f")
        orca.write_artifacts(task({"file/x": b"x"}, str(tmp_path)))

"""The one atomic writer: a complete new file or the old one, never a part; interrupted writes cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

import pytest

from pedconv.utils.atomic import atomic_copy, atomic_write, atomic_write_text, is_temp_of, remove_leftover_temps

SRC = Path(__file__).resolve().parents[2] / "src"


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "compare.json", "old")

    def fail_halfway(f: IO[bytes]) -> None:
        f.write(b"new, but only half of it")
        raise RuntimeError("disk full (simulated)")

    with pytest.raises(RuntimeError, match="simulated"):
        atomic_write(path, fail_halfway)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["compare.json"]
    with pytest.raises(KeyboardInterrupt):  # also on an interruption
        atomic_write(tmp_path / "new.md", lambda f: (f.write(b"x"), (_ for _ in ()).throw(KeyboardInterrupt())))
    assert [p.name for p in tmp_path.iterdir()] == ["compare.json"]


def test_the_file_is_complete_and_synced_with_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    data = os.urandom(3 << 20)
    path = atomic_write(tmp_path / "new" / "last.pt", lambda f: f.write(data))  # the folder is created
    assert path.read_bytes() == data
    assert len(synced) == 2  # the file's bytes, then the folder's entry
    copy = atomic_copy(path, tmp_path / "new" / "best.pt")
    assert copy.read_bytes() == data and len(synced) == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.pt", "last.pt"]


def test_the_clean_up_finds_what_a_killed_write_left(tmp_path: Path) -> None:
    """A process killed inside a write leaves its temp file; the clean-up knows it by the writer's naming rule."""
    code = ("import os, sys; from pedconv.utils.atomic import atomic_write; "
            "atomic_write(sys.argv[1], lambda f: (f.write(b'half'), f.flush(), os._exit(9)))")
    for name in ("args.yaml", "curves.png"):
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], env=dict(os.environ,
                              PYTHONPATH=str(SRC)), timeout=300)
        assert proc.returncode == 9
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and is_temp_of("args.yaml", left[0]) and is_temp_of("curves.png", left[1]), left
    (tmp_path / ".args.yaml.tmp").write_text("an older version's fixed temp name")
    (tmp_path / "notes.tmp").write_text("not ours")
    (tmp_path / ".metrics.jsonl.x.tmp").write_text("an artifact not asked about")
    removed = remove_leftover_temps(tmp_path, ["args.yaml", "curves.png"])
    assert sorted(p.name for p in removed) == sorted([*left, ".args.yaml.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".metrics.jsonl.x.tmp", "notes.tmp"]
    assert [p.name for p in remove_leftover_temps(tmp_path)] == [".metrics.jsonl.x.tmp"]  # any name
    assert remove_leftover_temps(tmp_path / "missing") == []

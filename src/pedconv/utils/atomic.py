"""All-or-nothing file writes: a reader sees the old file or the complete new one, never a part.

Every file pedconv writes (checkpoints, ``args.yaml``, ``metrics.jsonl``, plots, tables,
JSON/CSV reports) goes through :func:`atomic_write`: the bytes go to a temporary file in
the target's folder, named by :func:`temp_prefix` (``.<name>.<random>.tmp``), are flushed
and fsync'ed; the temporary file is renamed over the target (:func:`os.replace`, atomic on
POSIX and Windows) and the folder is fsync'ed, so the rename survives a power cut. On any
failure the temporary file is removed and the target is untouched. A process killed in the
middle leaves a temporary file behind: :func:`remove_leftover_temps` finds those by the
same naming rule.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Callable, Optional, Union

__all__ = ["atomic_copy", "atomic_write", "atomic_write_text", "is_temp_of", "remove_leftover_temps", "temp_prefix"]

PathLike = Union[str, os.PathLike]
_SUFFIX = ".tmp"


def temp_prefix(name: str) -> str:
    """The start of the name of a temporary file that :func:`atomic_write` uses for ``name``.

    >>> temp_prefix("last.pt")
    '.last.pt.'
    """
    return f".{name}."


def is_temp_of(name: str, filename: str) -> bool:
    """Whether ``filename`` is a temporary file of a write of ``name`` (also the fixed
    ``.<name>.tmp`` of older versions).

    >>> is_temp_of("args.yaml", ".args.yaml.k2j4_x.tmp"), is_temp_of("args.yaml", ".args.yaml.tmp")
    (True, True)
    >>> is_temp_of("args.yaml", "args.yaml"), is_temp_of("last.pt", ".last.pt.x.png")
    (False, False)
    """
    return filename.startswith(temp_prefix(name)) and filename.endswith(_SUFFIX)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: a folder cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Create or replace ``path`` with what ``write(f)`` writes to a binary file object, atomically.

    The parent folder is created if needed, and the file gets the mode any new file gets
    (``0o666`` less the process's umask; ``mkstemp``'s private ``0o600`` would hide results
    from the other users of a shared machine). Returns the path.

    >>> import pathlib, tempfile
    >>> p = atomic_write(pathlib.Path(tempfile.mkdtemp()) / "a.bin", lambda f: f.write(b"abc"))
    >>> p.read_bytes()
    b'abc'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=_SUFFIX, dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text.

    >>> import pathlib, tempfile
    >>> atomic_write_text(pathlib.Path(tempfile.mkdtemp()) / "t.md", "| a |\\n").read_text()
    '| a |\\n'
    """
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def atomic_copy(src: PathLike, dst: PathLike) -> Path:
    """Copy ``src`` to ``dst`` with the same all-or-nothing guarantee as :func:`atomic_write`.

    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = atomic_write_text(d / "last.pt", "x")
    >>> atomic_copy(d / "last.pt", d / "best.pt").read_text()
    'x'
    """
    def copy(out: IO[bytes]) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, length=1 << 24)

    return atomic_write(dst, copy)


def remove_leftover_temps(folder: PathLike, names: Optional[Iterable[str]] = None) -> list[Path]:
    """Delete the temporary files that interrupted writes of ``names`` (default: of any file) left in ``folder``.

    Returns what was removed; a missing folder has none.

    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".args.yaml.tmp").write_text(""), (d / ".curves.png.x1.tmp").write_text("")
    >>> [p.name for p in remove_leftover_temps(d, ["args.yaml", "curves.png"])]
    ['.args.yaml.tmp', '.curves.png.x1.tmp']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    wanted = None if names is None else list(names)
    removed = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or not p.name.startswith(".") or not p.name.endswith(_SUFFIX):
            continue
        if wanted is None or any(is_temp_of(name, p.name) for name in wanted):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed

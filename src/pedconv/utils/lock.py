"""One writer per run folder: an OS file lock that a crashed process cannot leave stuck.

:class:`FolderLock` takes an exclusive ``fcntl.flock`` on ``<folder>/.lock`` for as long as
the ``with`` block runs. The kernel releases it when the process ends, however it ends
(SIGKILL included), so a stale lock is impossible; the file's text only says who holds it
(pid, host, start time, command), for the refusal message a second writer gets. Where
``fcntl`` does not exist (Windows) the lock is advisory only: it records the holder and
refuses while that pid is alive on this host.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Optional, Union

from ..errors import FolderBusyError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "FolderLock"]

LOCK_NAME = ".lock"


def _describe(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {started} ({holder.get('command', '?')})"


class FolderLock:
    """Exclusive ownership of ``folder`` by this process while the ``with`` block runs.

    Args:
        folder: the run folder (created if missing).
        what: what is running, for the messages (``"pedconv train"``).

    Raises:
        FolderBusyError: another live process holds the folder; the message names it.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with FolderLock(folder, "pedconv train"):
        ...     FolderLock(folder, "pedconv train").__enter__()
        Traceback (most recent call last):
        ...
        pedconv.errors.FolderBusyError: ... is in use by another pedconv train: pid ...
    """

    def __init__(self, folder: Union[str, os.PathLike], what: str) -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self._file: Optional[IO[str]] = None

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            self._acquire(f)
        except BaseException:
            f.close()
            raise
        f.seek(0)
        f.truncate()
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(sys.argv[:1] + sys.argv[1:])[:300] or self.what}
        f.write(json.dumps(holder))
        f.flush()
        self._file = f
        return self

    def _acquire(self, f: IO[str]) -> None:
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError:
                raise FolderBusyError(self._busy_message(f)) from None
        holder = self._holder(f)  # pragma: no cover - Windows
        if holder.get("host") == socket.gethostname() and _alive(holder.get("pid")):
            raise FolderBusyError(self._busy_message(f))

    def _holder(self, f: IO[str]) -> dict[str, Any]:
        f.seek(0)
        try:
            holder = json.loads(f.read() or "{}")
        except json.JSONDecodeError:
            holder = {}
        return holder if isinstance(holder, dict) else {}

    def _busy_message(self, f: IO[str]) -> str:
        return (f"{self.folder} is in use by another {self.what}: {_describe(self._holder(f))}; wait for it to "
                "finish or stop it, or choose another --output")

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if self._file is not None:
            self._file.close()  # releases the lock; the file stays (removing it would race a waiting writer)
            self._file = None


def _alive(pid: Any) -> bool:  # pragma: no cover - Windows only
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True

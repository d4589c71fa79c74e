"""Stopping a run cleanly on SIGINT (Ctrl-C) and SIGTERM (what schedulers send before a kill).

While :class:`StopRequests` is active, the first SIGINT or SIGTERM only sets a flag; the
training loop looks at it after every optimizer step (and after each epoch's evaluation,
metrics and plots), writes ``last.pt`` at that point and stops with
:class:`~pedconv.errors.RunInterrupted`, whose message is the command that resumes the run.
Nothing is lost: not the step in flight, not the epoch's ``log.txt`` line. A second SIGINT
stops at once (``KeyboardInterrupt``), for a user who does not want to wait for the step.

Handlers can only be installed from the main thread; elsewhere (a notebook's worker thread,
say) the context does nothing and signals keep their usual effect.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any, Callable, Optional, Union

__all__ = ["StopRequests"]

_Handler = Union[Callable[[int, Optional[FrameType]], Any], int, None]


class StopRequests:
    """Catch SIGINT/SIGTERM in a ``with`` block; :attr:`signal_number` is the first one caught.

    Example:
        >>> import os, signal
        >>> with StopRequests() as stop:
        ...     os.kill(os.getpid(), signal.SIGTERM)  # the process goes on
        ...     stop.signal_number == signal.SIGTERM
        True
    """

    def __init__(self) -> None:
        self.signal_number: Optional[int] = None
        self._previous: dict[int, _Handler] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was requested."""
        return self.signal_number is not None

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signal_number == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.signal_number is None:
            self.signal_number = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

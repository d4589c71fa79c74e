"""The errors pedconv reports to a user, in one place.

Library code raises these; the command line (:mod:`pedconv.cli`) catches
:class:`PedconvError` and prints its message as one line, ``pedconv <command>: error: ...``,
with the exit status :attr:`PedconvError.exit_code`: 2 for a :class:`UsageError` (options
that do not make sense, as argparse's own errors), 1 for a :class:`RunError` (a run that
cannot go on: a missing or foreign file, a folder in use, data that do not fit).

Every class here is also a :class:`ValueError`, as the errors it replaces were, so code
that caught ``ValueError`` keeps working.

>>> issubclass(ConfigError, UsageError), ConfigError.exit_code, CheckpointError.exit_code
(True, 2, 1)
>>> isinstance(TrainOptionsError("x"), TrainError), TrainOptionsError.exit_code
(True, 2)

An error raised inside a DataLoader worker process (a corrupt image) comes back to the main
process with the worker's traceback as its message; the error keeps its own message and
puts the traceback in ``worker_traceback``, so that it is still shown as one line:

>>> e = DataError("Caught DataError in DataLoader worker process 0.\\nOriginal Traceback (most recent call last):\\n"
...               "  File ...\\npedconv.errors.DataError: cannot read image a.jpg\\n")
>>> str(e), e.worker_traceback.splitlines()[0]
('cannot read image a.jpg', 'Caught DataError in DataLoader worker process 0.')
"""

from __future__ import annotations

import re
from typing import ClassVar, Optional

__all__ = [
    "CheckpointError",
    "CompareError",
    "ConfigError",
    "DataError",
    "DivergedError",
    "EvalError",
    "FolderBusyError",
    "PedconvError",
    "RunError",
    "RunInterrupted",
    "TrainError",
    "TrainOptionsError",
    "UsageError",
]


# How torch.utils.data re-raises an exception of a worker process (``ExceptionWrapper.reraise``).
_WORKER_MESSAGE = re.compile(r"Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class PedconvError(ValueError):
    """Base of the errors shown to a user without a traceback; ``exit_code`` is the CLI's exit status."""

    exit_code: ClassVar[int] = 1
    worker_traceback: Optional[str] = None

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str) and _WORKER_MESSAGE.match(args[0]):
            head = f"\n{type(self).__module__}.{type(self).__qualname__}: "
            at = args[0].rfind(head)
            if at >= 0:
                self.worker_traceback = args[0]
                args = (args[0][at + len(head):].rstrip("\n"),)
        super().__init__(*args)


class UsageError(PedconvError):
    """Options or arguments that do not make sense (exit status 2, like argparse's own errors)."""

    exit_code: ClassVar[int] = 2


class RunError(PedconvError):
    """A run that cannot start or go on: its files, folder, data or device (exit status 1)."""


class ConfigError(UsageError):
    """An invalid configuration file or mapping of options."""


class TrainError(RunError):
    """A ``pedconv train`` run that cannot start or go on (its folder, model or data)."""


class TrainOptionsError(UsageError, TrainError):
    """Invalid ``pedconv train`` options: a usage error, and a :class:`TrainError` for callers of ``train()``."""


class CheckpointError(RunError):
    """A checkpoint that cannot be read, or that does not belong to this run."""


class EvalError(RunError):
    """A ``pedconv eval`` request that cannot be carried out (model, weights and data do not fit)."""


class CompareError(RunError):
    """A ``pedconv compare`` folder that holds runs of another recipe."""


class DataError(RunError):
    """A dataset that cannot be used as asked (missing pieces, mismatched splits, corrupt files)."""


class FolderBusyError(RunError):
    """A run folder that another live process is writing (see :mod:`pedconv.utils.lock`)."""


class RunInterrupted(RunError):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM after saving its state; the message says
    how to resume. ``exit_code`` is the shell's convention, 128 + the signal number."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number

    @property
    def status(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signal_number


class DivergedError(RunError):
    """Training whose loss became non-finite (nan or inf); the last good checkpoint is kept."""

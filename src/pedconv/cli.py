"""The ``pedconv`` command line: ``pedconv <command> [options]``.

The commands are the rows of one table, :data:`COMMANDS`: a name, the module that
implements it (imported only when that command is chosen, so ``pedconv --help`` stays
light) and a one-line help. A command module provides

* ``build_parser(parser)``: adds its options to ``parser`` (whose description is the
  module's docstring);
* ``run(args) -> int``: carries the command out and returns the exit status. Problems a
  user can fix are raised as :class:`pedconv.errors.PedconvError` (or a missing file's
  ``FileNotFoundError``); :func:`main` prints them as one line,
  ``pedconv <command>: error: ...``, and exits with 2 for a
  :class:`~pedconv.errors.UsageError`, 1 otherwise;

and may provide

* ``config_layer(args, parser) -> dict``: option values that lie under the command line
  (``train --config``'s YAML file): the command line is parsed again with them as defaults;
* ``validate_args(args)``: raises :class:`~pedconv.errors.UsageError` for options that do
  not work together, reported like argparse's own errors (usage, message, exit status 2).

A downstream task (:mod:`pedconv.tasks`) adds its command as one more row.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Optional

from .errors import PedconvError, UsageError

__all__ = ["COMMANDS", "Command", "main", "parse_args"]


@dataclass(frozen=True)
class Command:
    """One ``pedconv`` command: its name, the module that implements it, and a one-line help."""

    name: str
    module: str
    help: str

    def load(self) -> ModuleType:
        """Import the command's module."""
        return importlib.import_module(self.module)


COMMANDS: tuple[Command, ...] = (
    Command("bench", "pedconv.tools.benchmark", "layer and model speed/memory benchmark"),
    Command("profile", "pedconv.tools.flops", "params/FLOPs table vs the paper"),
    Command("train", "pedconv.training.train", "train a model (resumable, DDP)"),
    Command("eval", "pedconv.training.evaluate", "evaluate a checkpoint or weights"),
    Command("compare", "pedconv.training.compare", "static vs dynamic models, one recipe, several seeds"),
)
_BY_NAME = {c.name: c for c in COMMANDS}
# Errors about files and folders a user named: one line, exit status 1, like a RunError.
_FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``pedconv`` parser, and one empty sub-parser per command (filled for the chosen one only)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="pedconv", description="PEDConv tools")
    parser.add_argument("--version", action="version", version=f"pedconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {c.name: sub.add_parser(c.name, help=c.help, formatter_class=argparse.RawDescriptionHelpFormatter)
                  for c in COMMANDS}
    return parser, subparsers


def _hook(module: ModuleType, name: str) -> Optional[Callable[..., Any]]:
    hook = getattr(module, name, None)
    return hook if callable(hook) else None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``pedconv`` arguments (``args.command`` names the command); usage errors exit with status 2.

    Only the chosen command's module is imported. Its ``config_layer`` values become the
    parser's defaults for a second parse of the same arguments (so flags win over them), then
    ``validate_args`` checks the result.

    >>> parse_args(["train", "--epochs", "3"]).epochs
    3
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = _parsers()
    # The root parser takes no option values, so the first plain word is the command.
    command = _BY_NAME.get(next((a for a in argv if not a.startswith("-")), ""))
    if command is None:
        return parser.parse_args(argv)  # help, version, or a usage error
    module = command.load()
    sub = subparsers[command.name]
    sub.description = module.__doc__
    module.build_parser(sub)
    args = parser.parse_args(argv)
    layer, validate = _hook(module, "config_layer"), _hook(module, "validate_args")
    try:
        defaults = layer(args, sub) if layer is not None else None
        if defaults:
            sub.set_defaults(**defaults)
            args = parser.parse_args(argv)
        if validate is not None:
            validate(args)
    except UsageError as e:
        sub.error(_one_line(e))
    return args


def _one_line(error: BaseException) -> str:
    return re.sub(r"\s*\n\s*", " ", str(error).strip())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``pedconv`` with ``argv`` (default: the process's arguments); returns the exit status.

    0 on success; 2 for a usage error (argparse's own exit with ``SystemExit(2)`` and the usage
    line); 1 for a run that could not be carried out. Errors are one line on stderr.

    >>> main(["compare", "--models", "cifar_resnet20", "cifar_resnet20"])  # stderr: one error line
    2
    """
    args = parse_args(argv)
    command = _BY_NAME[args.command]
    try:
        return int(command.load().run(args))
    except PedconvError as e:
        code = e.exit_code
        message = _one_line(e)
    except _FILE_ERRORS as e:
        code, message = 1, _one_line(e)
    print(f"pedconv {command.name}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

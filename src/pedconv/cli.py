"""The ``pedconv`` command line: ``pedconv <command> [options]``.

The commands are the rows of one table, :data:`COMMANDS`: a name, the module that
implements it (imported only when that command is chosen, so ``pedconv --help`` stays
light) and a one-line help. A command module provides

* ``build_parser(parser)``: adds its options to ``parser`` (whose description is the
  module's docstring);
* ``run(args) -> int``: carries the command out and returns the exit status. Problems a
  user can fix are raised as :class:`pedconv.errors.PedconvError` (or a missing file's
  ``FileNotFoundError``); :func:`main` prints them as one line,
  ``pedconv <command>: error: ...``, and returns 2 for a
  :class:`~pedconv.errors.UsageError` (with a pointer to ``--help``), 1 otherwise, and
  128 + the signal number for a :class:`~pedconv.errors.RunInterrupted` (Ctrl-C: 130);

and may provide

* ``config_layer(args, parser) -> dict``: option values that lie under the command line
  (``train --config``'s YAML file): the command line is parsed again with them as defaults;
* ``validate_args(args)``: raises :class:`~pedconv.errors.UsageError` for options that do
  not work together, reported like argparse's own errors (one line, exit status 2), or a
  :class:`~pedconv.errors.RunError` for a run that cannot start (a device or an output
  folder this machine does not have).

Every parser is a :class:`CommandParser`: an error is one line,
``pedconv train: error: argument --lr: must be > 0, got -1.0 (see pedconv train --help)``,
instead of argparse's usage block, and ``--help`` shows the defaults (:class:`HelpFormatter`).
``pedconv --debug COMMAND ...`` shows the traceback of an error instead of the one line.

A downstream task (:mod:`pedconv.tasks`) adds its command as one more row.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import importlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, NoReturn, Optional

from .errors import PedconvError, RunInterrupted, UsageError

__all__ = ["COMMANDS", "Command", "CommandParser", "HelpFormatter", "main", "parse_args"]


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
    Command("train", "pedconv.tasks.classification.command", "train a classifier (resumable, DDP)"),
    Command("eval", "pedconv.tasks.classification.evaluate", "evaluate a classifier's checkpoint or weights"),
    Command("compare", "pedconv.compare.command", "static vs dynamic models, one recipe, several seeds"),
    Command("detect", "pedconv.tasks.detection.command", "object detection: train|eval SSD300 / Faster R-CNN"),
    Command("segment", "pedconv.tasks.segmentation.command", "semantic segmentation: train|eval UperNet / PSPNet"),
    Command("adv", "pedconv.tasks.adversarial.command", "Free adversarial training and PGD evaluation: train|eval"),
)
_BY_NAME = {c.name: c for c in COMMANDS}
# Errors about files and folders a user named: one line, exit status 1, like a RunError.
_FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def _one_line(text: object) -> str:
    """An error (or message) as one line."""
    return re.sub(r"\s*\n\s*", " ", str(text).strip())


def _usage_line(prog: str, message: str) -> str:
    return f"{prog}: error: {message} (see {prog} --help)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` with the module docstring as written and each option's default, where it has
    one worth showing (not None, not a flag's False, not already in the help text)."""

    @staticmethod
    def _shows_default(action: argparse.Action) -> bool:
        default = action.default
        if not action.option_strings or action.nargs == 0 or default is None or default is argparse.SUPPRESS:
            return False
        if isinstance(default, (list, tuple, dict, str)) and not default:
            return False
        return "default" not in (action.help or "").lower()

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        return super()._get_help_string(action) if self._shows_default(action) else action.help

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and self._shows_default(action):  # an option without help still shows its default
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


class CommandParser(argparse.ArgumentParser):
    """The parser of ``pedconv`` and of each command: a usage error is one line with a pointer
    to ``--help`` (argparse prints its whole usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, _usage_line(self.prog, _one_line(message)) + "\n")


def _parsers() -> tuple[CommandParser, dict[str, CommandParser]]:
    """The ``pedconv`` parser, and one empty sub-parser per command (filled for the chosen one only).

    Nothing here imports a command's module, or torch: ``pedconv --help`` lists the table.
    """
    from . import __version__

    parser = CommandParser(prog="pedconv", description="PEDConv tools", formatter_class=HelpFormatter,
                           epilog="`pedconv COMMAND --help` describes a command and its options.")
    parser.add_argument("--version", action="version", version=f"pedconv {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {c.name: sub.add_parser(c.name, help=c.help, formatter_class=HelpFormatter) for c in COMMANDS}
    return parser, subparsers


def _hook(module: ModuleType, name: str) -> Optional[Callable[..., Any]]:
    hook = getattr(module, name, None)
    return hook if callable(hook) else None


def _command_word(argv: Sequence[str]) -> Optional[str]:
    """The command: the first plain word (the root parser's options take no values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


def _chosen(sub: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser that took the options: ``sub``, or its chosen sub-command's (``pedconv detect train``)."""
    for action in sub._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return chosen
    return sub


def _check_unknown(sub: argparse.ArgumentParser, extras: list[str]) -> None:
    if extras:
        options = [o for a in sub._actions for o in a.option_strings]
        first = next((e.split("=", 1)[0] for e in extras if e.startswith("-")), "")
        sub.error(f"unrecognized arguments: {' '.join(extras)}" + (_suggest(first, options) if first else ""))


def parse_args(argv: Optional[Sequence[str]] = None, *, validate: bool = True) -> argparse.Namespace:
    """Parse ``pedconv`` arguments (``args.command`` names the command); usage errors print one
    line and exit with status 2 (``SystemExit``; :func:`main` returns the status instead).

    Only the chosen command's module is imported. Its ``config_layer`` values become the
    parser's defaults for a second parse of the same arguments (so flags win over them), then
    ``validate_args`` checks the result (unless ``validate`` is False: options that are only
    read, such as ``pedconv compare``'s options for every run).

    >>> parse_args(["train", "--epochs", "3"]).epochs
    3
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, subparsers = _parsers()
    word = _command_word(argv)
    command = _BY_NAME.get(word or "")
    if command is None:
        if word is not None:
            parser.error(f"unknown command {word!r}{_suggest(word, list(_BY_NAME))}")
        return parser.parse_args(argv)  # help, version, or a missing command
    module = command.load()
    sub = subparsers[command.name]
    sub.description = module.__doc__
    module.build_parser(sub)
    args, extras = parser.parse_known_args(argv)
    target = _chosen(sub, args)
    _check_unknown(target, extras)
    layer, check = _hook(module, "config_layer"), _hook(module, "validate_args")
    try:
        defaults = layer(args, sub) if layer is not None else None
        if defaults:
            sub.set_defaults(**defaults)
            args = parser.parse_args(argv)
        del args.debug  # main's concern, not an option of the command
        if check is not None and validate:
            check(args)
    except UsageError as e:
        target.error(_one_line(e))
    return args


def _report(error: BaseException, prog: str, debug: bool) -> int:
    """Print ``error`` as one line on stderr (re-raise it with ``--debug``); returns the exit status."""
    if debug:
        if isinstance(error, PedconvError) and error.worker_traceback:
            print(error.worker_traceback, file=sys.stderr)
        raise error
    if isinstance(error, RunInterrupted):
        print(f"{prog}: {_one_line(error)}", file=sys.stderr)
        return error.status
    if isinstance(error, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    if isinstance(error, UsageError):
        print(_usage_line(prog, _one_line(error)), file=sys.stderr)
        return error.exit_code
    print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
    return error.exit_code if isinstance(error, PedconvError) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``pedconv`` with ``argv`` (default: the process's arguments); returns the exit status.

    0 on success; 2 for a usage error; 1 for a run that could not be carried out; 130 / 143
    for a run stopped by Ctrl-C / SIGTERM. Errors are one line on stderr (``--debug``, before
    the command, raises them instead). ``--help`` and ``--version`` return 0.

    >>> main(["compare", "--models", "cifar_resnet20", "cifar_resnet20"])  # stderr: one error line
    2
    >>> main(["trian"])  # stderr: pedconv: error: unknown command 'trian'; did you mean 'train'? (see pedconv --help)
    2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    word = _command_word(argv)
    debug = "--debug" in argv[: argv.index(word) if word is not None else len(argv)]
    prog = f"pedconv {word}" if word in _BY_NAME else "pedconv"
    try:
        args = parse_args(argv)
        return int(_BY_NAME[args.command].load().run(args))
    except SystemExit as e:  # --help, --version, or a usage error argparse has printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except (PedconvError, KeyboardInterrupt, *_FILE_ERRORS) as e:
        return _report(e, prog, debug)


if __name__ == "__main__":
    raise SystemExit(main())

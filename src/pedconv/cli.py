"""The ``pedconv`` command line: ``pedconv <command> [options]``.

Commands:
    bench     speed and memory of PEDConv vs the static conv and dynamic-conv peers
    profile   parameters and FLOPs of registered models beside the paper's numbers
    train     train a registered model (single process or torchrun/DDP), resumable
    eval      evaluate a training checkpoint or a model + weights on a dataset
    compare   train several models with one recipe over seeds and tabulate (the main job)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

__all__ = ["main", "parse_args"]


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .tools import benchmark
    from .tools import flops as profile
    from .training import compare, evaluate, train

    parser = argparse.ArgumentParser(prog="pedconv", description="PEDConv tools")
    parser.add_argument("--version", action="version", version=f"pedconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser("bench", help="layer and model speed/memory benchmark", description=benchmark.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmark.build_parser(bench)
    prof = sub.add_parser("profile", help="params/FLOPs table vs the paper", description=profile.__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    profile.build_parser(prof)
    tr = sub.add_parser("train", help="train a model (resumable, DDP)", description=train.__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    train.build_parser(tr)
    ev = sub.add_parser("eval", help="evaluate a checkpoint or weights", description=evaluate.__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.build_parser(ev)
    cmp = sub.add_parser("compare", help="static vs dynamic models, one recipe, several seeds",
                         description=compare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.build_parser(cmp)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.command in ("train", "eval"):
        # Re-parsed by the command itself: `train` layers a --config YAML under the flags.
        rest = argv[argv.index(args.command) + 1:]
        if args.command == "train":
            from .training import train

            return train.main(rest)
        from .training import evaluate

        return evaluate.main(rest)
    if args.command == "bench":
        from .tools import benchmark

        benchmark.main(args=args)
    elif args.command == "profile":
        from .tools import flops as profile

        profile.main(args=args)
    elif args.command == "compare":
        from .training import compare

        return compare.main(args=args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

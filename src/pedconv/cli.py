"""The ``pedconv`` command line: ``pedconv <command> [options]``.

Commands:
    bench     speed and memory of PEDConv vs the static conv and dynamic-conv peers
    profile   parameters and FLOPs of registered models beside the paper's numbers
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

__all__ = ["main", "parse_args"]


def _parser() -> argparse.ArgumentParser:
    from . import __version__, benchmark, profile

    parser = argparse.ArgumentParser(prog="pedconv", description="PEDConv tools")
    parser.add_argument("--version", action="version", version=f"pedconv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser("bench", help="layer and model speed/memory benchmark", description=benchmark.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmark.build_parser(bench)
    prof = sub.add_parser("profile", help="params/FLOPs table vs the paper", description=profile.__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    profile.build_parser(prof)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.command == "bench":
        from . import benchmark

        benchmark.main(args=args)
    elif args.command == "profile":
        from . import profile

        profile.main(args=args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

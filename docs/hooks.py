"""mkdocs hooks: pages that are generated, not written, so that docs and results cannot drift.

* ``<!-- include-table: results/X/compare.md -->``: the table that the script named beside it
  wrote into ``results/`` (a missing file fails the build);
* ``<!-- cli: train -->`` / ``<!-- cli: detect train -->``: that command's ``--help``, from the
  argparse parsers of :mod:`pedconv.cli`;
* ``<!-- published -->``: the published numbers of :data:`pedconv.models.PAPER_NUMBERS` and the
  released weights, from the one place the profiler reads them too.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_INCLUDE = re.compile(r"^<!-- include-table: (\S+) -->$", re.M)
_CLI = re.compile(r"^<!-- cli: ([a-z ]+) -->$", re.M)
_PUBLISHED = "<!-- published -->"


def _include(match: re.Match) -> str:
    path = ROOT / match.group(1)
    if not path.is_file():
        raise FileNotFoundError(f"docs: {match.group(0)} names a file that does not exist")
    table = [line for line in path.read_text().splitlines() if line.startswith("|")]
    if not table:
        raise ValueError(f"docs: {path} holds no markdown table")
    return "\n".join(table) + f"\n\n<small>Generated from `{match.group(1)}` (the file the command wrote).</small>\n"


def _cli(match: re.Match) -> str:
    from pedconv.cli import main

    words = [w for w in match.group(1).split() if w != "pedconv"]  # "pedconv": the top-level help
    out = io.StringIO()
    os.environ["COLUMNS"] = "100"
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*words, "--help"])
    text = out.getvalue().strip()
    if not text.startswith("usage:"):
        raise ValueError(f"docs: `pedconv {match.group(1)} --help` printed no usage")
    return f"```text\n{text}\n```\n"


def _published() -> str:
    from pedconv.models import PAPER_NUMBERS, PEDConvResNet18_Weights

    rows = ["| model | params | FLOPs (MACs) | top-1 (%) | source |", "| --- | --- | --- | --- | --- |"]
    for name, row in PAPER_NUMBERS.items():
        if "top1" in row:
            rows.append(f"| `{name}` | {row['params'] / 1e6:.1f}M | {row['macs'] / 1e9:.2f}G | {row['top1']} | "
                        f"{row['source']} |")
    w = PEDConvResNet18_Weights.AUTHORS_IMAGENET
    release = (f"\n\nReleased weights: `PEDConvResNet18_Weights.AUTHORS_IMAGENET` ({w.meta['dataset']}, top-1 "
               f"{w.meta['top1']}% as released; the paper's Table 1b reports {w.meta['paper_top1']}%), "
               f"[{w.filename}]({w.url}).\n")
    return "\n".join(rows) + release


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    markdown = _INCLUDE.sub(_include, markdown)
    markdown = _CLI.sub(_cli, markdown)
    return markdown.replace(_PUBLISHED, _published())

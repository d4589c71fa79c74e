"""The documentation site's generated parts: the doctest fences of the API reference, the
included results tables, the CLI reference and the published numbers (docs/hooks.py), and the
README's promise that every number in it is also in the docs."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hooks():
    return _load("hooks")


def test_doctests_become_console_code_and_fenced_text_stays():
    fence = pytest.importorskip("griffe") and _load("griffe_doctests").fence_doctests
    text = "Example:\n    >>> f([1, 2])\n    [True, True]\n\nAfter.\n```\n>>> kept\n```"
    assert fence(text) == ("Example:\n    ```pycon\n    >>> f([1, 2])\n    [True, True]\n    ```\n\nAfter.\n"
                           "```\n>>> kept\n```")


def test_the_included_tables_are_the_results_files_and_a_missing_one_fails(hooks, tmp_path):
    page = "before\n<!-- include-table: results/compare-full/compare.md -->\nafter"
    out = hooks.on_page_markdown(page)
    lines = (ROOT / "results/compare-full/compare.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert "\n".join(table) in out and out.startswith("before\n") and out.endswith("after")
    with pytest.raises(FileNotFoundError, match=r"results/nope\.md"):
        hooks.on_page_markdown("<!-- include-table: results/nope.md -->")


def test_every_include_in_the_docs_names_a_results_file():
    marker = re.compile(r"^<!-- include-table: (\S+) -->$", re.M)
    names = [m for page in DOCS.glob("*.md") for m in marker.findall(page.read_text())]
    assert len(names) >= 14 and all((ROOT / n).is_file() for n in names)


def test_the_cli_reference_is_the_parsers_help(hooks, capsys):
    out = hooks.on_page_markdown("<!-- cli: detect eval -->")
    assert out.startswith("```text\nusage: pedconv detect eval") and "--checkpoint" in out and "--no-profile" in out
    assert "usage: pedconv [-h]" in hooks.on_page_markdown("<!-- cli: pedconv -->")


def test_the_published_numbers_come_from_paper_numbers(hooks):
    out = hooks.on_page_markdown("<!-- published -->")
    assert "| `pedconv_resnet18` | 11.9M | 1.83G | 74.2 | Table 1b |" in out and "74.1%" in out


def test_every_number_of_the_readme_is_in_the_docs_or_a_results_file():
    """The README is the landing page: its numbers are the docs' (generated or written there)."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 210
    corpus = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    corpus += "\n".join(p.read_text() for p in (ROOT / "results").rglob("*.md"))
    numbers = set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", readme))
    missing = sorted(n for n in numbers if n not in corpus)
    assert not missing, f"README numbers found neither in docs/ nor in results/: {missing}"

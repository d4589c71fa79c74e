"""`import pedconv` is light: its public names are imported on first use, and mean what they meant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pedconv

SRC = Path(__file__).resolve().parents[1] / "src"


def _python(code: str, tmp_path: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_and_version_do_not_load_torch(tmp_path: Path) -> None:
    code = "import sys, pedconv; print(pedconv.__version__, 'torch' in sys.modules)"
    assert _python(code, tmp_path) == f"{pedconv.__version__} False"


def test_every_public_name_resolves() -> None:
    import pedconv.models
    import pedconv.tools.flops

    for name in pedconv.__all__:
        assert getattr(pedconv, name) is not None, name
        assert name in dir(pedconv)
    assert pedconv.load_reference_checkpoint is pedconv.models.load_authors_checkpoint  # the former name
    assert pedconv.profile_model is pedconv.tools.flops.profile_model
    assert callable(pedconv.convert) and pedconv.convert is sys.modules["pedconv.convert"].convert
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pedconv.nope  # noqa: B018


@pytest.mark.parametrize("first", ["pedconv.execution", "pedconv.models", "pedconv.training.train"])
def test_each_part_imports_first_and_convert_stays_the_function(tmp_path: Path, first: str) -> None:
    """Nothing imports the package up front any more: any subpackage may be the first one loaded
    (`method` and `execution` use each other), and loading the module `pedconv.convert` does not hide
    the function `pedconv.convert`."""
    code = f"import {first}, pedconv; print(callable(pedconv.convert), pedconv.PEDConv2d.__name__)"
    assert _python(code, tmp_path) == "True PEDConv2d"

"""Shared by the training tests: real Fashion-MNIST (skipped without it), the tiny run's
settings, one tiny real run for the whole session, and the environment of a child process.

Every training run uses one CPU thread per process (``threads=1``): on a small shared
machine this is both the fastest setting and a fixed one, so runs compare bit for bit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from pedconv.tasks.classification import train
from pedconv.tasks.classification.readers import load_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]

# The small, fast setting shared by the run tests.
TINY: dict[str, Any] = dict(model="pedconv_cifar_resnet20", model_kwargs={"width": 8}, train_subset=2400,
                            val_subset=1000, batch_size=32, lr=1.6, warmup_epochs=0.2, epochs=2, threads=1, seed=0,
                            quiet=True)


def _have_fashion_mnist() -> bool:
    try:
        load_fashion_mnist(train=False)
    except FileNotFoundError:
        return False
    return True


@pytest.fixture(scope="session")
def fashion_mnist() -> None:
    """Skip the test without real Fashion-MNIST (``apt-get install dataset-fashion-mnist``)."""
    if not _have_fashion_mnist():
        pytest.skip("real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def tiny() -> dict[str, Any]:
    """The tiny run's options (a fresh copy)."""
    return dict(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, fashion_mnist: None) -> dict[str, Any]:
    """150 steps of a width-8 PEDConv ResNet-20 on 2400 real Fashion-MNIST images (~13 s), run once
    (val top-1 69% here: well past the 60% the tests ask for).

    Once for the whole run, not once per pytest-xdist worker: the workers share the parent of
    their base temp folders, and the first to ask trains while the others wait on the lock and
    then read its result (pytest-xdist's recipe for a shared session fixture).
    """
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    result_file = shared / "tiny_run.json"
    with FileLock(str(shared / "tiny_run.lock")):
        if not result_file.exists():
            result = train(dict(TINY, output=str(shared / "tiny_run")))
            result_file.write_text(json.dumps(result))
        return json.loads(result_file.read_text())


@pytest.fixture
def configs_dir() -> Path:
    """The shipped YAML configs."""
    return ROOT / "configs"

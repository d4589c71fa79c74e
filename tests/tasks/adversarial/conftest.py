"""Shared by the adversarial tests: real Fashion-MNIST (skipped without it) and one small
undefended CNN trained on it once per session (~10 s), the target of the attack-reality checks.

Training and attacks use one CPU thread: on a small shared machine that is both the fastest
setting and a fixed one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from pedconv.tasks.adversarial import NormalizedModel
from pedconv.tasks.classification.data import build_data
from pedconv.training.data import DataSpec

TRAIN_IMAGES, ATTACK_IMAGES, EPOCHS, BATCH = 6000, 384, 2, 64


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch CPU thread inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_cnn() -> nn.Module:
    """Two conv + pool stages and a linear classifier: ~84% on Fashion-MNIST after a few epochs."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


@dataclass
class Trained:
    """The undefended model (pixel space), its data and the held-out images to attack."""

    model: NormalizedModel
    spec: DataSpec
    x: Tensor  # attack images in [0, 1]
    y: Tensor
    seconds: float


@pytest.fixture(scope="session")
def fmnist() -> DataSpec:
    """Real Fashion-MNIST subsets (skips the test without the dataset)."""
    try:
        return build_data("fashion_mnist", train_subset=TRAIN_IMAGES, val_subset=ATTACK_IMAGES)
    except FileNotFoundError:
        pytest.skip("real Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="session")
def undefended(fmnist: DataSpec) -> Trained:
    """A tiny CNN trained normally (Adam, 2 epochs of 6000 images), in eval mode."""
    torch.manual_seed(0)
    model = NormalizedModel(tiny_cnn(), fmnist.mean, fmnist.std)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    xtr, ytr = fmnist.train.images.float() / 255, fmnist.train.labels
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with one_thread():
        for _ in range(EPOCHS):
            perm = torch.randperm(len(ytr), generator=g)
            for i in range(0, len(ytr), BATCH):
                idx = perm[i:i + BATCH]
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    return Trained(model, fmnist, fmnist.val.images.float() / 255, fmnist.val.labels, time.perf_counter() - start)


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Top-1 in percent."""
    with torch.no_grad():
        return 100.0 * (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture
def top1():
    """:func:`accuracy`, for the tests."""
    return accuracy


@pytest.fixture
def make_cnn():
    """:func:`tiny_cnn`, for the tests."""
    return tiny_cnn


@pytest.fixture
def single_thread():
    """:func:`one_thread`, for the tests."""
    return one_thread

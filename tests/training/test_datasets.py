"""Offline Fashion-MNIST loading and the CIFAR-style ResNet."""

import gzip
import struct

import pytest
import torch

import pedconv
from pedconv.models import cifar_resnet
from pedconv.training.datasets import DEBIAN_FASHION_MNIST, load_fashion_mnist, read_idx


def _write_idx(path, array, compress=True):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + b"".join(struct.pack(">I", s) for s in array.shape)
    data = header + array.to(torch.uint8).numpy().tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
    arr = torch.randint(0, 255, (5, 4, 3), dtype=torch.uint8)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    _write_idx(path, arr, compress)
    assert torch.equal(read_idx(path), arr)


def test_corrupt_and_truncated_files_raise(tmp_path):
    bad = tmp_path / "bad.gz"
    gzip.open(bad, "wb").write(b"\x01\x02\x03\x04rest")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    arr = torch.zeros(4, 3, dtype=torch.uint8)
    trunc = tmp_path / "t"
    _write_idx(trunc, arr, compress=False)
    trunc.write_bytes(trunc.read_bytes()[:-2])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(trunc)
    notgz = tmp_path / "x.gz"
    notgz.write_bytes(b"plain bytes")
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(notgz)


def test_torchvision_raw_layout_under_root(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "t10k-images-idx3-ubyte", torch.zeros(3, 28, 28, dtype=torch.uint8), compress=False)
    _write_idx(raw / "t10k-labels-idx1-ubyte", torch.tensor([1, 2, 3], dtype=torch.uint8), compress=False)
    x, y = load_fashion_mnist(tmp_path, train=False)
    assert x.shape == (3, 28, 28) and y.tolist() == [1, 2, 3]


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(pedconv.training.datasets, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, train=True)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")
def test_real_fashion_mnist_from_debian():
    x, y = load_fashion_mnist(train=False)
    assert x.shape == (10000, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(y.bincount(), torch.full((10,), 1000))
    assert 60 < x.float().mean() < 80  # the real images, not zeros


def test_cifar_resnet_depths_and_conversion():
    model = cifar_resnet(depth=20, width=16, in_chans=1)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 19 + 2
    converted = pedconv.convert(model, keep_shortcut=True)
    assert sum(isinstance(m, pedconv.PEDConv2d) for m in converted.modules()) == 18
    assert converted(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="depth"):
        cifar_resnet(depth=21)

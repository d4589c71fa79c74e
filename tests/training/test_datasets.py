"""The raw dataset readers: Fashion-MNIST IDX files (offline), CIFAR's python pickles."""

import gzip
import struct
from pathlib import Path

import pytest
import torch

import pedconv.tasks.classification.readers
from pedconv.tasks.classification import train
from pedconv.tasks.classification.readers import DEBIAN_FASHION_MNIST, load_fashion_mnist, read_idx


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
    with gzip.open(bad, "wb") as f:
        f.write(b"\x01\x02\x03\x04rest")
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
    monkeypatch.setattr(pedconv.tasks.classification.readers, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, train=True)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(),
                    reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")
def test_real_fashion_mnist_from_debian():
    x, y = load_fashion_mnist(train=False)
    assert x.shape == (10000, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(y.bincount(), torch.full((10,), 1000))
    assert 60 < x.float().mean() < 80  # the real images, not zeros


def test_cifar_pickle_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CIFAR-10's python release (rows of 3072 = R, G, B planes) read as (N, 3, 32, 32), and trained on.

    The files here are synthetic (the real archive is not available offline), so
    torchvision's md5 check is bypassed; everything after it is the real code path.
    """
    import pickle

    import torchvision

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    rows = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows[name] = torch.randint(0, 256, (8, 3072), generator=g, dtype=torch.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows[name].numpy(), "labels": list(range(8))}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    x, y = pedconv.tasks.classification.readers.load_cifar(tmp_path, 10, train=False)
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == list(range(8))
    assert torch.equal(x[3], rows["test_batch"][3].view(3, 32, 32))
    readers = pedconv.tasks.classification.readers
    assert len(readers.load_cifar(folder, 10, train=True)[0]) == 40  # the folder itself works too
    r = train(model="cifar_resnet20", model_kwargs={"width": 4}, data="cifar10", data_dir=str(tmp_path), epochs=1,
              batch_size=8, output=str(tmp_path / "run"), quiet=True, threads=1)
    assert r["model_args"]["input_chans"] == 3 and r["final"]["val_images"] == 8

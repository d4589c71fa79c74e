"""Datasets that work offline: real Fashion-MNIST from its IDX files.

Debian's ``dataset-fashion-mnist`` package installs the original gzip IDX files in
:data:`DEBIAN_FASHION_MNIST`; torchvision's downloader puts the same files under
``<root>/FashionMNIST/raw``. :func:`load_fashion_mnist` reads either.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from ...errors import DataError

__all__ = ["DEBIAN_FASHION_MNIST", "FASHION_MNIST_CLASSES", "find_idx", "load_cifar", "load_fashion_mnist", "read_idx"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_HOW_TO_GET = (
    "Install it with `apt-get install dataset-fashion-mnist` (Debian, offline files in "
    f"{DEBIAN_FASHION_MNIST}), pass root= a folder holding the IDX files, or use "
    "download=True to fetch it with torchvision."
)


def read_idx(path: Union[str, os.PathLike]) -> Tensor:
    """Read an IDX file (optionally gzip-compressed) into a tensor, validating its header."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path} is truncated or corrupt: {len(data)} bytes, expected {expected} for shape {shape}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))


def find_idx(folder: Path, stem: str) -> Optional[Path]:
    """The IDX file ``stem`` (or ``stem.gz``) in ``folder`` or in its torchvision ``FashionMNIST/raw``, if any.

    >>> find_idx(Path("/nonexistent"), "t10k-images-idx3-ubyte") is None
    True
    """
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / "FashionMNIST" / "raw" / stem,
                      folder / "FashionMNIST" / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(
    root: Union[str, os.PathLike, None] = None, train: bool = True, download: bool = False
) -> tuple[Tensor, Tensor]:
    """Real Fashion-MNIST as ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    Looks in ``root`` (flat IDX files or torchvision's ``FashionMNIST/raw`` layout), then in
    :data:`DEBIAN_FASHION_MNIST`; with ``download=True`` and nothing found, torchvision
    downloads it into ``root``.

    Example:
        >>> images, labels = load_fashion_mnist(train=False)
        >>> images.shape, labels.shape
        (torch.Size([10000, 28, 28]), torch.Size([10000]))
    """
    split = "train" if train else "t10k"
    folders = ([Path(root)] if root is not None else []) + [DEBIAN_FASHION_MNIST]
    for folder in folders:
        images = find_idx(folder, f"{split}-images-idx3-ubyte")
        labels = find_idx(folder, f"{split}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            x, y = read_idx(images), read_idx(labels).long()
            if x.dim() != 3 or x.shape[0] != y.shape[0]:
                raise DataError(f"Fashion-MNIST files in {folder} disagree: images {tuple(x.shape)}, "
                                f"labels {tuple(y.shape)}")
            return x, y
    if download:
        from torchvision.datasets import FashionMNIST

        target = Path(root) if root is not None else Path.home() / ".cache" / "pedconv"
        ds = FashionMNIST(str(target), train=train, download=True)
        return ds.data.clone(), ds.targets.long().clone()
    raise FileNotFoundError(f"Fashion-MNIST ({split}) not found in {[str(f) for f in folders]}. {_HOW_TO_GET}")


_CIFAR_FOLDERS = {10: "cifar-10-batches-py", 100: "cifar-100-python"}


def load_cifar(
    root: Union[str, os.PathLike], num_classes: int = 10, train: bool = True, download: bool = False
) -> tuple[Tensor, Tensor]:
    """Real CIFAR-10/100 from the python-pickle release as ``(uint8 (N, 3, 32, 32), int64 (N,))``.

    ``root`` holds ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``) or
    ``cifar-100-python/`` (``train``, ``test``); ``root`` may also be that folder itself.
    Reading and the checksum verification are torchvision's (``datasets.CIFAR10/100``);
    ``download=True`` fetches the archive into ``root`` when it is missing.

    Example:
        >>> x, y = load_cifar("~/data", 10, train=False)  # doctest: +SKIP
        >>> x.shape, x.dtype, y.shape  # doctest: +SKIP
        (torch.Size([10000, 3, 32, 32]), torch.uint8, torch.Size([10000]))
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    if num_classes not in _CIFAR_FOLDERS:
        raise ValueError(f"CIFAR has 10 or 100 classes, got num_classes={num_classes}")
    folder = _CIFAR_FOLDERS[num_classes]
    root = Path(root).expanduser()
    if root.name == folder:
        root = root.parent
    cls = CIFAR10 if num_classes == 10 else CIFAR100
    if not download and not (root / folder).is_dir():
        raise FileNotFoundError(
            f"CIFAR-{num_classes} not found: expected {root / folder}/ (the python version, "
            f"{'data_batch_1..5 and test_batch' if num_classes == 10 else 'train and test'}). Pass the folder "
            f"that contains {folder}/ as the data dir, or use download=True (torchvision fetches {cls.url})."
        )
    try:
        ds = cls(str(root), train=train, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(f"CIFAR-{num_classes} in {root / folder} is incomplete or corrupt ({e})") from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(ds.targets, dtype=torch.long)

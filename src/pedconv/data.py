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

__all__ = ["DEBIAN_FASHION_MNIST", "FASHION_MNIST_CLASSES", "load_fashion_mnist", "read_idx"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
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
        raise ValueError(f"cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path} is truncated or corrupt: {len(data)} bytes, expected {expected} for shape {shape}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=True))


def _find(folder: Path, stem: str) -> Optional[Path]:
    for candidate in (folder / stem, folder / f"{stem}.gz", folder / "FashionMNIST" / "raw" / stem,
                      folder / "FashionMNIST" / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_fashion_mnist(
    root: Union[None, str, os.PathLike] = None, train: bool = True, download: bool = False
) -> tuple[Tensor, Tensor]:
    """Real Fashion-MNIST as ``(images uint8 (N, 28, 28), labels int64 (N,))``.

    Looks in ``root`` (flat IDX files or torchvision's ``FashionMNIST/raw`` layout), then in
    :data:`DEBIAN_FASHION_MNIST`; with ``download=True`` and nothing found, torchvision
    downloads it into ``root``.

    Example:
        >>> images, labels = load_fashion_mnist(train=False)  # doctest: +SKIP
        >>> images.shape, labels.shape
        (torch.Size([10000, 28, 28]), torch.Size([10000]))
    """
    split = "train" if train else "t10k"
    folders = ([Path(root)] if root is not None else []) + [DEBIAN_FASHION_MNIST]
    for folder in folders:
        images = _find(folder, f"{split}-images-idx3-ubyte")
        labels = _find(folder, f"{split}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            x, y = read_idx(images), read_idx(labels).long()
            if x.dim() != 3 or x.shape[0] != y.shape[0]:
                raise ValueError(f"Fashion-MNIST files in {folder} disagree: images {tuple(x.shape)}, labels {tuple(y.shape)}")
            return x, y
    if download:
        from torchvision.datasets import FashionMNIST

        target = Path(root) if root is not None else Path.home() / ".cache" / "pedconv"
        ds = FashionMNIST(str(target), train=train, download=True)
        return ds.data.clone(), ds.targets.long().clone()
    raise FileNotFoundError(f"Fashion-MNIST ({split}) not found in {[str(f) for f in folders]}. {_HOW_TO_GET}")

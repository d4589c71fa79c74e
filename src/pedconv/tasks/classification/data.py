"""The image classification datasets: Fashion-MNIST (offline), CIFAR-10/100 and ImageFolder.

:func:`build_data` gives a :class:`~pedconv.training.data.DataSpec`: the in-memory datasets as
one uint8 tensor each (normalised and augmented on the device by
:class:`~pedconv.training.data.BatchPreprocessor`), ImageFolder with torchvision's standard
transforms in the loader workers. Subsets (``--train-subset``/``--val-subset``) are fixed,
seeded and sorted. The options that choose them are :func:`add_data_arguments`, shared by
``pedconv train``, ``pedconv eval`` and ``pedconv adv``.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import Any, Optional, Union, cast

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...errors import DataError
from ...training.data import DataSpec, SeededDataset, TensorImageDataset, collate_batch, load_image, mix_seed
from ...utils.options import non_negative_int, number, positive_int
from .readers import DEBIAN_FASHION_MNIST, find_idx, load_cifar, load_fashion_mnist

__all__ = ["DATASETS", "add_data_arguments", "add_image_data_arguments", "build_data"]

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder")
_STATS = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

def add_data_arguments(p: argparse.ArgumentParser, defaults_from_checkpoint: bool = False) -> Any:
    """Dataset options shared by ``train`` and ``eval``; returns the argument group."""
    g = p.add_argument_group("data")
    g.add_argument("--data", choices=DATASETS, default=None if defaults_from_checkpoint else "fashion_mnist",
                   help="dataset (default: fashion_mnist%s)"
                        % (", or the checkpoint's" if defaults_from_checkpoint else ""))
    g.add_argument("--data-dir", default=None,
                   help="dataset folder: Fashion-MNIST IDX files (default: /usr/share/datasets/fashion-mnist), the "
                        "folder holding cifar-10-batches-py/ or cifar-100-python/, or an ImageFolder root with "
                        "train/ and val/")
    g.add_argument("--download", action="store_true",
                   help="download Fashion-MNIST/CIFAR with torchvision if missing")
    g.add_argument("--val-subset", type=positive_int, default=None,
                   help="evaluate on a fixed seeded subset of N validation images")
    g.add_argument("--subset-seed", type=non_negative_int, default=None if defaults_from_checkpoint else 0,
                   help="seed of the --train-subset/--val-subset choice (default: 0%s)"
                        % (", or the checkpoint's" if defaults_from_checkpoint else ""))
    g.add_argument("--img-size", type=positive_int, default=None,
                   help="input resolution (default: 28 Fashion-MNIST, 32 CIFAR, 224 ImageFolder; in-memory "
                        "datasets are resized on the device)")
    g.add_argument("--crop-pct", type=number(float, 0, 1, low_open=True), default=0.875,
                   help="ImageFolder validation: resize to img_size/crop_pct, then center-crop")
    g.add_argument("--workers", type=non_negative_int, default=None,
                   help="DataLoader worker processes (default: 0 for in-memory datasets, min(8, CPUs) for ImageFolder)")
    return g


def add_image_data_arguments(p: argparse.ArgumentParser) -> Any:
    """The training data options of image classification datasets (``pedconv train``, ``pedconv adv
    train``): :func:`add_data_arguments`, ``--train-subset`` and ``--augment``; returns the group."""
    g = add_data_arguments(p)
    g.add_argument("--train-subset", type=positive_int, default=None,
                   help="train on a fixed seeded subset of N images")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="training augmentation (in-memory datasets: random crop, padding 4, + horizontal flip; "
                        "ImageFolder: RandomResizedCrop + flip)")
    return g


def _subset(images_labels: tuple[Tensor, Tensor], n: Optional[int], seed: int, what: str) -> tuple[Tensor, Tensor]:
    x, y = images_labels
    idx = _subset_indices(len(y), n, seed, what)
    return (x, y) if idx is None else (x[idx], y[idx])


def _fashion_mnist(data_dir: Optional[str], train: bool, download: bool) -> tuple[Tensor, Tensor]:
    split = "train" if train else "t10k"
    how = ("Get it with `apt-get install dataset-fashion-mnist` (Debian, offline, installs "
           f"{DEBIAN_FASHION_MNIST}), or pass --download to fetch it with torchvision, or --data-dir DIR with the "
           f"IDX files ({split}-images-idx3-ubyte[.gz], {split}-labels-idx1-ubyte[.gz]).")
    present = data_dir is not None and all(find_idx(Path(data_dir), f"{split}-{kind}-idx{d}-ubyte")
                                           for kind, d in (("images", 3), ("labels", 1)))
    if data_dir is not None and not download and not present:
        # An explicit --data-dir is not silently replaced by the system copy.
        raise FileNotFoundError(f"Fashion-MNIST ({split}) not found in --data-dir {data_dir}. {how}")
    try:
        x, y = load_fashion_mnist(data_dir, train=train, download=download)
    except FileNotFoundError:
        where = data_dir or DEBIAN_FASHION_MNIST
        raise FileNotFoundError(f"Fashion-MNIST ({split}) not found in {where}. {how}") from None
    return x.unsqueeze(1), y


def _imagefolder(data_dir: Optional[str], img_size: int, crop_pct: float, need_train: bool,
                 augment: bool) -> tuple[Optional[Dataset], Dataset, list[str]]:
    from torchvision import datasets, transforms

    if not data_dir:
        raise DataError("--data imagefolder needs --data-dir DIR containing train/ and val/ class folders")
    root = Path(data_dir).expanduser()
    for split in ("train", "val") if need_train else ("val",):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"ImageFolder dataset: {root / split} is missing (expected "
                                    f"{root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg, the torchvision "
                                    f"ImageFolder layout)")
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(img_size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.RandomHorizontalFlip(),
        transforms.PILToTensor(),
    ])
    val_tf = transforms.Compose([
        transforms.Resize(math.floor(img_size / crop_pct), interpolation=transforms.InterpolationMode.BILINEAR,
                          antialias=True),
        transforms.CenterCrop(img_size),
        transforms.PILToTensor(),
    ])
    val = datasets.ImageFolder(str(root / "val"), transform=val_tf, loader=load_image)
    if not need_train:
        return None, val, val.classes
    train = datasets.ImageFolder(str(root / "train"), transform=train_tf if augment else val_tf, loader=load_image)
    if train.classes != val.classes:
        raise DataError(f"{root}/train and {root}/val have different class folders "
                         f"({len(train.classes)} vs {len(val.classes)} classes)")
    return train, val, train.classes


class _Subset(Dataset):
    """``torch.utils.data.Subset`` that forwards ``(index, seed)`` keys untouched in their seed part."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> Any:
        if isinstance(key, tuple):
            return self.dataset[(self.indices[key[0]], key[1])]
        return self.dataset[self.indices[key]]


def _subset_indices(n_total: int, n: Optional[int], seed: int, what: str) -> Optional[list[int]]:
    if n is None or n >= n_total:
        return None
    if n < 1:
        raise DataError(f"--{what}-subset must be >= 1, got {n}")
    g = torch.Generator().manual_seed(mix_seed(seed, n_total))
    return torch.randperm(n_total, generator=g)[:n].sort().values.tolist()


def build_data(name: str = "fashion_mnist", data_dir: Optional[Union[str, os.PathLike]] = None, download: bool = False,
               train_subset: Optional[int] = None, val_subset: Optional[int] = None, subset_seed: int = 0,
               img_size: Optional[int] = None, crop_pct: float = 0.875, need_train: bool = True,
               augment: bool = True) -> DataSpec:
    """Load a dataset: ``fashion_mnist`` (default, offline), ``cifar10``, ``cifar100`` or ``imagefolder``.

    Subsets are fixed, seeded by ``subset_seed`` (independent of the training seed), sorted.
    ``augment`` only affects ImageFolder here (its augmentation runs in the loader); the
    in-memory datasets are augmented on the device by :class:`BatchPreprocessor`.

    Raises:
        FileNotFoundError: the dataset is not where it should be; the message says how to get it.

    >>> spec = build_data("fashion_mnist", val_subset=1000, train_subset=2000)
    >>> len(spec.train), len(spec.val), spec.in_chans, spec.num_classes
    (2000, 1000, 1, 10)
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    data_dir = None if data_dir is None else str(data_dir)
    if name == "imagefolder":
        from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        size = img_size or 224
        train, val, classes = _imagefolder(data_dir, size, crop_pct, need_train, augment)
        num_classes = len(classes)
        va_idx = _subset_indices(len(cast(Sized, val)), val_subset, subset_seed + 1, "val")
        train_ds: Dataset = _Subset(val, [])
        if train is not None:
            train_ds = SeededDataset(train)
            tr_idx = _subset_indices(len(cast(Sized, train)), train_subset, subset_seed, "train")
            if tr_idx is not None:
                train_ds = _Subset(train_ds, tr_idx)
        val_ds: Dataset = val if va_idx is None else _Subset(val, va_idx)
        return DataSpec(name, train_ds, val_ds, num_classes, 3, (size, size), tuple(IMAGENET_DEFAULT_MEAN),
                        tuple(IMAGENET_DEFAULT_STD), in_memory=False, augment_on_device=False, collate_fn=None)

    if name == "fashion_mnist":
        def load(train: bool) -> tuple[Tensor, Tensor]:
            return _fashion_mnist(data_dir, train, download)
        num_classes = 10
    else:
        num_classes = 10 if name == "cifar10" else 100
        if data_dir is None and not download:
            raise FileNotFoundError(f"--data {name} needs --data-dir DIR (the folder holding "
                                    f"{'cifar-10-batches-py' if num_classes == 10 else 'cifar-100-python'}/), "
                                    f"or --download to fetch it with torchvision")

        def load(train: bool) -> tuple[Tensor, Tensor]:
            try:
                return load_cifar(data_dir or str(Path.home() / ".cache" / "pedconv"), num_classes, train=train,
                                  download=download)
            except FileNotFoundError as e:
                folder = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
                raise FileNotFoundError(f"{e} With `pedconv train`/`eval`: --data-dir DIR names the folder that "
                                        f"contains {folder}/, and --download fetches it there.") from None
    empty = (torch.zeros(0, 1, 1, 1, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    xtr, ytr = _subset(load(True), train_subset, subset_seed, "train") if need_train else empty
    xva, yva = _subset(load(False), val_subset, subset_seed + 1, "val")
    mean, std = _STATS[name]
    return DataSpec(name, TensorImageDataset(xtr, ytr), TensorImageDataset(xva, yva), num_classes, xva.shape[1],
                    (int(xva.shape[2]), int(xva.shape[3])), mean, std, in_memory=True, augment_on_device=True,
                    collate_fn=collate_batch)

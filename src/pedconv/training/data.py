"""Datasets, resumable samplers and on-device preprocessing for ``pedconv train`` / ``eval``.

* Fashion-MNIST and CIFAR-10/100 live in memory as one uint8 tensor; a batch is gathered by
  indexing (``__getitems__``), moved to the device as uint8, and normalised/augmented there
  (random crop with 4-pixel zero padding + horizontal flip, per sample) by
  :class:`BatchPreprocessor`: no PIL and no per-item Python work.
* ImageFolder (``train/``, ``val/``) uses torchvision's standard ImageNet transforms in the
  loader workers (``RandomResizedCrop`` + flip; ``Resize`` + ``CenterCrop``), producing uint8
  tensors that are normalised on the device as well.

Determinism: the order of an epoch is a permutation seeded by ``(seed, epoch)``; every
random draw of the augmentation is seeded by ``(seed, epoch, position in the epoch)``, so a
batch's content does not depend on the number of workers, on what ran before, or on whether
the epoch was resumed in the middle (:class:`GlobalBatchSampler` skips the batches already
done).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union, cast

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError

__all__ = [
    "BatchPreprocessor",
    "DataSpec",
    "GlobalBatchSampler",
    "SeededDataset",
    "ShardBatchSampler",
    "TensorImageDataset",
    "default_workers",
    "load_image",
    "make_loader",
    "mix_seed",
]

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 over the values), stable across runs and platforms.

    Hand-written because Python's ``hash`` of tuples is not meant as a seed and
    ``numpy.random.SeedSequence`` costs ~10 us per call, which matters once per image.

    >>> mix_seed(0, 1, 2) == mix_seed(0, 1, 2), mix_seed(0, 1, 2) == mix_seed(0, 2, 1)
    (True, False)
    """
    z = 0x9E3779B97F4A7C15
    for v in values:
        z = (z ^ (int(v) & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
        z ^= z >> 31
    return z >> 1


# ----------------------------------------------------------------------------- datasets
class TensorImageDataset(Dataset):
    """Images as one uint8 ``(N, C, H, W)`` tensor with int64 labels; batches by fancy indexing.

    >>> ds = TensorImageDataset(torch.zeros(5, 1, 28, 28, dtype=torch.uint8), torch.arange(5))
    >>> x, y = ds.__getitems__([0, 3]); x.shape, y.tolist()
    (torch.Size([2, 1, 28, 28]), [0, 3])
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dim() != 4 or images.dtype != torch.uint8 or len(images) != len(labels):
            raise ValueError(f"expected uint8 (N, C, H, W) images and N labels, got {tuple(images.shape)} "
                             f"{images.dtype} and {tuple(labels.shape)}")
        self.images, self.labels = images.contiguous(), labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx]


def collate_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The collate function for :class:`TensorImageDataset` (the batch is already stacked)."""
    return batch


class SeededDataset(Dataset):
    """Wraps a dataset with random per-item transforms so that item ``(index, seed)`` is reproducible.

    The sampler yields ``(index, seed)`` pairs; the item is produced with the torch generator
    seeded by ``seed`` (inside :func:`torch.random.fork_rng`, so the caller's generator is
    untouched). torchvision's transforms draw from torch's generator only.

    >>> from torchvision.transforms import RandomCrop
    >>> base = [(torch.arange(16.).view(1, 4, 4), 0)]
    >>> class T(Dataset):
    ...     def __len__(self): return 1
    ...     def __getitem__(self, i): return RandomCrop(2)(base[i][0]), 0
    >>> ds = SeededDataset(T())
    >>> torch.equal(ds[(0, 7)][0], ds[(0, 7)][0])
    True
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> Any:
        if isinstance(key, tuple):
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.dataset[index]
        return self.dataset[key]


# ----------------------------------------------------------------------------- samplers
class GlobalBatchSampler:
    """Batches of one rank for one epoch, resumable at any optimizer step.

    Each optimizer step consumes one *global batch* of ``micro_batch * world_size * accum``
    consecutive items of the epoch's permutation (seeded by ``(seed, epoch)``); rank ``r``'s
    ``a``-th micro-batch is the ``(r * accum + a)``-th slice of it. So ``world_size=2,
    accum=1`` and ``world_size=1, accum=2`` see the same micro-batches, and a single process
    with gradient accumulation reproduces a DDP run. The tail that does not fill a global
    batch is dropped (BatchNorm and mixup want full batches).

    Written by hand because ``torch.utils.data.DistributedSampler`` interleaves ranks
    (``perm[rank::world]``), which no single-process order reproduces, and cannot start in
    the middle of an epoch.

    Args:
        num_samples: dataset length.
        micro_batch: items per forward pass (``--batch-size``).
        world_size, rank: the process group layout.
        accum: micro-batches per optimizer step.
        seed: base seed of the permutations and of the per-item seeds.
        shuffle: permute each epoch (else the natural order).
        with_seeds: yield ``(index, item_seed)`` pairs for :class:`SeededDataset`.
        replay: optimizer steps per global batch: each batch is yielded this many times in a row
            ("Free" adversarial training replays every minibatch); an epoch has ``replay`` times
            as many steps.

    >>> s = GlobalBatchSampler(10, micro_batch=2, world_size=2, rank=1, shuffle=False)
    >>> list(s), s.steps_per_epoch
    ([[2, 3], [6, 7]], 2)
    >>> s.set_epoch(0, start_step=1); list(s)
    [[6, 7]]
    >>> list(GlobalBatchSampler(4, micro_batch=2, shuffle=False, replay=2))
    [[0, 1], [0, 1], [2, 3], [2, 3]]
    """

    def __init__(self, num_samples: int, micro_batch: int, world_size: int = 1, rank: int = 0, accum: int = 1,
                 seed: int = 0, shuffle: bool = True, with_seeds: bool = False, replay: int = 1) -> None:
        self.num_samples, self.micro_batch, self.world_size, self.rank = num_samples, micro_batch, world_size, rank
        self.accum, self.seed, self.shuffle, self.with_seeds = accum, seed, shuffle, with_seeds
        self.replay = replay
        self.global_batch = micro_batch * world_size * accum
        if self.steps_per_epoch < 1:
            raise DataError(f"{num_samples} training images do not fill one global batch of {self.global_batch} "
                             f"(batch size {micro_batch} x {world_size} processes x {accum} accumulation steps)")
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: full global batches only, each ``replay`` times."""
        return self.num_samples // self.global_batch * self.replay

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's permutation and the first optimizer step to yield."""
        self.epoch, self.start_step = epoch, start_step

    def micro_batch_offset(self, step: int, micro: int) -> int:
        """Position in the epoch of the first item of this rank's ``micro``-th micro-batch of ``step``."""
        return step // self.replay * self.global_batch + (self.rank * self.accum + micro) * self.micro_batch

    def __iter__(self) -> Iterator[list]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        for step in range(self.start_step, self.steps_per_epoch):
            for micro in range(self.accum):
                start = self.micro_batch_offset(step, micro)
                items = order[start:start + self.micro_batch]
                if self.with_seeds:
                    yield [(i, mix_seed(self.seed, self.epoch, start + j)) for j, i in enumerate(items)]
                else:
                    yield items

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum


class ShardBatchSampler:
    """Evaluation batches of one rank: a contiguous shard, no padding, no duplicates.

    (``DistributedSampler`` pads with repeated items, which would bias the metrics.)

    >>> [list(ShardBatchSampler(5, 2, world_size=2, rank=r)) for r in (0, 1)]
    [[[0, 1]], [[2, 3], [4]]]
    """

    def __init__(self, num_samples: int, batch_size: int, world_size: int = 1, rank: int = 0) -> None:
        self.start = num_samples * rank // world_size
        self.stop = num_samples * (rank + 1) // world_size
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(self.start, self.stop, self.batch_size):
            yield list(range(i, min(i + self.batch_size, self.stop)))

    def __len__(self) -> int:
        return math.ceil((self.stop - self.start) / self.batch_size)


# ------------------------------------------------------------------- device preprocessing
class BatchPreprocessor:
    """uint8 batch on the device -> normalised float batch, with the tensor augmentation.

    Args:
        mean, std: per-channel statistics in [0, 1] units.
        augment: random crop with ``pad`` zero pixels on each side + horizontal flip, drawn
            per sample from a generator seeded per batch (the in-memory datasets).
        size: output ``(H, W)``; batches of another size are resized (bilinear, antialiased).
        out_chans: replicate a 1-channel input to this many channels (models without ``in_chans``).
        channels_last: return ``torch.channels_last`` memory format.

    Hand-written because torchvision's transforms draw one set of parameters per call, i.e.
    per batch, while the augmentation here must differ per sample.

    >>> p = BatchPreprocessor((0.5,), (0.5,), augment=True)
    >>> x = torch.full((4, 1, 28, 28), 255, dtype=torch.uint8)
    >>> y = p(x, seed=0); y.shape, float(y.max())
    (torch.Size([4, 1, 28, 28]), 1.0)
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], augment: bool = False, pad: int = 4,
                 size: Optional[tuple[int, int]] = None, out_chans: Optional[int] = None,
                 channels_last: bool = False) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment, self.pad, self.size = augment, pad, size
        self.out_chans, self.channels_last = out_chans, channels_last

    def __call__(self, images: Tensor, seed: Optional[int] = None) -> Tensor:
        x = images.float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x = x.sub_(mean).div_(std)
        if self.augment:
            x = self._crop_flip(x, seed if seed is not None else 0)
        if self.size is not None and tuple(x.shape[-2:]) != tuple(self.size):
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if self.out_chans is not None and x.shape[1] != self.out_chans:
            x = x.expand(-1, self.out_chans, -1, -1)
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def _crop_flip(self, x: Tensor, seed: int) -> Tensor:
        # Zero padding is applied before normalisation in the usual pipeline, i.e. the padded
        # value is black, which after normalisation is -mean/std: pad with that value.
        b, c, h, w = x.shape
        p = self.pad
        g = torch.Generator().manual_seed(seed)
        oy = torch.randint(0, 2 * p + 1, (b,), generator=g).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=g).to(x.device)
        flip = (torch.rand(b, generator=g) < 0.5).to(x.device)
        black = (-torch.tensor(self.mean, device=x.device) / torch.tensor(self.std, device=x.device)).view(1, -1, 1, 1)
        padded = black.expand(b, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p:p + h, p:p + w] = x
        rows = (oy[:, None] + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * p)
        cropped = padded.gather(2, rows)
        cols = ox[:, None] + torch.arange(w, device=x.device)
        cols = torch.where(flip[:, None], cols.flip(1), cols).view(b, 1, 1, w).expand(b, c, h, w)
        return cropped.gather(3, cols)


# ----------------------------------------------------------------------------- dataset specs
@dataclass
class DataSpec:
    """Everything the training loop needs to know about a dataset."""

    name: str
    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_memory: bool
    augment_on_device: bool
    collate_fn: Optional[Callable[..., Any]]

    @property
    def num_train(self) -> int:
        """Training images."""
        return len(cast(Sized, self.train))

    @property
    def num_val(self) -> int:
        """Validation images."""
        return len(cast(Sized, self.val))



def load_image(path: str) -> Any:
    """torchvision's ImageFolder loader (PIL, RGB), with an unreadable file named in a
    :class:`~pedconv.errors.DataError` (raised in a loader worker, it still reaches the user as
    one line naming the file: see :mod:`pedconv.errors`).

    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "0.jpg"; _ = bad.write_bytes(b"not an image")
    >>> load_image(str(bad))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pedconv.errors.DataError: cannot read image .../0.jpg (UnidentifiedImageError)
    """
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except (OSError, ValueError, SyntaxError) as e:  # PIL: unidentified, truncated or corrupt files
        reason = type(e).__name__ + ("" if path in str(e) else f": {e}")  # PIL often names the file itself
        raise DataError(f"cannot read image {path} ({reason})") from None


# ----------------------------------------------------------------------------- loaders
def default_workers(in_memory: bool) -> int:
    """DataLoader worker processes when ``--workers`` is not given, for ``train`` and ``eval`` alike.

    0 for the in-memory datasets (a batch is one indexing operation: workers would only add
    copies), ``min(8, CPUs)`` for ImageFolder (decoding and resizing JPEGs).

    >>> default_workers(True)
    0
    """
    return 0 if in_memory else min(8, os.cpu_count() or 1)


def make_loader(spec: DataSpec, dataset: Dataset, batch_sampler: Any, device: torch.device,
                workers: Optional[int] = None, seed: Optional[int] = None, persistent: bool = False) -> DataLoader:
    """The DataLoader of ``train`` and ``eval``: ``batch_sampler`` batches of ``dataset`` (one of ``spec``'s).

    Args:
        workers: worker processes (None: :func:`default_workers`).
        seed: seeds a generator of the loader's own, so that it does not draw on the global torch RNG.
        persistent: keep the workers between epochs (a loader that is iterated again).

    >>> from pedconv.tasks.classification import build_data
    >>> spec = build_data("fashion_mnist", train_subset=64, val_subset=32)
    >>> x, y = next(iter(make_loader(spec, spec.val, ShardBatchSampler(32, 8), torch.device("cpu"), workers=0)))
    >>> x.shape, x.dtype
    (torch.Size([8, 1, 28, 28]), torch.uint8)
    """
    n = default_workers(spec.in_memory) if workers is None else workers
    kwargs: dict[str, Any] = dict(num_workers=n, pin_memory=device.type == "cuda",
                                  persistent_workers=persistent and n > 0)
    if spec.collate_fn is not None:
        kwargs["collate_fn"] = spec.collate_fn
    if seed is not None:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_sampler=batch_sampler, **kwargs)

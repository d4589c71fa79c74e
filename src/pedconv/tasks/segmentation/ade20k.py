"""ADE20K SceneParsing (semantic segmentation): a reader that checks the split before training, and a Dataset.

The format is ADEChallengeData2016's (Zhou et al., "Scene Parsing through ADE20K Dataset",
CVPR 2017, http://sceneparsing.csail.mit.edu): ``images/{training,validation}/*.jpg`` and, of
the same stem, ``annotations/{training,validation}/*.png``, single-channel uint8 class maps
where 0 is "other" (unlabelled) and ``1..150`` are the classes. As in mmsegmentation
(``reduce_zero_label``), the default maps 0 to the ignore label :data:`IGNORE_INDEX` and
``k`` to ``k - 1``, so a model predicts ``num_classes`` labels ``0..num_classes-1``.

:class:`ADE20KSegmentation` pairs the files and checks them up front: a missing folder, an
image without its annotation (or the reverse), an empty split, a mask whose size is not its
image's, or a mask value that is neither a class nor :data:`IGNORE_INDEX` raises a
:class:`~pedconv.errors.DataError` naming the file.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ...errors import DataError
from ...training.data import load_image

__all__ = ["IGNORE_INDEX", "IMAGE_SUFFIXES", "NUM_CLASSES", "PAD_MULTIPLE", "SPLITS", "ADE20KSegmentation",
           "collate_segmentation", "keep_ratio_size"]

NUM_CLASSES = 150
IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLITS = {"training": "training", "validation": "validation", "train": "training", "val": "validation"}
PathLike = Union[str, os.PathLike]


def _open_mask(path: Path) -> Image.Image:
    try:
        mask = Image.open(path)
        mask.load()
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read annotation {path} ({type(e).__name__})") from None
    if mask.mode not in ("L", "P"):
        raise DataError(f"{path}: an annotation must be a single-channel uint8 PNG, this one is mode {mask.mode}")
    return mask


class ADE20KSegmentation(Dataset):
    """A split of an ADE20K-style folder; item ``i`` is ``(image uint8 [3, H, W], mask int64 [H, W])``.

    Args:
        root: the folder holding ``images/`` and ``annotations/`` (ADEChallengeData2016).
        split: ``"training"`` or ``"validation"`` (``"train"``/``"val"`` accepted).
        num_classes: classes in the raw masks, ``1..num_classes`` (150 for ADE20K; the offline
            scenes of :mod:`pedconv.tasks.scenes` have 10).
        size: images are resized (bilinear) and masks (nearest) to ``size x size`` so that a
            batch stacks; ``None`` keeps each image's own size (:func:`collate_segmentation` pads).
        eval_scale: ``(long, short)``: the standard evaluation (mmsegmentation's ``Resize(scale=(2048,
            512), keep_ratio=True)`` for 512 crops): the image is resized keeping its aspect ratio to
            fit ``long x short``, the mask stays at the original resolution, where it is scored
            (:func:`collate_segmentation` records both sizes). Excludes ``size``.
        reduce_zero_label: raw 0 ("other") -> :data:`IGNORE_INDEX`, raw ``k`` -> ``k - 1``; else
            the raw values are the labels (0 is a class).
        augment: for the training sampler's ``(i, seed)`` keys: a random rescale by a factor in
            ``scale_range``, a random ``size x size`` crop (padded with 0 / the ignore label) and
            a horizontal flip with probability 1/2, all drawn from ``seed``. A plain ``i`` is never
            augmented.
        scale_range: the rescale factors of ``augment``.
        validate: read every mask now (:meth:`validate`); else only the file pairing is checked
            and each item checks its own mask when read.

    Attributes:
        num_labels: labels the model predicts (``num_classes``, or ``num_classes + 1`` without
            ``reduce_zero_label``).
        class_names: the names from ``objectInfo150.csv`` / ``objectInfo.csv`` in label order, if present.

    >>> import tempfile
    >>> from pedconv.tasks.scenes import generate_scenes, write_ade20k
    >>> root = write_ade20k(tempfile.mkdtemp(), "validation", generate_scenes(2, size=32, split="val"))
    >>> ds = ADE20KSegmentation(root, "validation", num_classes=10, size=24)
    >>> image, mask = ds[0]
    >>> len(ds), image.shape, image.dtype, mask.shape, mask.dtype, ds.class_names[0]
    (2, torch.Size([3, 24, 24]), torch.uint8, torch.Size([24, 24]), torch.int64, 'T-shirt/top')
    """

    def __init__(self, root: PathLike, split: str = "training", *, num_classes: int = NUM_CLASSES,
                 size: Optional[int] = None, reduce_zero_label: bool = True, augment: bool = False,
                 scale_range: tuple[float, float] = (0.5, 2.0), validate: bool = True,
                 eval_scale: Optional[tuple[int, int]] = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, not {split!r}")
        if not 1 <= num_classes < IGNORE_INDEX:
            raise ValueError(f"num_classes must be in 1..{IGNORE_INDEX - 1}, not {num_classes}")
        if eval_scale is not None and (size is not None or augment):
            raise ValueError("eval_scale (keep-ratio evaluation) excludes size and augment")
        if eval_scale is not None and not (len(eval_scale) == 2 and min(eval_scale) >= 1):
            raise ValueError(f"eval_scale must be (long, short) sides of at least 1, not {eval_scale!r}")
        self.eval_scale = eval_scale
        self.root, self.split = Path(root), SPLITS[split]
        self.num_classes, self.size, self.reduce_zero_label = num_classes, size, reduce_zero_label
        self.augment, self.scale_range = augment, scale_range
        self.num_labels = num_classes if reduce_zero_label else num_classes + 1
        self.ignore_index = IGNORE_INDEX
        self.pairs = self._pair()
        lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        lut[: num_classes + 1] = np.arange(num_classes + 1)
        if reduce_zero_label:
            lut[1 : num_classes + 1] -= 1
            lut[0] = IGNORE_INDEX
        self._lut = lut
        self.class_names = self._names()
        if validate:
            self.validate()

    def _pair(self) -> list[tuple[Path, Path]]:
        img_dir, ann_dir = self.root / "images" / self.split, self.root / "annotations" / self.split
        for folder in (img_dir, ann_dir):
            if not folder.is_dir():
                raise DataError(f"ADE20K folder {folder} does not exist (expected {self.root}/images/{self.split} "
                                f"and {self.root}/annotations/{self.split})")
        images: dict[str, Path] = {}
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
                if p.stem in images:
                    raise DataError(f"{p}: two images have the stem {p.stem!r} ({images[p.stem].name}, {p.name})")
                images[p.stem] = p
        masks = {p.stem: p for p in sorted(ann_dir.glob("*.png")) if not p.name.startswith(".")}
        lonely = [p for stem, p in images.items() if stem not in masks]
        if lonely:
            raise DataError(f"{lonely[0]}: no annotation {ann_dir / (lonely[0].stem + '.png')} "
                            f"({len(lonely)} image(s) of {self.split} lack one)")
        orphans = [p for stem, p in masks.items() if stem not in images]
        if orphans:
            raise DataError(f"{orphans[0]}: no image of that stem in {img_dir} "
                            f"({len(orphans)} annotation(s) of {self.split} lack one)")
        if not images:
            raise DataError(f"{img_dir}: the {self.split} split is empty (no images)")
        return [(images[stem], masks[stem]) for stem in images]

    def _names(self) -> Optional[list[str]]:
        for name in ("objectInfo150.csv", "objectInfo.csv"):
            path = self.root / name
            if path.is_file():
                with path.open(newline="", encoding="utf-8") as f:
                    names = [row.get("Name", "").split(";")[0] for row in csv.DictReader(f)]
                if len(names) == self.num_classes:
                    return names if self.reduce_zero_label else ["other", *names]
        return None

    def _check(self, pair: tuple[Path, Path]) -> None:
        image_path, mask_path = pair
        try:
            with Image.open(image_path) as im:
                image_size = im.size
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"cannot read image {image_path} ({type(e).__name__})") from None
        mask = _open_mask(mask_path)
        if mask.size != image_size:
            raise DataError(f"{mask_path}: the mask is {mask.size[0]}x{mask.size[1]}, its image {image_path.name} "
                            f"is {image_size[0]}x{image_size[1]}")
        self._check_values(mask_path, np.asarray(mask))

    def _check_values(self, mask_path: Path, values: np.ndarray) -> None:
        if values.max(initial=0) > self.num_classes:
            bad = np.unique(values[(values > self.num_classes) & (values != IGNORE_INDEX)])
            if bad.size:
                raise DataError(f"{mask_path}: value(s) {bad[:5].tolist()} are neither a class "
                                f"(0..{self.num_classes}) nor the ignore value {IGNORE_INDEX}")

    def validate(self, workers: Optional[int] = None) -> None:
        """Read every mask once (in ``workers`` threads; PNG decoding releases the GIL) and check
        its size against its image's header and its values; the first bad file in order raises."""
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(self._check, self.pairs):
                pass

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> tuple[Tensor, Tensor]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        image_path, mask_path = self.pairs[i]
        image = load_image(str(image_path))
        raw = np.asarray(_open_mask(mask_path))
        if raw.shape != (image.size[1], image.size[0]):
            raise DataError(f"{mask_path}: the mask is {raw.shape[1]}x{raw.shape[0]}, its image "
                            f"{image_path.name} is {image.size[0]}x{image.size[1]}")
        self._check_values(mask_path, raw)
        mask = Image.fromarray(self._lut[raw])
        if self.size is not None:
            image = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
            mask = mask.resize((self.size, self.size), Image.Resampling.NEAREST)
        elif self.eval_scale is not None:
            image = image.resize(keep_ratio_size(image.size, self.eval_scale), Image.Resampling.BILINEAR)
        pixels, labels = np.array(image), np.array(mask)
        if self.augment and seed is not None:
            pixels, labels = self._augment(image, mask, np.random.default_rng(seed))
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), torch.from_numpy(labels.astype(np.int64))

    def _augment(self, image: Image.Image, mask: Image.Image, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        w, h = image.size
        s = rng.uniform(*self.scale_range)
        sw, sh = max(1, round(w * s)), max(1, round(h * s))
        pixels = np.array(image.resize((sw, sh), Image.Resampling.BILINEAR))
        labels = np.array(mask.resize((sw, sh), Image.Resampling.NEAREST))
        out_p = np.zeros((h, w, 3), dtype=np.uint8)
        out_l = np.full((h, w), IGNORE_INDEX, dtype=np.uint8)
        y0, x0 = int(rng.integers(0, max(sh - h, 0) + 1)), int(rng.integers(0, max(sw - w, 0) + 1))
        crop_p, crop_l = pixels[y0:y0 + h, x0:x0 + w], labels[y0:y0 + h, x0:x0 + w]
        out_p[: crop_p.shape[0], : crop_p.shape[1]] = crop_p
        out_l[: crop_l.shape[0], : crop_l.shape[1]] = crop_l
        if rng.random() < 0.5:
            out_p, out_l = np.ascontiguousarray(out_p[:, ::-1]), np.ascontiguousarray(out_l[:, ::-1])
        return out_p, out_l


def keep_ratio_size(size: tuple[int, int], scale: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of an image of ``size`` resized keeping its aspect ratio to fit ``scale``
    = ``(long, short)``, as mmsegmentation's ``Resize(keep_ratio=True)`` (rounded to pixels).

    >>> keep_ratio_size((683, 512), (2048, 512)), keep_ratio_size((4000, 1000), (2048, 512))
    ((683, 512), (2048, 512))
    """
    w, h = size
    factor = min(max(scale) / max(w, h), min(scale) / min(w, h))
    return max(1, int(w * factor + 0.5)), max(1, int(h * factor + 0.5))


PAD_MULTIPLE = 32
"""Batches whose images differ from their masks in size (keep-ratio evaluation) are padded to a
multiple of this (the networks' output stride), as mmsegmentation's ``size_divisor``."""


def collate_segmentation(batch: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack :class:`ADE20KSegmentation` items into ``(images uint8 [B, 3, h, w], masks int64 [B, H, W],
    sizes int64 [B, 4])``: items of different sizes are padded at the bottom and right with 0 and
    :data:`IGNORE_INDEX`, and ``sizes[k]`` is ``(h_k, w_k, H_k, W_k)``, item ``k``'s image and mask
    sizes (they differ in keep-ratio evaluation, whose images are also padded to a multiple of
    :data:`PAD_MULTIPLE`).

    >>> images, masks, sizes = collate_segmentation([
    ...     (torch.zeros(3, 2, 3, dtype=torch.uint8), torch.zeros(2, 3).long()),
    ...     (torch.zeros(3, 4, 2, dtype=torch.uint8), torch.zeros(4, 2).long())])
    >>> images.shape, masks.shape, masks[0, 3, 0].item(), sizes[1].tolist()
    (torch.Size([2, 3, 4, 3]), torch.Size([2, 4, 3]), 255, [4, 2, 4, 2])
    """
    sizes = torch.tensor([[*image.shape[1:], *mask.shape] for image, mask in batch], dtype=torch.int64)
    h, w = (int(v) for v in sizes[:, :2].max(0).values)
    if not torch.equal(sizes[:, :2], sizes[:, 2:]):
        h, w = (-(-v // PAD_MULTIPLE) * PAD_MULTIPLE for v in (h, w))
    mh, mw = (int(v) for v in sizes[:, 2:].max(0).values)
    images = torch.zeros(len(batch), 3, h, w, dtype=torch.uint8)
    masks = torch.full((len(batch), mh, mw), IGNORE_INDEX, dtype=torch.int64)
    for k, (image, mask) in enumerate(batch):
        images[k, :, : image.shape[1], : image.shape[2]] = image
        masks[k, : mask.shape[0], : mask.shape[1]] = mask
    return images, masks, sizes

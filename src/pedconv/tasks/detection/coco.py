"""COCO instances (object detection): a reader that checks the whole file before training, and a Dataset.

The format is COCO's ``instances_*.json`` (Lin et al., "Microsoft COCO: Common Objects in
Context", ECCV 2014, https://cocodataset.org/#format-data): ``images`` (``id``,
``file_name``, ``width``, ``height``), ``annotations`` (``id``, ``image_id``,
``category_id``, ``bbox = [x, y, w, h]`` in pixels, ``area``, ``iscrowd``) and
``categories`` (``id``, ``name``). :func:`load_coco` validates all of it up front, so that a
malformed file fails before the first epoch with a :class:`~pedconv.errors.DataError` naming
the file and the item, not in a loader worker hours later.

Labels: COCO's category ids are not contiguous (1..90 for 80 classes); :class:`CocoDetection`
maps the sorted ids to the contiguous labels ``1..K`` that torchvision's detectors expect
(0 is their background), and back with :attr:`CocoDetection.cat_ids`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ...errors import DataError
from ...training.data import load_image

__all__ = ["BOX_TOLERANCE", "CocoAnnotation", "CocoDetection", "CocoImage", "CocoIndex", "collate_detection",
           "load_coco"]

PathLike = Union[str, os.PathLike]
# Real COCO boxes overshoot the image by a fraction of a pixel (polygon rounding): tolerated, then clipped.
BOX_TOLERANCE = 1.0
_REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


@dataclass(frozen=True)
class CocoImage:
    """One entry of ``images``: its id, the file's path (``image_dir / file_name``) and its declared size."""

    id: int
    path: Path
    width: int
    height: int


@dataclass(frozen=True)
class CocoAnnotation:
    """One entry of ``annotations``: ``bbox`` is COCO's ``(x, y, w, h)``."""

    id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    area: float
    iscrowd: int


@dataclass(frozen=True)
class CocoIndex:
    """A validated COCO file: images in file order, their annotations, categories sorted by id."""

    ann_file: Path
    images: list[CocoImage]
    annotations: dict[int, list[CocoAnnotation]]
    categories: list[tuple[int, str]]


def _read(ann_file: Path) -> dict:
    try:
        doc = json.loads(ann_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read COCO annotations {ann_file} ({type(e).__name__}: {e})") from None
    except ValueError as e:
        raise DataError(f"{ann_file} is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{ann_file}: expected a JSON object with images, annotations and categories, "
                        f"found a {type(doc).__name__}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise DataError(f"{ann_file}: missing top-level key(s) {', '.join(missing)}")
    for key in _REQUIRED:
        if not isinstance(doc[key], list):
            raise DataError(f"{ann_file}: {key} must be a list, found a {type(doc[key]).__name__}")
    return doc


def _items(ann_file: Path, doc: dict, section: str) -> list[tuple[str, dict]]:
    """``(name, item)`` of a section, each checked to be an object with the required keys and an int id."""
    out = []
    for i, item in enumerate(doc[section]):
        name = f"{section}[{i}]" + (f" (id {item['id']})" if isinstance(item, dict) and "id" in item else "")
        if not isinstance(item, dict):
            raise DataError(f"{ann_file}: {name} is not an object")
        missing = [k for k in _REQUIRED[section] if k not in item]
        if missing:
            raise DataError(f"{ann_file}: {name} lacks {', '.join(missing)}")
        if not _is_int(item["id"]):
            raise DataError(f"{ann_file}: {name} has a non-integer id {item['id']!r}")
        out.append((name, item))
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _unique(ann_file: Path, items: list[tuple[str, dict]]) -> None:
    seen: dict[int, str] = {}
    for name, item in items:
        if item["id"] in seen:
            raise DataError(f"{ann_file}: {name} repeats the id of {seen[item['id']]}")
        seen[item["id"]] = name


def _images(ann_file: Path, doc: dict, image_dir: Path) -> list[CocoImage]:
    items = _items(ann_file, doc, "images")
    if not items:
        raise DataError(f"{ann_file}: the split is empty (no images)")
    _unique(ann_file, items)
    images = []
    for name, item in items:
        w, h = item["width"], item["height"]
        if not (_is_int(w) and _is_int(h) and w > 0 and h > 0):
            raise DataError(f"{ann_file}: {name} has an invalid size width={w!r} height={h!r}")
        path = image_dir / str(item["file_name"])
        if not path.is_file():
            raise DataError(f"{ann_file}: {name}: image file {path} does not exist")
        images.append(CocoImage(item["id"], path, w, h))
    return images


def _annotation(ann_file: Path, name: str, item: dict, image: CocoImage) -> CocoAnnotation:
    box = item["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             and math.isfinite(v) for v in box)):
        raise DataError(f"{ann_file}: {name}: bbox must be 4 finite numbers [x, y, w, h], got {box!r}")
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        raise DataError(f"{ann_file}: {name}: bbox {box} has zero or negative area (w={w}, h={h})")
    t = BOX_TOLERANCE
    if x < -t or y < -t or x + w > image.width + t or y + h > image.height + t:
        raise DataError(f"{ann_file}: {name}: bbox {box} lies outside image {image.id} "
                        f"({image.width}x{image.height})")
    iscrowd = item.get("iscrowd", 0)
    if iscrowd not in (0, 1):
        raise DataError(f"{ann_file}: {name}: iscrowd must be 0 or 1, got {iscrowd!r}")
    area = item.get("area", w * h)
    if not isinstance(area, (int, float)) or not math.isfinite(area) or area < 0:
        raise DataError(f"{ann_file}: {name}: invalid area {area!r}")
    return CocoAnnotation(item["id"], item["category_id"], (x, y, w, h), float(area), int(iscrowd))


def load_coco(ann_file: PathLike, image_dir: PathLike) -> CocoIndex:
    """Read and validate a COCO instances file whose images are in ``image_dir``.

    Raises :class:`~pedconv.errors.DataError` (one line naming the file and the item) for an
    unreadable or invalid JSON file, missing top-level keys, an item lacking a required key,
    duplicate ids, an empty split, an image file that does not exist, a box that is not 4
    finite numbers, has no area or lies outside its image (by more than :data:`BOX_TOLERANCE`
    pixels), an unknown ``category_id`` or ``image_id``.

    >>> import tempfile
    >>> from pedconv.tasks.scenes import generate_scenes, write_coco
    >>> root = tempfile.mkdtemp()
    >>> ann = write_coco(root, "val", generate_scenes(2, size=32, split="val"))
    >>> index = load_coco(ann, f"{root}/val")
    >>> len(index.images), index.categories[0]
    (2, (1, 'T-shirt/top'))
    """
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    doc = _read(ann_file)
    categories = _items(ann_file, doc, "categories")
    _unique(ann_file, categories)
    cat_ids = {item["id"] for _, item in categories}
    images = _images(ann_file, doc, image_dir)
    by_id = {im.id: im for im in images}
    annotations: dict[int, list[CocoAnnotation]] = {im.id: [] for im in images}
    items = _items(ann_file, doc, "annotations")
    _unique(ann_file, items)
    for name, item in items:
        if item["image_id"] not in by_id:
            raise DataError(f"{ann_file}: {name} refers to image_id {item['image_id']!r}, which is not in images")
        if item["category_id"] not in cat_ids:
            raise DataError(f"{ann_file}: {name} has category_id {item['category_id']!r}, which is not in "
                            f"categories")
        annotations[item["image_id"]].append(_annotation(ann_file, name, item, by_id[item["image_id"]]))
    cats = sorted((item["id"], str(item["name"])) for _, item in categories)
    return CocoIndex(ann_file, images, annotations, cats)


class CocoDetection(Dataset):
    """A COCO instances split as torchvision's detectors take it.

    Item ``i`` is ``(image, target)``: ``image`` a uint8 ``[3, H, W]`` tensor, ``target`` a dict
    with ``boxes`` (float32 ``[N, 4]``, absolute ``x1, y1, x2, y2`` clipped to the image),
    ``labels`` (int64 ``[N]``, contiguous ``1..K`` in the order of the sorted category ids),
    ``image_id`` (int64 scalar, COCO's id), ``area`` (float32 ``[N]``) and ``iscrowd`` (int64 ``[N]``).
    With ``hflip=True``, the key ``(i, seed)`` (the training sampler's, see
    :class:`~pedconv.training.data.SeededDataset`) flips the image and its boxes with probability
    1/2, drawn from ``seed``; a plain ``i`` never flips.

    Args:
        ann_file: the ``instances_*.json`` file (validated at once by :func:`load_coco`).
        image_dir: the folder of its images.
        skip_crowd: leave ``iscrowd=1`` annotations out of the targets (for training).
        skip_empty: leave out the images left without an annotation (for training, as torchvision's
            detection references do: COCO train2017 keeps 117,266 of its 118,287 images).
        hflip: the seeded horizontal flip described above.

    Attributes:
        categories: ``(category id, name)`` in label order (label ``k`` is ``categories[k - 1]``).
        cat_ids: the category id of each label ``1..K`` (``cat_ids[k - 1]``).
        num_classes: ``K + 1``, background included.
        image_ids: COCO's image ids in item order.

    >>> import tempfile
    >>> from pedconv.tasks.scenes import generate_scenes, write_coco
    >>> root = tempfile.mkdtemp()
    >>> ds = CocoDetection(write_coco(root, "val", generate_scenes(2, size=32, split="val")), f"{root}/val")
    >>> image, target = ds[0]
    >>> len(ds), ds.num_classes, image.shape, image.dtype, target["boxes"].dtype, target["labels"].dtype
    (2, 11, torch.Size([3, 32, 32]), torch.uint8, torch.float32, torch.int64)
    """

    def __init__(self, ann_file: PathLike, image_dir: PathLike, *, skip_crowd: bool = False,
                 skip_empty: bool = False, hflip: bool = False) -> None:
        self.index = load_coco(ann_file, image_dir)
        self.skip_crowd, self.hflip = skip_crowd, hflip
        self.categories = list(self.index.categories)
        self.cat_ids = [cid for cid, _ in self.categories]
        self.num_classes = len(self.categories) + 1
        self.images = [im for im in self.index.images if not skip_empty or self._annotations(im.id)]
        if not self.images:
            raise DataError(f"{self.index.ann_file}: no image has an annotation to train on")
        self.image_ids = [im.id for im in self.images]
        self._labels = {cid: k for k, cid in enumerate(self.cat_ids, start=1)}

    def _annotations(self, image_id: int) -> list[Any]:
        return [a for a in self.index.annotations[image_id] if not (self.skip_crowd and a.iscrowd)]

    @property
    def ann_file(self) -> Path:
        """The annotation file (for a reference COCO evaluation)."""
        return self.index.ann_file

    def __len__(self) -> int:
        return len(self.images)

    def target(self, i: int) -> dict[str, Tensor]:
        """Item ``i``'s target, without reading its image."""
        image = self.images[i]
        anns = self._annotations(image.id)
        boxes = torch.tensor([a.bbox for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
        return {
            "boxes": boxes,
            "labels": torch.tensor([self._labels[a.category_id] for a in anns], dtype=torch.int64),
            "image_id": torch.tensor(image.id, dtype=torch.int64),
            "area": torch.tensor([a.area for a in anns], dtype=torch.float32),
            "iscrowd": torch.tensor([a.iscrowd for a in anns], dtype=torch.int64),
        }

    def __getitem__(self, key: Union[int, tuple[int, int]]) -> tuple[Tensor, dict[str, Tensor]]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        meta = self.images[i]
        pixels = np.array(load_image(str(meta.path)))  # a writable copy for torch
        if pixels.shape[:2] != (meta.height, meta.width):
            raise DataError(f"{self.index.ann_file}: image id {meta.id}: {meta.path} is "
                            f"{pixels.shape[1]}x{pixels.shape[0]}, the file says {meta.width}x{meta.height}")
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        target = self.target(i)
        if self.hflip and seed is not None and np.random.default_rng(seed).random() < 0.5:
            image = image.flip(-1)
            boxes = target["boxes"]
            target["boxes"] = torch.stack([meta.width - boxes[:, 2], boxes[:, 1], meta.width - boxes[:, 0],
                                           boxes[:, 3]], dim=1)
        return image, target


def collate_detection(
    batch: Sequence[tuple[Tensor, dict[str, Tensor]]],
) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Batch of :class:`CocoDetection` items -> ``(images, targets)`` lists (images differ in size).

    >>> images, targets = collate_detection([(torch.zeros(3, 4, 5, dtype=torch.uint8), {"labels": torch.ones(1)})] * 2)
    >>> len(images), len(targets)
    (2, 2)
    """
    return [image for image, _ in batch], [target for _, target in batch]

"""Offline detection and segmentation data: seeded scenes of real Fashion-MNIST items.

No detection or segmentation data set ships with Debian, and the machines that run the
tests cannot download one, so :func:`generate_scenes` composes scenes from real Fashion-MNIST
items (the ``dataset-fashion-mnist`` package, see :mod:`pedconv.tasks.classification.readers`): each
scene is an RGB canvas with a few objects, each one an item rescaled (16..64 px on the
default 128 px canvas), tinted with a colour and pasted through its own silhouette (its
pixels above a threshold). Later objects occlude earlier ones; an object left with a tiny
visible part is removed (its pixels are not painted), so every painted garment pixel
belongs to exactly one annotated object. The background is coloured noise with clutter that
is not an object: faint rectangles, ellipses, lines and fragments of other items.

Boxes and instance masks are those of the visible pixels. The 10 categories are the
Fashion-MNIST classes (:data:`CLASSES`). Training scenes draw their items from the
Fashion-MNIST training split and validation scenes from its test split, so the two never
share an item. A given ``(size, seed, split, index)`` always yields the same scene, whatever
the number of scenes asked for.

The writers store scenes in the two formats the real data sets use:

* :func:`write_coco` -- COCO's ``annotations/instances_{split}.json`` (instance masks as
  RLE) and ``{split}/NNNNNN.png``, read by :mod:`pedconv.tasks.detection.coco`;
* :func:`write_ade20k` -- ADEChallengeData2016's ``images/{training,validation}`` and
  ``annotations/{training,validation}`` (one uint8 PNG per image, 0 = other, k = class k),
  read by :mod:`pedconv.tasks.segmentation.ade20k`.

:func:`make_offline_sets` builds both, once: a complete set with the same parameters is reused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageDraw

from ..utils.atomic import atomic_write_text
from .classification.readers import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = [
    "CLASSES",
    "FORMATS",
    "MARKER",
    "Scene",
    "generate_scenes",
    "make_offline_sets",
    "render_scene",
    "write_ade20k",
    "write_coco",
]

CLASSES: tuple[str, ...] = FASHION_MNIST_CLASSES
FORMATS = ("coco", "ade20k")
MARKER = "pedconv-scenes.json"
# Bump when the generator changes what a (size, seed) yields: older sets on disk are rebuilt.
_VERSION = 1
_THRESHOLD = 40  # item pixels above this are its silhouette (Fashion-MNIST's background is 0)
_MIN_AREA = 24  # fewest visible pixels an object keeps
_MIN_VISIBLE = 0.25  # smallest visible fraction of its pasted silhouette an object keeps
_SPLIT_CODES = {"train": 0, "val": 1}
_ADE_SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Scene:
    """One generated scene.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        masks: ``(N, H, W)`` bool, the visible pixels of each object, in paint order (back to front).
        classes: ``(N,)`` int64 Fashion-MNIST class of each object, ``0..9`` (index of :data:`CLASSES`).
        items: ``(N,)`` int64 index of each object's item in its Fashion-MNIST split.

    >>> s = Scene(np.zeros((4, 4, 3), np.uint8), np.pad(np.ones((1, 2, 1), bool), ((0, 0), (1, 1), (2, 1))),
    ...           np.array([7]), np.array([0]))
    >>> s.boxes.tolist(), s.semantic[1:3, 2].tolist()
    ([[2.0, 1.0, 3.0, 3.0]], [8, 8])
    """

    image: np.ndarray
    masks: np.ndarray
    classes: np.ndarray
    items: np.ndarray

    @property
    def boxes(self) -> np.ndarray:
        """``(N, 4)`` float32 boxes ``x1, y1, x2, y2`` around the visible pixels (pixel edges:
        a one-pixel object at column 3 spans ``x1=3, x2=4``)."""
        out = np.zeros((len(self.masks), 4), dtype=np.float32)
        for i, m in enumerate(self.masks):
            ys, xs = np.nonzero(m)
            out[i] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        return out

    @property
    def semantic(self) -> np.ndarray:
        """``(H, W)`` uint8 class map in ADE20K's convention: 0 = other, ``c + 1`` for class ``c``."""
        out = np.zeros(self.image.shape[:2], dtype=np.uint8)
        for m, c in zip(self.masks, self.classes):
            out[m] = c + 1
        return out


@lru_cache(maxsize=4)
def _fashion(split: str, root: Optional[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_fashion_mnist(root, train=split == "train")
    return images.numpy(), labels.numpy()


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(0, 256, 3).astype(np.float32)
    cells = int(rng.integers(3, 9))
    coarse = np.clip(base + rng.normal(0.0, 35.0, (cells, cells, 3)), 0, 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    return smooth + rng.normal(0.0, 10.0, (size, size, 3)).astype(np.float32)


def _blend(canvas: np.ndarray, where: np.ndarray, colour: np.ndarray, alpha: float) -> None:
    canvas[where] = (1.0 - alpha) * canvas[where] + alpha * colour


def _clutter(rng: np.random.Generator, canvas: np.ndarray, items: np.ndarray) -> None:
    """Faint shapes and fragments of items: texture that is not an object."""
    size = canvas.shape[0]
    for _ in range(int(rng.integers(2, 7))):
        kind = int(rng.integers(0, 4))
        colour = rng.integers(0, 256, 3).astype(np.float32)
        alpha = float(rng.uniform(0.15, 0.4))
        layer = Image.new("L", (size, size), 0)
        x0, y0 = (int(v) for v in rng.integers(-size // 8, size, 2))
        w, h = (int(v) for v in rng.integers(size // 16 + 2, size // 3, 2))
        if kind == 0:
            ImageDraw.Draw(layer).rectangle((x0, y0, x0 + w, y0 + h), fill=255)
        elif kind == 1:
            ImageDraw.Draw(layer).ellipse((x0, y0, x0 + w, y0 + h), fill=255)
        elif kind == 2:
            ImageDraw.Draw(layer).line((x0, y0, x0 + w, y0 + h), fill=255, width=int(rng.integers(1, 4)))
        else:  # a fragment of an item: a garment-like edge that must not be detected
            item = items[int(rng.integers(len(items)))]
            cy, cx = (int(v) for v in rng.integers(0, 15, 2))
            frag = Image.fromarray(np.ascontiguousarray(item[cy:cy + 13, cx:cx + 13]))
            side = int(rng.integers(13, max(14, size // 5)))
            layer.paste(frag.resize((side, side), Image.Resampling.BILINEAR), (x0, y0))
        where = np.asarray(layer) > _THRESHOLD
        _blend(canvas, where, colour, alpha)


@dataclass
class _Object:
    y0: int
    x0: int
    silhouette: np.ndarray  # (h, w) bool
    pixels: np.ndarray  # (h, w, 3) float32
    cls: int
    item: int


def _draw_object(rng: np.random.Generator, size: int, scale: tuple[int, int], images: np.ndarray,
                 labels: np.ndarray) -> _Object:
    for _ in range(20):  # a few items (sandals at 16 px) are too sparse: draw another
        item = int(rng.integers(len(images)))
        h = int(rng.integers(scale[0], scale[1] + 1))
        w = int(np.clip(round(h * np.exp(rng.uniform(-0.25, 0.25))), 8, size))
        grey = np.asarray(Image.fromarray(images[item]).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
        silhouette = grey > _THRESHOLD
        if silhouette.sum() >= 2 * _MIN_AREA:
            break
    colour = rng.integers(40, 256, 3).astype(np.float32)
    pixels = (0.3 + 0.7 * grey[..., None] / 255.0) * colour
    y0 = int(rng.integers(-h // 4, size - 3 * h // 4 + 1))
    x0 = int(rng.integers(-w // 4, size - 3 * w // 4 + 1))
    return _Object(y0, x0, silhouette, pixels, int(labels[item]), item)


def _window(obj: _Object, size: int) -> tuple[slice, slice, slice, slice]:
    """The canvas slices an object covers and the matching slices of the object (clipped to the canvas)."""
    h, w = obj.silhouette.shape
    cy0, cx0 = max(obj.y0, 0), max(obj.x0, 0)
    cy1, cx1 = min(obj.y0 + h, size), min(obj.x0 + w, size)
    return (slice(cy0, cy1), slice(cx0, cx1), slice(cy0 - obj.y0, cy1 - obj.y0), slice(cx0 - obj.x0, cx1 - obj.x0))


def _owners(objects: Sequence[_Object], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Which object shows at each pixel (-1: none), and each object's pasted area inside the canvas."""
    owner = np.full((size, size), -1, dtype=np.int64)
    pasted = np.zeros(len(objects), dtype=np.int64)
    for j, obj in enumerate(objects):
        cy, cx, oy, ox = _window(obj, size)
        sil = obj.silhouette[oy, ox]
        owner[cy, cx][sil] = j
        pasted[j] = sil.sum()
    return owner, pasted


def render_scene(seed: int, index: int, *, size: int = 128, split: str = "train",
                 objects: tuple[int, int] = (2, 6), scale: Optional[tuple[int, int]] = None,
                 fashion_root: Optional[PathLike] = None) -> Scene:
    """Scene ``index`` of the set ``(size, seed, split)``; see the module docstring.

    Args:
        seed: the set's seed.
        index: the scene's position in the set (scenes are independent of one another).
        size: canvas side in pixels.
        split: ``"train"`` (items from Fashion-MNIST's training split) or ``"val"`` (its test split).
        objects: fewest and most objects pasted (occlusion may remove some; at least one stays).
        scale: smallest and largest object height in pixels (default ``size // 8, size // 2``).
        fashion_root: a folder with the Fashion-MNIST IDX files (default: Debian's package).

    >>> s = render_scene(0, 0, size=64, split="val")
    >>> s.image.shape, s.image.dtype, s.masks.shape[1:], bool((s.semantic > 0).sum() == s.masks.sum())
    ((64, 64, 3), dtype('uint8'), (64, 64), True)
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    lo, hi = scale if scale is not None else (max(8, size // 8), max(8, size // 2))
    images, labels = _fashion(split, None if fashion_root is None else str(fashion_root))
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index, size])
    canvas = _background(rng, size)
    _clutter(rng, canvas, images)
    objs = [_draw_object(rng, size, (lo, hi), images, labels) for _ in range(int(rng.integers(objects[0],
                                                                                          objects[1] + 1)))]
    while True:  # drop the least visible object until every one left is visible enough
        owner, pasted = _owners(objs, size)
        visible = np.bincount(owner[owner >= 0], minlength=len(objs))
        need = np.maximum(_MIN_AREA, _MIN_VISIBLE * pasted)
        if (visible >= need).all() or len(objs) == 1:
            break
        objs.pop(int(np.argmin(visible / np.maximum(need, 1))))
    if (visible == 0).any():  # a lone object pasted mostly off the canvas may show nothing
        objs = [o for o, v in zip(objs, visible) if v > 0]
        owner, _ = _owners(objs, size)
    for j, obj in enumerate(objs):
        cy, cx, oy, ox = _window(obj, size)
        shown = owner[cy, cx] == j
        canvas[cy, cx][shown] = obj.pixels[oy, ox][shown]
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    masks = np.stack([owner == j for j in range(len(objs))]) if objs else np.zeros((0, size, size), dtype=bool)
    return Scene(image, masks, np.array([o.cls for o in objs], dtype=np.int64),
                 np.array([o.item for o in objs], dtype=np.int64))


def generate_scenes(count: int, *, size: int = 128, seed: int = 0, split: str = "train",
                    objects: tuple[int, int] = (2, 6), scale: Optional[tuple[int, int]] = None,
                    fashion_root: Optional[PathLike] = None) -> list[Scene]:
    """Scenes ``0..count-1`` of the set ``(size, seed, split)`` (see :func:`render_scene` for the options).

    >>> a, b = generate_scenes(2, size=48, seed=3, split="val")
    >>> bool((a.image == generate_scenes(1, size=48, seed=3, split="val")[0].image).all())
    True
    """
    return [render_scene(seed, i, size=size, split=split, objects=objects, scale=scale, fashion_root=fashion_root)
            for i in range(count)]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)  # fast; no timestamps: same pixels, same bytes
    return buf.getvalue()


def write_coco(root: PathLike, split: str, scenes: Sequence[Scene],
               category_ids: Optional[Sequence[int]] = None) -> Path:
    """Write ``scenes`` as a COCO instances set; returns ``root/annotations/instances_{split}.json``.

    Images go to ``root/{split}/NNNNNN.png`` (image ids ``1..N``); each object is one
    annotation with its visible pixels as an RLE ``segmentation`` (:func:`pycocotools.mask.encode`),
    their ``area`` and their box ``[x, y, w, h]``; ``iscrowd`` is 0. Fashion-MNIST class ``c``
    is category ``category_ids[c]`` (default ``c + 1``; any distinct positive ids, as COCO's own
    ids are not contiguous). The JSON is written last and atomically, so it names only files
    that exist.

    >>> import tempfile
    >>> ann = write_coco(tempfile.mkdtemp(), "val", generate_scenes(1, size=32, split="val"))
    >>> ann.relative_to(ann.parents[1]).as_posix(), sorted(json.loads(ann.read_text()))
    ('annotations/instances_val.json', ['annotations', 'categories', 'images', 'info'])
    """
    from pycocotools import mask as mask_utils  # type: ignore[import-untyped]

    root = Path(root)
    ids = list(range(1, len(CLASSES) + 1)) if category_ids is None else [int(i) for i in category_ids]
    if len(ids) != len(CLASSES) or len(set(ids)) != len(ids) or min(ids) < 1:
        raise ValueError(f"category_ids must be {len(CLASSES)} distinct positive ints, got {ids}")
    (root / split).mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    annotations: list[dict] = []
    for n, scene in enumerate(scenes, start=1):
        name = f"{n:06d}.png"
        (root / split / name).write_bytes(_png(scene.image))
        h, w = scene.image.shape[:2]
        images.append({"id": n, "file_name": name, "width": w, "height": h})
        for mask, cls, box in zip(scene.masks, scene.classes, scene.boxes):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": n, "category_id": ids[int(cls)],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(mask.sum()), "iscrowd": 0,
                "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            })
    document = {
        "info": {"description": f"pedconv scenes of Fashion-MNIST items ({split})", "version": str(_VERSION)},
        "images": images, "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": "fashion"} for i, name in zip(ids, CLASSES)],
    }
    return atomic_write_text(root / "annotations" / f"instances_{split}.json", json.dumps(document))


def write_ade20k(root: PathLike, split: str, scenes: Sequence[Scene]) -> Path:
    """Write ``scenes`` in ADEChallengeData2016's layout; returns ``root``.

    ``split`` is ``"training"`` or ``"validation"`` (``"train"``/``"val"`` are accepted).
    Scene ``n`` (from 1) is ``images/{split}/ADE_{train,val}_{n:08d}.png`` and its class map
    ``annotations/{split}/`` of the same name: a single-channel uint8 PNG, 0 = other
    (unlabelled), ``k`` = Fashion-MNIST class ``k - 1`` (see :attr:`Scene.semantic`).
    ``objectInfo.csv`` lists the class names (``Idx,Name``, as ADE20K's ``objectInfo150.csv``).

    >>> import tempfile
    >>> root = write_ade20k(tempfile.mkdtemp(), "val", generate_scenes(1, size=32, split="val"))
    >>> [p.relative_to(root).as_posix() for p in sorted(root.rglob("*.png"))]
    ['annotations/validation/ADE_val_00000001.png', 'images/validation/ADE_val_00000001.png']
    """
    if split not in _ADE_SPLITS:
        raise ValueError(f"split must be one of {sorted(_ADE_SPLITS)}, not {split!r}")
    root, folder = Path(root), _ADE_SPLITS[split]
    prefix = "ADE_train" if folder == "training" else "ADE_val"
    for sub in ("images", "annotations"):
        (root / sub / folder).mkdir(parents=True, exist_ok=True)
    for n, scene in enumerate(scenes, start=1):
        name = f"{prefix}_{n:08d}.png"
        (root / "images" / folder / name).write_bytes(_png(scene.image))
        (root / "annotations" / folder / name).write_bytes(_png(scene.semantic))
    rows = "".join(f"{k},{name}\n" for k, name in enumerate(CLASSES, start=1))
    atomic_write_text(root / "objectInfo.csv", "Idx,Name\n" + rows)
    return root


def _marker_matches(folder: Path, params: dict) -> bool:
    try:
        return bool(json.loads((folder / MARKER).read_text()) == params)
    except (OSError, ValueError):
        return False


def make_offline_sets(root: PathLike, *, train: int, val: int, size: int = 128, seed: int = 0,
                      formats: Sequence[str] = FORMATS, fashion_root: Optional[PathLike] = None) -> dict[str, Path]:
    """Build the offline sets under ``root`` once; returns ``{"coco": root/"coco", "ade20k": root/"ade20k"}``
    (the formats asked for).

    Both formats hold the same scenes: ``train`` scenes of the ``"train"`` split, ``val`` of
    ``"val"``. A set is built in a temporary folder, completed with a marker file
    (:data:`MARKER`, the parameters) and renamed into place, so a reader never sees a part of
    one; a folder whose marker has the same parameters is reused, any other (a partial or
    older build, other parameters) is replaced. Concurrent builders (one per DDP rank) are safe:
    the first rename wins and the others reuse its result.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> paths = make_offline_sets(root, train=2, val=1, size=32, formats=("ade20k",))
    >>> sorted(paths), (paths["ade20k"] / MARKER).is_file()
    (['ade20k'], True)
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown formats {unknown}; choose from {FORMATS}")
    root = Path(root)
    params = {"version": _VERSION, "train": train, "val": val, "size": size, "seed": seed}
    todo = [f for f in formats if not _marker_matches(root / f, {**params, "format": f})]
    if todo:
        kw = {"size": size, "seed": seed, "fashion_root": fashion_root}
        scenes = {"train": generate_scenes(train, split="train", **kw),  # type: ignore[arg-type]
                  "val": generate_scenes(val, split="val", **kw)}  # type: ignore[arg-type]
        for fmt in todo:
            _build(root, fmt, scenes, {**params, "format": fmt})
    return {f: root / f for f in formats}


def _build(root: Path, fmt: str, scenes: dict[str, list[Scene]], params: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{fmt}.{uuid.uuid4().hex}.tmp"
    try:
        for split, items in scenes.items():
            if fmt == "coco":
                write_coco(staging, split, items)
            else:
                write_ade20k(staging, split, items)
        atomic_write_text(staging / MARKER, json.dumps(params, sort_keys=True))
        target = root / fmt
        if target.exists() and not _marker_matches(target, params):
            trash = root / f".{fmt}.{uuid.uuid4().hex}.old"
            # Out of the way first (a folder cannot be renamed over a non-empty one), unless
            # another builder moved it already.
            with contextlib.suppress(FileNotFoundError):
                os.replace(target, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if not _marker_matches(target, params):  # another process's complete build is as good as ours
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)

"""The ADE20K reader: pairing, up-front checks naming the file, label conventions, sizes, seeded augmentation."""

import numpy as np
import pytest
import torch
from PIL import Image

from pedconv.errors import DataError
from pedconv.tasks.segmentation.ade20k import IGNORE_INDEX, NUM_CLASSES, ADE20KSegmentation, collate_segmentation

RAW = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [255, 255, 1, 1]], dtype=np.uint8)  # num_classes=3: 0 other, 255 ignore


def _write(root, split="training", n=2, shape=(3, 4)):
    rng = np.random.default_rng(0)
    for sub in ("images", "annotations"):
        (root / sub / split).mkdir(parents=True, exist_ok=True)
    for k in range(n):
        h, w = shape
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "images" / split / f"ADE_{k}.png")
        Image.fromarray(np.resize(RAW, shape)).save(root / "annotations" / split / f"ADE_{k}.png")
    return root


def _raises(root, *fragments, **kwargs):
    with pytest.raises(DataError) as info:
        ADE20KSegmentation(root, "training", num_classes=3, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_ade20k_constants():
    assert NUM_CLASSES == 150 and IGNORE_INDEX == 255


@pytest.mark.parametrize(("reduce", "expected"), [
    (True, [[255, 0, 1, 2], [2, 1, 0, 255], [255, 255, 0, 0]]),
    (False, [[0, 1, 2, 3], [3, 2, 1, 0], [255, 255, 1, 1]]),
])
def test_label_conventions(tmp_path, reduce, expected):
    ds = ADE20KSegmentation(_write(tmp_path), "train", num_classes=3, reduce_zero_label=reduce)
    image, mask = ds[1]
    assert len(ds) == 2 and ds.num_labels == (3 if reduce else 4)
    assert image.shape == (3, 3, 4) and image.dtype == torch.uint8
    assert torch.equal(image, torch.from_numpy(np.array(Image.open(ds.pairs[1][0]))).permute(2, 0, 1))
    assert mask.dtype == torch.int64 and mask.tolist() == expected


def test_reduce_zero_label_is_the_default(tmp_path):
    assert ADE20KSegmentation(_write(tmp_path), num_classes=3)[0][1][0, 0].item() == IGNORE_INDEX


def test_fixed_size_resizes_image_bilinear_and_mask_nearest(tmp_path):
    ds = ADE20KSegmentation(_write(tmp_path, shape=(6, 8)), num_classes=3, size=12)
    image, mask = ds[0]
    assert image.shape == (3, 12, 12) and mask.shape == (12, 12)
    assert set(mask.unique().tolist()) <= {0, 1, 2, IGNORE_INDEX}, "nearest: no value between two classes"


def test_seeded_augmentation_is_reproducible_and_plain_index_is_not_augmented(tmp_path):
    ds = ADE20KSegmentation(_write(tmp_path, shape=(16, 16)), num_classes=3, size=16, augment=True)
    plain = ADE20KSegmentation(tmp_path, num_classes=3, size=16)
    assert torch.equal(ds[0][0], plain[0][0]) and torch.equal(ds[0][1], plain[0][1])
    outs = [ds[(0, seed)] for seed in range(6)]
    for seed, (image, mask) in enumerate(outs):
        again = ds[(0, seed)]
        assert torch.equal(image, again[0]) and torch.equal(mask, again[1])
        assert image.shape == (3, 16, 16) and mask.shape == (16, 16)
    assert len({o[0].numpy().tobytes() for o in outs}) > 1


def test_flip_moves_image_and_mask_together(tmp_path):
    ds = ADE20KSegmentation(_write(tmp_path, shape=(8, 8)), num_classes=3, augment=True, scale_range=(1.0, 1.0))
    image0, mask0 = ds[0]
    seen = set()
    for seed in range(8):
        image, mask = ds[(0, seed)]
        flipped = torch.equal(image, image0.flip(-1)) and torch.equal(mask, mask0.flip(-1))
        assert flipped or (torch.equal(image, image0) and torch.equal(mask, mask0))
        seen.add(flipped)
    assert seen == {True, False}


def test_collate_stacks_and_pads_with_ignore(tmp_path):
    ds = ADE20KSegmentation(_write(tmp_path), num_classes=3)
    images, masks = collate_segmentation([ds[0], ds[1]])
    assert images.shape == (2, 3, 3, 4) and masks.shape == (2, 3, 4) and masks.dtype == torch.int64
    assert torch.equal(masks[1], ds[1][1])


def test_missing_folder(tmp_path):
    _write(tmp_path)
    with pytest.raises(DataError, match=r"images/validation does not exist"):
        ADE20KSegmentation(tmp_path, "validation", num_classes=3)


def test_image_without_annotation(tmp_path):
    _write(tmp_path)
    (tmp_path / "annotations" / "training" / "ADE_1.png").unlink()
    _raises(tmp_path, "images/training/ADE_1.png", "no annotation", "1 image(s)")


def test_annotation_without_image(tmp_path):
    _write(tmp_path)
    (tmp_path / "images" / "training" / "ADE_0.png").unlink()
    _raises(tmp_path, "annotations/training/ADE_0.png", "no image")


def test_empty_split(tmp_path):
    _write(tmp_path, n=0)
    _raises(tmp_path, "images/training", "empty")


def test_mask_size_differs_from_image(tmp_path):
    _write(tmp_path)
    Image.fromarray(np.zeros((3, 5), dtype=np.uint8)).save(tmp_path / "annotations" / "training" / "ADE_1.png")
    _raises(tmp_path, "annotations/training/ADE_1.png", "5x3", "ADE_1.png is 4x3")


def test_mask_value_neither_class_nor_ignore(tmp_path):
    _write(tmp_path)
    bad = RAW.copy()
    bad[0, 0] = 4
    Image.fromarray(bad).save(tmp_path / "annotations" / "training" / "ADE_1.png")
    _raises(tmp_path, "annotations/training/ADE_1.png", "[4]", "0..3", "255")
    lazy = ADE20KSegmentation(tmp_path, num_classes=3, validate=False)  # an unchecked item still checks itself
    with pytest.raises(DataError, match=r"ADE_1\.png: value"):
        lazy[1]


def test_mask_must_be_single_channel(tmp_path):
    _write(tmp_path)
    Image.fromarray(np.zeros((3, 4, 3), dtype=np.uint8)).save(tmp_path / "annotations" / "training" / "ADE_0.png")
    _raises(tmp_path, "ADE_0.png", "single-channel")

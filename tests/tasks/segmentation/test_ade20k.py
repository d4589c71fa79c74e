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
    images, masks, sizes = collate_segmentation([ds[0], ds[1]])
    assert images.shape == (2, 3, 3, 4) and masks.shape == (2, 3, 4) and masks.dtype == torch.int64
    assert torch.equal(masks[1], ds[1][1]) and sizes.tolist() == [[3, 4, 3, 4]] * 2


def test_keep_ratio_evaluation_resizes_images_only_and_pads_to_the_output_stride(tmp_path):
    """mmsegmentation's ADE20K test pipeline: Resize(scale=(2048, 512), keep_ratio=True) on the
    image, the mask untouched (scored at the original resolution), a batch padded to 32."""
    import numpy as np
    from PIL import Image

    from pedconv.tasks.segmentation.ade20k import keep_ratio_size

    for folder in ("images/validation", "annotations/validation"):
        (tmp_path / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in (("a", (30, 60)), ("b", (40, 20))):
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / f"images/validation/{name}.jpg")
        mask = rng.integers(0, 4, (h, w), dtype=np.uint8)
        Image.fromarray(mask).save(tmp_path / f"annotations/validation/{name}.png")
    ds = ADE20KSegmentation(tmp_path, "validation", num_classes=3, eval_scale=(64, 16))
    (image_a, mask_a), (image_b, mask_b) = ds[0], ds[1]
    assert image_a.shape[1:] == (16, 32) and mask_a.shape == (30, 60)  # 60x30 fits 64x16 at factor 16/30
    assert image_b.shape[1:] == (32, 16) and mask_b.shape == (40, 20)
    assert keep_ratio_size((2000, 500), (2048, 512)) == (2048, 512)
    images, masks, sizes = collate_segmentation([ds[0], ds[1]])
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 40, 60)
    assert sizes.tolist() == [[16, 32, 30, 60], [32, 16, 40, 20]]
    with pytest.raises(ValueError, match="excludes size"):
        ADE20KSegmentation(tmp_path, "validation", num_classes=3, eval_scale=(64, 16), size=16)


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


def test_keep_ratio_evaluation_scores_every_original_pixel(tmp_path):
    """A network that predicts class 0 everywhere: its pixel accuracy must be the share of 0s among
    the *original-resolution* labelled pixels (square resizing of the masks would change it)."""
    import argparse

    import numpy as np
    from PIL import Image
    from torch.utils.data import DataLoader

    from pedconv.tasks.segmentation.task import Segmentation
    from pedconv.training.data import DataSpec
    from pedconv.training.distributed import DistEnv

    for folder in ("images/validation", "annotations/validation"):
        (tmp_path / folder).mkdir(parents=True)
    rng = np.random.default_rng(1)
    labels = []
    for name, (h, w) in (("a", (30, 61)), ("b", (47, 20))):
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / f"images/validation/{name}.jpg")
        raw = rng.integers(0, 4, (h, w), dtype=np.uint8)
        Image.fromarray(raw).save(tmp_path / f"annotations/validation/{name}.png")
        labels.append(raw[raw > 0] - 1)  # reduce_zero_label: raw 0 is ignored
    ds = ADE20KSegmentation(tmp_path, "validation", num_classes=3, eval_scale=(64, 16))

    class AlwaysZero(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
            logits[:, 0] = 1.0
            return logits

    spec = DataSpec(name="t", train=ds, val=ds, num_classes=3, in_chans=3, input_size=(16, 16), mean=(0.5,) * 3,
                    std=(0.5,) * 3, in_memory=False, augment_on_device=False, collate_fn=collate_segmentation)
    args = argparse.Namespace(channels_last=False, amp="none")
    loader = DataLoader(ds, batch_size=2, collate_fn=collate_segmentation)
    result = Segmentation().evaluate(AlwaysZero(), loader, args, spec, None, DistEnv())
    everything = np.concatenate(labels)
    assert abs(result["aAcc"] - 100.0 * float((everything == 0).mean())) < 1e-6

"""The offline scenes: real Fashion-MNIST items, exact annotations, determinism, and both writers' round trips."""

import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from pedconv.tasks import scenes as scenes_module
from pedconv.tasks.classification.readers import load_fashion_mnist
from pedconv.tasks.detection.coco import CocoDetection
from pedconv.tasks.scenes import CLASSES, MARKER, generate_scenes, make_offline_sets, write_ade20k, write_coco
from pedconv.tasks.segmentation.ade20k import IGNORE_INDEX, ADE20KSegmentation

# pycocotools' annToMask under numpy 2 (its code, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


@pytest.fixture(scope="module")
def val_scenes():
    return generate_scenes(6, size=96, seed=5, split="val")


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_scene_annotations_are_the_visible_pixels(val_scenes):
    for s in val_scenes:
        assert s.image.shape == (96, 96, 3) and s.image.dtype == np.uint8
        assert 1 <= len(s.masks) <= 6 and s.masks.dtype == bool
        assert (s.masks.sum(axis=0) <= 1).all(), "an occluded pixel stays in the earlier object's mask"
        assert (s.masks.sum(axis=(1, 2)) >= scenes_module._MIN_AREA).all(), "tiny objects are dropped"
        for m, (x1, y1, x2, y2) in zip(s.masks, s.boxes.astype(int)):
            assert m[y1:y2, x1:x2].sum() == m.sum()  # the box holds the whole mask ...
            assert m[y1, x1:x2].any() and m[y2 - 1, x1:x2].any() and m[y1:y2, x1].any() and m[y1:y2, x2 - 1].any()
        semantic = s.semantic
        assert set(np.unique(semantic)) <= set(range(len(CLASSES) + 1))
        for m, c in zip(s.masks, s.classes):
            assert (semantic[m] == c + 1).all()
        assert (semantic[~s.masks.any(axis=0)] == 0).all()


def test_objects_are_real_items_of_the_right_split(val_scenes):
    _, test_labels = load_fashion_mnist(train=False)
    train = generate_scenes(3, size=96, seed=5, split="train")
    _, train_labels = load_fashion_mnist(train=True)
    for s in val_scenes:
        assert (test_labels.numpy()[s.items] == s.classes).all()
    for s in train:
        assert (train_labels.numpy()[s.items] == s.classes).all()
    assert any(s.items.max() >= 10_000 for s in train), "training scenes draw from the 60k training split"


def test_occlusion_happens_and_objects_vary_in_scale():
    many = generate_scenes(40, size=128, seed=0, split="val")
    heights = [y2 - y1 for s in many for (_, y1, _, y2) in s.boxes]
    assert min(heights) < 24 and max(heights) > 48
    counts = [len(s.classes) for s in many]
    assert min(counts) >= 1 and max(counts) > 3
    # occlusion: some objects overlap, and their (disjoint) masks then touch along the occluding edge
    assert sum(_masks_touch(s) for s in many) >= 5


def _masks_touch(s):
    for i in range(len(s.masks)):
        for j in range(i + 1, len(s.masks)):
            a, b = s.masks[i], s.masks[j]
            if (a[:, :-1] & b[:, 1:]).any() or (a[:, 1:] & b[:, :-1]).any() or (a[:-1] & b[1:]).any() or (
                    a[1:] & b[:-1]).any():
                return True
    return False


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path):
    a, b, c = (generate_scenes(3, size=64, seed=seed, split="val") for seed in (1, 1, 2))
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.masks, y.masks)
    assert not any(np.array_equal(x.image, z.image) for x, z in zip(a, c))
    assert np.array_equal(generate_scenes(2, size=64, seed=1, split="val")[1].image, a[1].image)  # count-independent
    for name, s in (("one", a), ("two", b)):
        write_coco(tmp_path / name, "val", s)
        write_ade20k(tmp_path / name, "validation", s)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


def test_coco_round_trip_with_pycocotools_and_our_reader(tmp_path, val_scenes):
    ids = [2, 3, 5, 7, 11, 13, 17, 19, 23, 90]  # COCO-like: not contiguous
    ann = write_coco(tmp_path, "val", val_scenes, category_ids=ids)
    coco = COCO(str(ann))
    ds = CocoDetection(ann, tmp_path / "val")
    assert ds.cat_ids == ids and ds.num_classes == 11 and [n for _, n in ds.categories] == list(CLASSES)
    for i, s in enumerate(val_scenes):
        image_id = ds.image_ids[i]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(s.masks)
        for a, m, box in zip(anns, s.masks, s.boxes):
            assert np.array_equal(coco.annToMask(a).astype(bool), m)
            assert a["area"] == m.sum() and a["bbox"] == [box[0], box[1], box[2] - box[0], box[3] - box[1]]
        image, target = ds[i]
        assert torch.equal(image, torch.from_numpy(s.image).permute(2, 0, 1))
        assert torch.equal(target["boxes"], torch.from_numpy(s.boxes))
        assert target["labels"].tolist() == (s.classes + 1).tolist()
        assert [ds.cat_ids[k - 1] for k in target["labels"]] == [ids[c] for c in s.classes]


@pytest.mark.parametrize("reduce", [True, False])
def test_ade20k_round_trip(tmp_path, val_scenes, reduce):
    write_ade20k(tmp_path, "val", val_scenes)
    ds = ADE20KSegmentation(tmp_path, "validation", num_classes=len(CLASSES), reduce_zero_label=reduce)
    assert len(ds) == len(val_scenes) and ds.class_names == (list(CLASSES) if reduce else ["other", *CLASSES])
    for (image, mask), s in zip((ds[i] for i in range(len(ds))), val_scenes):
        assert torch.equal(image, torch.from_numpy(s.image).permute(2, 0, 1))
        expected = s.semantic.astype(np.int64)
        if reduce:
            expected = np.where(expected == 0, IGNORE_INDEX, expected - 1)
        assert torch.equal(mask, torch.from_numpy(expected))


def test_make_offline_sets_builds_once_and_rebuilds_what_is_partial_or_different(tmp_path):
    paths = make_offline_sets(tmp_path, train=3, val=2, size=48, seed=1)
    assert set(paths) == {"coco", "ade20k"}
    assert len(json.loads((paths["coco"] / "annotations" / "instances_train.json").read_text())["images"]) == 3
    assert len(list((paths["ade20k"] / "images" / "validation").iterdir())) == 2
    marker = paths["coco"] / MARKER
    before = marker.stat().st_mtime_ns
    assert make_offline_sets(tmp_path, train=3, val=2, size=48, seed=1) == paths
    assert marker.stat().st_mtime_ns == before, "a complete set with the same parameters is reused"
    # a partial set (no marker: an interrupted copy) is rebuilt, whole
    marker.unlink()
    (paths["coco"] / "train" / "000002.png").unlink()
    make_offline_sets(tmp_path, train=3, val=2, size=48, seed=1, formats=("coco",))
    assert (paths["coco"] / "train" / "000002.png").is_file() and marker.is_file()
    # other parameters replace the set; no staging folders are left behind
    make_offline_sets(tmp_path, train=1, val=1, size=48, seed=2, formats=("ade20k",))
    assert len(list((paths["ade20k"] / "images" / "training").iterdir())) == 1
    assert json.loads((paths["ade20k"] / MARKER).read_text())["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ade20k", "coco"]
    with pytest.raises(ValueError, match="unknown formats"):
        make_offline_sets(tmp_path, train=1, val=1, formats=("voc",))

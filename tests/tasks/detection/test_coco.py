"""The COCO reader: every malformed file fails up front with one line naming the file and the item."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pedconv.errors import DataError
from pedconv.tasks.detection.coco import CocoDetection, collate_detection, load_coco

DOC = {
    "images": [{"id": 10, "file_name": "a.png", "width": 40, "height": 30},
               {"id": 20, "file_name": "b.png", "width": 20, "height": 20}],
    "annotations": [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 3, 10, 5], "area": 50, "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [30, 20, 10, 10], "area": 100, "iscrowd": 1},
        {"id": 3, "image_id": 20, "category_id": 3, "bbox": [0, 0, 20.5, 4], "area": 80, "iscrowd": 0},
    ],
    "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],  # neither sorted nor contiguous
}


def _write(root, doc=DOC):
    (root / "img").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for im in DOC["images"]:
        pixels = rng.integers(0, 256, (im["height"], im["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "img" / im["file_name"])
    ann = root / "instances.json"
    ann.write_text(json.dumps(doc))
    return ann, root / "img"


def _raises(ann, image_dir, *fragments):
    with pytest.raises(DataError) as info:
        load_coco(ann, image_dir)
    message = str(info.value)
    assert "\n" not in message and str(ann) in message, message
    for fragment in fragments:
        assert fragment in message, message


def _mutated(edit):
    doc = copy.deepcopy(DOC)
    edit(doc)
    return doc


def test_labels_are_contiguous_in_sorted_category_order(tmp_path):
    ds = CocoDetection(*_write(tmp_path))
    assert ds.categories == [(3, "three"), (7, "seven")] and ds.cat_ids == [3, 7] and ds.num_classes == 3
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8
    assert torch.equal(image, torch.from_numpy(np.array(Image.open(tmp_path / "img" / "a.png"))).permute(2, 0, 1))
    assert target["labels"].tolist() == [2, 1] and target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[2, 3, 12, 8], [30, 20, 40, 30]] and target["boxes"].dtype == torch.float32
    assert target["image_id"].item() == 10 and target["image_id"].dtype == torch.int64
    assert target["area"].tolist() == [50, 100] and target["iscrowd"].tolist() == [0, 1]
    assert ds.target(1)["boxes"].tolist() == [[0, 0, 20, 4]], "a box within the tolerance is clipped to the image"


def test_skip_crowd_and_images_without_annotations(tmp_path):
    doc = _mutated(lambda d: d["images"].append({"id": 30, "file_name": "a.png", "width": 40, "height": 30}))
    ds = CocoDetection(*_write(tmp_path, doc), skip_crowd=True)
    assert ds[0][1]["labels"].tolist() == [2] and ds[0][1]["iscrowd"].tolist() == [0]
    empty = ds[2][1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_training_leaves_out_images_without_annotations(tmp_path):
    """As torchvision's detection references: an image with no annotation (or only crowd ones,
    which training skips) is not a training item; evaluation keeps every image."""
    doc = _mutated(lambda d: (d["images"].append({"id": 30, "file_name": "a.png", "width": 40, "height": 30}),
                              d["images"].append({"id": 40, "file_name": "b.png", "width": 20, "height": 20}),
                              d["annotations"].append({"id": 4, "image_id": 40, "category_id": 3,
                                                       "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 1})))
    ann, images = _write(tmp_path, doc)
    train = CocoDetection(ann, images, skip_crowd=True, skip_empty=True)
    assert len(train) == 2 and train.image_ids == [10, 20] and train[1][1]["image_id"].item() == 20
    assert len(CocoDetection(ann, images)) == 4
    only_empty = _mutated(lambda d: d.update(annotations=[]))
    with pytest.raises(DataError, match="no image has an annotation"):
        CocoDetection(*_write(tmp_path, only_empty), skip_empty=True)


def test_seeded_flip_is_reproducible_and_moves_the_boxes(tmp_path):
    ds = CocoDetection(*_write(tmp_path), hflip=True)
    plain_image, plain = ds[0]
    assert torch.equal(ds[0][0], plain_image), "a plain index never flips"
    assert plain["boxes"].tolist() == [[2, 3, 12, 8], [30, 20, 40, 30]]
    flips = []
    for seed in range(8):
        image, target = ds[(0, seed)]
        again = ds[(0, seed)]
        assert torch.equal(image, again[0]) and torch.equal(target["boxes"], again[1]["boxes"])
        flipped = not torch.equal(image, plain_image)
        flips.append(flipped)
        if flipped:
            assert torch.equal(image, plain_image.flip(-1))
            assert target["boxes"].tolist() == [[28, 3, 38, 8], [0, 20, 10, 30]]
    assert any(flips) and not all(flips)


def test_collate_keeps_lists(tmp_path):
    ds = CocoDetection(*_write(tmp_path))
    images, targets = collate_detection([ds[0], ds[1]])
    assert [tuple(i.shape) for i in images] == [(3, 30, 40), (3, 20, 20)] and targets[1]["image_id"].item() == 20


def test_unreadable_and_invalid_json(tmp_path):
    ann, image_dir = _write(tmp_path)
    _raises(tmp_path / "nope.json", image_dir, "cannot read")
    ann.write_text("{not json")
    _raises(ann, image_dir, "not valid JSON")
    ann.write_text("[]")
    _raises(ann, image_dir, "JSON object")


@pytest.mark.parametrize(("edit", "fragments"), [
    (lambda d: d.pop("categories"), ["missing top-level key(s) categories"]),
    (lambda d: d["annotations"][1].pop("bbox"), ["annotations[1] (id 2)", "lacks bbox"]),
    (lambda d: d["images"][0].pop("file_name"), ["images[0] (id 10)", "lacks file_name"]),
    (lambda d: d["categories"][1].pop("name"), ["categories[1] (id 3)", "lacks name"]),
    (lambda d: d["annotations"][0].update(bbox=[35, 3, 10, 5]), ["annotations[0] (id 1)", "outside image 10"]),
    (lambda d: d["annotations"][0].update(bbox=[2, -3, 10, 5]), ["annotations[0] (id 1)", "outside image 10"]),
    (lambda d: d["annotations"][2].update(bbox=[1, 1, 0, 4]), ["annotations[2] (id 3)", "zero or negative area"]),
    (lambda d: d["annotations"][2].update(bbox=[5, 1, 3, -4]), ["annotations[2] (id 3)", "zero or negative area"]),
    (lambda d: d["annotations"][2].update(bbox=[1, 1, 3]), ["annotations[2] (id 3)", "4 finite numbers"]),
    (lambda d: d["annotations"][1].update(category_id=4), ["annotations[1] (id 2)", "category_id 4"]),
    (lambda d: d["annotations"][2].update(image_id=99), ["annotations[2] (id 3)", "image_id 99"]),
    (lambda d: d["images"][1].update(file_name="gone.png"), ["images[1] (id 20)", "gone.png does not exist"]),
    (lambda d: d.update(images=[], annotations=[]), ["empty"]),
    (lambda d: d["annotations"][2].update(id=1), ["annotations[2] (id 1)", "repeats the id of annotations[0]"]),
    (lambda d: d["images"][1].update(width=0), ["images[1] (id 20)", "invalid size"]),
    (lambda d: d["annotations"][0].update(iscrowd=2), ["annotations[0] (id 1)", "iscrowd"]),
], ids=["top-level", "annotation-key", "image-key", "category-key", "bbox-outside-right", "bbox-outside-top",
        "zero-area", "negative-area", "bbox-shape", "unknown-category", "unknown-image", "missing-file",
        "empty-split", "duplicate-id", "image-size", "iscrowd"])
def test_each_malformed_item_is_named(tmp_path, edit, fragments):
    _raises(*_write(tmp_path, _mutated(edit)), *fragments)


def test_an_image_whose_size_is_not_the_declared_one_fails_when_read(tmp_path):
    ds = CocoDetection(*_write(tmp_path, _mutated(lambda d: d["images"][1].update(width=21))))
    with pytest.raises(DataError, match=r"image id 20: .*b\.png is 20x20, the file says 21x20"):
        ds[1]

"""COCO box AP: hand-made cases with known AP, and agreement with pycocotools' COCOeval."""

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from pedconv.tasks.detection.metrics import DETECTION_KEYS, DetectionMetric


def _pred(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


def _gt(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def _score(preds, targets, backend=None):
    m = DetectionMetric(backend=backend)
    m.update(preds, targets)
    return m.compute()


BIG = [0.0, 0.0, 200.0, 200.0]  # area 40000: "large"
MEDIUM = [10.0, 10.0, 60.0, 60.0]  # area 2500: "medium"


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_perfect_predictions_score_100(backend):
    r = _score([_pred([BIG, MEDIUM], [0.9, 0.8], [1, 2])], [_gt([BIG, MEDIUM], [1, 2])], backend)
    assert set(r) == set(DETECTION_KEYS)
    for key in ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR100"):
        assert r[key] == pytest.approx(100.0), key
    assert math.isnan(r["AP_S"])  # no small object: COCO's -1 becomes nan


def test_one_of_two_objects_missed():
    r = _score([_pred([BIG], [0.9], [1])], [_gt([BIG, MEDIUM], [1, 1])])
    # precision 1 up to recall 0.5, none beyond: 51 of COCO's 101 recall points
    assert r["AP"] == pytest.approx(100 * 51 / 101, abs=1e-4)  # torchmetrics returns float32
    assert r["AR100"] == pytest.approx(50.0)
    assert r["AP_L"] == pytest.approx(100.0) and r["AP_M"] == pytest.approx(0.0)


def test_a_box_at_iou_0_62_counts_for_ap50_not_ap75():
    pred = [0.0, 0.0, 100.0, 62.0]  # inside the 100x100 ground truth: IoU 0.62
    r = _score([_pred([pred], [0.9], [1])], [_gt([[0.0, 0.0, 100.0, 100.0]], [1])])
    assert r["AP50"] == pytest.approx(100.0) and r["AP75"] == pytest.approx(0.0)
    assert r["AP"] == pytest.approx(30.0)  # matched at IoU 0.5, 0.55, 0.6 of the ten thresholds


def test_a_wrong_label_is_no_match():
    r = _score([_pred([BIG], [0.9], [2])], [_gt([BIG], [1])])
    assert r["AP"] == pytest.approx(0.0)


def test_score_ordering_matters():
    far = [300.0, 300.0, 400.0, 400.0]
    fp_first = _score([_pred([far, BIG], [0.9, 0.8], [1, 1])], [_gt([BIG], [1])])
    tp_first = _score([_pred([far, BIG], [0.7, 0.8], [1, 1])], [_gt([BIG], [1])])
    assert fp_first["AP"] == pytest.approx(50.0)  # the hit comes second: precision 1/2 at recall 1
    assert tp_first["AP"] == pytest.approx(100.0)


def test_update_accumulates_and_reset_forgets():
    m = DetectionMetric()
    m.update([_pred([BIG], [0.9], [1])], [_gt([BIG], [1])])
    m.update([_pred([], [], [])], [_gt([MEDIUM], [1])])  # an image with nothing detected
    assert m.compute()["AR100"] == pytest.approx(50.0)
    m.reset()
    m.update([_pred([BIG], [0.9], [1])], [_gt([BIG], [1])])
    assert m.compute()["AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="predictions"):
        m.update([], [_gt([BIG], [1])])


def _boxes(rng, n, jitter_from=None):
    """``n`` xyxy boxes whose areas stay off COCO's range borders (32^2, 96^2), where float32
    (torchmetrics) and float64 (this reference) could put a box in different ranges."""
    out = []
    while len(out) < n:
        if jitter_from is not None:
            b = jitter_from[len(out)] + rng.normal(0, 8, size=4)  # near hits, some below IoU 0.75
        else:
            xy = rng.uniform(0, 300, size=2)
            b = np.concatenate([xy, xy + rng.uniform(5, 150, size=2)])
        area = (b[2] - b[0]) * (b[3] - b[1])
        if b[2] > b[0] + 1 and b[3] > b[1] + 1 and all(abs(area - a) > 0.05 * a for a in (32**2, 96**2)):
            out.append(b.astype(np.float32))
    return np.stack(out)


def _random_dataset(rng, images=6, classes=3):
    preds, targets = [], []
    for _ in range(images):
        n, extra = int(rng.integers(1, 5)), int(rng.integers(0, 3))
        gt = _boxes(rng, n)
        labels = rng.integers(1, classes + 1, size=n)
        boxes = np.concatenate([_boxes(rng, n, gt), _boxes(rng, extra)]) if extra else _boxes(rng, n, gt)
        plabels = np.concatenate([labels, rng.integers(1, classes + 1, size=extra)])
        targets.append(_gt(gt.tolist(), labels.tolist()))
        preds.append(_pred(boxes.tolist(), rng.uniform(0.05, 1, size=len(boxes)).tolist(), plabels.tolist()))
    return preds, targets


def _cocoeval(preds, targets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    anns, dets = [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        for b, c in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w = xywh(b)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": w, "area": w[2] * w[3],
                         "iscrowd": 0})
        for b, s, c in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i, "category_id": c, "bbox": xywh(b), "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(len(targets))], "annotations": anns,
                      "categories": [{"id": c} for c in range(1, 4)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return dict(zip(DETECTION_KEYS, (s[0], s[1], s[2], s[3], s[4], s[5], s[8])))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pycocotools_cocoeval(seed):
    preds, targets = _random_dataset(np.random.default_rng(seed))
    ours = _score(preds, targets)
    ref = _cocoeval(preds, targets)
    assert 0 < ours["AP"] < 100  # a case that exercises the interpolation
    # Seen: gaps up to ~0.1 AP point on these random sets (both torchmetrics backends agree with each
    # other); float32 box conversion in torchmetrics is the suspect, not confirmed. Real errors
    # (matching, ranges, interpolation) move AP by points.
    for key in DETECTION_KEYS:
        expected = math.nan if ref[key] < 0 else 100 * ref[key]
        assert (math.isnan(ours[key]) and math.isnan(expected)) or ours[key] == pytest.approx(expected, abs=0.25), key

"""mIoU / aAcc / mAcc from the confusion matrix: hand-made cases and a numpy reference."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pedconv.tasks.segmentation.metrics import SegmentationMetric, scores_from_confusion


def test_hand_made_case_with_an_absent_class_excluded():
    # 4 classes; class 3 appears neither in the target nor in the prediction.
    target = torch.tensor([[0, 0, 0, 1], [1, 2, 2, 255]])
    pred = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 3]])  # the 255 pixel's prediction (3) is ignored
    m = SegmentationMetric(4)
    m.update(pred, target)
    # class 0: TP 2, FN 1, FP 1 -> 2/4; class 1: TP 1, FN 1, FP 1 -> 1/3; class 2: TP 1, FN 1, FP 1 -> 1/3
    iou = m.per_class_iou()
    torch.testing.assert_close(iou[:3], torch.tensor([50.0, 100 / 3, 100 / 3], dtype=torch.float64))
    assert math.isnan(iou[3])
    r = m.compute()
    assert r["mIoU"] == pytest.approx((50 + 100 / 3 + 100 / 3) / 3)  # not divided by 4
    assert r["aAcc"] == pytest.approx(100 * 4 / 7)
    assert r["mAcc"] == pytest.approx(100 * (2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert int(m.matrix.sum()) == 7


def test_a_class_predicted_but_absent_from_the_ground_truth_counts_as_zero():
    m = SegmentationMetric(3)
    m.update(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 0, 0]))
    r = m.compute()
    assert r["mIoU"] == pytest.approx((25 + 0) / 2)  # classes 0 and 1; class 2 excluded
    assert r["mAcc"] == pytest.approx(25)  # recall only over classes in the ground truth


def test_logits_accumulation_reset_and_errors():
    m = SegmentationMetric(2)
    logits = torch.tensor([[[[2.0, -1.0]], [[0.0, 3.0]]]])  # [1, 2, 1, 2] -> labels [[0, 1]]
    m.update(logits, torch.tensor([[[0, 1]]]))
    m.update(logits, torch.tensor([[[0, 0]]]))
    assert m.matrix.tolist() == [[2, 1], [0, 1]]
    m.reset()
    assert m.matrix.sum() == 0 and math.isnan(m.compute()["mIoU"])
    with pytest.raises(ValueError, match="target labels"):
        m.update(torch.tensor([0]), torch.tensor([5]))
    with pytest.raises(ValueError, match="shape"):
        m.update(torch.tensor([0, 1]), torch.tensor([0]))


def test_scores_from_a_perfect_diagonal():
    assert scores_from_confusion(torch.diag(torch.tensor([3, 0, 5]))) == {"mIoU": 100.0, "aAcc": 100.0,
                                                                          "mAcc": 100.0}


def _numpy_reference(preds, targets, k, ignore):
    inter, union, gt_area = np.zeros(k), np.zeros(k), np.zeros(k)
    correct = total = 0
    for p, t in zip(preds, targets):
        keep = t != ignore
        p, t = p[keep], t[keep]
        for c in range(k):
            inter[c] += np.sum((p == c) & (t == c))
            union[c] += np.sum((p == c) | (t == c))
            gt_area[c] += np.sum(t == c)
        correct += np.sum(p == t)
        total += t.size
    present = union > 0
    miou = 100 * np.mean(inter[present] / union[present]) if present.any() else np.nan
    has_gt = gt_area > 0
    macc = 100 * np.mean(inter[has_gt] / gt_area[has_gt]) if has_gt.any() else np.nan
    return miou, (100 * correct / total if total else np.nan), macc


@settings(max_examples=60)
@given(k=st.integers(1, 6), batches=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_equals_a_direct_numpy_computation(k, batches, seed):
    rng = np.random.default_rng(seed)
    m = SegmentationMetric(k, ignore_index=255)
    preds, targets = [], []
    for _ in range(batches):
        t = rng.integers(0, k, size=(2, 5, 4))
        t[rng.random(t.shape) < 0.2] = 255
        p = rng.integers(0, max(1, k - 1), size=t.shape)  # the last class is often absent from predictions
        preds.append(p)
        targets.append(t)
        m.update(torch.from_numpy(p), torch.from_numpy(t))
    got = m.compute()
    for key, ref in zip(("mIoU", "aAcc", "mAcc"), _numpy_reference(preds, targets, k, 255)):
        assert (math.isnan(got[key]) and np.isnan(ref)) or got[key] == pytest.approx(ref), key

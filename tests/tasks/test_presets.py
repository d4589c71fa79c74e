"""The `paper` presets against their references' recipes: the learning rate follows the global
batch, and Free AT's optimizer and schedule are the reference's."""

from __future__ import annotations

import argparse

import pytest

from pedconv.tasks.adversarial.task import AdversarialTraining
from pedconv.tasks.detection.task import Detection
from pedconv.tasks.segmentation.task import Segmentation
from pedconv.training.config import build_train_parser, preset_values
from pedconv.training.recipe import effective_lr


def _paper(task) -> argparse.Namespace:
    parser = build_train_parser(argparse.ArgumentParser(), task)
    args = parser.parse_args([])
    vars(args).update(preset_values(parser, task, "paper"))
    return args


@pytest.mark.parametrize("task,reference_batch,reference_lr", [(Detection(), 64, 1e-3), (Segmentation(), 16, 0.01)])
def test_the_paper_lr_follows_the_global_batch(task, reference_batch, reference_lr):
    """The references' lr at their global batch (8 processes), scaled with it on fewer (it used to
    stay fixed while the global batch shrank)."""
    args = _paper(task)
    assert args.batch_size * 8 == reference_batch
    assert effective_lr(args.lr, reference_batch, args.lr_base_batch, args.lr_scale) == pytest.approx(reference_lr)
    half = effective_lr(args.lr, reference_batch // 2, args.lr_base_batch, args.lr_scale)
    assert half == pytest.approx(reference_lr / 2)


def test_free_adversarial_training_uses_the_references_optimizer_and_schedule():
    args = _paper(AdversarialTraining())
    assert (args.opt, args.momentum, args.nesterov, args.weight_decay, args.wd_norm_bias) == ("sgd", 0.9, False,
                                                                                                1e-4, True)
    assert (args.sched, list(args.decay_milestones), args.decay_rate, args.epochs) == ("multistep", [8.0, 16.0],
                                                                                       0.1, 23)
    assert effective_lr(args.lr, 256, args.lr_base_batch, args.lr_scale) == pytest.approx(0.1)

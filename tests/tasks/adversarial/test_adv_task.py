"""The draft AdversarialTraining against the Task interface of pedconv.training.task."""

from __future__ import annotations

import argparse

import pytest
import torch

from pedconv.errors import UsageError
from pedconv.tasks.adversarial import PAPER_EPS, AdversarialTraining, FreeAdversarialStep
from pedconv.training.data import ShardBatchSampler, make_loader
from pedconv.training.distributed import DistEnv
from pedconv.training.task import Task


def _args(task: AdversarialTraining, *argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    task.add_arguments(p)
    args = p.parse_args(list(argv))
    # what `pedconv train`'s own options would add
    defaults = dict(model=task.default_model, model_kwargs={"width": 4}, data="fashion_mnist", data_dir=None,
                    download=False, train_subset=64, val_subset=40, subset_seed=0, img_size=None, crop_pct=0.875,
                    augment=True, batch_size=16, val_batch_size=None, workers=0, seed=0, amp=False, amp_dtype=None)
    for k, v in defaults.items():
        setattr(args, k, v)
    task.check_args(args)
    return args


def test_defaults_are_the_papers():
    task = AdversarialTraining()
    args = _args(task)
    assert isinstance(task, Task) and task.name == "adv"
    assert args.eps == PAPER_EPS and args.replay == 4 and args.pgd_steps == [10, 50] and args.pgd_alpha is None
    assert task.replay(args) == 4 and task.best_metric == "pgd10"
    assert task.result_metrics == ("natural", "pgd10", "pgd50")


def test_options_and_refusals():
    task = AdversarialTraining()
    args = _args(task, "--eps", "0.02", "--replay", "8", "--pgd-steps", "20", "20", "5", "--pgd-alpha", "1/255")
    assert args.pgd_steps == [20, 5] and task.result_metrics == ("natural", "pgd20", "pgd5")
    assert task.replay(args) == 8 and args.pgd_alpha == pytest.approx(1 / 255)
    with pytest.raises(UsageError, match="--mixup"):
        bad = _args(AdversarialTraining())
        bad.mixup = 0.2
        AdversarialTraining().check_args(bad)
    with pytest.raises(SystemExit):
        _args(AdversarialTraining(), "--eps", "8")  # 0-255 units: refused by argparse (exit 2)


def test_data_model_step_and_evaluate_fit_together(single_thread):
    with single_thread():
        _fit_together()


def _fit_together() -> None:
    task = AdversarialTraining()
    args = _args(task, "--pgd-steps", "2", "1", "--attack-subset", "24")
    try:
        spec = task.build_data(args)
    except FileNotFoundError:
        pytest.skip("real Fashion-MNIST not installed")
    model, margs = task.build_model(args, spec)
    assert margs.name == "pedconv_cifar_resnet20" and margs.input_chans == 1
    env = DistEnv()
    step = task.train_step(args, spec, margs, env)
    assert isinstance(step, FreeAdversarialStep) and step.eps == PAPER_EPS
    images, labels = spec.train.__getitems__(list(range(16)))
    r = step(model.train(), (images, labels), seed=1)
    r.loss.backward()
    step.after_backward()
    assert r.count == 16 and step.delta.abs().max() == pytest.approx(PAPER_EPS)
    loader = make_loader(spec, spec.val, ShardBatchSampler(spec.num_val, 16), env.device, 0)
    with torch.random.fork_rng():
        m = task.evaluate(model, loader, args, spec, margs, env, final=True)
    assert set(task.result_metrics) <= set(m) and m["val_images"] == 24  # --attack-subset, not the 40 of the loader
    assert m["pgd1"] >= m["pgd2"] and model.training  # the mode is restored
    assert task.describe(m).startswith("natural ")
